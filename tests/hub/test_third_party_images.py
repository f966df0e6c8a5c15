"""Third-party workspace images through a real hub on the real Docker engine.

There is no registry here: ``tests/images/`` holds images that mimic the two conventions (mltooling/ml-workspace,
the Jupyter Docker Stacks), built FROM the minimal workspace image and removed afterwards. The hub offers both
and says in ``workspace_image_settings`` which convention each follows; it also configures, for ML Hub's own
image, a command and a port (8888) that the third-party images must not get when they have their own.
"""

import os
import uuid
from pathlib import Path

import pytest
import requests

from mlhubspawner import __version__, naming

from support import Hub, build_image

IMAGES = Path(__file__).resolve().parents[1] / "images"
TEST_LABEL = "mlhub.test=third-party-images"
ML_WORKSPACE = "mlhub-test/ml-workspace-mimic:1"
STACKS = "mlhub-test/docker-stacks-mimic:1"
NOT_OFFERED = "mlhub-test/not-offered:1"

HUB_CONFIG = f"""
c.MLHubDockerSpawner.workspace_images = [{ML_WORKSPACE!r}, {STACKS!r}]
c.MLHubDockerSpawner.workspace_image_settings = {{
    {ML_WORKSPACE!r}: {{"convention": "ml-workspace"}},
    "mlhub-test/docker-stacks-*": {{"convention": "docker-stacks"}},
}}
# ML Hub's own image with an explicit command and another port: not for images that bring their own
c.MLHubDockerSpawner.cmd = ["jupyterhub-singleuser"]
c.MLHubDockerSpawner.port = 8888
c.MLHubDockerSpawner.max_servers_per_user = 3
"""


