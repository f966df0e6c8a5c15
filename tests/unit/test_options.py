"""Option parsing and policy checks: every bad value is refused with the field's name."""

import math

import pytest

from mlhubspawner.options import (
    GB,
    OptionsError,
    WorkspaceOptions,
    check_quota,
    form_to_options,
    parse_options,
    parse_size,
)
from mlhubspawner.policy import Policy

MB = 1024**2
POLICY = Policy(
    default_image="mlhub-workspace:1",
    images=("mlhub-workspace:1", "team/ml:2"),
    max_cpu=4,
    max_memory=8 * GB,
    max_days_to_live=30,
    max_gpus=2,
    max_servers_per_user=2,
    max_total_cpu_per_user=6,
    max_total_memory_per_user=10 * GB,
    host_cpus=8,
)


def test_defaults_apply_when_nothing_is_given():
    options = parse_options({}, POLICY)
    assert options == WorkspaceOptions(
        image="mlhub-workspace:1", shm_size=256 * MB, days_to_live=30, mount_volume=True
    )


def test_rest_values_as_numbers_or_strings():
    a = parse_options({"cpu_limit": 0.5, "mem_limit": 1.5, "days_to_live": "0.5", "shm_size": "512m"}, POLICY)
    b = parse_options(
        {"cpu_limit": "0.5", "mem_limit": "1.5G", "days_to_live": 0.5, "shm_size": "512M"}, POLICY
    )
    assert a == b
    assert (
        a.cpu_limit == 0.5
        and a.mem_limit == int(1.5 * GB)
        and a.shm_size == 512 * MB
        and a.days_to_live == 0.5
    )


@pytest.mark.parametrize(
    "text,size",
    [
        ("2", 2 * GB),
        ("1.5", int(1.5 * GB)),
        ("512M", 512 * MB),
        ("512mb", 512 * MB),
        ("4G", 4 * GB),
        ("4GiB", 4 * GB),
        (" 1g ", GB),
        (3, 3 * GB),
    ],
)
def test_sizes(text, size):
    assert parse_size(text, "mem_limit") == size


