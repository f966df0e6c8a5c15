"""The admin's profiles (``c.MLHubSpawner.profiles``): checking the setting, resolving a start, the form (pure)."""

import pytest

from mlhubspawner import profiles
from mlhubspawner.form import form_values, render_options_form
from mlhubspawner.options import GB, OptionsError
from mlhubspawner.policy import Policy
from mlhubspawner.spawner_base import stored_options
from mlhubspawner.ui import workspace_row

GPU_IMAGE = "mlhub-workspace-gpu:1"
POLICY = Policy(
    default_image="mlhub-workspace:1",
    images=("mlhub-workspace:1", GPU_IMAGE),
    default_cpu=2.0,
    max_cpu=16.0,
    default_memory=4 * GB,
    max_memory=64 * GB,
    max_shm_size=16 * GB,
    max_days_to_live=90.0,
    max_gpus=4,
)


def entries():
    return [
        {"name": "Small", "slug": "small", "cpu_limit": 1, "mem_limit": "2G", "default": True},
        {
            "name": "GPU large",
            "slug": "gpu-large",
            "description": "One GPU, 8 CPUs",
            "image": GPU_IMAGE,
            "cpu_limit": 8,
            "mem_limit": "32G",
            "gpus": 1,
            "shm_size": "8G",
            "env": {"TEAM": "vision", "CUDA_CACHE_DISABLE": "1"},
            "days_to_live": 14,
            "groups": ["gpu-users"],
        },
        {"display_name": "Long lived", "days_to_live": 60},
    ]


PROFILES = profiles.parse_profiles(entries())


def resolve(raw, groups=(), allow_custom=True, policy=POLICY, offered=PROFILES):
    return profiles.resolve(raw, policy, profiles.offered(offered, groups), allow_custom)


def test_a_profile_parses_into_sizes_counts_and_a_slug_from_its_name():
    small, gpu, long_lived = PROFILES
    assert (small.cpu_limit, small.mem_limit, small.default) == (1.0, 2 * GB, True)
    assert (gpu.gpus, gpu.shm_size, gpu.days_to_live, gpu.groups) == ("1", 8 * GB, 14.0, {"gpu-users"})
    assert (long_lived.slug, long_lived.name, long_lived.groups) == ("long-lived", "Long lived", None)


