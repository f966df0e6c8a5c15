"""The SSH keys API, served by the hub itself under ``/hub/api/mlhub/`` (``JupyterHub.extra_handlers``).

``GET/POST /users/{user}/ssh-keys``, ``DELETE /users/{user}/ssh-keys/{fingerprint}``: a user's keys
(``?format=authorized_keys`` gives plain key lines, for a workspace's sshd).
``GET /ssh/authorized-keys?key=<base64>``: for the SSH front's ``AuthorizedKeysCommand``, the owner
of a key as one authorized_keys line that only permits forwarding to the owner's running workspaces.
``GET /users/{user}[/servers/{name}]/ssh-config``: a ``~/.ssh/config`` block for a workspace.

A key whose hub user is gone, or was re-created since the key was added, is stale: it is treated
as absent and deleted on sight, so keys never outlive their user or pass to a namesake.
"""

import base64
import binascii
import functools
import json

from jupyterhub.scopes import needs_scope
from tornado import web

from . import sshkeys
from .api_base import WorkspaceAPIHandler
from .sshkeys_store import KeyExistsError, KeyLimitError, utc_iso

READ = "custom:mlhub-ssh-keys:read"
WRITE = "custom:mlhub-ssh-keys:write"
LOOKUP = "custom:mlhub-ssh-keys:lookup"
RSA_SIGNATURE_TYPES = {"rsa-sha2-256", "rsa-sha2-512"}


def needs_custom_scope(*scopes):
    """``needs_scope`` for custom scopes, which JupyterHub defines only after this module is imported."""

    def decorator(method):
        checked = None

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            nonlocal checked
            if checked is None:
                checked = needs_scope(*scopes)(method)
            return checked(self, *args, **kwargs)

        return wrapper

    return decorator


def user_created(user):
    """When the hub user was created, as stored with its keys."""
    return utc_iso(user.created) if user.created else "unknown"


def key_model(row):
    blob = base64.b64decode(row.blob)
    return {
        "fingerprint": row.fingerprint,
        "type": row.type,
        "bits": sshkeys.parse_blob(row.type, blob),
        "comment": row.comment,
        "created_at": row.created_at,
        "key": sshkeys.authorized_keys_line(row.type, row.blob),
    }


def running_ssh_targets(user):
    """``(host, port)`` of the user's ready (running, not pending) ML Hub workspaces, sorted."""
    targets = set()
    for name, orm_spawner in user.orm_spawners.items():
        if orm_spawner.server is None:
            continue
        spawner = user.spawners[name]
        if spawner.ready and hasattr(spawner, "ssh_target"):
            targets.add(tuple(spawner.ssh_target()))
    return sorted(targets)


class _SSHKeysBaseHandler(WorkspaceAPIHandler):
    def initialize(self, store, public_host=None):
        self.store = store
        self.public_host = public_host

    def _user(self, user_name):
        """The hub user ``user_name`` (404 if none), with its stale keys dropped."""
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"no such user {user_name}")
        dropped = self.store.delete_user(user.name, keep_created=user_created(user))
        if dropped:
            self.log.info("Dropped %d SSH keys of an earlier user named %s", dropped, user.name)
        return user

    def _owner(self, row):
        """The live hub user owning ``row``, or ``None`` (then the stale keys are deleted)."""
        user = self.find_user(row.user)
        if user is None:
            dropped = self.store.delete_user(row.user)
            self.log.info("Dropped %d SSH keys of deleted user %s", dropped, row.user)
            return None
        if row.user_created != user_created(user):
            self._user(row.user)
            return None
        return user

    def write_text(self, lines):
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("".join(f"{line}\n" for line in lines))


class SSHKeysHandler(_SSHKeysBaseHandler):
    """``/users/{user}/ssh-keys``: list and add."""

    @needs_custom_scope(READ, "admin:users")
    async def get(self, user_name):
        user = self._user(user_name)
        rows = self.store.list(user.name)
        output = self.get_argument("format", "json")
        if output == "authorized_keys":
            self.write_text(sshkeys.authorized_keys_line(row.type, row.blob) for row in rows)
        elif output == "json":
            self.finish(json.dumps([key_model(row) for row in rows]))
        else:
            raise web.HTTPError(400, "format: expected json or authorized_keys")

    @needs_custom_scope(WRITE, "admin:users")
    async def post(self, user_name):
        user = self._user(user_name)
        body = self.get_json_body()
        if not isinstance(body, dict) or set(body) != {"key"} or not isinstance(body["key"], str):
            raise web.HTTPError(400, 'expected {"key": "<one line of an OpenSSH .pub file>"}')
        try:
            key = sshkeys.parse_public_key(body["key"])
        except sshkeys.KeyFormatError as e:
            raise web.HTTPError(400, "%s", f"Invalid SSH key: {e}") from None
        existing = self.store.get(key.fingerprint)
        if existing is not None:
            self._owner(existing)  # a stale registration does not block the key
        try:
            row = self.store.add(user.name, user_created(user), key)
        except KeyExistsError as e:
            raise web.HTTPError(409, "%s", str(e)) from None
        except KeyLimitError as e:
            raise web.HTTPError(400, "%s", str(e)) from None
        self.log.info(
            "%s added SSH key %s (%s) for %s", self.current_user.name, row.fingerprint, row.type, user.name
        )
        self.set_status(201)
        self.finish(json.dumps(key_model(row)))


