"""JupyterHub's and DockerSpawner's own settings as the options policy reads them, and the hub-start check.

``c.Spawner.cpu_limit``/``mem_limit`` (or on DockerSpawner/KubeSpawner) are the defaults of the options,
DockerSpawner's ``allowed_images`` lists the images; what conflicts with ML Hub's own settings, or with the
profiles, stops the hub with a message naming the settings. No engine and no cluster: the check reads the
config only.
"""

import asyncio
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

from mlhubspawner.docker.spawner import MLHubDockerSpawner
from mlhubspawner.kubernetes.spawner import MLHubKubernetesSpawner
from mlhubspawner.options import GB, OptionsError, parse_options
from mlhubspawner.policy import WorkspacePolicy, allowed_image_choices
from mlhubspawner.spawner_base import (
    MLHubSpawner,
    MLHubSpawnerMixin,
    check_spawner_config,
    config_errors,
    spawner_class_of,
)

IMAGE = "mlhub-workspace:1"


def docker_config(**sections):
    config = Config()
    config.MLHubDockerSpawner.image = IMAGE
    for section, values in sections.items():
        for key, value in values.items():
            setattr(config[section], key, value)
    return config


def probe(config, cls=MLHubDockerSpawner):
    """A spawner of ``cls`` with ``config`` and no engine, as the hub-start check makes it."""
    spawner = cls.__new__(cls)
    spawner.user = SimpleNamespace(name="ann", groups=[])
    from traitlets.config import Configurable

    Configurable.__init__(spawner, config=config)
    return spawner


def policy_of(spawner):
    return spawner.policy(
        spawner.default_image(),
        spawner_cpu_limit=spawner.cpu_limit or None,
        spawner_mem_limit=spawner.mem_limit or None,
        allowed=spawner.allowed_images_now(),
    )


def test_one_class_named_mlhubspawner_configures_both_backends_and_the_old_name_still_works():
    for cls in (MLHubDockerSpawner, MLHubKubernetesSpawner):
        assert issubclass(cls, MLHubSpawner) and issubclass(cls, MLHubSpawnerMixin)
        assert {"MLHubSpawner", "MLHubSpawnerMixin", "WorkspacePolicy"} <= set(cls.section_names())
    config = docker_config(MLHubSpawner={"max_cpu_limit": 3.0, "profiles": [{"name": "A"}]})
    spawner = probe(config)
    assert spawner.max_cpu_limit == 3.0 and spawner.profiles == [{"name": "A"}]
    config.MLHubDockerSpawner.max_cpu_limit = 5.0  # the backend's own section wins
    assert probe(config).max_cpu_limit == 5.0


@pytest.mark.parametrize("section", ["Spawner", "DockerSpawner", "MLHubDockerSpawner"])
def test_the_parent_cpu_and_memory_limits_are_the_defaults_of_the_options(section):
    config = docker_config(**{section: {"cpu_limit": 3.0, "mem_limit": "6G"}})
    config.WorkspacePolicy.default_cpu_limit = 2.0  # ML Hub's shipped default: the operator's limit wins
    config.WorkspacePolicy.default_mem_limit = "4G"
    spawner = probe(config)
    policy = policy_of(spawner)
    assert (policy.default_cpu, policy.default_memory) == (3.0, 6 * GB)
    options = parse_options({}, policy)
    assert (options.cpu_limit, options.mem_limit) == (3.0, 6 * GB)
    assert parse_options({"cpu_limit": 1}, policy).cpu_limit == 1.0  # still the user's to change
    assert config_errors(MLHubDockerSpawner, config) == []


def test_a_parent_limit_above_the_maximum_stops_the_hub_naming_both_settings():
    config = docker_config(
        Spawner={"cpu_limit": 8.0, "mem_limit": "64M"}, MLHubDockerSpawner={"max_cpu_limit": 4.0}
    )
    config.DockerSpawner.mem_limit = "64G"
    config.WorkspacePolicy.max_mem_limit = "16G"
    assert config_errors(MLHubDockerSpawner, config) == [
        "Spawner.cpu_limit = 8 (the default of the cpu_limit option) is above MLHubDockerSpawner.max_cpu_limit = 4",
        "DockerSpawner.mem_limit = 64G (the default of the mem_limit option) is above "
        "WorkspacePolicy.max_mem_limit = 16G",
    ]
    low = docker_config(KubeSpawner={"mem_limit": "64M"})
    assert config_errors(MLHubKubernetesSpawner, low) == [
        "KubeSpawner.mem_limit = 64M (the default of the mem_limit option) is below "
        "MLHubKubernetesSpawner.min_mem_limit = 128M"
    ]


