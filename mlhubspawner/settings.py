"""Deployment settings from environment variables (pure), validated at hub start.

``jupyterhub_config.py`` maps these onto traits; a bad value stops the hub with a message that
names the variable.
"""

import ipaddress
import os
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._version import __version__
from .naming import validate_hub_name

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
EXECUTION_MODES = {"docker": "docker", "local": "docker", "k8s": "k8s", "kubernetes": "k8s"}


class SettingsError(ValueError):
    """An environment variable with an invalid value."""


@dataclass(frozen=True)
class Settings:
    hub_name: str = "mlhub"
    execution_mode: str = "docker"
    cleanup_interval_seconds: int = 3600
    cleanup_min_age_seconds: int = 600
    cleanup_volume_grace_seconds: int = 604800
    ssl_enabled: bool = False
    data_dir: str = "/data"
    ip: str = ""
    port: int = 8080
    hub_port: int = 8081
    proxy_api_port: int = 8001
    hub_address: str = "gateway"
    workspace_image: str = f"mlhub-workspace:{__version__}"
    user_config: str = "/resources/jupyterhub_user_config.py"
    cleanup_port: int = 8002
    idle_timeout_seconds: int = 86400
    # the hub image (mlhubspawner/front): which processes run, and how the hub sits behind its front
    start_nginx: bool = True
    start_ssh: bool = True
    start_jhub: bool = True
    start_chp: bool = False
    additional_args: tuple = ()
    behind_front: bool = False
    hub_container: str = ""
    public_hostnames: tuple = ()
    # the chart splits the hub image into a hub pod and a proxy pod (nginx, sshd, CHP)
    hub_service_url: str = ""
    proxy_api_listen: str = "127.0.0.1"
    ssh_front_token: str = ""
    # closed workspace egress on the Docker host (mlhubspawner/docker/egress.py)
    egress_firewall: bool = True
    egress_allow_private: bool = False
    # MLHUB_ADMIN_PASSWORD: the admin accounts' password (set at every start while set); unset, a password is
    # generated at the first start, kept in $MLHUB_DATA_DIR/admin-password (0600) and logged once (auth.py)
    admin_password: str = field(default="", repr=False)


def _bool(env, name, default):
    value = env.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingsError(f"{name}={value!r}: expected true or false")


def _int(env, name, default, minimum, maximum=None, allow=()):
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected a whole number") from None
    if number not in allow and (number < minimum or (maximum is not None and number > maximum)):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        extra = f" (or {', '.join(map(str, allow))})" if allow else ""
        raise SettingsError(f"{name}={value!r}: must be {bounds}{extra}")
    return number


def _port(env, name, default):
    return _int(env, name, default, 1, 65535)


def _args(env, name):
    try:
        return tuple(shlex.split(env.get(name, "")))
    except ValueError as e:
        raise SettingsError(f"{name}={env.get(name)!r}: {e}") from None


_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _hostnames(env, name):
    names = tuple(n.strip().lower() for n in env.get(name, "").split(",") if n.strip())
    for n in names:
        if len(n) > 253 or not all(_DNS_LABEL.match(part) for part in n.split(".")):
            raise SettingsError(f"{name}: {n!r} is not a host name (comma-separated ASCII DNS names)")
    return names


def _http_url(env, name):
    value = env.get(name, "").strip().rstrip("/")
    if value:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname or parts.path or parts.query:
            raise SettingsError(f"{name}={value!r}: expected http://host:port (the hub's Service), no path")
    return value


def _ip(env, name, default):
    value = env.get(name, "").strip() or default
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected an IP address (e.g. 0.0.0.0)") from None
    return value


def _token(env, name):
    value = env.get(name, "").strip()
    if value and (len(value) < 32 or not value.isascii() or not value.isalnum()):
        raise SettingsError(f"{name}: expected at least 32 letters and digits")
    return value


