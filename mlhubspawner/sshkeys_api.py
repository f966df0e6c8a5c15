"""The SSH keys API, served by the hub itself under ``/hub/api/mlhub/`` (``JupyterHub.extra_handlers``).

``GET/POST /users/{user}/ssh-keys``, ``DELETE /users/{user}/ssh-keys/{fingerprint}``: a user's keys
(``?format=authorized_keys`` gives plain key lines, for a workspace's sshd).
``GET /users/{user}/ssh-keys/challenge``: a challenge to sign with ``ssh-keygen -Y sign``; a POST
must carry ``{"key", "challenge", "signature"}``: the hub checks the signature with
``ssh-keygen -Y verify`` (a subprocess, off the event loop) before it stores the key.
``GET /ssh/authorized-keys?key=<base64>``: for the SSH front's ``AuthorizedKeysCommand``, the owner
of a key as one authorized_keys line that only permits forwarding to the owner's running workspaces.
``GET /users/{user}[/servers/{name}]/ssh-config``: a ``~/.ssh/config`` block for a workspace.
Both the lookup and the config offer a running workspace only while its own sshd answers
(:mod:`mlhubspawner.ssh_health`): the config is then 409, the lookup leaves it out.

A key whose hub user is gone, or was re-created since the key was added, is stale: it is treated
as absent and deleted on sight, so keys never outlive their user or pass to a namesake.
"""

import asyncio
import base64
import functools
import json
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from jupyterhub.scopes import needs_scope
from tornado import web

from . import ssh_health, sshkeys
from .api_base import WorkspaceAPIHandler
from .sshkeys_store import ChallengeUsedError, KeyExistsError, KeyLimitError, utc_iso

READ = "custom:mlhub-ssh-keys:read"
WRITE = "custom:mlhub-ssh-keys:write"
LOOKUP = "custom:mlhub-ssh-keys:lookup"
RSA_SIGNATURE_TYPES = {"rsa-sha2-256", "rsa-sha2-512"}
VERIFY_TIMEOUT_SECONDS = 10


class SignatureError(Exception):
    """A signature that does not verify; the message is for humans."""


def verify_signature(key, message, signature, ssh_keygen="ssh-keygen", timeout=VERIFY_TIMEOUT_SECONDS):
    """Check with ``ssh-keygen -Y verify`` that ``signature`` (armored SSHSIG) signs ``message`` by ``key``.

    Blocking (a subprocess): run it in an executor. The message may also have been signed with a
    trailing newline (``echo`` instead of ``printf``). Raises :class:`SignatureError`.
    """
    with tempfile.TemporaryDirectory(prefix="mlhub-sshsig-") as directory:
        allowed = Path(directory) / "allowed_signers"
        allowed.write_text(f'owner namespaces="{sshkeys.SIGNATURE_NAMESPACE}" {key.line}\n')
        signature_file = Path(directory) / "signature"
        signature_file.write_text(signature)
        command = [ssh_keygen, "-Y", "verify", "-f", str(allowed), "-I", "owner"]
        command += ["-n", sshkeys.SIGNATURE_NAMESPACE, "-s", str(signature_file)]
        for data in (message, message + b"\n"):
            try:
                result = subprocess.run(
                    command, input=data, capture_output=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise SignatureError(f"checking the signature took longer than {timeout} s") from None
            if result.returncode == 0:
                return
    raise SignatureError(
        f"the signature does not verify: sign exactly the challenge, with -n {sshkeys.SIGNATURE_NAMESPACE} "
        "and the private key of the public key you add"
    )


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
        # false: stored before keys needed proof of possession; whoever proves it takes the key over
        "proven": row.proven,
    }


def running_ssh_spawners(user):
    """The user's ready (running, not pending) ML Hub workspaces' spawners."""
    spawners = []
    for name, orm_spawner in user.orm_spawners.items():
        if orm_spawner.server is None:
            continue
        spawner = user.spawners[name]
        if spawner.ready and hasattr(spawner, "ssh_target"):
            spawners.append(spawner)
    return spawners


async def answering_ssh_targets(health, user):
    """``(host, port)`` of the user's ready ML Hub workspaces whose sshd answers, sorted."""
    spawners = running_ssh_spawners(user)
    statuses = await asyncio.gather(*(health.check(spawner) for spawner in spawners))
    return sorted({tuple(s.ssh_target()) for s, status in zip(spawners, statuses, strict=True) if status.ok})