def test_a_per_user_callable_limit_is_called_for_the_user_and_kept_under_the_maximum(caplog):
    config = docker_config(
        DockerSpawner={"cpu_limit": lambda spawner: {"ann": 3.0}.get(spawner.user.name, 1.0)},
        MLHubDockerSpawner={"max_cpu_limit": 2.0},
    )
    assert config_errors(MLHubDockerSpawner, config) == []  # decided per user: not known at hub start
    spawner = probe(config)
    assert spawner.cpu_limit == 3.0  # ann's
    policy = asyncio.run(current_policy(spawner))
    assert parse_options({}, policy).cpu_limit == 2.0  # lowered to the maximum, and the log says so
    assert "DockerSpawner.cpu_limit = 3 for ann is above MLHubDockerSpawner.max_cpu_limit = 2" in caplog.text


@pytest.mark.parametrize(
    "allowed, images, names, custom",
    [
        ({"Data science": "jupyter/datascience-notebook:1", "Base": "jupyter/base-notebook:1"}, 2, 2, False),
        (["jupyter/base-notebook:1"], 1, 0, False),
        ("*", 0, 0, True),
    ],
)
def test_allowed_images_feed_the_offered_images_names_and_custom_images(allowed, images, names, custom):
    policy = policy_of(probe(docker_config(DockerSpawner={"allowed_images": allowed})))
    assert policy.images[0] == IMAGE and len(policy.images) == 1 + images
    assert len(policy.image_names) == names and policy.allow_custom_image is custom
    if custom:
        assert parse_options({"image": "anything/else:2"}, policy).image == "anything/else:2"
    else:
        with pytest.raises(OptionsError):
            parse_options({"image": "anything/else:2"}, policy)


def test_a_key_of_the_allowed_images_dict_starts_its_image_as_in_dockerspawner():
    allowed = {"Data science": "jupyter/datascience-notebook:1"}
    policy = policy_of(probe(docker_config(DockerSpawner={"allowed_images": allowed})))
    assert parse_options({"image": "Data science"}, policy).image == "jupyter/datascience-notebook:1"
    assert parse_options({"image": "jupyter/datascience-notebook:1"}, policy).image.startswith("jupyter/")
    assert dict(policy.image_names)["jupyter/datascience-notebook:1"] == "Data science"


def test_a_callable_allowed_images_is_asked_for_each_user():
    def per_user(spawner):
        return ["team/gpu:1"] if spawner.user.name == "ann" else ["team/cpu:1"]

    config = docker_config(DockerSpawner={"allowed_images": per_user})
    assert config_errors(MLHubDockerSpawner, config) == []
    assert "team/gpu:1" in policy_of(probe(config)).images
    spawner = probe(config)
    spawner.user = SimpleNamespace(name="bob", groups=[])
    assert "team/gpu:1" not in policy_of(spawner).images
    spawner.allowed_images = lambda spawner: {"x": 42}
    with pytest.raises(web.HTTPError) as error:
        spawner.allowed_images_now()
    assert error.value.status_code == 500 and "DockerSpawner.allowed_images: 'x': 42" in str(error.value)


