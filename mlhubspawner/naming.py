"""Names and labels of every resource ML Hub creates (pure).

Every component (spawners, cleanup, SSH, the front's config) imports its names and label keys
from here, so they always agree. Names are persisted in spawner state, so a change of scheme
never orphans a running workspace.
"""

import hashlib
import json
import re
import string

from escapism import escape as _escapism

LABEL_ORIGIN = "mlhub.origin"
LABEL_USER = "mlhub.user"
LABEL_SERVER_NAME = "mlhub.server_name"
LABEL_EXPIRATION = "mlhub.expiration_timestamp_seconds"
LABEL_GPUS = "mlhub.gpus"
LABEL_COMPONENT = "mlhub.component"
LABEL_CONFIG_HASH = "mlhub.config_hash"

COMPONENT_WORKSPACE = "workspace"
COMPONENT_NETWORK = "network"
COMPONENT_VOLUME = "volume"
COMPONENT_FRONT = "front"  # the hub container's front network (Docker): never a user's leftover

HUB_NAME_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$")
MAX_NAME_LENGTH = 63  # one DNS label: workspace names are used as host names (SSH, routes)

_SAFE_CHARS = set(string.ascii_lowercase + string.digits)


def validate_hub_name(name):
    """Return ``name`` if it is a valid hub name, else raise ValueError saying why."""
    if not isinstance(name, str) or not HUB_NAME_PATTERN.match(name) or "--" in name:
        raise ValueError(
            f"{name!r} is not a valid hub name: use 1-20 lower-case letters, digits and single "
            "hyphens, starting with a letter and not ending with a hyphen (e.g. 'mlhub')"
        )
    return name


def escape(text):
    """Escape ``text`` into ``[a-z0-9-]``, injectively.

    Every character outside ``[a-z0-9]`` (including ``-`` itself and upper-case letters) becomes
    ``-XX`` per UTF-8 byte, so two different inputs never give the same output, and the output
    never contains ``--``, which makes ``--`` a safe separator.
    """
    return _escapism(text, _SAFE_CHARS, escape_char="-").lower()


HASH_MARKER = "----"
"""Separates a hashed name's readable prefix from its digest.

No readable name contains four hyphens in a row: hub names have no ``--``, :func:`escape` never
emits ``--``, and the widest run in ``<hub>-ws-<user>--<server>`` is three (a server whose escaped
name starts with ``-``). So a hashed name can never be another tuple's readable name.
"""
HASH_DIGITS = 24  # 96 bits of SHA-256


def _unescape(text):
    """The input :func:`escape` turns into ``text``, or None if escaping never emits ``text``."""
    if not text:
        return None
    data, i = bytearray(), 0
    while i < len(text):
        if text[i] == "-":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in "0123456789abcdef" for c in pair):
                return None
            data.append(int(pair, 16))
            i += 3
        else:
            data.append(ord(text[i]))
            i += 1
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded if escape(decoded) == text else None


def _hub_splits(name):
    """Every ``(hub, rest)`` with ``name == hub + "-" + rest`` and ``hub`` a valid hub name."""
    for i in range(1, min(len(name), 21)):
        if name[i] == "-" and HUB_NAME_PATTERN.match(name[:i]) and "--" not in name[:i]:
            yield name[:i], name[i + 1 :]


def decode_workspace_name(name):
    """Every ``(hub, user, server)`` whose readable workspace name is ``name`` (pure)."""
    found = []
    for hub, rest in _hub_splits(name):
        if not rest.startswith("ws-"):
            continue
        user_part, separator, server_part = rest[3:].partition("--")
        user = _unescape(user_part)
        server = _unescape(server_part) if separator else ""
        if user is not None and server is not None:
            found.append((hub, user, server))
    return found


def decode_network_name(name):
    """Every ``(hub, user)`` whose readable network name is ``name`` (pure)."""
    found = []
    for hub, rest in _hub_splits(name):
        user = _unescape(rest)
        if user is not None:
            found.append((hub, user))
    return found


