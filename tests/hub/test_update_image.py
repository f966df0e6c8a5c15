"""Update: a workspace whose image tag now points to a new image is recreated from it, data kept."""

import io
import secrets

import pytest

from mlhubspawner import __version__

from support import Hub, build_image


@pytest.fixture(scope="module")
def uhub(docker, tmp_path_factory):
    """A hub whose workspace image is a tag of our own, which the test moves to a new image."""
    tag = f"mlhub-update-test-{secrets.token_hex(3)}:1"
    docker.images.get(f"mlhub-workspace:{__version__}").tag(tag)
    hub = Hub(
        tmp_path_factory.mktemp("update-hub"),
        user_config=f"c.MLHubDockerSpawner.image = {tag!r}\nc.MLHubDockerSpawner.workspace_images = [{tag!r}]\n",
    )
    hub.tag = tag
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)
        docker.images.remove(tag, force=True)
        docker.images.prune(filters={"label": f"mlhub.update-test={tag}", "dangling": True})


def update_state(hub, user, server):
    r = hub.api("GET", f"mlhub/users/{user}/servers/{server}/update")
    assert r.status_code == 200, r.text
    return r.json()["update_available"]


def test_update_recreates_from_the_new_image_and_keeps_the_volume(uhub, docker):
    user = uhub.create_user("upd")
    r = uhub.spawn(user, "w", {"cpu_limit": 0.5, "env": {"KEEP": "me"}})
    assert r.status_code in (201, 202), r.text
    name = f"{uhub.hub_name}-ws-{user}--w"
    old = docker.containers.get(name)
    assert old.exec_run(["sh", "-c", "echo precious > /workspace/data.txt"]).exit_code == 0
    assert update_state(uhub, user, "w") is False

    # the tag moves to a new image (as after a pull of a newer release)
    dockerfile = io.BytesIO(f"FROM {uhub.tag}\nLABEL mlhub.update-test={uhub.tag}\n".encode())
    new_image, _ = build_image(docker, fileobj=dockerfile, tag=uhub.tag, rm=True)
    assert new_image.id != old.image.id
    assert update_state(uhub, user, "w") is True

    r = uhub.api("POST", f"mlhub/users/{user}/servers/w/update")
    assert r.status_code in (201, 202), r.text
    uhub.wait_ready(user, "w")
    new = docker.containers.get(name)
    assert new.id != old.id and new.image.id == new_image.id
    assert new.exec_run(["cat", "/workspace/data.txt"]).output.decode().strip() == "precious"
    env = dict(e.split("=", 1) for e in new.attrs["Config"]["Env"])
    assert env["KEEP"] == "me" and env["CPU_LIMIT"] == "0.5"  # the last options, not defaults
    assert update_state(uhub, user, "w") is False
    # a later plain restart does not pull or recreate again
    model = uhub.api("GET", f"users/{user}", params={"include_stopped_servers": 1}).json()
    assert "update" not in model["servers"]["w"]["user_options"]


def test_update_of_a_workspace_never_started_is_refused(uhub):
    user = uhub.create_user("fresh")
    assert uhub.api("POST", f"users/{user}/servers/x", json={"cpu_limit": "lots"}).status_code == 400
    r = uhub.api("POST", f"mlhub/users/{user}/servers/x/update")
    assert r.status_code in (404, 409), r.text
    assert uhub.server_model(user, "x") is None
