"""Pure Docker builders: what we ask the engine for, compared as dicts."""

from mlhubspawner.docker import objects
from mlhubspawner.docker.spawner import _with_host
from mlhubspawner.spawner_base import plan_expiration

GB = 1024**3


def test_host_config_limits_volume_and_gpus():
    host = objects.make_host_config(
        network="mlhub-alice",
        cpu_limit=0.5,
        mem_limit=2 * GB,
        shm_size=256 * 1024**2,
        volume="mlhub-ws-alice",
        gpus=["0", "2"],
    )
    assert host == {
        "network_mode": "mlhub-alice",
        "restart_policy": {"Name": "no"},
        "nano_cpus": 500_000_000,
        "mem_limit": 2 * GB,
        "shm_size": 256 * 1024**2,
        "binds": {"mlhub-ws-alice": {"bind": "/workspace", "mode": "rw"}},
        "device_requests": [{"Driver": "nvidia", "Capabilities": [["gpu"]], "DeviceIDs": ["0", "2"]}],
    }
    assert objects.make_host_config(network="n") == {"network_mode": "n", "restart_policy": {"Name": "no"}}
    assert objects.make_host_config(network="n", gpus=["1"], gpu_driver="other")["device_requests"] == [
        {"Driver": "other", "Capabilities": [["gpu"]], "DeviceIDs": ["1"]}
    ]


def test_host_config_shared_host_limits():
    host = objects.make_host_config(
        network="n", pids_limit=4096, no_new_privileges=True, cap_drop=["NET_RAW"]
    )
    assert host["pids_limit"] == 4096
    assert host["security_opt"] == ["no-new-privileges"]
    assert host["cap_drop"] == ["NET_RAW"]
    # 0 / off / empty: nothing asked of the engine (its defaults)
    off = objects.make_host_config(network="n", pids_limit=0, no_new_privileges=False, cap_drop=[])
    assert off == {"network_mode": "n", "restart_policy": {"Name": "no"}}


def test_extra_config_is_merged_without_touching_the_input():
    extra = {"restart_policy": {"MaximumRetryCount": 0}, "privileged": False}
    host = objects.make_host_config(network="n", extra=extra)
    assert host["restart_policy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert extra == {"restart_policy": {"MaximumRetryCount": 0}, "privileged": False}


def test_container_kwargs_and_config_hash_ignore_tokens_and_expiry():
    def kwargs(token, expiry, cpu="1"):
        return objects.make_container_kwargs(
            name="mlhub-ws-alice",
            image="img:1",
            env={"JUPYTERHUB_API_TOKEN": token, "CPU_LIMIT": cpu},
            labels={"mlhub.origin": "mlhub", "mlhub.expiration_timestamp_seconds": expiry},
            port=8080,
        )

    a = kwargs("t1", "100")
    assert a["environment"] == ["CPU_LIMIT=1", "JUPYTERHUB_API_TOKEN=t1"]
    assert a["ports"] == [8080] and a["hostname"] == "mlhub-ws-alice"
    host = {"nano_cpus": 1}
    assert objects.config_hash(a, host) == objects.config_hash(kwargs("t2", "200"), host)
    assert objects.config_hash(a, host) != objects.config_hash(kwargs("t1", "100", cpu="2"), host)
    assert objects.config_hash(a, host) != objects.config_hash(a, {"nano_cpus": 2})


def test_lifetime_counts_from_creation_and_restarts_after_expiry():
    created, expiration = plan_expiration(1000, 1)
    assert (created, expiration) == (1000, 1000 + 86400)
    # a restart (or a change of options) does not extend it
    assert plan_expiration(5000, 2, created, expiration) == (1000, 1000 + 2 * 86400)
    # once expired, the next start begins a new lifetime
    assert plan_expiration(100000, 1, created, expiration) == (100000, 100000 + 86400)
    assert plan_expiration(5000, None, created, expiration) == (1000, 0)


def test_hub_url_rewritten_to_the_gateway():
    assert _with_host("http://127.0.0.1:8081/hub/api", "10.213.0.1") == "http://10.213.0.1:8081/hub/api"
    assert (
        _with_host("http://hub/hub/api/users/a/activity?x=1", "10.0.0.1")
        == "http://10.0.0.1/hub/api/users/a/activity?x=1"
    )
