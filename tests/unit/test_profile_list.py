"""KubeSpawner's ``profile_list`` in ML Hub's terms: the pure functions of ``mlhubspawner.kubernetes.profiles``."""

import copy

import pytest

from mlhubspawner.kubernetes import profiles
from mlhubspawner.options import OptionsError, parse_options
from mlhubspawner.policy import Policy

GB = 1024**3
SETTINGS = {"environment", "node_selector", "cpu_guarantee", "extra_resource_limits", "default_url"}


def is_setting(name):
    return name in SETTINGS


def test_slugs_defaults_and_dict_order_are_kubespawners():
    raw = {
        "z": {"display_name": "GPU (A100) large!"},
        "a": {
            "display_name": "First",
            "profile_options": {"size": {"choices": {"s": {}, "m": {}}}},
        },
    }
    before = copy.deepcopy(raw)
    offered = profiles.initialized_profiles(raw)
    assert [p["slug"] for p in offered] == ["first", "gpu-a100-large"]
    assert offered[0]["default"] and not offered[1].get("default")
    assert offered[0]["profile_options"]["size"]["choices"]["s"]["default"]
    assert raw == before  # a copy: the operator's config is never changed


def test_unknown_settings_and_repeated_slugs_are_named():
    errors = profiles.profile_list_errors(
        [
            {"display_name": "A", "kubespawner_override": {"cpu_limt": 1, "image": "x"}},
            {"display_name": "A"},
            {
                "display_name": "B",
                "profile_options": {"o": {"unlisted_choice": {"enabled": True, "validation_regex": "("}}},
            },
        ],
        is_setting,
    )
    assert any("'cpu_limt' is not a setting" in e for e in errors)
    assert any("'a' is not unique" in e for e in errors)
    assert any("validation_regex" in e for e in errors)
    assert not any("image" in e for e in errors)  # ML Hub's option, always allowed
    assert profiles.profile_list_errors([{"display_name": "A"}], is_setting) == []


def test_an_unknown_slug_names_the_offered_ones():
    offered = profiles.initialized_profiles([{"display_name": "A"}, {"display_name": "B"}])
    with pytest.raises(OptionsError) as error:
        profiles.select_profile(offered, {"profile": "c"})
    assert error.value.field == "profile" and "offered: a, b" in error.value.message
    assert profiles.select_profile(offered, {})[0]["slug"] == "a"


def test_choices_unlisted_values_and_their_validation():
    offered = profiles.initialized_profiles(
        [
            {
                "display_name": "P",
                "kubespawner_override": {"default_url": "/lab"},
                "profile_options": {
                    "tag": {
                        "choices": {"old": {"kubespawner_override": {"image": "team/nb:1"}}},
                        "unlisted_choice": {
                            "enabled": True,
                            "validation_regex": r"^[0-9.]+$",
                            "kubespawner_override": {
                                "image": "team/nb:{value}",
                                "environment": {"TAG": "{value}"},
                            },
                        },
                    }
                },
            }
        ]
    )
    _, overrides = profiles.select_profile(offered, {"profile": "p"})
    assert overrides == [{"default_url": "/lab"}, {"image": "team/nb:1"}]
    _, overrides = profiles.select_profile(offered, {"profile": "p", "tag--unlisted-choice": "2.5"})
    assert overrides[1] == {"image": "team/nb:2.5", "environment": {"TAG": "2.5"}}
    for bad in ({"tag--unlisted-choice": "2; rm"}, {"tag": "new"}, {"tag": ["old"]}):
        with pytest.raises(OptionsError):
            profiles.select_profile(offered, {"profile": "p", **bad})


def test_merged_copies_and_none_removes():
    base = {"A": "1", "nested": {"x": 1}}
    result = profiles.merged(base, {"A": None, "B": "2", "nested": {"y": 2}})
    assert result == {"B": "2", "nested": {"x": 1, "y": 2}}
    assert base == {"A": "1", "nested": {"x": 1}}


def test_a_profiles_limits_are_the_default_and_ceiling_under_the_admins():
    policy = Policy(default_image="hub/ws:1", images=("hub/ws:1", "hub/ws:2"), max_cpu=4.0, max_memory=8 * GB)
    choice = profiles.ProfileChoice("big", "Big", image="team/big:1", cpu_limit=16.0, mem_limit=2 * GB)
    constrained = profiles.constrained_policy(policy, choice)
    assert (constrained.default_cpu, constrained.max_cpu) == (4.0, 4.0)  # the admin's maximum holds
    assert (constrained.default_memory, constrained.max_memory) == (2 * GB, 2 * GB)
    options = parse_options(profiles.with_choice({}, choice), constrained)
    assert (options.image, options.cpu_limit, options.mem_limit) == ("team/big:1", 4.0, 2 * GB)
    with pytest.raises(OptionsError) as error:
        profiles.with_choice({"image": "hub/ws:2"}, choice)
    assert error.value.field == "image"
    assert profiles.with_choice({"image": " team/big:1 "}, choice)["image"] == "team/big:1"


def test_the_form_counts_only_the_chosen_profiles_fields():
    form = {
        "profile": ["b"],
        "profile-option-a--size": ["xl"],
        "profile-option-b--size": ["s"],
        "profile-option-b--image": ["unlisted-choice"],
        "profile-option-b--image--unlisted-choice": ["team/x:1"],
        "profile-option-b--tag--unlisted-choice": ["ignored: its select says no"],
    }
    assert profiles.form_profile_options(form) == {
        "profile": "b",
        "size": "s",
        "image--unlisted-choice": "team/x:1",
    }
    assert profiles.form_profile_options({"cpu_limit": ["2"]}) == {}


def test_form_entries_preselect_the_last_choice():
    offered = profiles.initialized_profiles(
        [
            {"display_name": "A", "description": "<b>x</b>"},
            {"display_name": "B", "profile_options": {"size": {"choices": {"s": {}, "m": {}}}}},
        ]
    )
    entries = profiles.form_entries(offered, {"profile": "b", "size": "m"})
    assert [e["selected"] for e in entries] == [False, True]
    assert entries[1]["options"][0]["choices"] == [("s", "s", False), ("m", "m", True)]
    assert profiles.form_entries(offered, {"profile": "gone"})[0]["selected"]  # a stale slug: the default


def test_a_profiles_guarantees_are_the_requests_at_most_the_limits():
    from mlhubspawner.kubernetes.objects import resource_requirements

    assert resource_requirements(cpu_limit=8, mem_limit=4 * GB, request_ratio=0.5, cpu_request=2)[
        "requests"
    ] == {
        "cpu": "2000m",
        "memory": str(2 * GB),
    }
    assert resource_requirements(cpu_limit=2, cpu_request=4)["requests"] == {"cpu": "2000m"}
    assert resource_requirements(mem_request=GB)["requests"] == {"memory": str(GB)}