MIN_ADMIN_PASSWORD_LENGTH = 12


def _admin_password(env, name):
    """A password from the environment: never echoed in errors, 12+ characters, no control characters."""
    value = env.get(name, "")
    if not value:
        return ""
    if len(value) < MIN_ADMIN_PASSWORD_LENGTH:
        raise SettingsError(f"{name}: too short, use at least {MIN_ADMIN_PASSWORD_LENGTH} characters")
    if value != value.strip() or any(unicodedata.category(ch).startswith("C") for ch in value):
        raise SettingsError(f"{name}: no leading or trailing spaces, line breaks or control characters")
    return value


def load_settings(env=None):
    """Read and validate the ML Hub environment variables (``os.environ`` by default)."""
    env = os.environ if env is None else env
    defaults = Settings()
    hub_name = env.get("HUB_NAME", defaults.hub_name)
    try:
        validate_hub_name(hub_name)
    except ValueError as e:
        raise SettingsError(f"HUB_NAME: {e}") from None
    mode = env.get("EXECUTION_MODE", "docker").strip().lower()
    if mode not in EXECUTION_MODES:
        raise SettingsError(f"EXECUTION_MODE={mode!r}: expected docker (alias local) or k8s")
    return Settings(
        hub_name=hub_name,
        execution_mode=EXECUTION_MODES[mode],
        cleanup_interval_seconds=_int(env, "CLEANUP_INTERVAL_SECONDS", 3600, 10, allow=(-1,)),
        cleanup_min_age_seconds=_int(env, "CLEANUP_MIN_AGE_SECONDS", 600, 0),
        cleanup_volume_grace_seconds=_int(env, "CLEANUP_VOLUME_GRACE_SECONDS", 604800, 0),
        ssl_enabled=_bool(env, "SSL_ENABLED", False),
        data_dir=env.get("MLHUB_DATA_DIR", defaults.data_dir),
        ip=env.get("MLHUB_IP", defaults.ip),
        port=_port(env, "MLHUB_PORT", 8080),
        hub_port=_port(env, "MLHUB_HUB_PORT", 8081),
        proxy_api_port=_port(env, "MLHUB_PROXY_API_PORT", 8001),
        hub_address=env.get("MLHUB_HUB_ADDRESS", "").strip() or "gateway",
        workspace_image=env.get("MLHUB_WORKSPACE_IMAGE", defaults.workspace_image),
        user_config=env.get("MLHUB_USER_CONFIG", defaults.user_config),
        cleanup_port=_port(env, "MLHUB_CLEANUP_PORT", 8002),
        idle_timeout_seconds=_int(env, "MLHUB_IDLE_TIMEOUT_SECONDS", 86400, 10, allow=(0,)),
        start_nginx=_bool(env, "START_NGINX", True),
        start_ssh=_bool(env, "START_SSH", True),
        start_jhub=_bool(env, "START_JHUB", True),
        start_chp=_bool(env, "START_CHP", False),
        additional_args=_args(env, "ADDITIONAL_ARGS"),
        behind_front=_bool(env, "MLHUB_BEHIND_FRONT", False),
        hub_container=env.get("MLHUB_HUB_CONTAINER", "").strip(),
        public_hostnames=_hostnames(env, "MLHUB_PUBLIC_HOSTNAMES"),
        hub_service_url=_http_url(env, "MLHUB_HUB_SERVICE_URL"),
        proxy_api_listen=_ip(env, "MLHUB_PROXY_API_LISTEN", "127.0.0.1"),
        ssh_front_token=_token(env, "MLHUB_SSH_FRONT_TOKEN"),
        egress_firewall=_bool(env, "MLHUB_EGRESS_FIREWALL", True),
        egress_allow_private=_bool(env, "MLHUB_EGRESS_ALLOW_PRIVATE", False),
        admin_password=_admin_password(env, "MLHUB_ADMIN_PASSWORD"),
    )