class _SSHKeysBaseHandler(WorkspaceAPIHandler):
    def initialize(self, store, public_host=None, ssh_keygen="ssh-keygen", public_port=None):
        self.store = store
        self.public_host = public_host
        self.public_port = public_port
        self.ssh_keygen = ssh_keygen

    async def new_challenge(self, user):
        """A fresh challenge for ``user`` and how to sign it, as the challenge endpoint answers."""
        now = time.time()
        secret = await self.store.call("challenge_secret")
        challenge = sshkeys.make_challenge(secret, user.name, user_created(user), now)
        return {
            "challenge": challenge,
            "namespace": sshkeys.SIGNATURE_NAMESPACE,
            "expires_at": utc_iso(datetime.fromtimestamp(int(now) + sshkeys.CHALLENGE_TTL_SECONDS, UTC)),
            "command": sshkeys.sign_command(challenge),
        }

    async def _user(self, user_name):
        """The hub user ``user_name`` (404 if none), with its stale keys dropped."""
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"no such user {user_name}")
        dropped = await self.store.call("delete_user", user.name, keep_created=user_created(user))
        if dropped:
            self.log.info("Dropped %d SSH keys of an earlier user named %s", dropped, user.name)
        return user

    async def _owner(self, row):
        """The live hub user owning ``row``, or ``None`` (then the stale keys are deleted)."""
        user = self.find_user(row.user)
        if user is None:
            dropped = await self.store.call("delete_user", row.user)
            self.log.info("Dropped %d SSH keys of deleted user %s", dropped, row.user)
            return None
        if row.user_created != user_created(user):
            await self._user(row.user)
            return None
        return user

    def write_text(self, lines):
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("".join(f"{line}\n" for line in lines))


class SSHKeysHandler(_SSHKeysBaseHandler):
    """``/users/{user}/ssh-keys``: list and add."""

    @needs_custom_scope(READ, "admin:users")
    async def get(self, user_name):
        user = await self._user(user_name)
        rows = await self.store.call("list", user.name)
        output = self.get_argument("format", "json")
        if output == "authorized_keys":
            self.write_text(sshkeys.authorized_keys_line(row.type, row.blob) for row in rows)
        elif output == "json":
            self.finish(json.dumps([key_model(row) for row in rows]))
        else:
            raise web.HTTPError(400, "format: expected json or authorized_keys")

    @needs_custom_scope(WRITE, "admin:users")
    async def post(self, user_name):
        user = await self._user(user_name)
        body = self.get_json_body()
        if (
            not isinstance(body, dict)
            or not {"key"} <= set(body) <= {"key", "challenge", "signature"}
            or not all(isinstance(value, str) for value in body.values())
        ):
            raise web.HTTPError(
                400,
                'expected {"key": "<one line of an OpenSSH .pub file>", "challenge": "<from GET '
                '.../ssh-keys/challenge>", "signature": "<what ssh-keygen -Y sign printed>"}',
            )
        try:
            key = sshkeys.parse_public_key(body["key"])
        except sshkeys.KeyFormatError as e:
            raise web.HTTPError(400, "%s", f"Invalid SSH key: {e}") from None
        if not body.get("challenge") or not body.get("signature"):
            fresh = await self.new_challenge(user)
            raise web.HTTPError(
                400,
                "%s",
                "Prove that you hold the private key: sign this challenge (valid "
                f"{sshkeys.CHALLENGE_TTL_SECONDS // 60} minutes) with\n"
                f"    {sshkeys.sign_command(fresh['challenge'], key.type)}\n"
                'and send {"key", "challenge", "signature"} (the signature is the whole '
                "-----BEGIN SSH SIGNATURE----- block it prints). New challenges: GET "
                f"{self.hub.base_url}api/mlhub/users/{quote(user.name, safe='')}/ssh-keys/challenge or the SSH keys page.",
            )
        try:
            challenge = sshkeys.check_challenge(
                await self.store.call("challenge_secret"),
                body["challenge"],
                user.name,
                user_created(user),
                time.time(),
            )
            signature = sshkeys.parse_signature(body["signature"], key)
        except (sshkeys.ChallengeError, sshkeys.SignatureFormatError) as e:
            raise web.HTTPError(400, "%s", f"Invalid proof of possession: {e}") from None
        try:
            await asyncio.get_running_loop().run_in_executor(
                None,
                verify_signature,
                key,
                challenge.text.encode("ascii"),
                signature,
                self.ssh_keygen,
            )
        except SignatureError as e:
            raise web.HTTPError(400, "%s", f"Invalid proof of possession: {e}") from None
        existing = await self.store.call("get", key.fingerprint)
        if existing is not None:
            await self._owner(existing)  # a stale registration does not block the key
        try:
            row, taken_over = await self.store.call(
                "add", user.name, user_created(user), key, challenge.nonce, challenge.expires
            )
        except KeyExistsError as e:
            raise web.HTTPError(409, "%s", str(e)) from None
        except (KeyLimitError, ChallengeUsedError) as e:
            raise web.HTTPError(400, "%s", str(e)) from None
        if taken_over is not None and taken_over.user != user.name:
            self.log.warning(
                "SSH key %s: %s proved possession for %s; %s, who had registered it without proof, loses it",
                row.fingerprint,
                self.current_user.name,
                user.name,
                taken_over.user,
            )
        self.log.info(
            "%s added SSH key %s (%s) for %s, possession proven",
            self.current_user.name,
            row.fingerprint,
            row.type,
            user.name,
        )
        self.set_status(201)
        self.finish(json.dumps(key_model(row)))


