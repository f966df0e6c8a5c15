"""The hub image under a base URL, as operators run it: one hub container with ``MLHUB_BASE_URL=/ml/``, and one
started by ``make run`` (run-hub.sh) with TLS whose base URL comes only from the operator's config
(``c.JupyterHub.base_url = "/team/ml/"``). Through the front (nginx, sslh, sshd): the hub, the workspaces, the
cleanup service and SSH with the generated config work under the base URL; the old paths answer 404; the
image's HEALTHCHECK and run-hub.sh's readiness wait follow the base URL the hub runs with; bad values stop it."""

import os
import secrets
import shutil
import subprocess

import pytest
import requests
from test_hub_image import new_key, register_key, ssh, ssh_setup

from mlhubspawner import __version__

from support import (
    LABEL_ORIGIN,
    PASSWORD,
    REPO,
    HubContainer,
    free_port,
    log_in,
    wait_for,
)

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

RUN_HUB = REPO / "resources" / "scripts" / "run-hub.sh"
# run-hub.sh's `docker run` gets the tests' label (its container is not a HubContainer's)
DOCKER_SHIM = """#!/bin/sh
if [ "$1" = run ]; then shift; exec {docker} run --label "{label}" "$@"; fi
exec {docker} "$@"
"""


def under(hub, base):
    """Point the helpers (``f"{url}/hub/..."``) at the base URL; ``root`` keeps the bare public URL."""
    hub.root = hub.url
    hub.url = hub.root + base.rstrip("/")
    hub.base = base
    return hub


@pytest.fixture(scope="module")
def env_front(docker, tmp_path_factory):
    env = {"MLHUB_BASE_URL": "/ml/", "CLEANUP_INTERVAL_SECONDS": "-1"}
    hub = HubContainer(docker, tmp_path_factory.mktemp("env-base-url"), env=env)
    try:
        hub.run()
        yield under(hub, "/ml/").start()
    finally:
        hub.destroy()


@pytest.fixture(scope="module")
def script_front(docker, tmp_path_factory):
    """``make run``: run-hub.sh start, TLS, the base URL in the operator's config file only."""
    workdir = tmp_path_factory.mktemp("script-base-url")
    hub = HubContainer(docker, workdir, ssl=True, user_config="c.JupyterHub.base_url = '/team/ml/'\n")
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER_SHIM.format(docker=shutil.which("docker"), label=hub.test_label))
    (bin_dir / "docker").chmod(0o755)
    docker.volumes.create(hub.volume, labels=dict([hub.test_label.split("=", 1)]))
    port = free_port()
    hub.script_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(workdir),
        "HUB_NAME": hub.hub_name,
        "SSL_ENABLED": "true",
        "MLHUB_PUBLIC_PORT": str(port),
        "MLHUB_USER_CONFIG": str(hub.user_config),
        "MLHUB_ADMIN_PASSWORD": PASSWORD,
        "MLHUB_HUB_IMAGE": hub.image,
        "MLHUB_WORKSPACE_IMAGE": os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}"),
        "MLHUB_WORKSPACE_IMAGES": "",
        "CLEANUP_INTERVAL_SECONDS": "-1",
    }
    try:
        hub.started = subprocess.run(
            ["bash", str(RUN_HUB), "start"], env=hub.script_env, capture_output=True, text=True, timeout=300
        )
        hub.container = docker.containers.get(hub.hub_name)
        hub.port, hub.url = port, f"https://127.0.0.1:{port}"
        yield under(hub, "/team/ml/")
    finally:
        subprocess.run(["bash", str(RUN_HUB), "stop"], env=hub.script_env, capture_output=True, timeout=120)
        hub.container = None
        hub.destroy()


@pytest.fixture(params=["env", "script"])
def front(request):
    return request.getfixturevalue(f"{request.param}_front")


