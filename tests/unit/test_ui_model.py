"""The pages' workspace rows (mlhubspawner.ui): pure formatting, URLs, and escaping of user data."""

import asyncio
import json
import os
import types

import nativeauthenticator
import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jupyterhub.app import JupyterHub

from mlhubspawner import ui

NOW = 1_700_000_000
PAYLOAD = "</script><script>window.__mlhub_xss=1</script>\"'"


@pytest.mark.parametrize(
    "expiration, text",
    [
        (0, "never"),
        (NOW - 5, "expired"),
        (NOW + 7 * 86400 - 3600, "6 days 23 h"),
        (NOW + 86400 + 60, "1 day 0 h"),
        (NOW + 5 * 3600 + 600, "5 h 10 min"),
        (NOW + 30, "1 min"),
    ],
)
def test_format_remaining(expiration, text):
    assert ui.format_remaining(expiration, NOW) == text


def test_format_bytes_and_resources():
    assert ui.format_bytes(4 * 1024**3) == "4G"
    assert ui.format_bytes(512 * 1024**2) == "512M"
    assert ui.format_bytes(None) == ""
    options = {"cpu_limit": 0.5, "mem_limit": 1536 * 1024**2, "shm_size": 1024**3}
    assert ui.format_resources(options) == "0.5 CPUs · 1.5G memory · 1G shm"
    assert ui.format_resources({"cpu_limit": 1}) == "1 CPU"
    assert ui.format_resources({}) == "default"


@pytest.mark.parametrize(
    "active, ready, pending, status",
    [
        (False, False, None, "stopped"),
        (True, False, "spawn", "pending"),
        (True, True, None, "running"),
        (True, False, None, "pending"),
        (True, True, "stop", "pending"),
    ],
)
def test_server_status(active, ready, pending, status):
    assert ui.server_status(active, ready, pending) == status


def test_named_row_urls_are_quoted_and_info_has_lifetime():
    row = ui.workspace_row(
        user="ann",
        server="my run",
        status="running",
        options={"image": "img:1", "cpu_limit": 2, "gpus": "1", "env": {"A": "b"}, "days_to_live": 7},
        expiration=NOW + 7 * 86400 - 3600,
        hub_url="/base/hub/",
        prefix="/base/",
        now=NOW,
    )
    assert row["label"] == "my run" and row["named"] and row["started"]
    assert row["url"] == "/base/user/ann/my%20run/"
    assert row["server_api"] == "/base/hub/api/users/ann/servers/my%20run"
    assert row["ssh_config_api"] == "/base/hub/api/mlhub/users/ann/servers/my%20run/ssh-config"
    assert row["lifetime_api"] == "/base/hub/api/mlhub/users/ann/servers/my%20run/lifetime"
    assert row["spawn_url"] == "/base/hub/spawn/ann/my%20run"
    assert row["lifetime"] == "6 days 23 h" and row["has_lifetime"]
    assert row["gpus"] == "1"
    typed = ui.workspace_row(
        user="ann",
        server="",
        status="running",
        options={"gpus": "2", "gpu_type": "nvidia.com/mig-1g.5gb"},
        now=NOW,
    )
    assert typed["gpus"] == "2 × nvidia.com/mig-1g.5gb"
    assert row["info"]["env"] == {"A": "b"}
    assert row["info"]["remaining_lifetime_seconds"] == 7 * 86400 - 3600
    json.dumps(row)  # JSON-friendly


def test_default_row_never_started():
    row = ui.workspace_row(user="ann", server="", status="stopped", options=None, now=NOW)
    assert row["label"] == "default" and not row["named"] and not row["started"]
    assert row["server_api"] == "/hub/api/users/ann/server"
    assert row["ssh_config_api"] == "/hub/api/mlhub/users/ann/ssh-config"
    assert row["spawn_url"] == "/hub/spawn/ann"
    assert row["lifetime"] == "" and not row["has_lifetime"] and row["gpus"] == "none"
    assert row["info"] == {"expiration_timestamp_seconds": 0}


def _env():
    base = JupyterHub()._template_paths_default()[0]
    native = os.path.join(os.path.dirname(nativeauthenticator.__file__), "templates")
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([base])}, "/"),
            FileSystemLoader([ui.TEMPLATES_DIR, native, base]),
        ]
    )
    return Environment(loader=loader, autoescape=True, enable_async=True)


def _render(name, **ns):
    row = ui.workspace_row(
        user="ann",
        server=PAYLOAD,
        status="running",
        options={"image": "img:1", "env": {"X": PAYLOAD}},
        now=NOW,
        gpu_devices=[PAYLOAD],
    )
    gpu = {
        "index": "0",
        "uuid": PAYLOAD,
        "name": PAYLOAD,
        "memory_mb": 1024,
        "free": False,
        "holders": [PAYLOAD],
    }
    user = types.SimpleNamespace(
        name="ann", admin=True, escaped_name="ann", json_escaped_name="ann", spawner=types.SimpleNamespace()
    )
    helpers = types.SimpleNamespace(rows=lambda user, hub_url, prefix: [row])
    base_ns = dict(
        base_url="/hub/",
        prefix="/",
        user=user,
        login_url="/hub/login",
        logout_url="/hub/logout",
        static_url=lambda path, **kw: f"/hub/static/{path}",
        services=[],
        parsed_scopes=set(),
        xsrf_token="t",
        mlhub_version="9.9.9",
        mlhub_ui=helpers,
        allow_named_servers=True,
        named_server_limit_per_user=0,
        rows=[row],
        user_names=["ann", PAYLOAD],
        gpus={"gpus": [gpu], "source": PAYLOAD, "probed_at": None, "ok": True},
        gpus_probed="",
    )
    base_ns.update(ns)
    return asyncio.run(_env().get_template(name).render_async(**base_ns))


