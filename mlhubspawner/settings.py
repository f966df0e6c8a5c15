"""Deployment settings from environment variables (pure), validated at hub start.

``jupyterhub_config.py`` maps these onto traits; a bad value stops the hub with a message that
names the variable. :data:`VARIABLES` lists every environment variable ML Hub reads, and whether
``make run`` passes it into the hub container. Standard library only: ``run-hub.sh`` runs
``python3 -m mlhubspawner.settings passthrough`` without the venv.
"""

import ipaddress
import os
import re
import shlex
import sys
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._version import __version__

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
    # more images for the options form: (friendly name, image) pairs, e.g. ("ml", "mlhub-workspace-ml:0.1.0")
    workspace_images: tuple = ()
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
    # JupyterHub's base_url (mlhubspawner/base_url.py): every URL of the hub and its front starts with it
    base_url: str = "/"
    # the original's switches: the allow-list file (auth.py) and the cleanup service (jupyterhub_config.py)
    dynamic_whitelist_enabled: bool = False
    cleanup_service_enabled: bool = True


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


_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,39}$")


def _images(env, name):
    """``[name=]image`` entries, comma-separated, as ``(name, image)`` pairs; the name defaults to the image."""
    pairs = []
    for entry in (e.strip() for e in env.get(name, "").split(",")):
        if not entry:
            continue
        label, named, image = (part.strip() for part in entry.rpartition("="))
        if not _IMAGE_REF.match(image):
            raise SettingsError(
                f"{name}: {image!r} is not an image name (comma-separated [name=]image entries)"
            )
        if named and not _IMAGE_NAME.match(label):
            raise SettingsError(f"{name}: {label!r}: a name is 1-40 letters, digits, spaces or ._()+-")
        pairs.append((label or image, image))
    return tuple(pairs)


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


def _base_url(env):
    from .base_url import BaseURLError, from_env

    try:
        return from_env(env)
    except BaseURLError as e:
        raise SettingsError(str(e)) from None


def load_settings(env=None):
    """Read and validate the ML Hub environment variables (``os.environ`` by default)."""
    from .naming import validate_hub_name  # not at the top: naming needs escapism, this module is stdlib-only

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
        workspace_images=_images(env, "MLHUB_WORKSPACE_IMAGES"),
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
        base_url=_base_url(env),
        dynamic_whitelist_enabled=_bool(env, "DYNAMIC_WHITELIST_ENABLED", False),
        cleanup_service_enabled=_bool(env, "IS_CLEANUP_SERVICE_ENABLED", True),
    )


# --- every environment variable ML Hub reads -----------------------------------------------------

_HUB_IMAGE = "set by the hub image"
_CHART = "the helm chart sets it"
_BUILD = "read on the host only, by the build and test scripts"


@dataclass(frozen=True)
class Variable:
    """An environment variable ML Hub reads, and whether ``make run`` passes it into the hub container."""

    name: str
    help: str
    where: str  # who reads it
    default: str = ""  # "" = unset
    not_passed: str = ""  # why make run keeps it out of the hub container; "" = passed when set
    by_name: bool = False  # a secret: passed as `-e NAME`, its value never on docker's command line

    @property
    def passed(self):
        return not self.not_passed