def test_make_run_waits_for_the_base_url_of_the_operators_config(script_front):
    started = script_front.started
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"ML Hub is up on https://localhost:{script_front.port}/team/ml/ " in started.stdout, (
        started.stdout
    )
    assert f"Log in at https://localhost:{script_front.port}/team/ml/hub/login as 'admin'" in started.stdout
    r = requests.get(f"{script_front.url}/hub/health", timeout=10, verify=False)
    assert r.status_code == 200
    # a second `make run` finds it running, and says where
    again = subprocess.run(
        ["bash", str(RUN_HUB), "start"],
        env=script_front.script_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and f"localhost:{script_front.port}/team/ml/" in again.stdout, again.stdout


def test_the_front_is_told_the_hubs_base_url_and_the_healthcheck_follows_it(front):
    assert front.exec("cat", "/run/mlhub/base-url")[1].strip() == front.base
    test = front.container.attrs["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    assert wait_for(lambda: front.exec(*test[1:])[0] == 0, timeout=30), front.exec(*test[1:])
    # Docker's own verdict (the first check runs after the 30 s interval)
    assert wait_for(
        lambda: front.container.reload() or front.container.attrs["State"]["Health"]["Status"] == "healthy",
        timeout=90,
        interval=2,
    ), front.container.attrs["State"]["Health"]


def test_login_workspace_and_cleanup_under_the_base_url_and_nothing_at_the_old_paths(front):
    session, r = log_in(front, "admin")
    assert r.status_code == 302 and r.headers["Location"].startswith(front.base), r.headers
    home = session.get(f"{front.url}/hub/home", timeout=30)
    assert home.status_code == 200 and f'base_url: "{front.base}hub/"' in home.text
    user = front.create_user("wendy")
    assert front.spawn(user).status_code in (201, 202)
    assert front.get_through_proxy(user).status_code == 200
    headers = {"Authorization": f"token {front.token}"}
    cleanup = requests.get(
        f"{front.url}/services/cleanup-service/", headers=headers, timeout=60, verify=False
    )
    assert cleanup.status_code == 200, cleanup.text
    for path in ("/hub/health", "/hub/api/users", f"/user/{user}/api/status", "/services/cleanup-service/"):
        old = requests.get(
            f"{front.root}{path}", headers=headers, timeout=30, verify=False, allow_redirects=False
        )
        assert old.status_code == 404, (path, old.status_code, old.text[:300])
        assert user not in old.text
    front.stop_server(user)


def test_ssh_through_the_front_with_the_generated_config(front, tmp_path):
    """The front's key lookup asks the hub under its base URL (for the script's hub: the one it published)."""
    owner, other = front.create_user("sshann"), front.create_user("sshbob")
    owner_key, _ = new_key(tmp_path, "sshann")
    other_key, _ = new_key(tmp_path, "sshbob")
    register_key(front, owner, owner_key)
    register_key(front, other, other_key)
    for user in (owner, other):
        assert front.spawn(user, "work").status_code in (201, 202)
    config, model = ssh_setup(front, tmp_path, owner, owner_key, "work")
    assert f"ProxyJump tunnel@127.0.0.1:{front.port}" in model["config"]
    done = ssh(config, model["host_alias"], "id -un; echo $JUPYTERHUB_SERVICE_PREFIX")
    assert done.returncode == 0, done.stderr + front.log_tail(40)
    assert done.stdout.split() == ["jovyan", f"{front.base}user/{owner}/work/"]
    # another user's key opens the front but not this workspace
    intruder, _ = ssh_setup(front, tmp_path, owner, other_key, "work")
    refused = ssh(intruder, model["host_alias"])
    assert refused.returncode != 0
    assert "forwarding failed" in refused.stderr or "prohibited" in refused.stderr, refused.stderr
    for user in (owner, other):
        front.stop_server(user, "work", remove=True)


# ---- bad values --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["/ml", "/../", "/a b/"])
def test_a_bad_base_url_variable_stops_the_container_naming_it(docker, value):
    container = docker.containers.run(
        os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}"),
        detach=True,
        environment={"MLHUB_BASE_URL": value},
        labels={"mlhub.test": "bad-base-url"},
    )
    try:
        status = container.wait(timeout=60)
        output = container.logs().decode()
    finally:
        container.remove(force=True, v=True)  # and its anonymous /data volume
    assert status["StatusCode"] != 0
    assert f"MLHUB_BASE_URL={value!r}" in output, output


def test_a_bad_base_url_in_the_operators_config_keeps_the_hub_down_naming_it(docker, tmp_path):
    hub_name = f"t{secrets.token_hex(3)}"
    hub = HubContainer(docker, tmp_path, hub_name=hub_name, user_config="c.JupyterHub.base_url = 'ml/'\n")
    try:
        hub.run()
        message = "ML Hub cannot start: c.JupyterHub.base_url='ml/' must start and end with '/'"
        assert wait_for(lambda: message in hub.log_tail(200), timeout=90), hub.log_tail(60)
        for path in ("/hub/health", "/ml/hub/health"):
            r = requests.get(f"{hub.url}{path}", timeout=10)
            assert r.status_code != 200, path
    finally:
        hub.destroy()
    assert not docker.containers.list(all=True, filters={"label": f"{LABEL_ORIGIN}={hub_name}"})
