"""GPU inventory and allocation (pure): exclusive by default, clear errors, stable on restart."""

import pytest

from mlhubspawner.gpus import GPU, allocate, gpus_in_use, inventory_from_ids, parse_nvidia_smi, status
from mlhubspawner.options import OptionsError, WorkspaceOptions, check_quota, parse_options
from mlhubspawner.policy import Policy

FOUR = inventory_from_ids("0,1,2,3")


UUIDS = [f"GPU-{n}{n}{n}{n}{n}{n}{n}{n}-0000-1111-2222-33334444555{n}" for n in range(4)]
PROBED = [GPU(str(n), UUIDS[n], "NVIDIA A100-SXM4-40GB", 40960) for n in range(4)]


def test_inventory_from_config_and_nvidia_smi():
    assert [g.id for g in inventory_from_ids(" 0, 2 ")] == ["0", "2"]
    assert [g.id for g in inventory_from_ids(["GPU-" + UUIDS[1][4:].upper()])] == [UUIDS[1]]
    with pytest.raises(ValueError, match="neither an index"):
        inventory_from_ids("0,gpu1")
    with pytest.raises(ValueError, match="repeat"):
        inventory_from_ids(["1", "1"])
    # nvidia-smi lists GPUs in any order, with warnings between them: GPUs come back in index order
    text = f"1, {UUIDS[1]}, NVIDIA A100-SXM4-80GB, 81920\nWARNING: infoROM is corrupted\n0, {UUIDS[0]}, T4, 15360\n"
    assert parse_nvidia_smi(text) == [
        GPU("0", UUIDS[0], "T4", 15360),
        GPU("1", UUIDS[1], "NVIDIA A100-SXM4-80GB", 81920),
    ]
    assert parse_nvidia_smi("No devices were found\n") == []
    assert PROBED[2].describe() == "GPU 2: NVIDIA A100-SXM4-40GB, 40 GB"


def test_labels_of_live_containers_say_which_gpus_are_taken():
    used = gpus_in_use([("a", "0,1"), ("b", "2"), ("c", None)], FOUR)
    assert used == {"0": ["a"], "1": ["a"], "2": ["b"]}


def test_labels_name_gpus_by_uuid_and_older_index_labels_still_count():
    used = gpus_in_use(
        [("a", UUIDS[0]), ("old", "1"), ("gone", "GPU-ffffffff-0000-1111-2222-333344445555")], PROBED
    )
    # an index label of an earlier version holds the GPU of that index; an unknown UUID stays held
    assert set(used) == {UUIDS[0], UUIDS[1], "GPU-ffffffff-0000-1111-2222-333344445555"}
    assert allocate("2", PROBED, used) == [UUIDS[2], UUIDS[3]]


def test_allocation_hands_out_uuids_and_accepts_indices_or_uuids():
    assert allocate("device=2", PROBED, {}) == [UUIDS[2]]
    assert allocate(f"device={UUIDS[3]},0", PROBED, {}) == [UUIDS[0], UUIDS[3]]
    with pytest.raises(OptionsError, match="repeat"):
        allocate(f"device={UUIDS[1]},1", PROBED, {})  # the same GPU twice, by UUID and index
    with pytest.raises(OptionsError, match="GPU 1 in use"):
        allocate("device=1", PROBED, {UUIDS[1]: ["a"]})
    # a restart keeps the GPUs it had, whether state holds UUIDs or (older) indices
    assert allocate("1", PROBED, {}, prefer=[UUIDS[3]]) == [UUIDS[3]]
    assert allocate("1", PROBED, {}, prefer=["2"]) == [UUIDS[2]]


def test_status_says_who_holds_each_gpu():
    rows = status(PROBED, {UUIDS[1]: ["bob/train", "alice"]})
    assert [r["free"] for r in rows] == [True, False, True, True]
    assert rows[1]["holders"] == ["alice", "bob/train"] and rows[1]["uuid"] == UUIDS[1]
    assert rows[1]["label"] == "GPU 1: NVIDIA A100-SXM4-40GB, 40 GB"


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
