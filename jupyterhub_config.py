"""ML Hub's JupyterHub configuration: maps environment variables onto traits.

Sensible defaults live in the spawner's traits; this file only wires the deployment
(see ``mlhubspawner/settings.py`` for every variable). The operator's own config,
``$MLHUB_USER_CONFIG`` (default ``/resources/jupyterhub_user_config.py``), is loaded last so
that it always wins.
"""

import os
import sys
from pathlib import Path

import nativeauthenticator
from jupyterhub.roles import get_default_roles

from mlhubspawner import (
    base_url,
    chart_values,
    config_precedence,
    gpus_api,
    lifetime_api,
    sshkeys,
    sshkeys_api,
    ui,
    update_api,
)
from mlhubspawner._version import __version__
from mlhubspawner.auth import ALLOW_LIST_FILE
from mlhubspawner.docker.spawner import discover_gpus_at_hub_start
from mlhubspawner.settings import SettingsError, load_settings
from mlhubspawner.spawner_base import check_spawner_config
from mlhubspawner.sshkeys_store import SSHKeyStore, read_or_create_token

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

try:
    settings = load_settings()
except SettingsError as e:
    sys.exit(f"ML Hub cannot start: {e}")

data_dir = Path(settings.data_dir)
data_dir.mkdir(parents=True, exist_ok=True)

# --- hub, proxy and database -------------------------------------------------------------
c.JupyterHub.ip = settings.ip
c.JupyterHub.port = settings.port
# MLHUB_BASE_URL (the chart's hub.baseUrl); the user config may change it (checked at the end)
c.JupyterHub.base_url = settings.base_url
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
c.JupyterHub.allow_named_servers = True
c.JupyterHub.redirect_to_server = False
# workspaces outlive the hub process: a restarted hub finds them running
c.JupyterHub.cleanup_servers = False

if settings.hub_address == "gateway":
    # the hub runs on the Docker host: workspaces reach it through their network's gateway
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{settings.hub_port}"
    c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{settings.hub_port}"
    c.MLHubDockerSpawner.connect_hub_via_gateway = True
else:
    # the hub runs in a container on every user network: workspaces reach it by name (the hub
    # image); the proxy and the services beside it in the container use loopback
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{settings.hub_port}"
    if settings.hub_container:
        c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{settings.hub_port}"
        c.MLHubDockerSpawner.hub_container = settings.hub_container
    else:
        c.JupyterHub.hub_connect_url = f"http://{settings.hub_address}:{settings.hub_port}"
if settings.behind_front:
    # nginx in front sets X-Forwarded-Proto/For/Host: the proxy passes them on untouched
    c.ConfigurableHTTPProxy.command = ["configurable-http-proxy", "--no-x-forward"]
if settings.start_chp:
    # the proxy is its own process (START_CHP), sharing CONFIGPROXY_AUTH_TOKEN with the hub; a
    # restarted proxy gets its routes back at the next activity check
    c.ConfigurableHTTPProxy.should_start = False
    c.JupyterHub.last_activity_interval = 60

# --- authentication ------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "mlhubspawner.auth.NativeAuthenticator"
c.Authenticator.admin_users = {"admin"}
# NativeAuthenticator's admin authorization decides who may log in
c.Authenticator.allow_all = True
if settings.dynamic_whitelist_enabled:
    # ... and, with DYNAMIC_WHITELIST_ENABLED, the allow-list file too, read again at each login after a change;
    # missing or unreadable: only the admins (mlhubspawner/auth.py, check_allowed)
    c.NativeAuthenticator.allowed_users_file = ALLOW_LIST_FILE
    c.NativeAuthenticator.allow_all = False
