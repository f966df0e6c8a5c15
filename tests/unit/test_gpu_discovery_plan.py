"""The GPU probe's container (pure) and the GPU series on the hub's metrics endpoint."""

import asyncio

from prometheus_client import REGISTRY, generate_latest

from mlhubspawner import metrics, naming
from mlhubspawner.docker import gpu_discovery
from mlhubspawner.gpus import GPU, status

UUID = "GPU-0a0a0a0a-0000-1111-2222-333344445555"


def test_the_probe_asks_for_every_gpu_runs_only_nvidia_smi_and_has_no_network():
    kwargs = gpu_discovery.probe_create_kwargs("mlhub:0.1.0", "hub1")
    assert kwargs["entrypoint"] == ["nvidia-smi"]
    assert kwargs["command"] == ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
    assert kwargs["labels"] == {naming.LABEL_ORIGIN: "hub1", naming.LABEL_COMPONENT: "gpu-probe"}
    assert kwargs["name"].startswith("hub1-gpu-probe-")
    host = gpu_discovery.probe_host_config("nvidia")
    # Count -1 is `--gpus all`; "utility" is the capability under which the toolkit injects nvidia-smi
    assert host["device_requests"] == [
        {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "utility"]]}
    ]
    assert host["network_mode"] == "none" and host["cap_drop"] == ["ALL"]


def test_an_engine_without_the_toolkit_is_explained():
    text = 'could not select device driver "nvidia" with capabilities: [[gpu utility]]'
    message = gpu_discovery.explain_failure(text)
    assert "no GPU support" in message and "container toolkit" in message and "gpu_ids" in message
    assert gpu_discovery.explain_failure("boom").endswith("boom")


def test_gpu_series_on_the_metrics_endpoint():
    inventory = [GPU("0", UUID, "T4", 15360), GPU("1", "", "", 0)]
    metrics.observe_gpus("metrics-test", status(inventory, {UUID: ["alice/train"], "1": ["alice"]}))
    text = generate_latest(REGISTRY).decode()
    assert 'mlhub_gpus_total{hub="metrics-test"} 2.0' in text
    assert 'mlhub_gpus_allocated{hub="metrics-test",user="alice"} 2.0' in text
    assert f'mlhub_gpu_allocated{{hub="metrics-test",index="0",name="T4",uuid="{UUID}"}} 1.0' in text
    # a user who frees their GPUs disappears from the series
    metrics.observe_gpus("metrics-test", status(inventory, {}))
    text = generate_latest(REGISTRY).decode()
    assert 'user="alice"' not in text and 'mlhub_gpus_total{hub="metrics-test"} 2.0' in text


def test_discovery_at_hub_start_runs_for_our_docker_spawner_only(monkeypatch):
    """jupyterhub_config.py starts the probe in the background for mlhub-docker (or a subclass), nothing else."""
    from traitlets.config import Config

    from mlhubspawner.docker import spawner as docker_spawner

    probed = []

    async def fake_discovery(cls, config):
        probed.append(cls.__name__)

    monkeypatch.setattr(
        docker_spawner.MLHubDockerSpawner, "discover_gpus_at_start", classmethod(fake_discovery)
    )

    async def start_with(spawner_class):
        config = Config()
        config.JupyterHub.spawner_class = spawner_class
        task = docker_spawner.discover_gpus_at_hub_start(config)
        if task is not None:
            await task
        return task is not None

    results = {
        name: asyncio.run(start_with(name))
        for name in (
            "mlhub-docker",
            "mlhubspawner.docker.spawner.MLHubDockerSpawner",
            "mlhub-kubernetes",
            "dockerspawner.DockerSpawner",
            "no.such.Spawner",
        )
    }
    assert results == {
        "mlhub-docker": True,
        "mlhubspawner.docker.spawner.MLHubDockerSpawner": True,
        "mlhub-kubernetes": False,
        "dockerspawner.DockerSpawner": False,
        "no.such.Spawner": False,
    }
    assert probed == ["MLHubDockerSpawner", "MLHubDockerSpawner"]
    # no running loop (a tool reading the config): nothing is started
    outside = Config()
    outside.JupyterHub.spawner_class = "mlhub-docker"
    assert docker_spawner.discover_gpus_at_hub_start(outside) is None
    assert len(probed) == 2
