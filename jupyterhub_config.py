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

from mlhubspawner.settings import SettingsError, load_settings

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

try:
    settings = load_settings()
except SettingsError as e:
    sys.exit(f"ML Hub cannot start: {e}")
if settings.execution_mode != "docker":
    sys.exit("ML Hub cannot start: EXECUTION_MODE=k8s needs the Kubernetes backend, not built yet")

data_dir = Path(settings.data_dir)
data_dir.mkdir(parents=True, exist_ok=True)

# --- hub, proxy and database -------------------------------------------------------------
c.JupyterHub.ip = settings.ip
c.JupyterHub.port = settings.port
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
    # the hub runs in a container on every user network, reachable by name
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{settings.hub_port}"
    c.JupyterHub.hub_connect_url = f"http://{settings.hub_address}:{settings.hub_port}"

# --- authentication ------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "mlhubspawner.auth.NativeAuthenticator"
c.Authenticator.admin_users = {"admin"}
# NativeAuthenticator's admin authorization decides who may log in
c.Authenticator.allow_all = True
c.JupyterHub.template_paths = [os.path.join(os.path.dirname(nativeauthenticator.__file__), "templates")]

# --- workspaces ----------------------------------------------------------------------------
c.JupyterHub.spawner_class = "mlhub-docker"
c.MLHubDockerSpawner.hub_name = settings.hub_name
c.MLHubDockerSpawner.image = settings.workspace_image
c.MLHubDockerSpawner.http_timeout = 120
c.MLHubDockerSpawner.start_timeout = 300

# --- the operator's overrides, last -------------------------------------------------------
if os.path.exists(settings.user_config):
    load_subconfig(settings.user_config)  # noqa: F821 (provided by JupyterHub)
