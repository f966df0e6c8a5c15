"""JupyterHub's base_url (mlhubspawner/base_url.py): bad prefixes stop the hub naming the setting, the hub's
final value (its config wins over MLHUB_BASE_URL) reaches the front through the published file: the SSH key
lookup, the HEALTHCHECK and configurable-http-proxy's error page all follow it."""

import http.server
import importlib.machinery
import importlib.util
import json
import os
import pwd
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from traitlets.config import Config

from mlhubspawner import base_url as B
from mlhubspawner.front import entrypoint, health
from mlhubspawner.front import layout as L
from mlhubspawner.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]

GOOD = ["/", "/ml/", "/team-a/ml.v2/", "/~x/y_z/"]
# (value, what the message says)
BAD = [
    ("", "must start and end with '/'"),
    ("ml/", "must start and end with '/'"),
    ("/ml", "must start and end with '/'"),
    ("ml", "must start and end with '/'"),
    ("//", "empty segment"),
    ("/ml//x/", "empty segment"),
    ("/../", "'.' or '..'"),
    ("/ml/../admin/", "'.' or '..'"),
    ("/./", "'.' or '..'"),
    ("/ml x/", "no spaces"),
    ("/ml%2F/", "no spaces, %"),
    ("/ml?x=1/", "no spaces, %, ?"),
    ("/ml#/", "no spaces, %, ?, #"),
    ("/ml\n/", "no spaces"),
    ("/.hidden/", "starting with '.'"),
    ("/" + "a/" * 101, "longer than 200"),
]


@pytest.mark.parametrize("value", GOOD)
def test_clean_prefixes_are_kept(value):
    assert B.check_base_url(value) == value
    assert load_settings({"MLHUB_BASE_URL": value}).base_url == value


@pytest.mark.parametrize("value, why", BAD)
def test_bad_prefixes_are_refused_naming_the_setting(value, why):
    with pytest.raises(B.BaseURLError) as refused:
        B.check_base_url(value)
    assert str(refused.value).startswith(f"c.JupyterHub.base_url={value!r}") and why in str(refused.value)
    if value:  # MLHUB_BASE_URL="" is unset: "/"
        with pytest.raises(SettingsError, match=rf"^MLHUB_BASE_URL=.*{why[:8]}"):
            load_settings({"MLHUB_BASE_URL": value})


def test_unset_or_empty_variable_is_the_root():
    assert load_settings({}).base_url == "/"
    assert load_settings({"MLHUB_BASE_URL": ""}).base_url == "/"


def test_non_string_config_value_is_refused():
    with pytest.raises(B.BaseURLError, match=r"c\.JupyterHub\.base_url=\['/ml/'\]: expected a string"):
        B.check_base_url(["/ml/"])


def hub_config(env_value="/", **user):
    """``c`` as jupyterhub_config.py leaves it: the trait from MLHUB_BASE_URL, then the user config's."""
    c = Config()
    c.JupyterHub.base_url = env_value
    for trait, value in user.items():
        c.JupyterHub[trait] = value
    return c


def test_the_user_config_wins_over_the_variable_on_docker():
    assert B.effective(hub_config("/"), "/") == "/"
    assert B.effective(hub_config("/ml/"), "/ml/") == "/ml/"
    assert B.effective(hub_config("/env/", base_url="/config/"), "/env/") == "/config/"


@pytest.mark.parametrize("value", ["/ml", "/ml/../x/", "/a b/", "//"])
def test_a_bad_user_config_value_stops_the_hub_naming_the_trait(value):
    with pytest.raises(B.BaseURLError, match=r"^c\.JupyterHub\.base_url="):
        B.effective(hub_config(base_url=value))


def test_a_bind_url_with_another_path_is_refused_not_ignored():
    assert B.effective(hub_config("/ml/", bind_url="http://:8000/ml/"), "/ml/") == "/ml/"
    assert B.effective(hub_config("/ml/", bind_url="http://0.0.0.0:8000/ml"), "/ml/") == "/ml/"
    with pytest.raises(B.BaseURLError, match=r"bind_url='http://:8000/other/' has the path '/other/'"):
        B.effective(hub_config("/ml/", bind_url="http://:8000/other/"), "/ml/")
    with pytest.raises(B.BaseURLError, match="bind_url"):
        B.effective(hub_config("/ml/", bind_url="http://:8000"), "/ml/")


def test_on_kubernetes_only_the_charts_value_is_accepted():
    assert B.effective(hub_config("/ml/"), "/ml/", "k8s") == "/ml/"
    with pytest.raises(B.BaseURLError) as refused:
        B.effective(hub_config("/ml/", base_url="/other/"), "/ml/", "k8s")
    assert "hub.baseUrl '/ml/'" in str(refused.value) and "set hub.baseUrl instead" in str(refused.value)


def test_the_hub_publishes_only_where_the_entrypoint_made_the_file(tmp_path):
    published = tmp_path / "base-url"
    assert not B.publish("/ml/", published) and not published.exists()  # a hub outside the image
    published.write_text("/\n")
    assert B.publish("/ml/", published)
    assert B.read_published(published) == "/ml/"
    assert stat.S_IMODE(published.stat().st_mode) == 0o644  # the key lookup's account reads it
    for garbage in ("", "ml", "/a\nb/", "/../"):
        published.write_text(garbage)
        assert B.read_published(published) == "/"
    assert B.read_published(tmp_path / "missing") == "/"
    assert B.PUBLISHED.parent == L.RUN_DIR and health.HUB_PORT == L.HUB_PORT


