"""The real engine with the GPU stand-in hook: containers see exactly the fake GPUs they asked for.

`make test` starts dockerd with resources/gpu-standin on its PATH (resources/scripts/ensure-docker.sh), so
Docker's `nvidia` device driver runs the stand-in as a prestart hook, as on a host with NVIDIA's toolkit.
"""

import os
from pathlib import Path

import pytest
from docker.errors import APIError
from docker.types import DeviceRequest

from support import base_image

INVENTORY_FILE = Path(__file__).resolve().parents[2] / "resources" / "gpu-standin" / "inventory.csv"
INVENTORY = [line.split(", ") for line in INVENTORY_FILE.read_text().splitlines() if line.strip()]
LABELS = {"mlhub.test": "gpu-standin-engine"}
STALE = "is the engine's hook an old copy? run `MLHUB_GPU_STANDIN=1 MLHUB_STATE_DIR=.mlhub bash resources/scripts/ensure-docker.sh`"


def run(docker, command, request=None):
    """(exit status, output) of ``command`` in a container of the base image, with a GPU ``request``."""
    container = docker.containers.create(
        base_image(docker), command, device_requests=[request] if request else None, labels=LABELS
    )
    try:
        container.start()
        status = container.wait(timeout=60)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:  # a refused start leaves the created container behind too
        container.remove(force=True)


def gpus(device_ids=None, count=0):
    return DeviceRequest(device_ids=device_ids, count=count, capabilities=[["gpu"]])


@pytest.fixture(scope="module")
def gpu_engine(docker):
    try:
        run(docker, ["true"], gpus(["0"]))
    except APIError as e:
        if "device driver" not in str(e):
            raise
        message = f"the engine refuses GPU requests ({e.explanation}): run the tests with `make test` (stand-in hook)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return docker


def test_a_container_sees_exactly_the_gpus_it_asked_for(gpu_engine):
    (_, uuid1, name1, _), (_, uuid3, name3, _) = INVENTORY[1], INVENTORY[3]
    status, out = run(gpu_engine, ["nvidia-smi", "-L"], gpus([uuid3, uuid1]))
    assert status == 0, f"{out} ({STALE})"
    # numbered from 0 inside the container, in host order; the UUIDs stay the host's
    assert out.splitlines() == [f"GPU 0: {name1} (UUID: {uuid1})", f"GPU 1: {name3} (UUID: {uuid3})"], STALE


def test_all_gpus_with_their_host_indices(gpu_engine):
    query = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
    status, out = run(gpu_engine, query, gpus(count=-1))
    assert status == 0, f"{out} ({STALE})"
    assert [line.split(", ") for line in out.splitlines()] == INVENTORY, STALE


def test_an_unknown_gpu_is_refused_at_start(gpu_engine):
    with pytest.raises(APIError, match="unknown device") as refused:
        run(gpu_engine, ["true"], gpus(["0", "GPU-00000000-0000-0000-0000-000000000000"]))
    assert "GPU-00000000-0000-0000-0000-000000000000: unknown device" in str(refused.value)
    assert not gpu_engine.containers.list(all=True, filters={"label": "mlhub.test=gpu-standin-engine"})


def test_a_container_without_a_gpu_request_has_no_nvidia_smi(gpu_engine):
    status, out = run(gpu_engine, ["sh", "-c", "command -v nvidia-smi || echo none"])
    assert (status, out.strip()) == (0, "none")