@pytest.mark.parametrize(
    "sections, message",
    [
        (
            {
                "DockerSpawner": {"allowed_images": ["a/b:1"]},
                "MLHubDockerSpawner": {"workspace_images": ["c:1"]},
            },
            "DockerSpawner.allowed_images and MLHubDockerSpawner.workspace_images both list the offered images",
        ),
        (
            {"DockerSpawner": {"allowed_images": "*"}, "MLHubDockerSpawner": {"workspace_images": ["c:1"]}},
            "",  # the offered images, and any other
        ),
        (
            {"DockerSpawner": {"allowed_images": "*"}, "WorkspacePolicy": {"allow_custom_image": False}},
            "DockerSpawner.allowed_images = '*' allows any image, WorkspacePolicy.allow_custom_image = False",
        ),
        (
            {
                "DockerSpawner": {"allowed_images": {"ML": "a/ml:1"}},
                "MLHubSpawner": {"image_display_names": {"a/ml:1": "Machine learning"}},
            },
            "DockerSpawner.allowed_images names a/ml:1 'ML', MLHubSpawner.image_display_names names it "
            "'Machine learning'",
        ),
        (
            {"DockerSpawner": {"allowed_images": {"ML": "Not An Image"}}},
            "DockerSpawner.allowed_images: 'ML': 'Not An Image' is not an image reference",
        ),
        (
            {"MLHubSpawner": {"allow_custom_options": False}},
            "MLHubSpawner.allow_custom_options = False needs profiles to choose from",
        ),
        (
            {"MLHubSpawner": {"profiles": [{"name": "GPU", "node_selector": {"pool": "a100"}}]}},
            "MLHubSpawner.profiles[0] ('gpu'): node_selector: only Kubernetes has nodes",
        ),
        (
            {
                "MLHubSpawner": {"profiles": [{"name": "GPU", "image": "team/gpu:1", "cpu_limit": 32}]},
                "MLHubDockerSpawner": {"max_cpu_limit": 8.0},
            },
            "MLHubSpawner.profiles[0] ('gpu'): image: team/gpu:1 is not an offered image: add it to "
            "MLHubDockerSpawner.workspace_images, or allow custom images",
        ),
        (
            {"MLHubSpawner": {"profiles": [{"name": "GPU", "cpu_limit": 32}]}, "Spawner": {"cpu_limit": 1.0}},
            "",  # no maximum: any CPU count
        ),
        (
            {"MLHubSpawner": {"profiles": [{"name": "GPU", "mem_limit": "lots"}]}},
            "MLHubSpawner.profiles[0] ('GPU'): mem_limit: expected a size such as 512M or 4G, got 'lots'",
        ),
    ],
)
def test_conflicting_or_refused_settings_stop_the_hub_naming_them(sections, message):
    errors = config_errors(MLHubDockerSpawner, docker_config(**sections))
    if not message:
        assert errors == []
    else:
        assert any(message in error for error in errors), errors


def test_profiles_and_kubespawners_profile_list_are_not_both_set():
    config = Config()
    config.KubeSpawner.profile_list = [{"display_name": "Small"}]
    config.MLHubSpawner.profiles = [{"name": "GPU", "node_selector": {"pool": "a100"}}]
    assert config_errors(MLHubKubernetesSpawner, config) == [
        "MLHubSpawner.profiles and KubeSpawner.profile_list are both set: keep one (profiles has groups, shm, "
        "env and lifetime; profile_list is KubeSpawner's format)"
    ]
    del config.KubeSpawner.profile_list
    assert config_errors(MLHubKubernetesSpawner, config) == []  # a node selector is Kubernetes'


def test_the_hub_exits_with_the_messages_and_other_spawners_are_left_alone():
    config = docker_config(MLHubSpawner={"profiles": [{"name": "GPU", "gpus": "many"}]})
    config.JupyterHub.spawner_class = "mlhub-docker"
    assert spawner_class_of(config) is MLHubDockerSpawner
    with pytest.raises(SystemExit) as stopped:
        check_spawner_config(config)
    assert str(stopped.value).startswith("ML Hub cannot start: MLHubSpawner.profiles[0] ('GPU'): gpus:")
    config.JupyterHub.spawner_class = "mlhubspawner.kubernetes.MLHubKubernetesSpawner"
    assert spawner_class_of(config) is MLHubKubernetesSpawner
    config.JupyterHub.spawner_class = "simple"  # not ours: JupyterHub's checks only
    assert check_spawner_config(config) is None


def test_allowed_image_choices_is_pure():
    assert allowed_image_choices({}) is None and allowed_image_choices(None) is None
    choices = allowed_image_choices({"A": "x/a:1", "x/b:1": "x/b:1"})
    assert (choices.images, choices.names, choices.any_image) == (
        ("x/a:1", "x/b:1"),
        (("x/a:1", "A"),),
        False,
    )
    with pytest.raises(ValueError, match="two names"):
        allowed_image_choices({"A": "x/a:1", "B": "x/a:1"})
    assert WorkspacePolicy().policy(IMAGE, allowed=choices).image_aliases == (("A", "x/a:1"),)


async def current_policy(spawner):
    """The spawner's policy on a host of unknown size, without GPUs (no engine)."""

    async def unknown():
        return None, None

    async def no_gpus(refresh=False):
        return None

    spawner.host_resources, spawner.gpu_inventory = unknown, no_gpus
    return await spawner.current_policy()


def test_the_policy_of_a_running_spawner_uses_them():
    spawner = probe(docker_config(Spawner={"cpu_limit": 1.5}, DockerSpawner={"allowed_images": ["a/b:1"]}))
    policy = asyncio.run(current_policy(spawner))
    assert policy.default_cpu == 1.5 and policy.images == (IMAGE, "a/b:1")
