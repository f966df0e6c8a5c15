"""KubeSpawner's ``profile_list`` (z2jh ``singleuser.profileList``) with MLHubKubernetesSpawner, on the fake API server.

What a z2jh operator expects: the form offers the profiles, ``{"profile": "<slug>"}`` starts with that
profile's image, limits, env and scheduling, the next start with another profile keeps nothing of it,
and users cannot go beyond what the profile and the admin allow. Contract tests: the pod manifest
the fake receives is what is checked (``tests/fake_k8s.py`` validates it against the API schemas).
"""

import functools
import sys
from pathlib import Path

import pytest
from markupsafe import escape
from tornado import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402

import kube_spawners  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8sprof"
NS = "default"
GB = 1024**3
IMAGE = "mlhub-workspace:test"
SMALL_IMAGE = "registry.example.com/team/small:1.0"
GPU_IMAGE = "registry.example.com/team/cuda:12.4"


def profile_list():
    """A z2jh-style profile list (a fresh copy per test: nothing may be changed in it)."""
    return [
        {
            "display_name": "Small",
            "slug": "small",
            "description": "2 CPUs, 2 GB, the team's slim image",
            "default": True,
            "kubespawner_override": {
                "image": SMALL_IMAGE,
                "cpu_limit": 2,
                "mem_limit": "2G",
                "environment": {"PROFILE": "small", "SMALL_ONLY": "1"},
            },
        },
        {
            "display_name": "GPU large",
            "slug": "gpu-large",
            "description": "One GPU on the A100 pool",
            "kubespawner_override": {
                "image": GPU_IMAGE,
                "cpu_limit": 8,
                "mem_limit": "16G",
                "cpu_guarantee": 4,
                "extra_resource_limits": {"nvidia.com/gpu": "1"},
                "node_selector": {"pool": "a100"},
                "tolerations": [
                    {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
                ],
                "environment": {"PROFILE": "gpu"},
            },
        },
        {
            "display_name": "Plain",
            "slug": "plain",
            "description": "ML Hub's own fields decide",
            "kubespawner_override": {"environment": {"PROFILE": "plain"}},
        },
    ]


fake = kube_spawners.fake_apiserver_fixture(
    NS, prepare=lambda fake: fake.add_node("gpu-node", allocatable={"nvidia.com/gpu": "2"})
)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_config(**traits):
    settings = {
        "max_cpu_limit": 8.0,
        "max_mem_limit": "32G",
        "max_gpus": 2,
        "workspace_images": ["mlhub-workspace:other"],
        "environment": {"TEAM": "ml"},
        "profile_list": profile_list(),
        **traits,
    }
    return kube_spawners.spawner_config(**settings)


def make_spawner(fake, username="alice", server="p", user=None, config=None, **traits):
    return kube_spawners.make_spawner(
        fake,
        username,
        server,
        hub_name=HUB,
        namespace=NS,
        image=IMAGE,
        user=user,
        config=config or make_config(**traits),
    )


owned_by = functools.partial(kube_spawners.owned_by, hub=HUB, namespace=NS)


def notebook(fake, spawner):
    pod = fake.get("pods", NS, spawner.pod_name)
    (container,) = pod["spec"]["containers"]
    return pod, container, {e["name"]: e.get("value") for e in container.get("env", [])}


async def refused(spawner, options):
    spawner.user_options = options
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    return error.value


async def test_the_form_offers_the_profiles_the_default_preselected(fake):
    spawner = make_spawner(fake, "fay")
    form = await spawner.get_options_form()
    assert form.count('name="profile"') == 3
    for profile in profile_list():
        assert f'value="{profile["slug"]}"' in form
        assert str(escape(profile["description"])) in form
    checked = form.split('value="small" checked')  # the default profile
    assert len(checked) == 2
    assert 'value="gpu-large" checked' not in form
    assert GPU_IMAGE in form and 'name="cpu_limit"' in form  # what a profile sets, and ML Hub's fields


async def test_a_profiles_image_limits_env_and_scheduling_reach_the_pod(fake):
    spawner = make_spawner(fake, "gus")
    spawner.user_options = {"profile": "gpu-large"}
    await spawner.start()
    pod, container, env = notebook(fake, spawner)
    assert container["image"] == GPU_IMAGE
    assert container["resources"]["limits"] == {"cpu": "8000m", "memory": str(16 * GB), "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"]["cpu"] == "4000m"  # the profile's cpu_guarantee
    assert pod["metadata"]["labels"][naming.LABEL_GPUS] == "1"
    assert pod["spec"]["nodeSelector"] == {"pool": "a100"}
    tolerations = pod["spec"]["tolerations"]
    assert {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"} in tolerations
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert (env["PROFILE"], env["TEAM"], env["JUPYTER_IMAGE"]) == ("gpu", "ml", GPU_IMAGE)
    assert (env["CPU_LIMIT"], env["MEM_LIMIT"]) == ("8", str(16 * GB))
    await spawner.stop(now=True)


async def test_without_a_choice_the_default_profile_starts(fake):
    spawner = make_spawner(fake, "hana", "")
    await spawner.start()
    _, container, env = notebook(fake, spawner)
    assert container["image"] == SMALL_IMAGE
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": str(2 * GB)}
    assert env["PROFILE"] == "small"
    await spawner.stop(now=True)


async def test_a_later_start_with_another_profile_keeps_nothing_of_the_previous(fake):
    config = make_config()
    spawner = make_spawner(fake, "ines", config=config)
    spawner.user_options = {"profile": "gpu-large"}
    await spawner.start()
    await spawner.stop(now=True)

    spawner.user_options = {"profile": "plain", "cpu_limit": 1}
    await spawner.start()
    pod, container, env = notebook(fake, spawner)
    assert container["image"] == IMAGE  # ML Hub's default: "plain" sets no image
    assert container["resources"]["limits"] == {"cpu": "1000m"}  # no memory limit: none by default
    assert "nvidia.com/gpu" not in container["resources"].get("requests", {})
    assert not pod["spec"].get("nodeSelector")
    assert all(t.get("key") != "pool" for t in pod["spec"].get("tolerations") or [])
    assert env["PROFILE"] == "plain" and "SMALL_ONLY" not in env
    assert spawner.cpu_guarantee is None and spawner.node_selector == {}
    await spawner.stop(now=True)
    # the operator's configured settings are untouched
    assert config.MLHubKubernetesSpawner.environment == {"TEAM": "ml"}
    assert config.MLHubKubernetesSpawner.profile_list == profile_list()
    assert spawner.environment == {"TEAM": "ml"}


async def test_overrides_do_not_leak_to_another_users_spawner(fake):
    config = make_config()
    alice = make_spawner(fake, "jo", config=config)
    alice.user_options = {"profile": "small"}
    await alice.start()
    bob = make_spawner(fake, "kai", config=config)
    bob.user_options = {"profile": "plain"}
    await bob.start()
    _, container, env = notebook(fake, bob)
    assert container["image"] == IMAGE
    assert "SMALL_ONLY" not in env and env["PROFILE"] == "plain"
    assert "cpu" not in container["resources"].get("limits", {})
    _, _, alice_env = notebook(fake, alice)
    assert alice_env["PROFILE"] == "small"
    await alice.stop(now=True)
    await bob.stop(now=True)


async def test_an_unknown_slug_is_a_400_naming_it_and_creates_nothing(fake):
    spawner = make_spawner(fake, "lea")
    error = await refused(spawner, {"profile": "huge"})
    assert (error.status_code, error.field) == (400, "profile")
    message = error.log_message % error.args
    assert "'huge'" in message and "small, gpu-large, plain" in message
    assert owned_by(fake, "lea") == set()


@pytest.mark.parametrize(
    "options, field",
    [
        ({"profile": "small", "image": "evil/miner:latest"}, "image"),
        (
            {"profile": "small", "image": "mlhub-workspace:other"},
            "image",
        ),  # offered, but the profile fixes it
        ({"profile": "small", "cpu_limit": 4}, "cpu_limit"),  # beyond the profile's 2
        ({"profile": "small", "mem_limit": "3G"}, "mem_limit"),
        ({"profile": "small", "gpus": "1"}, None),  # "small" sets no GPUs: the GPU policy decides (allowed)
        ({"profile": "gpu-large", "gpus": "2"}, "gpus"),  # the profile's GPU count is fixed
        ({"profile": "plain", "cpu_limit": 16}, "cpu_limit"),  # the admin's maximum
    ],
)
async def test_a_user_cannot_go_beyond_the_profile_or_the_admin(fake, options, field):
    spawner = make_spawner(fake, "mo", f"x{abs(hash(str(options))) % 1000}")
    if field is None:
        spawner.user_options = options
        await spawner.start()
        assert notebook(fake, spawner)[1]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        await spawner.stop(now=True)
        return
    error = await refused(spawner, options)
    assert (error.status_code, error.field) == (400, field)
    assert fake.get("pods", NS, spawner.pod_name) is None


async def test_the_admins_maximums_hold_over_a_profiles_limits(fake):
    spawner = make_spawner(fake, "ned", max_cpu_limit=3.0, max_mem_limit="4G")
    spawner.user_options = {"profile": "gpu-large"}
    await spawner.start()
    _, container, _ = notebook(fake, spawner)
    assert container["resources"]["limits"]["cpu"] == "3000m"
    assert container["resources"]["limits"]["memory"] == str(4 * GB)
    await spawner.stop(now=True)
    error = await refused(spawner, {"profile": "gpu-large", "cpu_limit": 8})
    assert error.field == "cpu_limit"


def profiles_by_group(spawner):
    """A callable profile_list: "secret" only for olga."""
    offered = profile_list()[2:]
    if spawner.user.name == "olga":
        offered.append(
            {"display_name": "Secret", "slug": "secret", "kubespawner_override": {"image": GPU_IMAGE}}
        )
    return offered


async def profiles_by_group_async(spawner):
    return profiles_by_group(spawner)


@pytest.mark.parametrize("callable_list", [profiles_by_group, profiles_by_group_async])
async def test_a_callable_profile_list_and_another_users_hidden_profile(fake, callable_list):
    olga = make_spawner(fake, "olga", callable_list.__name__.replace("_", "-"), profile_list=callable_list)
    assert 'value="secret"' in await olga.get_options_form()
    olga.user_options = {"profile": "secret"}
    await olga.start()
    assert notebook(fake, olga)[1]["image"] == GPU_IMAGE
    await olga.stop(now=True)

    pia = make_spawner(fake, "pia", callable_list.__name__.replace("_", "-"), profile_list=callable_list)
    assert 'value="secret"' not in await pia.get_options_form()
    error = await refused(pia, {"profile": "secret"})
    assert (error.status_code, error.field) == (400, "profile")
    assert owned_by(fake, "pia") == set()


def image_choices():
    return [
        {
            "display_name": "Pick an image",
            "slug": "pick",
            "profile_options": {
                "image": {
                    "display_name": "Image",
                    "choices": {
                        "small": {"display_name": "Small", "kubespawner_override": {"image": SMALL_IMAGE}},
                        "cuda": {
                            "display_name": "CUDA",
                            "default": True,
                            "kubespawner_override": {"image": GPU_IMAGE, "environment": {"FLAVOUR": "cuda"}},
                        },
                    },
                    "unlisted_choice": {
                        "enabled": True,
                        "display_name": "Other image",
                        "validation_regex": r"^registry\.example\.com/team/[a-z]+:[0-9.]+$",
                        "validation_message": "an image of registry.example.com/team",
                        "kubespawner_override": {"image": "{value}"},
                    },
                },
                "size": {
                    "display_name": "Size",
                    "choices": {
                        "s": {"display_name": "1 CPU", "kubespawner_override": {"cpu_limit": 1}},
                        "m": {"display_name": "2 CPUs", "kubespawner_override": {"cpu_limit": 2}},
                    },
                },
            },
        }
    ]


async def test_profile_options_choices_and_an_unlisted_choice(fake):
    spawner = make_spawner(fake, "quin", profile_list=image_choices())
    form = await spawner.get_options_form()
    assert 'name="profile-option-pick--image"' in form and 'name="profile-option-pick--size"' in form
    assert 'name="profile-option-pick--image--unlisted-choice"' in form

    spawner.user_options = {"profile": "pick"}  # the defaults: cuda, s
    await spawner.start()
    _, container, env = notebook(fake, spawner)
    assert (container["image"], container["resources"]["limits"]["cpu"], env["FLAVOUR"]) == (
        GPU_IMAGE,
        "1000m",
        "cuda",
    )
    await spawner.stop(now=True)

    # the form, as a browser posts it: the chosen profile's fields only count; the Image field is the profile's
    form_data = {
        "profile": ["pick"],
        "defined_image": [IMAGE],
        "profile-option-pick--image": ["unlisted-choice"],
        "profile-option-pick--image--unlisted-choice": ["registry.example.com/team/own:2.1"],
        "profile-option-pick--size": ["m"],
        "cpu_limit": [""],
        "mem_limit": ["1G"],
    }
    spawner.user_options = await spawner.run_options_from_form(form_data)
    await spawner.start()
    _, container, env = notebook(fake, spawner)
    assert container["image"] == "registry.example.com/team/own:2.1"
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": str(GB)}
    assert "FLAVOUR" not in env
    await spawner.stop(now=True)

    for options in (
        {"profile": "pick", "image--unlisted-choice": "evil/miner:latest"},
        {"profile": "pick", "size": "xl"},
    ):
        error = await refused(spawner, options)
        assert (error.status_code, error.field) == (400, "profile")
    assert fake.get("pods", NS, spawner.pod_name) is None


async def test_the_hub_path_applies_and_a_refusal_keeps_nothing(fake):
    spawner = make_spawner(fake, "rui")
    await spawner.apply_user_options(spawner, {"profile": "gpu-large"})
    assert spawner.node_selector == {"pool": "a100"}
    with pytest.raises(web.HTTPError):
        await spawner.apply_user_options(spawner, {"profile": "gpu-large", "cpu_limit": 99})
    assert spawner.node_selector == {} and spawner.environment == {"TEAM": "ml"}


@pytest.mark.parametrize(
    "bad, named",
    [
        ([{"display_name": "X", "kubespawner_override": {"cpu_limt": 2}}], "cpu_limt"),
        ([{"display_name": "X"}, {"display_name": "X"}], "not unique"),
        ([{"slug": "x"}], "display_name"),
        (
            [
                {
                    "display_name": "X",
                    "profile_options": {"o": {"choices": {"a": {"kubespawner_override": {"nope": 1}}}}},
                }
            ],
            "nope",
        ),
    ],
)
async def test_a_bad_profile_list_is_refused_at_hub_start_naming_the_setting(fake, bad, named):
    with pytest.raises(Exception, match="profile_list") as error:
        make_spawner(fake, "sam", profile_list=bad)
    assert named in str(error.value)


async def test_a_profile_list_as_a_dict_is_offered_by_key(fake):
    spawner = make_spawner(fake, "tim", profile_list={"b": profile_list()[1], "a": profile_list()[0]})
    form = await spawner.get_options_form()
    assert 0 < form.index('value="small"') < form.index('value="gpu-large"')
    spawner.user_options = {"profile": "gpu-large"}
    await spawner.start()
    assert notebook(fake, spawner)[1]["image"] == GPU_IMAGE
    await spawner.stop(now=True)


async def test_without_profiles_nothing_changes(fake):
    spawner = make_spawner(fake, "uma", profile_list=[])
    assert 'name="profile"' not in await spawner.get_options_form()
    error = await refused(spawner, {"profile": "small"})
    assert error.field == "profile"
    spawner.user_options = {}
    await spawner.start()
    assert notebook(fake, spawner)[1]["image"] == IMAGE
    await spawner.stop(now=True)
    assert owned_by(fake, "uma") - {f"networkpolicies/{naming.network_name(HUB, 'uma')}"} <= {
        f"persistentvolumeclaims/{spawner.pvc_name}"
    }


async def test_the_form_round_trip_takes_the_chosen_profiles_image_and_limits(fake):
    spawner = make_spawner(fake, "vera", default_cpu_limit=1.0)
    spawner.user_options = {"profile": "small"}
    await spawner.start()
    await spawner.stop(now=True)
    form = await spawner.get_options_form()
    assert 'value="small" checked' in form  # the last profile, preselected
    assert 'name="cpu_limit" class="form-control" inputmode="decimal"\n           value=""' in form
    # the browser sends the fields as rendered, with another profile chosen
    form_data = {"profile": ["gpu-large"], "defined_image": [IMAGE], "cpu_limit": [""], "mem_limit": [""]}
    spawner.user_options = await spawner.run_options_from_form(form_data)
    await spawner.start()
    _, container, _ = notebook(fake, spawner)
    assert container["image"] == GPU_IMAGE
    assert container["resources"]["limits"] == {"cpu": "8000m", "memory": str(16 * GB), "nvidia.com/gpu": "1"}
    await spawner.stop(now=True)
