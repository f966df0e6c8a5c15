"""Profiles through JupyterHub's REST API: a real JupyterHub (in-process) with MLHubKubernetesSpawner on the fake
API server. ``POST /hub/api/users/<u>/servers/<name>`` with ``{"profile": "<slug>", ...}`` goes through the hub's
own flow (group overrides, ``apply_user_options``, ``start``, waiting for the server); what the fake receives
is checked.

The hub reaches "the server" at a local HTTP responder (the spawner's ``get_pod_url`` hook): nothing runs in
the fake's pods. No proxy process: routes go to a proxy class that keeps nothing.
"""

import json
import os
import secrets
import socket
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from jupyterhub.app import JupyterHub
from jupyterhub.proxy import Proxy
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402
from mlhubspawner.kubernetes import MLHubKubernetesSpawner  # noqa: E402

import kube_spawners  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8srest"
NS = "default"
GB = 1024**3
GPU_IMAGE = "registry.example.com/team/cuda:12.4"
PROFILES = [
    {"display_name": "Plain", "slug": "plain", "default": True},
    {
        "display_name": "GPU",
        "slug": "gpu",
        "kubespawner_override": {
            "image": GPU_IMAGE,
            "cpu_limit": 4,
            "mem_limit": "8G",
            "environment": {"PROFILE": "gpu"},
            "node_selector": {"pool": "a100"},
        },
    },
]


class KeepNothingProxy(Proxy):
    """A proxy that routes nothing (the tests talk to the hub directly)."""

    should_start = False

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {}


class Answer(web.RequestHandler):
    def get(self, *args):
        self.write("{}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


fake = kube_spawners.fake_apiserver_fixture(NS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rest_hub(fake, tmp_path_factory):
    """``(api_url, token)`` of a running in-process hub; its servers, the responder and the hub stop after."""
    responder = HTTPServer(web.Application([(r"/(.*)", Answer)]))
    responder_port = free_port()
    responder.listen(responder_port, "127.0.0.1")
    token, port = secrets.token_hex(16), free_port()
    c = Config()
    c.JupyterHub.proxy_class = KeepNothingProxy
    c.JupyterHub.db_url = "sqlite://"
    c.JupyterHub.cookie_secret = os.urandom(32)
    c.JupyterHub.bind_url = f"http://127.0.0.1:{free_port()}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{port}"
    c.JupyterHub.spawner_class = MLHubKubernetesSpawner
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allowed_users = {"alice", "bob"}
    c.JupyterHub.services = [{"name": "tester", "api_token": token}]
    c.JupyterHub.load_roles = [
        {"name": "tester", "scopes": ["admin:servers", "admin:users"], "services": ["tester"]}
    ]
    c.JupyterHub.cleanup_servers = True
    spawner = c.MLHubKubernetesSpawner
    spawner.hub_name = HUB
    spawner.k8s_api_host = fake.url
    spawner.namespace = spawner.hub_namespace = NS
    spawner.image = "mlhub-workspace:test"
    spawner.max_cpu_limit = 8.0
    spawner.environment = {"TEAM": "ml"}
    spawner.profile_list = PROFILES
    spawner.get_pod_url = lambda spawner, pod: f"http://127.0.0.1:{responder_port}"
    spawner.http_timeout = 30
    spawner.start_timeout = 30
    cwd, workdir = os.getcwd(), tmp_path_factory.mktemp("rest-hub")
    os.chdir(workdir)  # the hub writes nothing elsewhere, and reads not the repository's jupyterhub_config.py
    (workdir / "empty_config.py").write_text("")
    app = JupyterHub(config=c, config_file=str(workdir / "empty_config.py"))
    try:
        await app.initialize([])
        await app.start()
        yield f"http://127.0.0.1:{port}/hub/api", token
    finally:
        app.http_server.stop()
        for callback in app._periodic_callbacks.values():
            callback.stop()
        await app.cleanup()
        app._atexit_ran = True  # cleaned up here, not again at exit
        responder.stop()
        os.chdir(cwd)
        await MLHubKubernetesSpawner._stop_all_reflectors()


async def call(rest_hub, method, path, body=None):
    url, token = rest_hub
    try:
        response = await AsyncHTTPClient().fetch(
            url + path,
            method=method,
            headers={"Authorization": f"token {token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=60,
        )
    except HTTPClientError as e:
        return e.code, json.loads(e.response.body or b"{}") if e.response else {}
    return response.code, json.loads(response.body or b"{}")


def pod_of(fake, user, server):
    return fake.get("pods", NS, naming.workspace_name(HUB, user, server))


async def test_a_rest_start_with_a_profile_and_the_next_without(fake, rest_hub):
    code, body = await call(
        rest_hub, "POST", "/users/alice/servers/train", {"profile": "gpu", "cpu_limit": 2}
    )
    assert code in (201, 202), body
    pod = pod_of(fake, "alice", "train")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == GPU_IMAGE
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": str(8 * GB)}
    assert pod["spec"]["nodeSelector"] == {"pool": "a100"}
    assert {"name": "PROFILE", "value": "gpu"} in container["env"]
    assert (await call(rest_hub, "DELETE", "/users/alice/servers/train"))[0] in (202, 204)
    assert pod_of(fake, "alice", "train") is None

    code, body = await call(rest_hub, "POST", "/users/alice/servers/train", {"profile": "plain"})
    assert code in (201, 202), body
    pod = pod_of(fake, "alice", "train")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "mlhub-workspace:test"
    assert not pod["spec"].get("nodeSelector")
    assert "PROFILE" not in {e["name"] for e in container["env"]}
    assert (await call(rest_hub, "DELETE", "/users/alice/servers/train"))[0] in (202, 204)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"profile": "huge"}, "no profile 'huge' is offered to you (offered: plain, gpu)"),
        ({"profile": "gpu", "image": "evil/miner:latest"}, "Invalid image"),
        ({"profile": "gpu", "cpu_limit": 6}, "Invalid cpu_limit: at most 4 CPUs"),
        ({"profile": "gpu", "mem_limit": "64G"}, "Invalid mem_limit"),
    ],
)
async def test_a_rest_start_beyond_the_profile_is_a_400_and_creates_nothing(fake, rest_hub, options, named):
    code, body = await call(rest_hub, "POST", "/users/bob/servers/x", options)
    assert code == 400 and named in body["message"], body
    assert pod_of(fake, "bob", "x") is None