@pytest.mark.parametrize(
    "entry, named",
    [
        ({"name": "A", "mem_limit": "lots"}, "[0] ('A'): mem_limit: expected a size"),
        ({"name": "A", "cpu_limit": -1}, "cpu_limit: must be at least 0.01 CPUs"),
        ({"name": "A", "shm_size": 0}, "shm_size: must be a positive size"),
        ({"name": "A", "gpus": "two"}, "gpus: expected a number of GPUs or 'all'"),
        ({"name": "A", "days_to_live": 4000}, "days_to_live: at most 3650 days"),
        ({"name": "A", "cpus": 2}, "cpus: unknown key (known: slug, name"),
        ({"name": "A", "slug": "Big <GPU>"}, "slug: 'Big <GPU>' is not a slug"),
        ({"name": "A", "slug": "custom"}, "slug: 'custom' is the form's own options"),
        ({"name": "A", "groups": []}, "groups: an empty list offers the profile to nobody"),
        ({"name": "A", "image": "Not An Image!"}, "image: 'Not An Image!' is not an image reference"),
        ({"name": "A", "node_selector": {"pool": "a b"}}, "node_selector: the value of pool ('a b')"),
        ({"name": "A", "env": {"1BAD": "x"}}, "env: '1BAD' is not a valid variable name"),
        ({"slug": "a"}, "name: expected a non-empty string"),
        ("small", "MLHubSpawner.profiles[0] must be a dict"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_profile_and_the_field(entry, named):
    with pytest.raises(profiles.ProfileError) as error:
        profiles.parse_profiles([entry])
    assert named in str(error.value)
    assert str(error.value).startswith("MLHubSpawner.profiles[0]")


def test_duplicate_slugs_and_two_defaults_are_refused_every_problem_at_once():
    with pytest.raises(profiles.ProfileError) as error:
        profiles.parse_profiles(
            [
                {"name": "GPU", "default": True},
                {"name": "gpu", "default": True},
                {"name": "x", "mem_limit": "lots"},
            ]
        )
    assert len(error.value.errors) == 3
    assert "slug 'gpu' is used by 2 profiles" in str(error.value)
    assert "only one profile may be the default, got gpu, gpu" in str(error.value)


def test_the_policy_refuses_what_is_beyond_it_naming_the_setting():
    policy = Policy(default_image="mlhub-workspace:1", images=("mlhub-workspace:1",), max_cpu=4.0, max_gpus=2)
    checked = profiles.parse_profiles(
        [
            {"name": "A", "image": "someone/else:1", "cpu_limit": 8, "gpus": "all"},
            {"name": "B", "env": {"JUPYTERHUB_API_TOKEN": "x"}, "node_selector": {"pool": "a100"}, "gpus": 3},
        ]
    )
    errors = profiles.policy_errors(
        checked, policy, names={"max_cpu": "MLHubDockerSpawner.max_cpu_limit"}, node_selector=False
    )
    text = "\n".join(errors)
    assert (
        "profiles[0] ('a'): image: someone/else:1 is not an offered image: add it to workspace_images" in text
    )
    assert "profiles[0] ('a'): cpu_limit: 8 is above MLHubDockerSpawner.max_cpu_limit = 4" in text
    assert "profiles[0] ('a'): gpus: 'all' needs allow_all_gpus = True" in text
    assert "profiles[1] ('b'): env: JUPYTERHUB_API_TOKEN is reserved" in text
    assert "profiles[1] ('b'): node_selector: only Kubernetes" in text
    assert "profiles[1] ('b'): gpus: 3 is above max_gpus = 2" in text
    assert profiles.policy_errors(checked[1:], policy, node_selector=True) == [
        "MLHubSpawner.profiles[0] ('b'): gpus: 3 is above max_gpus = 2",
        "MLHubSpawner.profiles[0] ('b'): env: JUPYTERHUB_API_TOKEN is reserved (reserved_env_names): ML Hub sets it",
    ]


def test_a_profile_sets_the_options_and_the_user_may_ask_for_less():
    options, policy = resolve({"profile": "gpu-large"}, groups={"gpu-users"})
    assert (options.profile, options.profile_name, options.image) == ("gpu-large", "GPU large", GPU_IMAGE)
    assert (options.cpu_limit, options.mem_limit, options.gpus, options.shm_size) == (
        8.0,
        32 * GB,
        "1",
        8 * GB,
    )
    assert (options.days_to_live, options.env) == (14.0, {"TEAM": "vision", "CUDA_CACHE_DISABLE": "1"})
    assert (policy.max_cpu, policy.max_memory, policy.max_days_to_live) == (8.0, 32 * GB, 14.0)
    less, _ = resolve(
        {
            "profile": "gpu-large",
            "cpu_limit": 2,
            "mem_limit": "8G",
            "gpus": "none",
            "env": {"TEAM": "nlp", "X": "1"},
        },
        groups={"gpu-users"},
    )
    assert (less.cpu_limit, less.mem_limit, less.gpus) == (2.0, 8 * GB, "")
    assert less.env == {"TEAM": "nlp", "CUDA_CACHE_DISABLE": "1", "X": "1"}  # the user's own on top
    assert less.image == GPU_IMAGE and less.profile == "gpu-large"


@pytest.mark.parametrize(
    "override, field, message",
    [
        ({"cpu_limit": 9}, "cpu_limit", "at most 8 CPUs"),
        ({"mem_limit": "33G"}, "mem_limit", "at most 32G"),
        ({"gpus": 2}, "gpus", "profile 'gpu-large' gives at most 1 GPUs"),
        ({"gpus": "all"}, "gpus", "at most 1 GPUs"),
        ({"shm_size": "9G"}, "shm_size", "at most 8G"),
        ({"days_to_live": 15}, "days_to_live", "at most 14 days"),
        ({"image": "mlhub-workspace:1"}, "image", "profile 'gpu-large' runs mlhub-workspace-gpu:1"),
        ({"env": {"JUPYTERHUB_API_TOKEN": "stolen"}}, "env", "JUPYTERHUB_API_TOKEN is reserved"),
        ({"env": "MLHUB_HUB_NAME=other"}, "env", "MLHUB_HUB_NAME is reserved"),
        ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "env", "reserved"),
    ],
)
def test_an_override_beyond_the_profile_or_a_reserved_name_is_refused(override, field, message):
    with pytest.raises(OptionsError) as error:
        resolve({"profile": "gpu-large", **override}, groups={"gpu-users"})
    assert error.value.field == field and message in error.value.message


def test_the_policy_still_bounds_a_profile_on_a_smaller_host():
    small_host = Policy(**{**POLICY.__dict__, "max_cpu": 4.0, "max_memory": 16 * GB})
    options, _ = resolve({"profile": "gpu-large"}, groups={"gpu-users"}, policy=small_host)
    assert (options.cpu_limit, options.mem_limit) == (4.0, 16 * GB)


def test_a_profile_of_another_group_is_unknown_exactly_as_a_slug_that_does_not_exist():
    with pytest.raises(OptionsError) as hidden:
        resolve({"profile": "gpu-large"}, groups={"students"})
    with pytest.raises(OptionsError) as missing:
        resolve({"profile": "gpu-larger"}, groups={"students"})
    assert hidden.value.field == missing.value.field == "profile"
    assert hidden.value.message == "unknown profile 'gpu-large'"
    assert missing.value.message == "unknown profile 'gpu-larger'"
    assert "gpu" not in profiles.form_entries(profiles.offered(PROFILES, {"students"}), {}, True).__repr__()


def test_without_a_profile_the_default_then_custom_then_the_first():
    assert resolve({})[0].profile == "small"  # marked default
    no_default = profiles.parse_profiles([{"name": "A", "cpu_limit": 1}, {"name": "B", "cpu_limit": 2}])
    custom, _ = resolve({"cpu_limit": 3}, offered=no_default)
    assert (custom.profile, custom.cpu_limit) == ("", 3.0)
    assert resolve({}, offered=no_default, allow_custom=False)[0].profile == "a"
    assert resolve({"profile": "custom", "cpu_limit": 3})[0].profile == ""
    with pytest.raises(OptionsError) as error:
        resolve({"profile": "custom"}, allow_custom=False)
    assert "custom options are not allowed (offered: small, long-lived)" in error.value.message
    with pytest.raises(OptionsError) as error:
        resolve({}, groups=(), allow_custom=False, offered=PROFILES[1:2])
    assert error.value.message == "no profile is offered to you"


def test_without_profiles_a_profile_is_unknown_and_custom_is_the_options():
    assert resolve({"profile": "custom", "cpu_limit": 1}, offered=())[0].cpu_limit == 1.0
    with pytest.raises(OptionsError) as error:
        resolve({"profile": "gpu"}, offered=())
    assert (error.value.field, error.value.message) == ("profile", "unknown profile 'gpu'")


def test_a_chosen_profile_takes_none_of_the_hidden_custom_fields_of_the_form():
    form = {"profile": ["small"], "cpu_limit": ["16"], "env": ["JUPYTERHUB_X=1"], "defined_image": ["x:1"]}
    assert profiles.form_options(form, {"cpu_limit": "16", "is_mount_volume": False}) == {
        "profile": "small",
        "is_mount_volume": False,
    }
    custom = profiles.form_options({"profile": ["custom"]}, {"cpu_limit": "3", "is_mount_volume": True})
    assert custom == {"profile": "custom", "cpu_limit": "3", "is_mount_volume": True}


def test_the_form_offers_the_profiles_first_then_custom_and_escapes_their_text():
    hostile = profiles.parse_profiles(
        [{"name": "<script>alert(1)</script>", "slug": "x", "description": "<img src=x onerror=alert(2)>"}]
    )
    entries = profiles.form_entries((*hostile, *PROFILES[:1]), {}, True)
    assert [e["slug"] for e in entries] == ["x", "small", "custom"]
    assert [e["slug"] for e in entries if e["selected"]] == ["small"]
    html = render_options_form(POLICY, form_values(POLICY), profiles=entries)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert 'class="mlhub-custom-fields"' in html and "mlhub-profile-custom-radio" in html
    assert html.index('value="small"') < html.index('value="custom"') < html.index('name="cpu_limit"')
    no_custom = render_options_form(
        POLICY, form_values(POLICY), profiles=profiles.form_entries(PROFILES[:1], {}, False)
    )
    assert 'name="cpu_limit"' not in no_custom and 'value="custom"' not in no_custom
    assert 'name="is_mount_volume"' in no_custom


def test_the_profile_is_kept_in_the_state_and_shown_on_the_row():
    options, _ = resolve({"profile": "gpu-large"}, groups={"gpu-users"})
    restored = stored_options(options.to_dict())
    assert restored == options
    assert stored_options({**options.to_dict(), "node_selector": {"pool": 1}}) is None
    row = workspace_row(user="ann", server="w", status="running", options=restored.to_dict())
    assert row["profile"] == "GPU large"
    assert workspace_row(user="ann", server="w", status="running", options={"image": "x:1"})["profile"] == ""