class SSHKeyHandler(_SSHKeysBaseHandler):
    """``/users/{user}/ssh-keys/{fingerprint}``: delete."""

    @needs_custom_scope(WRITE, "admin:users")
    async def delete(self, user_name, fingerprint):
        user = self._user(user_name)
        if not fingerprint.startswith("SHA256:"):
            fingerprint = f"SHA256:{fingerprint}"
        if not self.store.delete(user.name, fingerprint):
            raise web.HTTPError(404, f"no SSH key {fingerprint} for {user.name}")
        self.log.info("%s deleted SSH key %s of %s", self.current_user.name, fingerprint, user.name)
        self.set_status(204)
        self.finish()


class AuthorizedKeysLookupHandler(_SSHKeysBaseHandler):
    """``/ssh/authorized-keys?key=<base64>[&type=<type>]``: the SSH front's AuthorizedKeysCommand.

    Answers one authorized_keys line permitting forwarding only to the key owner's running
    workspaces, or an empty body (the key opens nothing).
    """

    @needs_custom_scope(LOOKUP)
    async def get(self):
        # a '+' the caller did not URL-encode arrives as a space
        text = self.get_argument("key", "").strip().replace(" ", "+")
        try:
            blob = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            blob = b""
        if not blob:
            raise web.HTTPError(400, "key: expected the key's base64 blob")
        key_type = self.get_argument("type", "")
        if key_type in RSA_SIGNATURE_TYPES:
            key_type = "ssh-rsa"  # an RSA key is 'ssh-rsa' whatever signature algorithm it uses
        row = self.store.owner_of(base64.b64encode(blob).decode("ascii"))
        user = self._owner(row) if row is not None else None
        if user is None:
            self.log.info("SSH front: key %s is not registered", sshkeys.fingerprint(blob))
            return self.write_text([])
        if key_type and key_type != row.type:
            self.log.info(
                "SSH front: key %s is registered as %s, not %s", row.fingerprint, row.type, key_type
            )
            return self.write_text([])
        targets = running_ssh_targets(user)
        if not targets:
            self.log.info("SSH front: key %s of %s: no running workspace", row.fingerprint, user.name)
            return self.write_text([])
        self.log.info(
            "SSH front: key %s of %s may forward to %s",
            row.fingerprint,
            user.name,
            ", ".join(f"{host}:{port}" for host, port in targets),
        )
        options = sshkeys.forwarding_options(targets)
        self.write_text([sshkeys.authorized_keys_line(row.type, row.blob, options)])


class SSHConfigHandler(_SSHKeysBaseHandler):
    """``/users/{user}[/servers/{name}]/ssh-config``: how to reach a workspace with ssh."""

    @needs_scope("read:servers")
    async def get(self, user_name, server_name=""):
        user, spawner = self.workspace(user_name, server_name, default_always=True)
        hostname, port = spawner.ssh_target()
        if self.public_host:
            public_host, public_port = self.public_host
        else:
            try:
                public_host, public_port = sshkeys.parse_public_host(self.request.host)
            except ValueError as e:
                raise web.HTTPError(400, "%s", f"Host header: {e}") from None
        alias = sshkeys.host_alias(spawner.hub_name, user.name, server_name)
        proxy_jump = sshkeys.jump_host("tunnel", public_host, public_port)
        self.finish(
            json.dumps(
                {
                    "host_alias": alias,
                    "hostname": hostname,
                    "port": port,
                    "user": spawner.ssh_user,
                    "proxy_jump": proxy_jump,
                    "config": sshkeys.ssh_config(alias, hostname, port, spawner.ssh_user, proxy_jump),
                    "command": sshkeys.ssh_command(hostname, port, spawner.ssh_user, proxy_jump),
                }
            )
        )


def make_handlers(store, public_host=None):
    """``extra_handlers`` entries; ``public_host`` is ``(host, port)`` of the SSH front, else the Host header."""
    kwargs = {"store": store, "public_host": public_host}
    return [
        (r"/api/mlhub/users/([^/]+)/ssh-keys", SSHKeysHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/ssh-keys/([^/]+)", SSHKeyHandler, kwargs),
        (r"/api/mlhub/ssh/authorized-keys", AuthorizedKeysLookupHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/ssh-config", SSHConfigHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/servers/([^/]+)/ssh-config", SSHConfigHandler, kwargs),
    ]
