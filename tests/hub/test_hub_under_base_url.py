"""A real hub whose operator config sets ``c.JupyterHub.base_url = "/ml/"``: login, the pages' links, a
workspace spawned and opened through the proxy, the cleanup service and the SSH config API all live under
``/ml/``; the old ``/hub/``, ``/user/`` and ``/services/`` paths expose nothing. ``make run-dev``'s readiness
wait follows the base URL the hub logs."""

import re
import subprocess
from urllib.parse import urlsplit

import pytest
import requests

from support import REPO, Hub, generated_admin_password, log_in, post_form, sign_up

BASE = "/ml/"
CONFIG = f"c.JupyterHub.base_url = {BASE!r}\nc.MLHubDockerSpawner.max_servers_per_user = 2\n"
# every attribute of the pages that holds a URL path of ours
URL_ATTRIBUTE = re.compile(r'\s(?:href|src|action|data-[a-z-]+)="(/[^"]*)"')


@pytest.fixture(scope="module")
def ml_hub(docker, tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("base-url-hub"), user_config=CONFIG)
    hub.root = hub.url
    hub.url = hub.root + BASE.rstrip("/")  # the helpers' f"{url}/hub/..." become /ml/hub/...
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


@pytest.fixture(scope="module")
def admin(ml_hub):
    session, r = log_in(ml_hub, "admin")
    assert r.status_code == 302, r.text
    assert r.headers["Location"].startswith(f"{BASE}hub/"), r.headers["Location"]
    return session


def own_paths(html):
    """The URL paths a page links to, loads or posts to (absolute paths only: ours)."""
    return [p for p in URL_ATTRIBUTE.findall(html) if not p.startswith("//")]


def test_health_and_api_answer_under_the_base_url(ml_hub):
    assert requests.get(f"{ml_hub.root}{BASE}hub/health", timeout=10).status_code == 200
    info = ml_hub.api("GET", "")
    assert info.status_code == 200 and "version" in info.json()
    # the hub's own log says where it runs
    assert f"JupyterHub is now running at http://:{ml_hub.port}{BASE}" in ml_hub.log_tail(400)


def test_old_paths_expose_nothing(ml_hub):
    user = ml_hub.create_user("oldpaths")
    assert ml_hub.spawn(user).status_code in (201, 202)
    token = {"Authorization": f"token {ml_hub.token}"}  # a token that may do everything under /ml/
    for path in (
        "/hub/health",
        "/hub/login",
        "/hub/home",
        "/hub/api/",
        "/hub/api/users",
        f"/hub/api/users/{user}",
        f"/user/{user}/api/status",
        f"/user/{user}/lab",
        "/services/cleanup-service/",
        "/services/cleanup-service/users",
        "/ml/../hub/api/users",  # normalised by the client to /hub/api/users
        "/",
    ):
        r = requests.get(f"{ml_hub.root}{path}", headers=token, timeout=30, allow_redirects=False)
        assert r.status_code == 404, (path, r.status_code, r.text[:300])
        assert user not in r.text and '"version"' not in r.text, path
    # and a POST to the old API creates nothing
    r = requests.post(f"{ml_hub.root}/hub/api/users/intruder", headers=token, timeout=30)
    assert r.status_code == 404
    assert ml_hub.api("GET", "users/intruder").status_code == 404
    ml_hub.stop_server(user)


def test_login_and_every_link_of_the_pages_stay_under_the_base_url(ml_hub, admin):
    assert ml_hub.spawn("admin", "links").status_code in (201, 202)
    pages = {}
    for page in ("home", "mlhub/ssh-keys", "mlhub/admin", "spawn/admin/formpage", "token"):
        r = admin.get(f"{ml_hub.url}/hub/{page}", timeout=60)
        assert r.status_code == 200, (page, r.text[:500])
        pages[page] = r.text
        paths = own_paths(r.text)
        assert paths, page
        outside = [p for p in paths if not p.startswith(BASE)]
        assert not outside, (page, outside)
        # the page's scripts get the prefixes (mlhub.js builds its spawn and API URLs from them)
        assert f'base_url: "{BASE}hub/"' in r.text or f"base_url: '{BASE}hub/'" in r.text, page
    home = own_paths(pages["home"])
    assert f"{BASE}user/admin/links/" in home  # the running workspace's link
    assert f"{BASE}hub/spawn/admin/" in home  # "Create workspace"
    assert f"{BASE}hub/mlhub/static/mlhub.js" in home
    assert f"{BASE}services/cleanup-service/users" in own_paths(pages["mlhub/admin"])
    # the static files the pages load are served there
    for path in (p for p in home if "/static/" in p):
        assert admin.get(f"{ml_hub.root}{path}", timeout=30).status_code == 200, path
    ml_hub.stop_server("admin", "links", remove=True)


