"""Names and labels of every resource ML Hub creates (pure).

Every component (spawners, cleanup, SSH, the front's config) imports its names and label keys
from here, so they always agree. Names are persisted in spawner state, so a change of scheme
never orphans a running workspace.
"""

import hashlib
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


def _fit(name):
    """Keep ``name`` within one DNS label; over-long names keep a prefix plus a stable hash."""
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME_LENGTH - 11].rstrip('-')}-{digest}"


def network_name(hub_name, username):
    """The per-user network: ``<hub>-<user>``."""
    return _fit(f"{hub_name}-{escape(username)}")


def workspace_name(hub_name, username, server_name=""):
    """Container/pod (and volume) name: ``<hub>-ws-<user>`` or ``<hub>-ws-<user>--<server>``."""
    name = f"{hub_name}-ws-{escape(username)}"
    if server_name:
        name += f"--{escape(server_name)}"
    return _fit(name)


def volume_name(hub_name, username, server_name=""):
    """The persistent volume of a workspace has the workspace's name."""
    return workspace_name(hub_name, username, server_name)


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
