"""GPU inventory and allocation (pure): exclusive by default, clear errors, stable on restart."""

import pytest

from mlhubspawner.gpus import GPU, allocate, gpus_in_use, inventory_from_ids, parse_nvidia_smi
from mlhubspawner.options import OptionsError, WorkspaceOptions, check_quota, parse_options
from mlhubspawner.policy import Policy

FOUR = inventory_from_ids("0,1,2,3")


def test_inventory_from_config_and_nvidia_smi():
    assert [g.id for g in inventory_from_ids(" 0, 2 ")] == ["0", "2"]
    with pytest.raises(ValueError, match="not an index"):
        inventory_from_ids("0,gpu1")
    with pytest.raises(ValueError, match="repeat"):
        inventory_from_ids(["1", "1"])
    text = "0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960\n1, GPU-bbbb, NVIDIA A100-SXM4-40GB, 40960\n"
    assert parse_nvidia_smi(text) == [
        GPU("0", "GPU-aaaa", "NVIDIA A100-SXM4-40GB", 40960),
        GPU("1", "GPU-bbbb", "NVIDIA A100-SXM4-40GB", 40960),
    ]
    assert parse_nvidia_smi("No devices were found\n") == []


def test_labels_of_live_containers_say_which_gpus_are_taken():
    used = gpus_in_use([("a", "0,1"), ("b", "2"), ("me", "3"), ("c", None)], exclude="me")
    assert used == {"0": ["a"], "1": ["a"], "2": ["b"]}


def test_counts_get_the_lowest_free_gpus_and_a_clear_error_when_short():
    assert allocate("2", FOUR, {"0": ["a"]}) == ["1", "2"]
    with pytest.raises(OptionsError, match="3 GPUs requested, 2 free"):
        allocate("3", FOUR, {"0": ["a"], "1": ["b"]})


def test_explicit_ids_must_exist_and_be_free_unless_sharing():
    assert allocate("device=0,3", FOUR, {"1": ["a"]}) == ["0", "3"]
    with pytest.raises(OptionsError, match="GPU 1 in use"):
        allocate("device=0,1", FOUR, {"1": ["a"]})
    assert allocate("device=0,1", FOUR, {"1": ["a"]}, sharing=True) == ["0", "1"]
    with pytest.raises(OptionsError, match="no GPU 7"):
        allocate("device=0,7", FOUR, {})


def test_all_and_none():
    assert allocate("all", FOUR, {}) == ["0", "1", "2", "3"]
    with pytest.raises(OptionsError, match="in use"):
        allocate("all", FOUR, {"2": ["a"]})
    assert allocate("", FOUR, {"0": ["a"]}) == []


def test_a_restart_keeps_its_gpus_when_they_are_still_free():
    assert allocate("2", FOUR, {}, prefer=["3", "1"]) == ["1", "3"]
    assert allocate("2", FOUR, {"3": ["other"]}, prefer=["3", "1"]) == ["0", "1"]


def test_many_requests_never_share_a_gpu():
    eight = inventory_from_ids(",".join(str(i) for i in range(8)))
    held = {}
    for n, request in enumerate(["1", "2", "1", "device=6,7", "2"]):
        for gpu_id in allocate(request, eight, held):
            assert gpu_id not in held
            held[gpu_id] = [f"ws{n}"]
    assert len(held) == 8
    with pytest.raises(OptionsError, match="0 free"):
        allocate("1", eight, held)


def test_policy_limits_and_per_user_quota():
    policy = Policy(default_image="a", max_gpus=2, max_gpus_per_user=3)
    assert parse_options({"gpus": "0,1"}, policy).gpus == "device=0,1"
    assert parse_options({"gpus": "device=1"}, policy).gpus == "device=1"
    assert parse_options({"gpus": "1"}, policy).gpus == "1"  # a bare number is a count
    with pytest.raises(OptionsError, match="at most 2 GPUs"):
        parse_options({"gpus": 3}, policy)
    with pytest.raises(OptionsError, match="not available"):
        parse_options({"gpus": 1}, Policy(default_image="a"))
    running = [WorkspaceOptions(image="a", gpus="2")]
    check_quota(WorkspaceOptions(image="a", gpus="1"), running, policy)
    with pytest.raises(OptionsError, match="quota exceeded: 4 GPUs"):
        check_quota(WorkspaceOptions(image="a", gpus="device=0,1"), running, policy)