VARIABLES = (
    # the deployment: make run passes each one that is set
    Variable(
        "HUB_NAME",
        "DNS-safe name of this hub (1-20 lower-case letters, digits, single hyphens): prefix of every resource "
        "name and value of the `mlhub.origin` label; `make run` names its container and data volume after it.",
        "hub, spawners, cleanup service, make run",
        "mlhub",
    ),
    Variable(
        "EXECUTION_MODE",
        "`docker` (alias `local`) or `k8s` (alias `kubernetes`): picks the spawner and the cleanup backend.",
        "hub, cleanup service",
        "docker",
    ),
    Variable(
        "CLEANUP_INTERVAL_SECONDS",
        "Period of the automatic cleanup sweeps (`-1` = off; the REST API still works).",
        "hub, cleanup service",
        "3600",
    ),
    Variable(
        "CLEANUP_MIN_AGE_SECONDS",
        "Cleanup never removes resources younger than this (a spawn in progress).",
        "hub, cleanup service",
        "600",
    ),
    Variable(
        "CLEANUP_VOLUME_GRACE_SECONDS",
        "How long an orphaned volume or PVC is kept before cleanup removes it.",
        "hub, cleanup service",
        "604800",
    ),
    Variable(
        "IS_CLEANUP_SERVICE_ENABLED",
        "`false`: no cleanup service at all (no process, no `/services/cleanup-service/` route); nothing then "
        "removes expired workspaces or what deleted users left behind.",
        "hub",
        "true",
    ),
    Variable(
        "DYNAMIC_WHITELIST_ENABLED",
        "Only the users listed in `/resources/users/dynamic_whitelist.txt` (one a line, re-read at each login) "
        "and the admins may log in; a missing or unreadable file lets only the admins in.",
        "hub",
        "false",
    ),
    Variable(
        "SSL_ENABLED",
        "Hub image: TLS on the public port (a self-signed certificate unless `/resources/ssl` holds "
        "`cert.crt` and `cert.key`).",
        "hub image, make run",
        "false",
    ),
    Variable(
        "START_NGINX",
        "Hub image: run nginx, the public front (HTTP and SSH on one port).",
        "hub image",
        "true",
    ),
    Variable("START_SSH", "Hub image: run sshd, the SSH front to the workspaces.", "hub image", "true"),
    Variable("START_JHUB", "Hub image: run JupyterHub.", "hub image", "true"),
    Variable(
        "START_CHP",
        "Hub image: run configurable-http-proxy as a process of its own (the chart's proxy pod).",
        "hub image",
        "false",
    ),
    Variable(
        "ADDITIONAL_ARGS",
        "Hub image: extra arguments (shell-quoted) for configurable-http-proxy when `START_CHP=true`.",
        "hub image",
    ),
    Variable(
        "MLHUB_PUBLIC_HOSTNAMES",
        "Hub image: extra DNS names (comma-separated) for the generated TLS certificate.",
        "hub image",
    ),
    Variable(
        "MLHUB_SSH_PUBLIC_HOST",
        "`host[:port]` at which users' SSH clients reach the public port (the ProxyJump of generated ssh "
        "configs); unset: the Host header of each request.",
        "hub",
    ),
    Variable(
        "MLHUB_SSH_PUBLIC_PORT",
        "The port of generated ssh configs when the request's Host header has none (or `MLHUB_SSH_PUBLIC_HOST` "
        "names none); unset: 8080. The chart sets its Service's SSH port.",
        "hub",
    ),
    Variable(
        "MLHUB_BASE_URL",
        "JupyterHub's `base_url`: the path every URL of the hub starts with (`/ml/`: `/ml/hub/login`, "
        "`/ml/user/<name>/`); `c.JupyterHub.base_url` in your config wins. The chart sets it from `hub.baseUrl`.",
        "hub, hub image, make run",
        "/",
    ),
    Variable(
        "MLHUB_WORKSPACE_IMAGE",
        "The default workspace image. `make images` builds the flavors `mlhub-workspace:<version>` (minimal, "
        "what the tests spawn) and `mlhub-workspace-ml:<version>` (ml, what `make run` offers first); "
        "`make image-gpu` builds `mlhub-workspace-gpu:<version>`.",
        "hub, make run",
        "mlhub-workspace:<version>",
    ),
    Variable(
        "MLHUB_WORKSPACE_IMAGES",
        "More images the options form offers after the default, comma-separated `[name=]image` entries "
        "(`minimal=mlhub-workspace:0.1.0,gpu=mlhub-workspace-gpu:0.1.0`); unset: only the default, and `make run` "
        "offers the flavors built on this engine.",
        "hub, make run",
    ),
    Variable(
        "MLHUB_IDLE_TIMEOUT_SECONDS",
        "Stop servers idle for longer than this (at least 10; `0` = no idle culling).",
        "hub",
        "86400",
    ),
    Variable(
        "MLHUB_CLEANUP_PORT",
        "Port of the cleanup service's REST API (on loopback unless `MLHUB_CLEANUP_LISTEN`).",
        "hub",
        "8002",
    ),
    Variable(
        "MLHUB_EGRESS_FIREWALL",
        "Docker: the hub's nftables table that closes workspaces' egress to the host, link-local and "
        "private addresses.",
        "hub",
        "true",
    ),
    Variable(
        "MLHUB_EGRESS_ALLOW_PRIVATE",
        "Docker: let workspaces reach private address ranges (the LAN).",
        "hub",
        "false",
    ),
    Variable(
        "GPU_IDS",
        "Docker: the GPUs workspaces may get, comma-separated indices or UUIDs (`0,1`); unset, the hub finds "
        "them through the engine (a probe container with `--gpus all`). Set it to hand out a subset.",
        "Docker spawner",
    ),
    Variable(
        "MLHUB_ADMIN_PASSWORD",
        "The admin account's password (12+ characters), set at every start; unset: generated at the first "
        "start, kept in the data directory (`admin-password`, 0600) and logged once.",
        "hub, make run",
        by_name=True,
    ),
    # the hub image sets these itself
    Variable(
        "MLHUB_DATA_DIR",
        "The hub's database, cookie secret, tokens, SSH host keys and certificates.",
        "hub, hub image, cleanup service",
        "/data",
        f"{_HUB_IMAGE} (`/data`, the volume `<HUB_NAME>-data`); the Makefile's value is a host path, for `make run-dev`",
    ),
    Variable(
        "MLHUB_IP",
        "Address of the proxy's public port (unset: all interfaces).",
        "hub",
        not_passed=f"{_HUB_IMAGE} (loopback: the proxy sits behind nginx)",
    ),
    Variable(
        "MLHUB_PORT",
        "Public port of the proxy (`make run-dev`).",
        "hub, make run-dev",
        "8080",
        f"{_HUB_IMAGE}; `make run` publishes `MLHUB_PUBLIC_PORT`",
    ),
    Variable(
        "MLHUB_HUB_PORT",
        "Port of the hub API (all interfaces: workspaces call it).",
        "hub",
        "8081",
        _HUB_IMAGE,
    ),
    Variable("MLHUB_PROXY_API_PORT", "Loopback port of the proxy's API.", "hub", "8001", _HUB_IMAGE),
    Variable(
        "MLHUB_HUB_ADDRESS",
        "How workspaces reach the hub API: `gateway` (the hub on the Docker host, `make run-dev`) or a host name.",
        "hub",
        "gateway",
        f"{_HUB_IMAGE} (to `HUB_NAME`)",
    ),
    Variable(
        "MLHUB_HUB_CONTAINER",
        "The hub's own container, which joins every user network.",
        "hub, Docker spawner, cleanup service",
        not_passed=f"{_HUB_IMAGE} (its own container id)",
    ),
    Variable(
        "MLHUB_BEHIND_FRONT",
        "The proxy sits behind nginx, which sets the `X-Forwarded-*` headers.",
        "hub",
        "false",
        _HUB_IMAGE,
    ),
    Variable(
        "MLHUB_HUB_CONFIG",
        "Hub image: the JupyterHub config file the hub runs with.",
        "hub image",
        "/etc/mlhub/jupyterhub_config.py",
        "a path inside the hub image",
    ),
    # Kubernetes: the chart sets these
    Variable(
        "MLHUB_HUB_SERVICE_URL",
        "The chart's hub Service (`http://host:port`): in the proxy pod what nginx, the proxy and the SSH key "
        "lookup reach; in the hub pod the host the proxy reaches the cleanup service at (`MLHUB_CLEANUP_PORT`).",
        "hub, hub image",
        not_passed=_CHART,
    ),
    Variable(
        "MLHUB_CLEANUP_LISTEN",
        "IP address the cleanup service's REST API listens on (the chart's hub pod: `0.0.0.0`, for the proxy "
        "pod; the API still wants a hub token).",
        "hub, cleanup service",
        "127.0.0.1",
        _CHART,
    ),
    Variable(
        "MLHUB_PROXY_API_LISTEN",
        "Hub image: address of the proxy's API (the chart's proxy pod listens for the hub pod).",
        "hub image",
        "127.0.0.1",
        _CHART,
    ),
    Variable(
        "MLHUB_SSH_FRONT_TOKEN",
        "The SSH front's token for key lookups (32+ letters and digits); unset: generated in the data directory.",
        "hub, hub image",
        not_passed=f"{_CHART} (the hub and proxy pods share it); in one container the hub generates it",
    ),
    Variable(
        "MLHUB_SSH_HOST_KEYS_DIR",
        "Hub image: a directory of `ssh_host_*_key` files for the SSH front; unset: generated once in the data "
        "directory.",
        "hub image",
        not_passed=f"{_CHART} (a mounted Secret)",
    ),
    Variable(
        "MLHUB_CHART_VALUES",
        "Kubernetes: the chart's values file the hub reads.",
        "hub",
        "/usr/local/etc/mlhub/values.yaml",
        _CHART,
    ),
    # make run itself, on the host
    Variable(
        "MLHUB_PUBLIC_PORT",
        "`make run`: the host port on which the hub container's public port is published.",
        "make run",
        "8080",
        "read on the host only: `make run` publishes this port (`-p PORT:8080`)",
    ),
    Variable(
        "MLHUB_USER_CONFIG",
        "Your JupyterHub config file, loaded last (it wins).",
        "hub, make run",
        "/resources/jupyterhub_user_config.py",
        "a host path: `make run` mounts the file (when not empty) at `/resources/jupyterhub_user_config.py`",
    ),
    Variable(
        "MLHUB_SSL_DIR",
        "The directory holding `cert.crt` and `cert.key` for `SSL_ENABLED`.",
        "hub image, make run",
        "/resources/ssl",
        "a host path: `make run` mounts it at `/resources/ssl`",
    ),
    Variable(
        "MLHUB_USERS_DIR",
        "A directory holding `dynamic_whitelist.txt`, the allow list of `DYNAMIC_WHITELIST_ENABLED`; edits reach "
        "the hub at the next login, without a restart.",
        "make run",
        "",
        "a host path: `make run` mounts the directory read-only at `/resources/users`",
    ),
    Variable(
        "MLHUB_CERT_RELOAD_SECONDS",
        "Hub image with `SSL_ENABLED`: seconds (1-86400) between two looks at the certificate; a changed valid "
        "pair (e.g. renewed by cert-manager) is served after `nginx -s reload`, the self-signed one is renewed "
        "30 days before it expires.",
        "hub image",
        "60",
    ),
    Variable(
        "MLHUB_HUB_IMAGE",
        "The hub image that `make run` starts and `make images` builds; also the image of the hub's helper "
        "containers.",
        "make run, build scripts, Docker spawner",
        "mlhub:<version>",
        "read on the host only: inside, the hub finds its image from its own container",
    ),
    # building and testing on the host
    Variable(
        "MLHUB_STATE_DIR",
        "Developer state on the host: engine log, helm, wheel cache, `make run-dev`'s log and pid.",
        "Makefile, scripts",
        ".mlhub",
        "a host path, read by the Makefile and the scripts on the host",
    ),
    Variable(
        "MLHUB_VERSION",
        "The version label of the images `make images` builds.",
        "build scripts",
        "<version>",
        f"{_BUILD}; the hub image sets its own",
    ),
    Variable(
        "MLHUB_FORCE_BUILD",
        "`make images`: `1` rebuilds images whose content hash is unchanged.",
        "build scripts",
        not_passed=_BUILD,
    ),
    Variable(
        "MLHUB_UPSTREAM_BASE",
        "`make images`: an upstream base image (e.g. `debian:bookworm`) instead of one built offline with "
        "mmdebstrap.",
        "build scripts",
        not_passed=_BUILD,
    ),
    Variable(
        "MLHUB_GPU_STANDIN",
        "`make test`: `1` starts dockerd with a stand-in NVIDIA hook, so the engine accepts GPU requests "
        "without GPUs.",
        "ensure-docker.sh",
        not_passed=_BUILD,
    ),
)