@pytest.mark.parametrize("name", ["home.html", "mlhub_admin.html"])
def test_pages_escape_user_data(name):
    html = _render(name)
    assert PAYLOAD not in html
    assert "<script>window.__mlhub_xss" not in html
    assert '<footer id="mlhub-footer">ML Hub 9.9.9</footer>' in html
    table = "mlhub-workspaces" if name == "home.html" else "mlhub-all-workspaces"
    assert f'id="{table}"' in html and 'class="mlhub-workspace' in html
    start = html.index('<script type="application/json" id="mlhub-data">') + len(
        '<script type="application/json" id="mlhub-data">'
    )
    data = json.loads(html[start : html.index("</script>", start)])
    assert data["rows"][0]["info"]["env"]["X"] == PAYLOAD


def test_ssh_keys_page_and_native_pages_render():
    key = {"fingerprint": "SHA256:abc", "type": "ssh-ed25519", "bits": 256, "comment": PAYLOAD}
    html = _render("mlhub_ssh_keys.html", target_user="ann", keys=[key], keys_api="/hub/api/x")
    assert PAYLOAD not in html and 'data-fingerprint="SHA256:abc"' in html
    assert 'id="mlhub-keys"' in html and 'id="mlhub-key-error"' in html
    for name in ("signup.html", "native-login.html"):
        html = _render(name, user=None)
        assert 'id="mlhub-footer"' in html and "mlhub/static/logo.svg" in html


@pytest.mark.parametrize("env", [{"TOKEN": "s3cret", "A": "b"}, "TOKEN=s3cret\n# note\nA=b\n"])
def test_others_see_env_names_not_values(env):
    row = ui.workspace_row(
        user="ann", server="", status="stopped", options={"image": "i:1", "env": env}, show_env_values=False
    )
    assert row["info"]["env_names"] == ["A", "TOKEN"]
    assert "s3cret" not in json.dumps(row)
    owner = ui.workspace_row(user="ann", server="", status="stopped", options={"image": "i:1", "env": env})
    assert owner["info"]["env"] == env


@pytest.mark.parametrize("expiration", [float("inf"), float("nan"), 1e300, NOW + 1e7 * 86400, "soon", [1]])
def test_rows_survive_any_stored_expiration(expiration):
    row = ui.workspace_row(
        user="ann",
        server="w",
        status="stopped",
        options={"image": "i:1", "cpu_limit": "lots", "mem_limit": "4G"},
        expiration=expiration,
        created_at=expiration,
        now=NOW,
    )
    json.loads(json.dumps(row, allow_nan=False))
    assert row["expires"] in ("never", "unknown") or row["expires"].endswith("UTC")


@pytest.mark.parametrize(
    "image, tools",
    [
        ("mlhub-workspace-ml:0.1.0", ["vscode", "desktop", "tensorboard"]),
        (
            "registry.example:5000/team/mlhub-workspace-gpu:1@sha256:" + "a" * 64,
            ["vscode", "desktop", "tensorboard"],
        ),
        ("mlhub-workspace:0.1.0", []),
        ("mlhub-workspace-ml-stage:abc", []),
        ("team/mlhub-workspace-ml/other:1", []),
        ("", []),
        (None, []),
    ],
)
def test_image_tools_of_mlhub_flavors(image, tools):
    assert ui.image_tools(image) == tools


def test_image_tools_configured_patterns_in_tool_order():
    tool_images = {"my-*": ["tensorboard", "vscode", "unknown"], "*": []}
    assert ui.image_tools("reg/my-image:2", tool_images) == ["vscode", "tensorboard"]
    assert ui.image_tools("mlhub-workspace-ml:0.1.0", tool_images) == []


def test_running_ml_row_links_its_tools_under_the_server_url():
    row = ui.workspace_row(
        user="ann",
        server="my run",
        status="running",
        options={"image": "mlhub-workspace-ml:0.1.0"},
        prefix="/base/",
    )
    assert [(t["title"], t["url"]) for t in row["tools"]] == [
        ("VS Code", "/base/user/ann/my%20run/vscode/"),
        ("Desktop", "/base/user/ann/my%20run/desktop/"),
        ("TensorBoard", "/base/user/ann/my%20run/tensorboard/"),
    ]
    default = ui.workspace_row(
        user="ann", server="", status="running", options={"image": "mlhub-workspace-ml:1"}
    )
    assert default["tools"][0]["url"] == "/user/ann/vscode/"
    assert ui.workspace_row(user="ann", server="", status="stopped", options=None)["tools"] == []
    json.dumps(row)


def _home_row(status, image):
    return ui.workspace_row(user="ann", server="w", status=status, options={"image": image}, now=NOW)


def test_home_page_shows_tool_links_only_for_running_workspaces_with_tools():
    running = _render(
        "home.html",
        mlhub_ui=types.SimpleNamespace(rows=lambda *a: [_home_row("running", "mlhub-workspace-ml:1")]),
    )
    assert 'href="/user/ann/w/vscode/"' in running
    assert 'href="/user/ann/w/desktop/"' in running
    assert 'href="/user/ann/w/tensorboard/"' in running
    for status, image in (
        ("stopped", "mlhub-workspace-ml:1"),
        ("pending", "mlhub-workspace-ml:1"),
        ("running", "mlhub-workspace:1"),
    ):
        html = _render(
            "home.html", mlhub_ui=types.SimpleNamespace(rows=lambda *a, s=status, i=image: [_home_row(s, i)])
        )
        assert "mlhub-tools" not in html and 'href="/user/ann/w/vscode/"' not in html, (status, image)