@pytest.fixture(scope="module")
def mimic_images(docker):
    """The two mimic images, built for this module and removed after it."""
    base = os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")
    built = []
    try:
        for directory, tag in (("ml-workspace-mimic", ML_WORKSPACE), ("docker-stacks-mimic", STACKS)):
            build_image(
                docker,
                path=str(IMAGES / directory),
                tag=tag,
                buildargs={"BASE_IMAGE": base},
                labels=dict([TEST_LABEL.split("=", 1)]),
                rm=True,
                forcerm=True,
            )
            built.append(tag)
        yield
    finally:
        for tag in built:
            docker.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def hub3p(docker, mimic_images, tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("hub3p"), user_config=HUB_CONFIG)
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def user_token(hub, user):
    r = hub.api("POST", f"users/{user}/tokens", json={"note": f"test {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def url_of(hub, user, server, path):
    return f"{hub.url}/user/{user}/{server}/{path}"


def get(hub, user, server, path, token=None):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(url_of(hub, user, server, path), headers=headers, timeout=30, allow_redirects=False)


def put_text(hub, user, server, path, text, token):
    body = {"type": "file", "format": "text", "content": text}
    return requests.put(
        url_of(hub, user, server, f"api/contents/{path}"),
        json=body,
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )


def container_of(docker, hub, user, server):
    return docker.containers.get(naming.workspace_name(hub.hub_name, user, server))


def env_of(container):
    return dict(line.split("=", 1) for line in container.attrs["Config"]["Env"])


def test_an_ml_workspace_image_runs_its_own_entrypoint_behind_the_hubs_login(hub3p, docker):
    ann, ben = hub3p.create_user("ann"), hub3p.create_user("ben")
    ann_token, ben_token = user_token(hub3p, ann), user_token(hub3p, ben)
    r = hub3p.spawn(ann, "tools", {"image": ML_WORKSPACE, "cpu_limit": 1})
    assert r.status_code in (201, 202), r.text
    container = container_of(docker, hub3p, ann, "tools")
    attrs = container.attrs
    # its own command (the image's CMD, no --port, not the command configured for ML Hub's image)
    assert attrs["Config"]["Cmd"] == ["python", "/resources/docker-entrypoint.py"]
    assert container.exec_run(["id", "-u"]).output == b"0\n"  # the image's user: root, as ml-workspace runs
    # ... with the isolation every workspace gets
    host = attrs["HostConfig"]
    assert "no-new-privileges" in host["SecurityOpt"] and "NET_RAW" in host["CapDrop"]
    assert host["PidsLimit"] and host["NanoCpus"] == 1_000_000_000
    env = env_of(container)
    assert env["AUTHENTICATE_VIA_JUPYTER"] == "true"
    assert env["SHUTDOWN_INACTIVE_KERNELS"] == "true"
    assert env["WORKSPACE_BASE_URL"] == f"/user/{ann}/tools"
    assert env["WORKSPACE_PORT"] == "8080" and env["MAX_NUM_THREADS"] == "1"
    assert "/workspace" in {m["Destination"] for m in attrs["Mounts"]}
    # the hub routes to its port 8080, where its proxy serves Jupyter under the server's prefix
    route = hub3p.server_model(ann, "tools")
    assert route["ready"] and route["url"] == f"/user/{ann}/tools/"
    status = get(hub3p, ann, "tools", "api/status", ann_token)
    assert status.status_code == 200, status.text
    assert put_text(hub3p, ann, "tools", "hello.txt", "from ann", ann_token).status_code == 201
    assert container.exec_run(["cat", "/workspace/hello.txt"]).output == b"from ann"
    # its tools: behind the user's Jupyter login (AUTHENTICATE_VIA_JUPYTER), which the hub's proxy does not check
    tool = get(hub3p, ann, "tools", "tools/hello/", ann_token)
    assert tool.status_code == 200 and tool.json() == {"tool": "hello", "user": ann}
    # another user and nobody get neither Jupyter nor the tools
    assert get(hub3p, ann, "tools", "api/status", ben_token).status_code == 403
    assert get(hub3p, ann, "tools", "api/contents/hello.txt", ben_token).status_code == 403
    for token in (ben_token, None):
        refused = get(hub3p, ann, "tools", "tools/hello/", token)
        assert refused.status_code in (302, 401, 403) and "from ann" not in refused.text, refused.text
    assert get(hub3p, ann, "tools", "api/contents/hello.txt").status_code in (302, 401, 403)
    # and a user cannot turn the workspace's auth off
    r = hub3p.api(
        "POST",
        f"users/{ann}/servers/open",
        json={"image": ML_WORKSPACE, "env": {"AUTHENTICATE_VIA_JUPYTER": "false"}},
    )
    assert r.status_code == 400 and "AUTHENTICATE_VIA_JUPYTER" in r.json()["message"]
    hub3p.stop_server(ann, "tools", remove=True)


def test_a_docker_stacks_image_starts_as_jovyan_with_the_volume_in_work(hub3p, docker):
    cid, dot = hub3p.create_user("cid"), hub3p.create_user("dot")
    cid_token, dot_token = user_token(hub3p, cid), user_token(hub3p, dot)
    r = hub3p.spawn(cid, "nb", {"image": STACKS})
    assert r.status_code in (201, 202), r.text
    container = container_of(docker, hub3p, cid, "nb")
    attrs = container.attrs
    assert attrs["Config"]["Cmd"] == ["start-notebook.sh"]  # the image's: start-notebook → start-singleuser
    assert container.exec_run(["id", "-u"]).output == b"1000\n"
    assert container.exec_run(["id", "-g"]).output == b"100\n"
    env = env_of(container)
    # it listens where JUPYTERHUB_SERVICE_URL says (the configured port), Jupyter rooted in the volume
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://0.0.0.0:8888/")
    assert env["JUPYTERHUB_ROOT_DIR"] == "/home/jovyan/work" and "AUTHENTICATE_VIA_JUPYTER" not in env
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert set(mounts) == {"/home/jovyan/work"}
    volume = mounts["/home/jovyan/work"]["Name"]
    assert hub3p.server_model(cid, "nb")["ready"]
    assert get(hub3p, cid, "nb", "api/status", cid_token).status_code == 200
    # what the user saves in Jupyter lands in the volume (jovyan may write it) and survives an update
    assert put_text(hub3p, cid, "nb", "notes.txt", "kept", cid_token).status_code == 201
    assert container.exec_run(["cat", "/home/jovyan/work/notes.txt"]).output == b"kept"
    assert get(hub3p, cid, "nb", "api/contents/notes.txt", dot_token).status_code == 403
    assert get(hub3p, cid, "nb", "api/contents/notes.txt").status_code in (302, 401, 403)
    hub3p.stop_server(cid, "nb")
    r = hub3p.spawn(cid, "nb", {"image": STACKS, "update": True})
    assert r.status_code in (201, 202), r.text
    recreated = container_of(docker, hub3p, cid, "nb")
    assert recreated.id != container.id
    assert {m["Name"] for m in recreated.attrs["Mounts"]} == {volume}
    notes = get(hub3p, cid, "nb", "api/contents/notes.txt", cid_token)
    assert notes.status_code == 200 and notes.json()["content"] == "kept"
    hub3p.stop_server(cid, "nb", remove=True)


def test_ml_hubs_own_image_keeps_its_command_port_and_workspace(hub3p, docker):
    eli = hub3p.create_user("eli")
    token = user_token(hub3p, eli)
    assert hub3p.spawn(eli, "own", {}).status_code in (201, 202)
    container = container_of(docker, hub3p, eli, "own")
    assert container.attrs["Config"]["Cmd"] == ["jupyterhub-singleuser"]
    assert {m["Destination"] for m in container.attrs["Mounts"]} == {"/workspace"}
    env = env_of(container)
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://0.0.0.0:8888/")
    assert not {"AUTHENTICATE_VIA_JUPYTER", "WORKSPACE_BASE_URL", "JUPYTERHUB_ROOT_DIR"} & set(env)
    assert get(hub3p, eli, "own", "api/status", token).status_code == 200
    hub3p.stop_server(eli, "own", remove=True)


def test_an_image_the_admin_did_not_offer_is_refused_naming_it(hub3p, docker):
    fay = hub3p.create_user("fay")
    r = hub3p.api("POST", f"users/{fay}/servers/x", json={"image": NOT_OFFERED})
    assert r.status_code == 400 and NOT_OFFERED in r.json()["message"] and "image" in r.json()["message"]
    assert not docker.containers.list(
        all=True, filters={"name": naming.workspace_name(hub3p.hub_name, fay, "x")}
    )
