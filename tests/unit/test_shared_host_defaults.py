"""Shared-host defaults of the policy: a default limit never exceeds the largest allowed one."""

from mlhubspawner.policy import WorkspacePolicy

GB = 1024**3


def test_default_limits_are_lowered_to_the_maximum_and_the_host():
    policy = WorkspacePolicy(default_cpu_limit=2.0, default_mem_limit="4G", max_mem_limit="2G")
    snapshot = policy.policy("img:1", host_cpus=1.0, host_memory=16 * GB)
    assert (snapshot.default_cpu, snapshot.default_memory) == (1.0, 2 * GB)
    roomy = policy.policy("img:1", host_cpus=8.0, host_memory=64 * GB)
    assert (roomy.default_cpu, roomy.default_memory) == (2.0, 2 * GB)
    unset = WorkspacePolicy().policy("img:1", host_cpus=1.0, host_memory=GB)
    assert (unset.default_cpu, unset.default_memory) == (None, None)
