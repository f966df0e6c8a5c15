"""GPU workspaces on the real engine: discovery, exclusive allocation by UUID, what a workspace sees.

There is no GPU here: `make test` starts dockerd with a stand-in for NVIDIA's toolkit hook
(resources/gpu-standin): the engine really accepts DeviceRequests, and the hook gives each container an
`nvidia-smi` that lists the GPUs of its NVIDIA_VISIBLE_DEVICES from a fake 4-GPU inventory. The hub is told
nothing about GPUs: it finds them with its probe container, as on a GPU host.
"""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from docker.errors import APIError
from docker.types import DeviceRequest

from mlhubspawner import naming

from support import STANDIN_GPUS, Hub, base_image, exists, log_in, sign_up, wait_for

GPU_CONFIG = """
c.MLHubDockerSpawner.max_gpus = 2
"""
UUIDS = [gpu[1] for gpu in STANDIN_GPUS]


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


def hub_metrics(hub):
    r = requests.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def plain_user(hub):
    return hub.create_user("gpuless")


def visible_devices(docker, hub, user, server="w"):
    """The UUIDs a workspace holds: its env, label, DeviceRequest and nvidia-smi -L all agree."""
    container = docker.containers.get(naming.workspace_name(hub.hub_name, user, server))
    inside = container.exec_run(["printenv", "NVIDIA_VISIBLE_DEVICES"]).output.decode().strip()
    label = container.labels.get(naming.LABEL_GPUS)
    requested = container.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    assert inside == label == ",".join(requested), (inside, label, requested)
    listed = container.exec_run(["nvidia-smi", "-L"]).output.decode()
    seen = [line.rsplit("(UUID: ", 1)[1].rstrip(")") for line in listed.splitlines() if "(UUID: " in line]
    assert sorted(seen) == sorted(requested), listed
    return inside


def test_the_hub_finds_the_engines_gpus_by_itself(ghub):
    """No gpu_ids, no nvidia-smi on the hub's side: the probe container found the 4 stand-in GPUs."""
    assert wait_for(lambda: "4 GPUs found through the Docker engine" in ghub.log_tail(400), timeout=60), (
        ghub.log_tail()
    )
    overview = ghub.api("GET", "mlhub/gpus").json()
    assert [(g["index"], g["uuid"], g["name"]) for g in overview["gpus"]] == [
        (index, uuid, name) for index, uuid, name, _ in STANDIN_GPUS
    ]
    assert overview["ok"] and all(g["free"] for g in overview["gpus"])
    # the probe container is gone
    assert not ghub.api("GET", "mlhub/gpus").json()["gpus"][0]["holders"]


def test_gpus_are_exclusive_freed_on_stop_and_rechecked_on_restart(ghub, docker):
    users = [ghub.create_user(f"gpu{i}") for i in range(3)]
    with ThreadPoolExecutor(3) as pool:  # three spawns at once, one GPU each
        results = list(pool.map(lambda u: ghub.spawn(u, "w", {"gpus": 1, "mem_limit": "512M"}), users))
    assert all(r.status_code in (201, 202) for r in results), [r.text for r in results]
    held = {u: visible_devices(docker, ghub, u) for u in users}
    assert len(set(held.values())) == 3 and set(held.values()) < set(UUIDS), held

    # a GPU in use cannot be asked for, by index or by UUID; the free one can
    late = ghub.create_user("gpulate")
    taken_index = str(UUIDS.index(held[users[0]]))
    for ref in (taken_index, held[users[0]]):
        r = ghub.api("POST", f"users/{late}/servers/w", json={"gpus": f"device={ref}"})
        assert r.status_code == 400 and "in use" in r.json()["message"], r.text
    free = (set(UUIDS) - set(held.values())).pop()
    free_index = str(UUIDS.index(free))
    assert ghub.spawn(late, "w", {"gpus": f"device={free_index}", "mem_limit": "512M"}).status_code in (
        201,
        202,
    )
    assert visible_devices(docker, ghub, late) == free  # asked by index, held by UUID
    r = ghub.api("POST", f"users/{ghub.create_user('gpunone')}/servers/w", json={"gpus": 1})
    assert r.status_code == 400 and "1 GPUs requested, 0 free" in r.json()["message"]

    # the admin overview, the metrics and the workspace rows say who holds which GPU
    overview = {g["uuid"]: g for g in ghub.api("GET", "mlhub/gpus").json()["gpus"]}
    assert {u: overview[uuid]["holders"] for u, uuid in held.items()} == {u: [f"{u}/w"] for u in users}
    metrics = hub_metrics(ghub)
    assert f'mlhub_gpus_total{{hub="{ghub.hub_name}"}} 4.0' in metrics
    for user in users:
        assert f'mlhub_gpus_allocated{{hub="{ghub.hub_name}",user="{user}"}} 1.0' in metrics

    # stopping frees a GPU; the stopped workspace's GPU is taken meanwhile: its restart gets the free one
    ghub.stop_server(users[0], "w")
    assert f'user="{users[0]}"' not in hub_metrics(ghub)
    assert ghub.spawn(late, "x", {"gpus": f"device={held[users[0]]}", "mem_limit": "512M"}).status_code in (
        201,
        202,
    )
    ghub.stop_server(users[1], "w")
    assert ghub.spawn(users[0], "w").status_code in (201, 202)  # same options, GPU re-checked
    assert visible_devices(docker, ghub, users[0]) == held[users[1]]
    # the form lists the GPUs with their models and which are free
    sign_up(ghub, "admin")
    admin, _ = log_in(ghub, "admin")
    form = admin.get(f"{ghub.url}/hub/spawn/admin/new", timeout=30)
    assert form.status_code == 200, form.text[:300]
    # users[0], users[2] and late (twice) hold all four GPUs now
    assert form.text.count("in use</span>") == 4 and form.text.count(">free</span>") == 0
    assert "GPU 3: NVIDIA A100-SXM4-80GB" in form.text and 'name="gpus"' in form.text
    page = admin.get(f"{ghub.url}/hub/mlhub/admin", timeout=30).text
    assert f"<code>{held[users[2]]}</code>" in page and f"{users[2]}/w" in page
    # workspaces without GPUs see none, whatever their image says
    plain = plain_user(ghub)
    assert ghub.spawn(plain, "w", {"mem_limit": "512M"}).status_code in (201, 202)
    container = docker.containers.get(naming.workspace_name(ghub.hub_name, plain, "w"))
    assert container.exec_run(["printenv", "NVIDIA_VISIBLE_DEVICES"]).output.decode().strip() == "void"
    assert not container.attrs["HostConfig"]["DeviceRequests"]
    assert container.exec_run(["nvidia-smi", "-L"]).exit_code != 0


