"""Test helpers: a real JupyterHub process running ML Hub's config, and Docker clean-up by label."""

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import requests

from mlhubspawner import __version__

REPO = Path(__file__).resolve().parent.parent
LABEL_ORIGIN = "mlhub.origin"


# the GPU stand-in's fake inventory (resources/gpu-standin): [index, uuid, name, memory MiB] per GPU
STANDIN_GPUS = [
    line.split(", ")
    for line in (REPO / "resources" / "gpu-standin" / "inventory.csv").read_text().splitlines()
    if line.strip()
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker_client():
    """A client for the engine; fails (never skips) when no engine answers."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as e:
        raise RuntimeError(
            f"No Docker engine answers ({e}). Run `make engine` (or start dockerd) and try again."
        ) from e
    return client


def helm_binary():
    """The pinned helm (``.mlhub/bin/helm``, or ``$MLHUB_HELM``), fetched by get-helm.sh when missing.

    Raises (the test fails, never skips) when there is none and it cannot be fetched.
    """
    path = Path(
        os.environ.get("MLHUB_HELM") or Path(os.environ.get("MLHUB_STATE_DIR", REPO / ".mlhub")) / "bin/helm"
    )
    if not (path.is_file() and os.access(path, os.X_OK)):
        result = subprocess.run(
            ["bash", str(REPO / "resources/scripts/get-helm.sh")], capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0 or not path.is_file():
            raise RuntimeError(
                f"no helm at {path} and get-helm.sh failed (run `make helm`):\n{result.stderr[-2000:]}"
            )
    return str(path)


def build_image(client, **kwargs):
    """``client.images.build(**kwargs)``, one build at a time with the image scripts on this machine.

    The scripts' clean-up prunes dangling images that carry ML Hub's build labels, and the
    intermediate images of a build ``FROM`` one of our images inherit them: holding the scripts'
    lock (``image-lib.sh``'s ``build_lock``) keeps one build from pruning another's.
    """
    lock = Path(os.environ.get("TMPDIR") or "/tmp") / "mlhub-build-images.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        return client.images.build(**kwargs)


def remove_by_label(client, label):
    """Remove every container, volume and network carrying ``label`` (``key=value``)."""
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()


def remove_egress_table(client, hub_name):
    """Remove the hub's nftables table (``inet mlhub-<hub>``, mlhubspawner/docker/egress.py) from the host.

    Through the hub image, as the hub loads it; a hub that never started a workspace has none.
    """
    image = os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}")
    helper = client.containers.create(
        image,
        ["delete", "table", "inet", f"mlhub-{hub_name}"],
        entrypoint="nft",
        network_mode="host",
        cap_drop=["ALL"],
        cap_add=["NET_ADMIN"],
        labels={"mlhub.test": "egress-cleanup"},
    )
    try:
        helper.start()
        helper.wait(timeout=60)  # a non-zero exit: no such table
    finally:  # with the hub image's anonymous /data volume (docker-py's remove=True keeps it)
        helper.remove(v=True, force=True)


def stop_process_group(process, timeout=30):
    """SIGTERM a process started with ``start_new_session`` and its group; SIGKILL after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def percentile(values, q):
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wait_for(predicate, timeout=60, interval=0.5):
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def write_results(results_dir, name, results):
    """Benchmarks: ``<name>-<timestamp>.json``; only a complete run replaces ``<name>-latest.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-{results['timestamp']}.json"
    text = json.dumps(results, indent=2)
    path.write_text(text)
    if results["complete"]:
        (results_dir / f"{name}-latest.json").write_text(text)
    return path


TEST_SERVICE_CONFIG = (
    "c.JupyterHub.services.append({{'name': 'tests', 'api_token': {token!r}}})\n"
    "c.JupyterHub.load_roles.append({{'name': 'tests', 'services': ['tests'], 'scopes': "
    "['admin:users', 'admin:servers', 'servers', 'list:users', 'read:users', 'admin:server_state', "
    "'admin:auth_state', 'tokens', 'access:servers', 'access:services', "
    "'custom:mlhub-cleanup:read', 'custom:mlhub-cleanup:write', 'list:services', 'read:services', "
    "'read:metrics']}})\n"
)


class Hub:
    """``jupyterhub -f jupyterhub_config.py`` in a subprocess, with its own name, ports and data."""

    verify = True  # TLS verification of requests to the hub (the hub image's self-signed front: off)

    def __init__(self, workdir, hub_name=None, user_config="", env=None):
        """``env`` adds to (a value None: removes from) the hub's environment; the admin's password is
        ``PASSWORD`` (``MLHUB_ADMIN_PASSWORD``) unless ``env`` says otherwise."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hub_name = hub_name or f"t{secrets.token_hex(3)}"
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "hub.log"
        config = self.workdir / "user_config.py"
        config.write_text(TEST_SERVICE_CONFIG.format(token=self.token) + user_config)
        self.env = dict(
            os.environ,
            HUB_NAME=self.hub_name,
            MLHUB_DATA_DIR=str(self.workdir / "data"),
            MLHUB_PORT=str(self.port),
            MLHUB_HUB_PORT=str(free_port()),
            MLHUB_PROXY_API_PORT=str(free_port()),
            MLHUB_CLEANUP_PORT=str(free_port()),
            MLHUB_USER_CONFIG=str(config),
            MLHUB_WORKSPACE_IMAGE=os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}"),
            PATH=f"{REPO / '.mlhub/node/node_modules/.bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            MLHUB_ADMIN_PASSWORD=PASSWORD,
        )
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.admin_password = self.env.get("MLHUB_ADMIN_PASSWORD", "")
        self.process = None

    def start(self, timeout=60):
        log = open(self.log_path, "a")  # noqa: SIM115 (kept open for the subprocess's lifetime)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(REPO / "jupyterhub_config.py")],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/health", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hub did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout=30):
        stop_process_group(self.process, timeout)

    def restart(self):
        self.stop()
        return self.start()

    def destroy(self, client):
        """Stop the hub and remove every container, network and volume of its name."""
        self.stop()
        remove_by_label(client, f"{LABEL_ORIGIN}={self.hub_name}")
        remove_egress_table(client, self.hub_name)

    def log_tail(self, lines=60):
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # ---- REST API -------------------------------------------------------------------------

    def api(self, method, path, token=None, **kwargs):
        headers = {"Authorization": f"token {token or self.token}"}
        kwargs.setdefault("timeout", 120)
        kwargs.setdefault("verify", self.verify)
        return requests.request(method, f"{self.url}/hub/api/{path.lstrip('/')}", headers=headers, **kwargs)

    def create_user(self, name, admin=False):
        r = self.api("POST", f"users/{name}", json={"admin": admin})
        assert r.status_code in (201, 409), r.text
        return name

    def server_path(self, user, server=""):
        return f"users/{user}/servers/{server}" if server else f"users/{user}/server"

    def spawn(self, user, server="", options=None, timeout=120):
        """Start a server and wait until the hub reports it ready; returns the response."""
        r = self.api("POST", self.server_path(user, server), json=options or {})
        if r.status_code not in (201, 202):
            return r
        self.wait_ready(user, server, timeout)
        return r

    def server_model(self, user, server=""):
        model = self.api("GET", f"users/{user}").json()
        return model.get("servers", {}).get(server)

    def wait_ready(self, user, server="", timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(user, server)
            if model and model.get("ready"):
                return model
            if model is None:
                raise AssertionError(f"server {user}/{server} failed to start:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"server {user}/{server} not ready in {timeout}s:\n{self.log_tail()}")

    def stop_server(self, user, server="", remove=False, timeout=60):
        r = self.api("DELETE", self.server_path(user, server), json={"remove": remove} if server else None)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(user, server)
            if model is None:
                return
            time.sleep(0.2)
        raise AssertionError(f"server {user}/{server} did not stop in {timeout}s")

    def get_through_proxy(self, user, server="", path="api/status", token=None):
        prefix = f"/user/{user}/{server}/" if server else f"/user/{user}/"
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.get(f"{self.url}{prefix}{path}", headers=headers, timeout=30, verify=self.verify)


def read_progress(response):
    """The messages of a spawn's progress event stream (``…/progress``), up to ready or failed."""
    messages = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            event = json.loads(line[5:])
            messages.append(event.get("message", ""))
            if event.get("ready") or event.get("failed"):
                break
    response.close()
    return messages


def base_image(client):
    """Our mmdebstrap base image (cheap containers for tests that only need labelled resources)."""
    images = client.images.list(name="mlhub-base")
    if not images:
        raise RuntimeError("no mlhub-base image: run `make images`")
    return images[0].tags[0]


def labelled_resources(client, hub_name, user, server="", extra_labels=None):
    """A running container on its own network, plus a volume, labelled like a workspace of ``user``."""
    from mlhubspawner import naming

    labels = naming.resource_labels(hub_name, user, server, component="workspace")
    labels.update(extra_labels or {})
    name = naming.workspace_name(hub_name, user, server)
    network = client.networks.create(naming.network_name(hub_name, user), labels=labels)
    volume = client.volumes.create(name, labels=labels)
    container = client.containers.run(
        base_image(client),
        ["sleep", "infinity"],
        name=name,
        labels=labels,
        network=network.name,
        volumes={volume.name: {"bind": "/workspace", "mode": "rw"}},
        detach=True,
    )
    return container, network, volume


def exists(collection, name):
    """Whether a container/network/volume of that exact name exists."""
    try:
        collection.get(name)
    except docker.errors.NotFound:
        return False
    return True


class HubContainer(Hub):
    """The hub image (``mlhub:<version>``) run like an operator would, published on a loopback port.

    The container and its data volume carry ``mlhub.test=<hub name>`` (not ``mlhub.origin``: the
    hub's own cleanup must not see them as workspaces' leftovers).
    """

    def __init__(self, client, workdir, hub_name=None, ssl=False, env=None, user_config=""):
        self.client = client
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hub_name = hub_name or f"t{secrets.token_hex(3)}"
        self.token = secrets.token_hex(16)
        self.ssl = ssl
        self.verify = False
        self.image = os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}")
        self.test_label = f"mlhub.test={self.hub_name}"
        self.volume = f"{self.hub_name}-data"
        self.user_config = self.workdir / "user_config.py"
        self.user_config.write_text(TEST_SERVICE_CONFIG.format(token=self.token) + user_config)
        self.env = {
            "HUB_NAME": self.hub_name,
            "SSL_ENABLED": "true" if ssl else "false",
            "MLHUB_ADMIN_PASSWORD": PASSWORD,
            **(env or {}),
        }
        self.env = {key: value for key, value in self.env.items() if value is not None}
        # the admins' password; without MLHUB_ADMIN_PASSWORD, read it from the log (generated_admin_password)
        self.admin_password = self.env.get("MLHUB_ADMIN_PASSWORD", "")
        self.container = None
        self.port = None
        self.url = None

    def run(self):
        """Create and start the container (data volume kept between runs); returns self."""
        labels = dict([self.test_label.split("=", 1)])
        try:
            self.client.volumes.get(self.volume)
        except docker.errors.NotFound:
            self.client.volumes.create(self.volume, labels=labels)
        self.container = self.client.containers.run(
            self.image,
            name=self.hub_name,
            detach=True,
            labels=labels,
            environment=self.env,
            # a fixed host port, as operators publish it: Docker hands out a new ephemeral port
            # when the container's gateway network changes (the hub joining its front network)
            ports={"8080/tcp": ("127.0.0.1", free_port())},
            # as run-hub.sh and the README run it: no routing between the networks it joins
            sysctls={"net.ipv4.ip_forward": "0"},
            volumes={
                "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                self.volume: {"bind": "/data", "mode": "rw"},
                str(self.user_config): {"bind": "/resources/jupyterhub_user_config.py", "mode": "ro"},
            },
        )
        self.container.reload()
        self.port = int(self.container.ports["8080/tcp"][0]["HostPort"])
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"
        return self

    def start(self, timeout=90):
        if self.container is None:
            self.run()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status == "exited":
                raise RuntimeError(f"hub container exited:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/health", timeout=2, verify=False).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"hub container did not answer within {timeout}s:\n{self.log_tail()}")

    def remove(self):
        """Remove the container (the data volume stays)."""
        if self.container is not None:
            self.container.remove(force=True)
            self.container = None

    def stop(self, timeout=30):
        self.remove()

    def exec(self, *command, user="root"):
        result = self.container.exec_run(list(command), user=user)
        return result.exit_code, result.output.decode(errors="replace")

    def log_tail(self, lines=60):
        if self.container is None:
            return ""
        return self.container.logs(tail=lines).decode(errors="replace")

    def destroy(self):
        """Remove the container, its volume and every resource of this hub."""
        self.remove()
        remove_by_label(self.client, self.test_label)
        remove_by_label(self.client, f"{LABEL_ORIGIN}={self.hub_name}")
        remove_egress_table(self.client, self.hub_name)


# ---- a browser-like session (NativeAuthenticator sign-up and login) --------------------

PASSWORD = "correct-Horse-battery-9"


class _Session(requests.Session):
    """A session whose TLS verification setting wins over REQUESTS_CA_BUNDLE in the environment."""

    def __init__(self, verify=True):
        super().__init__()
        self._verify = verify

    def request(self, *args, **kwargs):
        kwargs.setdefault("verify", self._verify)
        return super().request(*args, **kwargs)


def browser(hub):
    """A requests session that behaves like a browser (cookies + the _xsrf token)."""
    session = _Session(hub.verify)
    session.get(f"{hub.url}/hub/login", timeout=30)
    return session


def post_form(session, hub, path, data, **kwargs):
    data = dict(data, _xsrf=session.cookies.get("_xsrf"))
    return session.post(f"{hub.url}/hub/{path}", data=data, timeout=120, **kwargs)


ADMIN_NAMES = {"admin"}  # jupyterhub_config.py's c.Authenticator.admin_users


def generated_admin_password(log_text):
    """The admin password a hub generated at its first start, from its log (None if none was logged)."""
    marker = "generated admin password:"  # mlhubspawner.auth.GENERATED_MARKER
    for line in log_text.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].split()[0]
    return None


def sign_up(hub, username):
    """Sign ``username`` up with ``PASSWORD``; a session (not logged in).

    Admin names cannot sign up (their accounts are made at hub start): for those this logs in with the
    hub's admin password instead and returns that session.
    """
    if username in ADMIN_NAMES:
        session, r = log_in(hub, username)
        assert r.status_code == 302, r.text
        return session
    session = browser(hub)
    fields = {"username": username, "signup_password": PASSWORD, "signup_password_confirmation": PASSWORD}
    r = post_form(session, hub, "signup", fields)
    assert r.status_code == 200, r.text
    return session


def log_in(hub, username, password=None):
    """Log in like a browser; ``password`` defaults to the hub's admin password for admin names, else
    ``PASSWORD``. Returns (session, response of the login POST)."""
    if password is None:
        admin_password = getattr(hub, "admin_password", "") or PASSWORD
        password = admin_password if username in ADMIN_NAMES else PASSWORD
    session = browser(hub)
    r = post_form(session, hub, "login", {"username": username, "password": password}, allow_redirects=False)
    return session, r
