"""JupyterHub's ``base_url`` (``/ml/``): checked, and told to the front beside the hub (standard library only).

Set by ``MLHUB_BASE_URL`` (the chart's ``hub.baseUrl``) or ``c.JupyterHub.base_url`` in the operator's config,
which wins. Every URL of ML Hub then starts with it: ``/ml/hub/...``, ``/ml/user/<name>/...``,
``/ml/services/...``; the old ``/hub/...`` paths answer 404.

The front starts before the hub reads its config: the entrypoint writes ``MLHUB_BASE_URL``'s value (or ``/``) to
:data:`PUBLISHED`, and the hub in the same container rewrites it with the value it runs with. The SSH key
lookup, the image's HEALTHCHECK and ``make run`` read it there.
"""

import re
from pathlib import Path

from .files import write_atomic

PUBLISHED = Path("/run/mlhub/base-url")  # in the entrypoint's run directory (front/layout.py RUN_DIR)
MAX_LENGTH = 200
# a path segment: URL-safe characters, never "." or ".." (no segment starts with a dot)
_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_BASE_URL = re.compile(rf"/(?:{_SEGMENT}/)*")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
TRAIT = "c.JupyterHub.base_url"
ENV = "MLHUB_BASE_URL"


class BaseURLError(ValueError):
    """A base URL the hub, its front and the chart could not all serve."""


def check_base_url(value, name=TRAIT):
    """``value`` if it is a clean URL prefix (``/`` or ``/a/b/``), else :class:`BaseURLError` naming ``name``."""
    if not isinstance(value, str):
        raise BaseURLError(f"{name}={value!r}: expected a string such as '/ml/'")
    if _BASE_URL.fullmatch(value) and len(value) <= MAX_LENGTH:
        return value
    if not (value.startswith("/") and value.endswith("/")):
        why = "must start and end with '/' (e.g. '/ml/')"
    elif "//" in value:
        why = "has an empty segment ('//')"
    elif len(value) > MAX_LENGTH:
        why = f"is longer than {MAX_LENGTH} characters"
    else:
        segments = value.strip("/").split("/")
        if any(s in (".", "..") for s in segments):
            why = "may not have '.' or '..' segments"
        elif any(not _SEGMENT_CHARS.fullmatch(s) for s in segments):
            why = "may hold only letters, digits and - _ ~ . (no spaces, %, ?, # or other characters)"
        else:
            why = "has a segment starting with '.'"
    raise BaseURLError(f"{name}={value!r} {why}")


def from_env(env):
    """``MLHUB_BASE_URL`` checked (unset or empty: ``/``)."""
    value = env.get(ENV, "")
    return check_base_url(value, ENV) if value else "/"


def hub_path(base_url, path=""):
    """The hub's own URL path under ``base_url``: ``hub_path("/ml/", "health")`` is ``/ml/hub/health``."""
    return f"{base_url}hub/{path.lstrip('/')}"


def effective(config, env_value="/", execution_mode="docker"):
    """The base URL the hub runs with: ``c.JupyterHub.base_url`` after every config file, checked.

    ``config`` is JupyterHub's ``c``; ``env_value`` what ``MLHUB_BASE_URL`` said (``jupyterhub_config.py`` sets
    the trait from it before the operator's config). A ``bind_url`` with another path would be ignored
    (JupyterHub takes the path from ``base_url``): refused. On Kubernetes the chart's ``hub.baseUrl`` also sets
    the probes, the proxy pod and the Ingress: another value in the operator's config is refused.
    """
    section = config.JupyterHub
    value = check_base_url(section.base_url if "base_url" in section else env_value)
    if "bind_url" in section:
        path = re.sub(r"^[a-z]+://[^/]*", "", str(section.bind_url)) or "/"
        if path.rstrip("/") != value.rstrip("/"):
            raise BaseURLError(
                f"c.JupyterHub.bind_url={section.bind_url!r} has the path {path!r} but {TRAIT} is {value!r}: "
                f"set the prefix with {TRAIT} only"
            )
    if execution_mode == "k8s" and value != env_value:
        raise BaseURLError(
            f"{TRAIT}={value!r} (userConfig or hub.config) differs from the chart's hub.baseUrl {env_value!r}: "
            "set hub.baseUrl instead (the probes, the proxy pod and the Ingress follow it)"
        )
    return value


def read_published(path=PUBLISHED, default="/"):
    """The base URL the front was told (:data:`PUBLISHED`), else ``default`` (missing or not a clean prefix)."""
    try:
        value = Path(path).read_text().strip()
    except OSError:
        return default
    try:
        return check_base_url(value)
    except BaseURLError:
        return default


def publish(value, path=PUBLISHED):
    """Rewrite :data:`PUBLISHED` with the hub's base URL, when the entrypoint made it (the hub image only).

    Returns whether it was written.
    """
    path = Path(path)
    if not path.exists():
        return False
    write_atomic(path, value + "\n", 0o644)
    return True