@pytest.mark.parametrize(
    "raw,field,message",
    [
        ({"cpu_limit": -1}, "cpu_limit", "at least 0.01"),
        ({"cpu_limit": 0}, "cpu_limit", "at least 0.01"),
        ({"cpu_limit": "nan"}, "cpu_limit", "finite"),
        ({"cpu_limit": math.inf}, "cpu_limit", "finite"),
        ({"cpu_limit": 1e9}, "cpu_limit", "at most 4 CPUs"),
        ({"cpu_limit": True}, "cpu_limit", "expected a number"),
        ({"cpu_limit": "two"}, "cpu_limit", "expected a number"),
        ({"mem_limit": "lots"}, "mem_limit", "expected a size"),
        ({"mem_limit": "-1G"}, "mem_limit", "expected a size"),
        ({"mem_limit": "1M"}, "mem_limit", "at least 128M"),
        ({"mem_limit": "100G"}, "mem_limit", "at most 8G"),
        ({"shm_size": "0"}, "shm_size", "positive"),
        ({"image": "evil/miner:latest"}, "image", "not one of the offered images"),
        ({"image": 42}, "image", "expected an image name"),
        ({"env": "NOEQUALS"}, "env", "line 1 is not NAME=VALUE"),
        ({"env": "1BAD=x"}, "env", "not a valid variable name"),
        ({"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "env", "reserved"),
        ({"env": "MEM_LIMIT=1"}, "env", "reserved"),
        ({"env": {"A": ["list"]}}, "env", "must be a string"),
        ({"env": ["A=1"]}, "env", "expected an object"),
        ({"days_to_live": 0}, "days_to_live", "positive"),
        ({"days_to_live": -3}, "days_to_live", "positive"),
        ({"days_to_live": 31}, "days_to_live", "at most 30"),
        ({"is_mount_volume": "maybe"}, "is_mount_volume", "true or false"),
        ({"gpus": 3}, "gpus", "at most 2"),
        ({"gpus": "all"}, "gpus", "not allowed"),
        ({"gpus": "0,0"}, "gpus", "repeat"),
        ({"gpus": "x"}, "gpus", "expected none"),
        ({"colour": "red"}, "colour", "unknown option"),
    ],
)
def test_bad_values_name_their_field(raw, field, message):
    with pytest.raises(OptionsError) as info:
        parse_options(raw, POLICY)
    assert info.value.field == field
    assert message in info.value.message


def test_custom_images_only_when_allowed_and_well_formed():
    policy = Policy(default_image="a:1", allow_custom_image=True)
    assert parse_options({"image": "registry.example.com:5000/team/ml-ws:1.2"}, policy).image.endswith(
        "ml-ws:1.2"
    )
    with pytest.raises(OptionsError, match="valid image reference"):
        parse_options({"image": "Bad Image!"}, policy)


def test_the_form_names_the_flavors_and_still_submits_the_image():
    from mlhubspawner.form import form_values, render_options_form
    from mlhubspawner.policy import WorkspacePolicy

    config = WorkspacePolicy(
        workspace_images=["mlhub-workspace:1", "other:2"],
        image_display_names={"mlhub-workspace-ml:1": "ml", "mlhub-workspace:1": "<b>minimal</b>"},
    )
    policy = config.policy("mlhub-workspace-ml:1")
    html = render_options_form(policy, form_values(policy))
    assert '<option value="mlhub-workspace-ml:1" selected>ml (mlhub-workspace-ml:1)</option>' in html
    assert "&lt;b&gt;minimal&lt;/b&gt; (mlhub-workspace:1)" in html  # escaped, never markup
    assert '<option value="other:2">other:2</option>' in html  # no name: the image
    assert parse_options({"image": "mlhub-workspace:1"}, policy).image == "mlhub-workspace:1"
    with pytest.raises(OptionsError):
        parse_options({"image": "ml"}, policy)  # a name is no image


def test_env_lines_and_objects():
    env = parse_options({"env": "A=1\n\n# comment\nB = two=2 \n"}, POLICY).env
    assert env == {"A": "1", "B": "two=2"}
    assert parse_options({"env": {"N": 3}}, POLICY).env == {"N": "3"}


def test_no_lifetime_limit_means_never_expires():
    assert parse_options({}, Policy(default_image="a")).days_to_live is None
    assert parse_options({"days_to_live": ""}, Policy(default_image="a")).days_to_live is None


def test_form_data_becomes_rest_options():
    form = {
        "defined_image": ["team/ml:2"],
        "custom_image": ["ignored"],
        "cpu_limit": [" 2 "],
        "mem_limit": [""],
        "env": ["A=1\nB=2"],
        "days_to_live": ["3"],
    }
    assert form_to_options(form) == {
        "image": "team/ml:2",
        "cpu_limit": "2",
        "env": "A=1\nB=2",
        "days_to_live": "3",
        "is_mount_volume": False,
    }
    assert form_to_options(
        {"is_custom_image": ["on"], "custom_image": ["x/y:1"], "is_mount_volume": ["on"]}
    ) == {
        "image": "x/y:1",
        "is_mount_volume": True,
    }


def test_quota_counts_running_workspaces():
    one = WorkspaceOptions(image="a", cpu_limit=2, mem_limit=4 * GB)
    check_quota(one, [one], POLICY)
    with pytest.raises(OptionsError, match="at most 2 running workspaces") as info:
        check_quota(one, [one, one], POLICY)
    assert info.value.field == "quota"
    with pytest.raises(OptionsError, match="quota exceeded: 8G in total"):
        check_quota(
            one,
            [WorkspaceOptions(image="a", cpu_limit=1, mem_limit=4 * GB)],
            Policy(default_image="a", max_total_memory_per_user=6 * GB),
        )
    with pytest.raises(OptionsError, match="quota exceeded: 7 CPUs"):
        check_quota(
            WorkspaceOptions(image="a", cpu_limit=4), [WorkspaceOptions(image="a", cpu_limit=3)], POLICY
        )
    # a workspace without a limit counts as the largest allowed
    with pytest.raises(OptionsError, match="quota exceeded"):
        check_quota(WorkspaceOptions(image="a"), [WorkspaceOptions(image="a", cpu_limit=3)], POLICY)


def test_gpu_ids_may_be_uuids_as_nvidia_smi_prints_them():
    uuid = "GPU-6d3c1e1a-0000-1111-2222-333344445555"
    assert parse_options({"gpus": uuid.upper().replace("GPU", "gpu")}, POLICY).gpus == f"device={uuid}"
    assert parse_options({"gpus": f"1, {uuid}"}, POLICY).gpus == f"device=1,{uuid}"
    for bad in ("1 2", "device=gpu-1", "GPU-xyz", f"{uuid},{uuid.upper()}"):
        with pytest.raises(OptionsError) as info:
            parse_options({"gpus": bad}, POLICY)
        assert info.value.field == "gpus"
