"""The admin policy as traitlets: config values are validated at start, snapshot is capped by the host."""

import pytest
from traitlets import TraitError
from traitlets.config import Config

from mlhubspawner.policy import WorkspacePolicy

GB = 1024**3


def test_policy_snapshot_caps_limits_at_the_engine_size():
    config = Config()
    config.WorkspacePolicy.max_cpu_limit = 64
    config.WorkspacePolicy.max_mem_limit = "512G"
    config.WorkspacePolicy.workspace_images = ["team/ml:2", "base:1"]
    policy = WorkspacePolicy(config=config).policy("base:1", host_cpus=8, host_memory=16 * GB)
    assert policy.max_cpu == 8
    assert policy.max_memory == 16 * GB
    assert policy.images == ("base:1", "team/ml:2")
    assert policy.default_shm_size == 256 * 1024**2


def test_sizes_accept_strings_and_bytes():
    config = Config()
    config.WorkspacePolicy.max_total_mem_per_user = "1.5G"
    config.WorkspacePolicy.default_mem_limit = 2 * GB
    p = WorkspacePolicy(config=config).policy("a")
    assert p.max_total_memory_per_user == int(1.5 * GB)
    assert p.default_memory == 2 * GB


@pytest.mark.parametrize(
    "trait,value,message",
    [
        ("max_cpu_limit", -1.0, "max_cpu_limit must be > 0"),
        ("max_days_to_live", 0.0, "max_days_to_live must be > 0"),
        ("max_mem_limit", "lots", "max_mem_limit"),
    ],
)
def test_bad_config_values_name_the_setting(trait, value, message):
    with pytest.raises((TraitError, ValueError), match=message):
        setattr(WorkspacePolicy(), trait, value)


def test_lifetime_has_a_shipped_maximum_and_a_hard_ceiling():
    assert WorkspacePolicy().policy("a").max_days_to_live == 90
    for trait in ("max_days_to_live", "default_days_to_live"):
        with pytest.raises((TraitError, ValueError), match=f"{trait} must be at most 3650"):
            setattr(WorkspacePolicy(), trait, 3651.0)
        with pytest.raises((TraitError, ValueError), match=trait):
            setattr(WorkspacePolicy(), trait, float("inf"))
    policy = WorkspacePolicy()
    policy.max_days_to_live = None  # users may ask for "never"
    assert policy.policy("a").max_days_to_live is None


def test_gpus_are_offered_by_default_as_many_as_the_engine_has():
    """No GPU setting: every GPU found is offered to one workspace; unknown or none found → no GPUs."""
    assert WorkspacePolicy().policy("img", gpu_count=4).max_gpus == 4
    assert WorkspacePolicy().policy("img", gpu_count=None).max_gpus == 0
    assert WorkspacePolicy().policy("img", gpu_count=0).max_gpus == 0
    assert WorkspacePolicy(max_gpus=2).policy("img", gpu_count=4).max_gpus == 2
    assert WorkspacePolicy(max_gpus=0).policy("img", gpu_count=4).max_gpus == 0
    assert WorkspacePolicy(max_gpus=8).policy("img", gpu_count=None).max_gpus == 8