class SSHKeyChallengeHandler(_SSHKeysBaseHandler):
    """``/users/{user}/ssh-keys/challenge``: a challenge to sign, proving possession of a private key."""

    @needs_custom_scope(WRITE, "admin:users")
    async def get(self, user_name):
        user = await self._user(user_name)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(await self.new_challenge(user)))


class SSHKeyHandler(_SSHKeysBaseHandler):
    """``/users/{user}/ssh-keys/{fingerprint}``: delete."""

    @needs_custom_scope(WRITE, "admin:users")
    async def delete(self, user_name, fingerprint):
        user = await self._user(user_name)
        if not fingerprint.startswith("SHA256:"):
            fingerprint = f"SHA256:{fingerprint}"
        if not await self.store.call("delete", user.name, fingerprint):
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
        blob = sshkeys.blob_from_query(self.get_argument("key", "", strip=False))
        if not blob:
            raise web.HTTPError(400, "key: expected the key's base64 blob")
        key_type = self.get_argument("type", "")
        if key_type in RSA_SIGNATURE_TYPES:
            key_type = "ssh-rsa"  # an RSA key is 'ssh-rsa' whatever signature algorithm it uses
        row = await self.store.call("owner_of", base64.b64encode(blob).decode("ascii"))
        user = await self._owner(row) if row is not None else None
        if user is None:
            self.log.debug("SSH front: key %s is not registered", sshkeys.fingerprint(blob))
            return self.write_text([])
        if key_type and key_type != row.type:
            self.log.debug(
                "SSH front: key %s is registered as %s, not %s", row.fingerprint, row.type, key_type
            )
            return self.write_text([])
        targets = await answering_ssh_targets(ssh_health.health(self.settings, self.log), user)
        if not targets:
            self.log.debug(
                "SSH front: key %s of %s: no running workspace with sshd", row.fingerprint, user.name
            )
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
    """``/users/{user}[/servers/{name}]/ssh-config``: how to reach a workspace with ssh (409 for a
    running workspace whose sshd does not answer)."""

    @needs_scope("read:servers")
    async def get(self, user_name, server_name=""):
        user, spawner = self.workspace(user_name, server_name, default_always=True)
        hostname, port = spawner.ssh_target()
        if spawner.ready:  # a stopped workspace's config serves once it runs
            status = await ssh_health.health(self.settings, self.log).check(spawner)
            if not status.ok:
                raise web.HTTPError(
                    409,
                    "%s",
                    f"the workspace's SSH server is not running: {status.reason} "
                    f"({ssh_health.NOT_RUNNING_HINT}; otherwise restarting the workspace may help)",
                )
        try:
            public_host, public_port = sshkeys.ssh_front_address(
                self.request.host, self.public_host, self.public_port
            )
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


def make_handlers(store, public_host=None, ssh_keygen=None, public_port=None):
    """``extra_handlers`` entries; ``public_host`` is ``(host, port)`` of the SSH front, else the Host header
    with ``public_port`` (the port users' ssh clients reach the front at), if given, else the header's port.

    ``ssh_keygen``: OpenSSH's ``ssh-keygen`` (default: from PATH), which checks signatures; without
    one the hub cannot start.
    """
    ssh_keygen = ssh_keygen or shutil.which("ssh-keygen")
    if not ssh_keygen:
        raise RuntimeError("the SSH keys API needs OpenSSH's ssh-keygen on PATH to check signatures")
    kwargs = {
        "store": store,
        "public_host": public_host,
        "ssh_keygen": ssh_keygen,
        "public_port": public_port,
    }
    return [
        (r"/api/mlhub/users/([^/]+)/ssh-keys", SSHKeysHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/ssh-keys/challenge", SSHKeyChallengeHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/ssh-keys/([^/]+)", SSHKeyHandler, kwargs),
        (r"/api/mlhub/ssh/authorized-keys", AuthorizedKeysLookupHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/ssh-config", SSHConfigHandler, kwargs),
        (r"/api/mlhub/users/([^/]+)/servers/([^/]+)/ssh-config", SSHConfigHandler, kwargs),
    ]