# admin accounts are made at start (never signed up): MLHUB_ADMIN_PASSWORD, else a password generated at the
# first start, kept in the data dir (0600) and logged once; lockout, password rules and username_pattern
# are our subclass's defaults (mlhubspawner/auth.py). Child processes (the proxy) do not inherit the password.
c.NativeAuthenticator.admin_password = settings.admin_password
c.NativeAuthenticator.admin_password_file = str(data_dir / "admin-password")
os.environ.pop("MLHUB_ADMIN_PASSWORD", None)
# --- pages: ML Hub's templates first (they extend JupyterHub's as "templates/page.html"), then
# NativeAuthenticator's (sign-up, authorize, change password; they extend our page.html)
c.JupyterHub.template_paths = [
    ui.TEMPLATES_DIR,
    os.path.join(os.path.dirname(nativeauthenticator.__file__), "templates"),
]
c.JupyterHub.template_vars = {
    "mlhub_version": __version__,
    "mlhub_ui": ui.TemplateHelpers(),
    # the admin page links to the cleanup service's reports only when it runs
    "mlhub_cleanup_service": settings.cleanup_service_enabled,
}
c.JupyterHub.logo_file = ui.LOGO_FILE

# --- workspaces ----------------------------------------------------------------------------
c.JupyterHub.spawner_class = "mlhub-docker"
c.MLHubDockerSpawner.hub_name = settings.hub_name
# the default image (MLHUB_WORKSPACE_IMAGE) and the waits (120 s to answer, 300 s to start) are the spawner's
# trait defaults: an operator's c.Spawner / c.DockerSpawner values win (ML Hub's section would override them)
# the flavors (minimal, ml, gpu) or other images the form offers after the default (MLHUB_WORKSPACE_IMAGES;
# make run: the flavors built on this engine)
if settings.workspace_images:
    c.MLHubDockerSpawner.workspace_images = [image for _, image in settings.workspace_images]
    # the form shows a name=image entry's name ("ml (mlhub-workspace-ml:0.1.0)")
    c.WorkspacePolicy.image_display_names = {
        image: name for name, image in settings.workspace_images if name != image
    }
# closed egress: no host services but the hub API, no link-local/metadata, private ranges only if allowed
c.MLHubDockerSpawner.egress_firewall = settings.egress_firewall
c.MLHubDockerSpawner.egress_allow_private = settings.egress_allow_private
# shared-host defaults (raise them in the user config): a workspace without limits in its options
# gets 2 CPUs and 4G (lowered to max_cpu_limit/max_mem_limit and the engine's size), and a user
# keeps at most 5 named servers (JupyterHub refuses the 6th: "already has the maximum of 5 named
# servers"). Docker workspaces also get pids_limit, no-new-privileges and cap_drop (the spawner's traits).
c.WorkspacePolicy.default_cpu_limit = 2.0
c.WorkspacePolicy.default_mem_limit = "4G"
c.JupyterHub.named_server_limit_per_user = 5

# the lifetime API (/hub/api/mlhub/...): only the hub can change a server's expiration;
# the SSH keys API: users' public keys, the SSH front's key lookups, ssh config blocks
# the SSH front's public port (the chart: its Service's SSH port); the host is the request's
try:
    ssh_public_port = sshkeys.parse_public_port(os.environ["MLHUB_SSH_PUBLIC_PORT"])
except KeyError:
    ssh_public_port = None  # the Host header's port, else 8080
except ValueError as e:
    sys.exit(f"ML Hub cannot start: MLHUB_SSH_PUBLIC_PORT: {e}")
try:
    ssh_public_host = sshkeys.parse_public_host(
        os.environ["MLHUB_SSH_PUBLIC_HOST"], default_port=ssh_public_port or 8080
    )
except KeyError:
    ssh_public_host = None  # the Host header of each request
except ValueError as e:
    sys.exit(f"ML Hub cannot start: MLHUB_SSH_PUBLIC_HOST: {e}")