def test_hub_paths():
    assert B.hub_path("/", "health") == "/hub/health"
    assert B.hub_path("/ml/", "/error") == "/ml/hub/error"
    assert B.hub_path("/a/b/") == "/a/b/hub/"


# ---- the front ---------------------------------------------------------------------------------------------


def test_the_proxy_pods_error_page_is_under_the_base_url():
    env = {"START_JHUB": "false", "START_CHP": "true", "MLHUB_HUB_SERVICE_URL": "http://mlhub-hub:8081"}
    layout = L.layout_from_settings(load_settings({**env, "MLHUB_BASE_URL": "/ml/"}), host_keys=("k",))
    argv = L.chp_command(layout)
    assert "--error-target=http://mlhub-hub:8081/ml/hub/error" in argv
    assert "--default-target=http://mlhub-hub:8081" in argv


def passwd(uid, gid):
    return pwd.struct_passwd(("tunnel", "*", uid, gid, "", "/nonexistent", "/usr/sbin/nologin"))


def front_authorized_keys():
    path = REPO / "resources" / "hub" / "front-authorized-keys"
    loader = importlib.machinery.SourceFileLoader("front_authorized_keys_base_url", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_the_entrypoint_tells_the_key_lookup_the_base_url_and_the_hub_can_change_it(tmp_path, monkeypatch):
    """The proxy pod's start (not root) with MLHUB_BASE_URL: the published file and the lookup's config; then a
    hub that runs with another base_url rewrites the file and the lookup follows at its next call."""
    run, data, secret = tmp_path / "run", tmp_path / "data", tmp_path / "secret"
    secret.mkdir()
    (secret / "ssh_host_ecdsa_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    monkeypatch.setattr(L, "RUN_DIR", run)
    monkeypatch.setattr(entrypoint, "tunnel_account", lambda: passwd(os.geteuid(), os.getegid()))
    monkeypatch.setenv("MLHUB_SSH_HOST_KEYS_DIR", str(secret))
    env = {
        "START_JHUB": "false",
        "START_CHP": "true",
        "EXECUTION_MODE": "k8s",
        "MLHUB_DATA_DIR": str(data),
        "MLHUB_HUB_SERVICE_URL": "http://mlhub-hub:8081",
        "MLHUB_SSH_FRONT_TOKEN": "f" * 64,
        "CONFIGPROXY_AUTH_TOKEN": "c" * 64,
        "MLHUB_BASE_URL": "/ml/",
        "HOME": "/nonexistent",
    }
    entrypoint.prepare(load_settings(env), env, unprivileged=True)
    published = run / B.PUBLISHED.name
    assert published.read_text() == "/ml/\n"
    config = json.loads((run / "ssh-front.json").read_text())
    assert config["url"] == "http://mlhub-hub:8081/ml/hub/api/mlhub/ssh/authorized-keys"
    keys = front_authorized_keys()
    assert keys.lookup_url(config) == "http://mlhub-hub:8081/ml/hub/api/mlhub/ssh/authorized-keys"
    assert B.publish("/team/ml/", published)  # the hub's config said otherwise
    assert keys.lookup_url(config) == "http://mlhub-hub:8081/team/ml/hub/api/mlhub/ssh/authorized-keys"
    for garbage in ("/x\r\nHost: evil/", "no-slash", ""):
        published.write_text(garbage)  # never sent as a request line: the entrypoint's URL instead
        assert keys.lookup_url(config) == config["url"]
    published.unlink()
    assert keys.lookup_url(config) == config["url"]
    assert keys.lookup_url({"url": "http://h:1/hub/x"}) == "http://h:1/hub/x"  # a config without the file


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/ml/hub/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_healthcheck_asks_under_the_published_base_url(tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        published = tmp_path / "base-url"
        published.write_text("/ml/\n")
        assert health.main(published, timeout=5, port=port) == 0
        published.write_text("/\n")  # /hub/health: 404 on a hub that runs under /ml/
        assert health.main(published, timeout=5, port=port) == 1
        assert f"http://127.0.0.1:{port}/hub/health" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
    assert health.main(published, timeout=5, port=port) == 1  # nothing listens: unhealthy, not a traceback


# ---- make run (run-hub.sh) with a fake engine whose hub says it runs under /team/ml/ ------------------------

FAKE_DOCKER = """#!/bin/sh
case "$1" in
  exec) printf '/team/ml/\\n' ;;
  run) echo 0123456789ab ;;
  logs) echo 'generated admin password: s3cret-password-here (kept in /data/admin-password)' ;;
  inspect) exit 1 ;;
esac
exit 0
"""
# answers only the hub's health under the base URL, and says which URLs it was asked
FAKE_CURL = """#!/bin/sh
for arg in "$@"; do url="$arg"; done
echo "$url" >> "$CURL_LOG"
case "$url" in */team/ml/hub/health) exit 0 ;; esac
exit 22
"""


def test_make_run_waits_under_the_base_url_the_container_publishes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "CURL_LOG": str(tmp_path / "curl.log"),
        "MLHUB_PUBLIC_PORT": "18080",
    }
    result = subprocess.run(
        ["bash", str(REPO / "resources/scripts/run-hub.sh"), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curl.log").read_text().splitlines() == ["http://127.0.0.1:18080/team/ml/hub/health"]
    assert "ML Hub is up on http://localhost:18080/team/ml/ (container mlhub" in result.stdout
    assert "log in at http://localhost:18080/team/ml/hub/login as 'admin'" in result.stdout
    assert "change it at http://localhost:18080/team/ml/hub/change-password" in result.stdout
