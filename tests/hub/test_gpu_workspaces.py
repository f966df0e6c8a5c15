"""GPU workspaces on the real engine: exclusive allocation, DeviceRequests, clear refusals.

There is no GPU here: `make test` starts dockerd with a stand-in `nvidia-container-runtime-hook`
(it records its calls and changes nothing), so the engine really accepts DeviceRequests and sets
NVIDIA_VISIBLE_DEVICES; the hub is told the inventory with `gpu_ids`.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from docker.errors import APIError
from docker.types import DeviceRequest

from mlhubspawner import naming
from mlhubspawner.gpus import probe_nvidia_smi

from support import Hub, base_image, exists, log_in, sign_up

GPU_CONFIG = """
c.MLHubDockerSpawner.gpu_ids = ["0", "1", "2", "3"]
c.MLHubDockerSpawner.max_gpus = 2
"""


def engine_takes_gpu_requests(docker):
    request = DeviceRequest(device_ids=["0"], capabilities=[["gpu"]])
    probe = docker.containers.create(
        base_image(docker), ["true"], device_requests=[request], labels={"mlhub.test": "gpu-probe"}
    )
    try:
        probe.start()
    except APIError as e:
        if "device driver" in str(e):
            return False
        raise
    finally:  # a refused start leaves the created container behind
        probe.remove(force=True)
    return True


@pytest.fixture(scope="module")
def ghub(docker, tmp_path_factory):
    if not engine_takes_gpu_requests(docker):
        message = "the engine refuses GPU requests: run the tests with `make test` (it starts dockerd with the stand-in hook)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    hub = Hub(tmp_path_factory.mktemp("gpu-hub"), user_config=GPU_CONFIG)
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def plain_user(hub):
    return hub.create_user("gpuless")


def visible_devices(docker, hub, user, server="w"):
    container = docker.containers.get(naming.workspace_name(hub.hub_name, user, server))
    inside = container.exec_run(["printenv", "NVIDIA_VISIBLE_DEVICES"]).output.decode().strip()
    label = container.labels.get(naming.LABEL_GPUS)
    requested = container.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    assert inside == label == ",".join(requested), (inside, label, requested)
    return inside


def test_gpus_are_exclusive_freed_on_stop_and_rechecked_on_restart(ghub, docker):
    users = [ghub.create_user(f"gpu{i}") for i in range(3)]
    with ThreadPoolExecutor(3) as pool:  # three spawns at once, one GPU each
        results = list(pool.map(lambda u: ghub.spawn(u, "w", {"gpus": 1, "mem_limit": "512M"}), users))
    assert all(r.status_code in (201, 202) for r in results), [r.text for r in results]
    held = {u: visible_devices(docker, ghub, u) for u in users}
    assert len(set(held.values())) == 3, held

    # a GPU in use cannot be asked for by id; the free one can
    late = ghub.create_user("gpulate")
    r = ghub.api("POST", f"users/{late}/servers/w", json={"gpus": f"device={held[users[0]]}"})
    assert r.status_code == 400 and "in use" in r.json()["message"]
    free = ({"0", "1", "2", "3"} - set(held.values())).pop()
    assert ghub.spawn(late, "w", {"gpus": f"device={free}", "mem_limit": "512M"}).status_code in (201, 202)
    r = ghub.api("POST", f"users/{ghub.create_user('gpunone')}/servers/w", json={"gpus": 1})
    assert r.status_code == 400 and "1 GPUs requested, 0 free" in r.json()["message"]

    # stopping frees a GPU; the stopped workspace's GPU is taken meanwhile: its restart gets the free one
    ghub.stop_server(users[0], "w")
    assert ghub.spawn(late, "x", {"gpus": f"device={held[users[0]]}", "mem_limit": "512M"}).status_code in (
        201,
        202,
    )
    ghub.stop_server(users[1], "w")
    assert ghub.spawn(users[0], "w").status_code in (201, 202)  # same options, GPU re-checked
    assert visible_devices(docker, ghub, users[0]) == held[users[1]]
    # the form lists the GPUs and which are free
    sign_up(ghub, "admin")
    admin, _ = log_in(ghub, "admin")
    form = admin.get(f"{ghub.url}/hub/spawn/admin/new", timeout=30)
    assert form.status_code == 200, form.text[:300]
    # users[0], users[2] and late (twice) hold all four GPUs now
    assert form.text.count("in use</span>") == 4 and form.text.count(">free</span>") == 0
    assert "GPU 3" in form.text and 'name="gpus"' in form.text
    # workspaces without GPUs see none, whatever their image says
    plain = plain_user(ghub)
    assert ghub.spawn(plain, "w", {"mem_limit": "512M"}).status_code in (201, 202)
    container = docker.containers.get(naming.workspace_name(ghub.hub_name, plain, "w"))
    assert container.exec_run(["printenv", "NVIDIA_VISIBLE_DEVICES"]).output.decode().strip() == "void"
    assert not container.attrs["HostConfig"]["DeviceRequests"]


def test_an_engine_refusing_the_gpu_request_is_a_clear_error(docker, tmp_path):
    """A device driver the engine does not know: the spawn fails clearly and leaves nothing behind."""
    hub = Hub(
        tmp_path / "gpu-refused",
        user_config=GPU_CONFIG + 'c.MLHubDockerSpawner.gpu_driver = "mlhub-no-such-driver"\n',
    )
    try:
        hub.start()
        user = hub.create_user("refused")
        r = hub.api("POST", f"users/{user}/servers/w", json={"gpus": 1})
        assert r.status_code >= 400
        assert "refused the GPU request" in r.json()["message"]
        name = naming.workspace_name(hub.hub_name, user, "w")
        assert not exists(docker.containers, name)
        assert not exists(docker.volumes, name)
    finally:
        hub.destroy(docker)


@pytest.mark.gpu
def test_a_real_gpu_is_usable_in_a_workspace(docker, tmp_path):
    """Only on a machine with an NVIDIA GPU (skipped elsewhere): nvidia-smi sees it inside the workspace."""
    inventory = probe_nvidia_smi()
    if not inventory:
        pytest.skip("no NVIDIA GPU on this machine (nvidia-smi finds none)")
    hub = Hub(tmp_path / "real-gpu", user_config="c.MLHubDockerSpawner.max_gpus = 1\n")
    try:
        hub.start()
        user = hub.create_user("cuda")
        assert hub.spawn(
            user, "w", {"gpus": 1, "env": {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}}
        ).status_code in (201, 202)
        container = docker.containers.get(naming.workspace_name(hub.hub_name, user, "w"))
        result = container.exec_run(["nvidia-smi", "-L"])
        assert result.exit_code == 0 and b"GPU 0" in result.output, result.output
    finally:
        hub.destroy(docker)