ssh_key_store = SSHKeyStore(data_dir / "ssh-keys.sqlite")
c.JupyterHub.extra_handlers = lifetime_api.handlers + sshkeys_api.make_handlers(
    ssh_key_store, ssh_public_host, public_port=ssh_public_port
)
# the pages: /hub/mlhub/admin, /hub/mlhub/ssh-keys, /hub/mlhub/static/...
c.JupyterHub.extra_handlers += ui.make_handlers(ssh_key_store) + update_api.handlers + gpus_api.handlers

# --- services: cleanup (expired and orphaned workspaces) and idle culling -----------------
# Add services of your own with c.JupyterHub.services.append(...) and c.JupyterHub.load_roles.append(...):
# assigning a new list would drop these.
c.JupyterHub.custom_scopes = {
    "custom:mlhub-cleanup:read": {"description": "Read the cleanup service's status and dry-run reports."},
    "custom:mlhub-cleanup:write": {
        "description": "Run cleanup sweeps that remove workspaces and their data."
    },
    sshkeys_api.READ: {"description": "List a user's SSH public keys."},
    sshkeys_api.WRITE: {"description": "Add and delete a user's SSH public keys."},
    sshkeys_api.LOOKUP: {
        "description": "Find the owner of an SSH key and the running workspaces it may forward to."
    },
}
c.JupyterHub.services = []
c.JupyterHub.load_roles = []
# IS_CLEANUP_SERVICE_ENABLED=false: no cleanup service at all (no process, no route); its scopes stay defined
# for roles that name them. Nothing then removes expired workspaces or deleted users' leftovers.
if settings.cleanup_service_enabled:
    c.JupyterHub.services.append(
        {
            "name": "cleanup-service",
            "url": f"http://127.0.0.1:{settings.cleanup_port}",
            "command": [sys.executable, "-m", "cleanup_service"],
            "environment": {
                "HUB_NAME": settings.hub_name,
                "EXECUTION_MODE": settings.execution_mode,
                "CLEANUP_INTERVAL_SECONDS": str(settings.cleanup_interval_seconds),
                "CLEANUP_MIN_AGE_SECONDS": str(settings.cleanup_min_age_seconds),
                "CLEANUP_VOLUME_GRACE_SECONDS": str(settings.cleanup_volume_grace_seconds),
                "MLHUB_DATA_DIR": str(data_dir),
                "MLHUB_HUB_CONTAINER": settings.hub_container,
                # its REST API's address: loopback, unless the chart's proxy pod must reach it (k8s section)
                "MLHUB_CLEANUP_LISTEN": os.environ.get("MLHUB_CLEANUP_LISTEN", "127.0.0.1"),
                # how to reach the engine or the cluster (JupyterHub passes services no other variables)
                **{
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith(("DOCKER_", "KUBERNETES_")) or k in ("KUBECONFIG", "POD_NAMESPACE")
                },
            },
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "cleanup-service",
            "description": "List users and servers, read expirations, stop and delete servers.",
            # least privilege: no `servers` (it never starts a server nor reaches one)
            "scopes": [
                "list:users",
                "read:users:name",
                "read:servers",
                "admin:server_state",
                "delete:servers",
            ],
            "services": ["cleanup-service"],
        }
    )
# the SSH front's AuthorizedKeysCommand: a service with a token (in the data dir) and no process
c.JupyterHub.services.append(
    {
        "name": "ssh-front",
        # the chart hands the same token to the proxy pod's sshd through MLHUB_SSH_FRONT_TOKEN
        "api_token": settings.ssh_front_token or read_or_create_token(data_dir / "ssh-front.token"),
    }
)
default_scopes = {role["name"]: role["scopes"] for role in get_default_roles()}
c.JupyterHub.load_roles += [
    {
        "name": "ssh-front",
        "description": "Find the owner of an SSH key and their running workspaces.",
        "scopes": [sshkeys_api.LOOKUP],
        "services": ["ssh-front"],
    },
    # JupyterHub's user and server roles plus SSH keys: every user manages their own keys,
    # a workspace's token reads its owner's (for the workspace's sshd); admins have admin:users
    {
        "name": "user",
        "scopes": [*default_scopes["user"], f"{sshkeys_api.READ}!user", f"{sshkeys_api.WRITE}!user"],
    },
    {"name": "server", "scopes": [*default_scopes["server"], f"{sshkeys_api.READ}!user"]},
]
if settings.idle_timeout_seconds:
    c.JupyterHub.services.append(
        {
            "name": "idle-culler",
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={settings.idle_timeout_seconds}",
            ],
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "idle-culler",
            "description": "Stop servers idle for longer than MLHUB_IDLE_TIMEOUT_SECONDS.",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )

# --- Kubernetes (EXECUTION_MODE=k8s): the helm chart's values -------------------------------
# The chart mounts its values in the hub pod ($MLHUB_CHART_VALUES): they set the spawner, the database, the
# proxy in its own pod and the hub's Service address (mlhubspawner/chart_values.py).
# The chart's singleuser values go to c.MLHubKubernetesSpawner; after the user config, those an operator sets in
# c.KubeSpawner / c.Spawner (userConfig or hub.config) yield to the operator's (mlhubspawner/config_precedence.py).
chart_spawner_values = {}
if settings.execution_mode == "k8s":
    from mlhubspawner.kubernetes import MLHubKubernetesSpawner

    c.JupyterHub.spawner_class = "mlhub-kubernetes"
    spawner_parents = MLHubKubernetesSpawner.section_names()[:-1]
    ml_hub_parent_values = config_precedence.section_values(c, spawner_parents)
    try:
        values = chart_values.load()
        if values is not None:
            chart_values.apply_chart_values(c, values, data_dir=str(data_dir))
            hub_config_own = (chart_values.get_value("hub.config", {}, values) or {}).get(
                chart_values.SPAWNER
            ) or {}
            chart_spawner_values = {
                trait: c[chart_values.SPAWNER][trait]
                for trait in chart_values.spawner_settings(values)
                if trait in c[chart_values.SPAWNER] and trait not in hub_config_own
            }
    except chart_values.ChartValuesError as e:
        sys.exit(f"ML Hub cannot start: {e}")
    if settings.hub_service_url:
        # the proxy runs in its own pod: it routes /services/cleanup-service/ to the hub's Service (the chart
        # opens the port there, and the service listens on the pod's addresses: MLHUB_CLEANUP_LISTEN)
        for service in c.JupyterHub.services:
            if service["name"] == "cleanup-service":
                service["url"] = chart_values.service_url_beside_hub(
                    settings.hub_service_url, settings.cleanup_port
                )

# --- the operator's overrides, last -------------------------------------------------------
if os.path.exists(settings.user_config):
    load_subconfig(settings.user_config)  # noqa: F821 (provided by JupyterHub)
if chart_spawner_values:
    config_precedence.yield_to_operator(
        c, chart_values.SPAWNER, chart_spawner_values, spawner_parents, ml_hub_parent_values
    )

# --- the base URL the hub runs with, checked and told to the front beside it (mlhubspawner/base_url.py)
try:
    base_url.publish(base_url.effective(c, settings.base_url, settings.execution_mode))
except base_url.BaseURLError as e:
    sys.exit(f"ML Hub cannot start: {e}")

# --- the spawner's settings (profiles, option defaults, images): a refused one stops the hub, naming it
check_spawner_config(c)

# --- the cleanup service follows the workspaces into users' namespaces (KubeSpawner's enable_user_namespaces)
if settings.execution_mode == "k8s" and any(
    c[section].get("enable_user_namespaces") for section in ("KubeSpawner", "MLHubKubernetesSpawner")
):
    for service in c.JupyterHub.services:
        if service["name"] == "cleanup-service":
            service["command"] = [*service["command"], "--CleanupService.user_namespaces=True"]

# --- GPUs: the engine is asked once at start, in the background (the log says what it found) -----
discover_gpus_at_hub_start(c)