def test_only_admins_see_and_refresh_the_gpus(ghub):
    user = ghub.create_user("gpunosy")
    token = ghub.api("POST", f"users/{user}/tokens", json={}).json()["token"]
    for method, path in (("GET", "mlhub/gpus"), ("POST", "mlhub/gpus/refresh")):
        r = ghub.api(method, path, token=token)
        assert r.status_code == 403, r.text
    before = ghub.api("GET", "mlhub/gpus").json()["probed_at"]
    refreshed = ghub.api("POST", "mlhub/gpus/refresh")
    assert refreshed.status_code == 200 and refreshed.json()["probed_at"] > before
    assert len(refreshed.json()["gpus"]) == 4


def test_an_engine_refusing_the_gpu_request_is_a_clear_error(docker, tmp_path):
    """GPUs configured (gpu_ids) on an engine without their device driver: the spawn fails clearly and
    leaves nothing behind."""
    hub = Hub(
        tmp_path / "gpu-refused",
        user_config=GPU_CONFIG
        + 'c.MLHubDockerSpawner.gpu_ids = ["0", "1"]\nc.MLHubDockerSpawner.gpu_driver = "mlhub-no-such-driver"\n',
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


def test_an_engine_without_gpu_support_is_said_once_and_offers_no_gpus(docker, tmp_path):
    """Discovery on an engine without the toolkit (here: a driver it does not know): a clear log line,
    the admin overview says why, and a GPU request is a 400, not a failed container."""
    hub = Hub(
        tmp_path / "gpu-none",
        user_config=GPU_CONFIG + 'c.MLHubDockerSpawner.gpu_driver = "mlhub-no-driver"\n',
    )
    try:
        hub.start()
        assert wait_for(lambda: "the Docker engine has no GPU support" in hub.log_tail(400), timeout=60)
        overview = hub.api("GET", "mlhub/gpus").json()
        assert overview["gpus"] == [] and not overview["ok"] and "container toolkit" in overview["source"]
        user = hub.create_user("nogpu")
        r = hub.api("POST", f"users/{user}/servers/w", json={"gpus": 1})
        assert r.status_code == 400 and "GPUs are not available" in r.json()["message"], r.text
        assert not exists(docker.containers, naming.workspace_name(hub.hub_name, user, "w"))
        assert not docker.containers.list(all=True, filters={"label": "mlhub.component=gpu-probe"})
    finally:
        hub.destroy(docker)


@pytest.mark.gpu
def test_a_real_gpu_is_usable_in_a_workspace(docker, tmp_path):
    """Only on a host with an NVIDIA GPU and its toolkit (skipped elsewhere): discovery finds the real GPUs and
    nvidia-smi sees the one a workspace holds."""
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA driver on this machine (nvidia-smi is not installed)")
    hub = Hub(tmp_path / "real-gpu", user_config="c.MLHubDockerSpawner.max_gpus = 1\n")
    try:
        hub.start()
        user = hub.create_user("cuda")
        assert hub.spawn(
            user, "w", {"gpus": 1, "env": {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}}
        ).status_code in (201, 202)
        container = docker.containers.get(naming.workspace_name(hub.hub_name, user, "w"))
        uuid = container.labels[naming.LABEL_GPUS]
        result = container.exec_run(["nvidia-smi", "-L"])
        assert result.exit_code == 0 and f"(UUID: {uuid})".encode() in result.output, result.output
    finally:
        hub.destroy(docker)