def test_a_workspace_opens_through_the_proxy_under_the_base_url_for_its_owner_only(ml_hub, admin, docker):
    sign_up(ml_hub, "ann")
    sign_up(ml_hub, "bob")
    for name in ("ann", "bob"):
        assert admin.get(f"{ml_hub.url}/hub/authorize/{name}", timeout=30).status_code == 200
    ann, r = log_in(ml_hub, "ann")
    assert r.status_code == 302 and r.headers["Location"].startswith(BASE), r.headers
    # the options form, posted as a browser does, starts the workspace
    r = post_form(ann, ml_hub, "spawn/ann/work", {"mem_limit": "512M", "is_mount_volume": "on"})
    assert r.status_code == 200, r.text[:500]
    ml_hub.wait_ready("ann", "work")
    container = docker.containers.get(f"{ml_hub.hub_name}-ws-ann--work")
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"{BASE}user/ann/work/"
    assert urlsplit(env["JUPYTERHUB_API_URL"]).path == f"{BASE}hub/api"

    # the owner's browser: the hub's OAuth round trip ends in JupyterLab under /ml/user/ann/work/
    lab = ann.get(f"{ml_hub.root}{BASE}user/ann/work/lab", timeout=60)
    assert lab.status_code == 200, lab.text[:500]
    assert urlsplit(lab.url).path == f"{BASE}user/ann/work/lab"
    assert all(urlsplit(h.headers.get("Location", "/ml/")).path.startswith(BASE) for h in lab.history)
    status = ann.get(f"{ml_hub.root}{BASE}user/ann/work/api/status", timeout=30)
    assert status.status_code == 200 and "started" in status.json()
    assert ml_hub.get_through_proxy("ann", "work").status_code == 200

    # another user's browser and the anonymous are kept out
    bob, r = log_in(ml_hub, "bob")
    assert r.status_code == 302
    denied = bob.get(f"{ml_hub.root}{BASE}user/ann/work/api/status", timeout=60)
    assert denied.status_code in (403, 404) or urlsplit(denied.url).path.startswith(f"{BASE}hub/"), denied.url
    assert "started" not in denied.text
    anonymous = requests.get(
        f"{ml_hub.root}{BASE}user/ann/work/api/status", timeout=30, allow_redirects=False
    )
    assert anonymous.status_code in (302, 401, 403)
    if anonymous.status_code == 302:
        assert anonymous.headers["Location"].startswith(f"{BASE}hub/"), anonymous.headers

    # the SSH config the home page offers is served under /ml/ too
    r = ml_hub.api("GET", "mlhub/users/ann/servers/work/ssh-config")
    assert r.status_code == 200 and "ProxyJump tunnel@" in r.json()["config"], r.text
    ml_hub.stop_server("ann", "work", remove=True)


def test_the_cleanup_service_answers_under_the_base_url(ml_hub):
    headers = {"Authorization": f"token {ml_hub.token}"}
    status = requests.get(f"{ml_hub.root}{BASE}services/cleanup-service/", headers=headers, timeout=60)
    assert status.status_code == 200, status.text
    report = requests.get(f"{ml_hub.root}{BASE}services/cleanup-service/users", headers=headers, timeout=120)
    assert report.status_code == 200 and report.json().get("failed", 0) == 0, report.text
    anonymous = requests.get(f"{ml_hub.root}{BASE}services/cleanup-service/users", timeout=60)
    assert anonymous.status_code in (401, 403)


def test_make_run_dev_waits_for_the_logged_base_url(docker, tmp_path):
    """``run-hub-process.sh start`` (make run-dev) with the base URL in the operator's config only, at the first
    start (the admin's password generated, logged once with where to change it)."""
    hub = Hub(
        tmp_path / "hub",
        user_config="c.JupyterHub.base_url = '/dev/ml/'\n",
        env={"MLHUB_ADMIN_PASSWORD": None},
    )
    script = REPO / "resources" / "scripts" / "run-hub-process.sh"
    env = {**hub.env, "MLHUB_STATE_DIR": str(tmp_path / "state")}
    try:
        started = subprocess.run(
            ["bash", str(script), "start"], env=env, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"ML Hub is up on http://localhost:{hub.port}/dev/ml/" in started.stdout
        assert f"log in at http://localhost:{hub.port}/dev/ml/hub/login as 'admin'" in started.stdout
        log = (tmp_path / "state" / "hub.log").read_text()
        password = generated_admin_password(log)
        assert password and f"generated password: {password}" in started.stdout, started.stdout
        assert "change it at /dev/ml/hub/change-password" in log
        hub.url, hub.admin_password = f"{hub.url}/dev/ml", password
        session, r = log_in(hub, "admin")
        assert r.status_code == 302 and r.headers["Location"].startswith("/dev/ml/hub/"), r.headers
    finally:
        stopped = subprocess.run(
            ["bash", str(script), "stop"], env=env, capture_output=True, text=True, timeout=60
        )
        hub.destroy(docker)
    assert stopped.returncode == 0, stopped.stderr