def passthrough_names():
    """The variables ``make run`` passes into the hub container when set, in registry order."""
    return [v.name for v in VARIABLES if v.passed]


def by_name_names():
    """The passed variables whose value never goes on docker's command line (``-e NAME``)."""
    return [v.name for v in VARIABLES if v.passed and v.by_name]


def _cell(text):
    return text.replace("|", "\\|")


def markdown_table():
    """The README's table of environment variables, generated from :data:`VARIABLES`."""
    lines = ["| Variable | Default | Meaning | Passed by `make run` |", "|---|---|---|---|"]
    for v in VARIABLES:
        default = f"`{v.default}`" if v.default else "—"
        make_run = ("yes, by name only" if v.by_name else "yes") if v.passed else f"no: {v.not_passed}"
        lines.append(f"| `{v.name}` | {_cell(default)} | {_cell(v.help)} | {_cell(make_run)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """``python3 -m mlhubspawner.settings passthrough|by-name|table``: names one a line, or the table."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "passthrough": lambda: "".join(f"{n}\n" for n in passthrough_names()),
        "by-name": lambda: "".join(f"{n}\n" for n in by_name_names()),
        "table": markdown_table,
    }
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python3 -m mlhubspawner.settings {'|'.join(commands)}", file=sys.stderr)
        return 2
    sys.stdout.write(commands[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