def _hashed(head, readable_tail, identity):
    """``head`` + a readable prefix + :data:`HASH_MARKER` + a digest of ``identity`` (<= 63)."""
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:HASH_DIGITS]
    room = MAX_NAME_LENGTH - len(head) - len(HASH_MARKER) - HASH_DIGITS
    prefix = readable_tail[:room].rstrip("-")
    return f"{head}{prefix}{HASH_MARKER}{digest}"


def network_name(hub_name, username):
    """The per-user network: ``<hub>-<user>``, or a hashed name (see :func:`workspace_name`)."""
    name = f"{hub_name}-{escape(username)}"
    if len(name) <= MAX_NAME_LENGTH and decode_network_name(name) == [(hub_name, username)]:
        return name
    return _hashed(f"{hub_name}-", escape(username), ["network", hub_name, username])


def workspace_name(hub_name, username, server_name=""):
    """Container/pod (and volume) name: ``<hub>-ws-<user>`` or ``<hub>-ws-<user>--<server>``.

    That readable form is used only if it fits one DNS label and no other (hub, user, server)
    reads the same; otherwise the name is ``<hub>-ws-<prefix>----<24 hex digits>``, a SHA-256 of
    the exact (hub, user, server). So names are injective across users, servers and hubs, and
    every name starts with ``<hub>-``.
    """
    tail = escape(username) + (f"--{escape(server_name)}" if server_name else "")
    name = f"{hub_name}-ws-{tail}"
    if len(name) <= MAX_NAME_LENGTH and decode_workspace_name(name) == [
        (hub_name, username, server_name or "")
    ]:
        return name
    return _hashed(f"{hub_name}-ws-", tail, ["workspace", hub_name, username, server_name or ""])


def volume_name(hub_name, username, server_name=""):
    """The persistent volume of a workspace has the workspace's name."""
    return workspace_name(hub_name, username, server_name)


class ForeignResourceError(RuntimeError):
    """A resource under one of this workspace's names belongs to someone else: refused, untouched."""

    def __init__(self, message):
        super().__init__(message)
        self.jupyterhub_message = message  # what JupyterHub shows the user for a failed spawn


def owner_of(labels, annotations=None):
    """``(hub, user, server)`` a resource's ``mlhub.*`` labels name (raw names from annotations if given)."""
    labels = labels or {}
    names = labels if annotations is None else annotations or {}
    return labels.get(LABEL_ORIGIN), names.get(LABEL_USER), names.get(LABEL_SERVER_NAME)


def check_owner(kind, name, found, hub_name, username, server_name=None):
    """Raise :class:`ForeignResourceError` unless ``found`` (see :func:`owner_of`) is this owner.

    ``server_name=None`` compares hub and user only (a user's network serves all their servers).
    The message names the resource but not its owner (the user who reads it may not know them).
    """
    wanted = (hub_name, username, server_name or "")
    if found[:2] == wanted[:2] and (server_name is None or (found[2] or "") == wanted[2]):
        return
    raise ForeignResourceError(
        f"Refusing to use {kind} {name!r}: it exists but does not belong to this workspace "
        f"(hub {hub_name!r}, user {username!r}"
        + ("" if server_name is None else f", server {server_name or ''!r}")
        + "). Nothing was changed; an administrator has to remove or rename it."
    )


def resource_labels(hub_name, username, server_name="", component=None, expiration=0, gpus=None):
    """Labels for a resource of one user's workspace (container, network, volume)."""
    labels = {
        LABEL_ORIGIN: hub_name,
        LABEL_USER: username,
        LABEL_SERVER_NAME: server_name or "",
        LABEL_EXPIRATION: str(int(expiration or 0)),
    }
    if component:
        labels[LABEL_COMPONENT] = component
    if gpus:
        labels[LABEL_GPUS] = ",".join(str(g) for g in gpus)
    return labels


def origin_filter(hub_name, **labels):
    """A Docker label filter selecting this hub's resources (plus optional exact labels)."""
    selected = [f"{LABEL_ORIGIN}={hub_name}"]
    selected += [f"{key}={value}" for key, value in labels.items()]
    return {"label": selected}
