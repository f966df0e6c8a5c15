"""Every KubeSpawner setting is applied, replaced or refused on MLHubKubernetesSpawner, from one table
(``mlhubspawner.kubernetes.parent_settings``); the hub-start check refuses, naming them, what ML Hub would
otherwise ignore or what would break a workspace; the docs' table is made from the same dict."""

from pathlib import Path

import pytest
from kubespawner import KubeSpawner
from traitlets.config import Config

from mlhubspawner import spawner_base
from mlhubspawner.kubernetes import MLHubKubernetesSpawner, legacy, parent_settings
from mlhubspawner.kubernetes.parent_settings import APPLIED, KUBESPAWNER_SETTINGS, REFUSED, REPLACED
from mlhubspawner.spawner_base import check_spawner_config


def test_the_table_lists_exactly_kubespawners_settings():
    # a KubeSpawner upgrade that adds (or drops) a setting fails here until the table says what ML Hub does
    traits = set(KubeSpawner.class_traits(config=True))
    assert sorted(traits - set(KUBESPAWNER_SETTINGS)) == [], "KubeSpawner settings the table does not list"
    assert sorted(set(KUBESPAWNER_SETTINGS) - traits) == [], "the table lists settings KubeSpawner lacks"


def test_every_entry_says_what_happens():
    for name, handling in KUBESPAWNER_SETTINGS.items():
        assert handling.status in (APPLIED, REPLACED, REFUSED), name
        if handling.status != APPLIED:
            assert handling.how, f"{name}: replaced or refused needs the reason"
    # every refused setting is one the spawner still has (so the check can see it)
    assert set(parent_settings.refused_names()) <= set(MLHubKubernetesSpawner.class_traits(config=True))


DOCS = Path(__file__).resolve().parents[2] / "docs" / "kubespawner-settings.md"


def test_the_docs_table_is_the_dict():
    table = parent_settings.settings_table()
    assert len(table.splitlines()) == 2 + len(KUBESPAWNER_SETTINGS)
    assert "| `volume_mounts` | applied |" in table and "| `profile_form_template` | refused |" in table
    assert table in DOCS.read_text(), (
        "docs/kubespawner-settings.md is stale: regenerate its table with "
        'python -c "from mlhubspawner.kubernetes import parent_settings; print(parent_settings.settings_table())"'
    )


@pytest.mark.parametrize(
    "spawner_class",
    ["mlhub-kubernetes", "mlhubspawner.kubernetes.MLHubKubernetesSpawner", MLHubKubernetesSpawner],
)
def test_jupyterhub_config_stops_the_hub_naming_the_setting(spawner_class):
    # jupyterhub_config.py calls check_spawner_config(c) last, after the operator's config
    config = Config()
    config.JupyterHub.spawner_class = spawner_class
    config.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/workspace"}]
    config.Spawner.services_enabled = False
    config.MLHubKubernetesSpawner.extra_labels = {"mlhub.origin": "other"}
    with pytest.raises(SystemExit) as exited:
        check_spawner_config(config)
    message = str(exited.value.code)
    assert message.startswith("ML Hub cannot start: ")
    assert "Spawner.services_enabled: False is refused" in message
    assert "KubeSpawner.volume_mounts: 'home' at /workspace covers the workspace volume" in message
    assert "MLHubKubernetesSpawner.extra_labels: 'mlhub.origin' is refused" in message


def test_the_hub_start_check_knows_the_moved_workspace_and_the_images():
    config = Config()
    config.JupyterHub.spawner_class = "mlhub-kubernetes"
    config.MLHubKubernetesSpawner.volume_path = "/home/jovyan"
    config.MLHubKubernetesSpawner.workspace_image_settings = {"team/*": {"volume_path": "/data/work"}}
    config.KubeSpawner.volume_mounts = [{"name": "a", "mountPath": "/workspace"}]
    assert check_spawner_config(config) is None  # /workspace is not ML Hub's here
    config.KubeSpawner.volume_mounts = [{"name": "a", "mountPath": "/data"}]
    with pytest.raises(SystemExit, match="covers the workspace volume at /data/work"):
        check_spawner_config(config)


@pytest.mark.parametrize("spawner_class", ["kubespawner.KubeSpawner", "no.such.Spawner"])
def test_other_spawners_are_not_checked(spawner_class):
    config = Config()
    config.JupyterHub.spawner_class = spawner_class
    config.KubeSpawner.services_enabled = False
    assert check_spawner_config(config) is None


def config_of(**sections):
    config = Config()
    for section, values in sections.items():
        for key, value in values.items():
            setattr(config[section], key, value)
    return config


def test_an_ordinary_kubespawner_config_passes():
    config = config_of(
        KubeSpawner={
            "volumes": [{"name": "datasets", "nfs": {"server": "nfs.example", "path": "/data"}}],
            "volume_mounts": [{"name": "datasets", "mountPath": "/workspace-data", "readOnly": True}],
            "storage_class": "fast-ssd",
            "storage_capacity": "50Gi",
            "init_containers": [{"name": "fix", "image": "busybox"}],
            "extra_container_config": {"imagePullPolicy": "IfNotPresent"},
            "extra_pod_config": {"priorityClassName": "x"},
            "extra_resource_limits": {"example.com/fpga": "1"},
            "extra_labels": {"team": "vision"},
            "node_selector": {"pool": "cpu"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "services_enabled": True,
        },
        Spawner={"mem_limit": "4G", "cpu_limit": 2},
    )
    config.JupyterHub.spawner_class = "mlhub-kubernetes"
    assert check_spawner_config(config) is None


@pytest.mark.parametrize(
    "section, setting, value, named",
    [
        ("KubeSpawner", "volume_mounts", [{"name": "home", "mountPath": "/workspace"}], "volume_mounts"),
        ("KubeSpawner", "volume_mounts", [{"name": "home", "mountPath": "/workspace/"}], "/workspace"),
        ("KubeSpawner", "volume_mounts", {"a": {"name": "root", "mountPath": "/"}}, "covers the workspace"),
        ("Spawner", "volume_mounts", [{"name": "t", "mountPath": "/var/run/secrets"}], "credentials"),
        (
            "KubeSpawner",
            "volume_mounts",
            [{"name": "t", "mount_path": "/var/run/secrets/kubernetes.io/serviceaccount/token"}],
            "credentials",
        ),
        (
            "KubeSpawner",
            "volume_mounts",
            [{"name": "ssl", "mountPath": "/etc/jupyterhub/ssl"}],
            "credentials",
        ),
        ("KubeSpawner", "volume_mounts", [{"name": "shm", "mountPath": "/dev/shm"}], "/dev/shm"),
        ("KubeSpawner", "volumes", [{"name": "mlhub-workspace", "emptyDir": {}}], "mlhub-workspace"),
        ("KubeSpawner", "services_enabled", False, "services_enabled"),
        ("KubeSpawner", "profile_form_template", "<div/>", "profile_form_template"),
        ("KubeSpawner", "additional_profile_form_template_paths", ["/t"], "additional_profile_form"),
        ("KubeSpawner", "extra_container_config", {"image": "evil/miner"}, "'image'"),
        ("KubeSpawner", "extra_container_config", {"env": [{"name": "A", "value": "1"}]}, "'env'"),
        ("KubeSpawner", "extra_container_config", {"resources": {}}, "'resources'"),
        ("KubeSpawner", "extra_container_config", {"name": "x"}, "'name'"),
        (
            "KubeSpawner",
            "extra_container_config",
            {"volumeMounts": [{"name": "x", "mountPath": "/workspace"}]},
            "extra_container_config volumeMounts",
        ),
        ("KubeSpawner", "extra_pod_config", {"containers": []}, "'containers'"),
        ("KubeSpawner", "extra_pod_config", {"volumes": [{"name": "mlhub-shm"}]}, "mlhub-shm"),
        ("KubeSpawner", "extra_resource_limits", {"nvidia.com/gpu": "1"}, "extra_resource_limits"),
        ("KubeSpawner", "extra_resource_limits", {"cpu": "4"}, "'cpu'"),
        ("KubeSpawner", "extra_resource_guarantees", {"memory": "4G"}, "extra_resource_guarantees"),
        ("KubeSpawner", "extra_labels", {"mlhub.origin": "other-hub"}, "extra_labels"),
        ("KubeSpawner", "extra_annotations", {"mlhub.user": "bob"}, "extra_annotations"),
        ("KubeSpawner", "common_labels", {"mlhub.user": "bob"}, "common_labels"),
        ("KubeSpawner", "storage_extra_labels", {"mlhub.user": "bob"}, "storage_extra_labels"),
    ],
)
def test_a_refused_setting_stops_the_hub_naming_it(section, setting, value, named):
    config = config_of(JupyterHub={"spawner_class": "mlhub-kubernetes"}, **{section: {setting: value}})
    with pytest.raises(SystemExit) as exited:
        check_spawner_config(config)
    assert f"{section}.{setting}" in str(exited.value.code) and named in str(exited.value.code)


def test_another_gpu_resource_is_refused_in_extra_resource_limits_too():
    mig = config_of(
        JupyterHub={"spawner_class": "mlhub-kubernetes"},
        MLHubKubernetesSpawner={"gpu_resource_names": ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb"]},
        KubeSpawner={"extra_resource_limits": {"nvidia.com/mig-1g.5gb": 1}},
    )
    with pytest.raises(SystemExit, match="KubeSpawner.extra_resource_limits: 'nvidia.com/mig-1g.5gb'"):
        check_spawner_config(mig)


def test_every_problem_is_named_at_once():
    config = config_of(
        KubeSpawner={
            "services_enabled": False,
            "volume_mounts": [{"name": "x", "mountPath": "/workspace"}],
            "extra_labels": {"mlhub.origin": "x"},
        }
    )
    errors = spawner_base.config_errors(MLHubKubernetesSpawner, config)
    assert [e.split(":")[0] for e in errors] == [
        "KubeSpawner.services_enabled",
        "KubeSpawner.volume_mounts",
        "KubeSpawner.extra_labels",
    ]


@pytest.mark.parametrize(
    "labels, annotations, username, theirs",
    [
        # KubeSpawner >= 0.12 annotates the raw name: it decides
        ({legacy.USERNAME_KEY: "a-2eb"}, {legacy.USERNAME_KEY: "a.b"}, "a.b", True),
        ({legacy.USERNAME_KEY: "a-2eb"}, {legacy.USERNAME_KEY: "a.b"}, "a-2eb", False),
        # no annotation (old KubeSpawner): the label must be the name escaped, which is injective
        ({legacy.USERNAME_KEY: "a-2eb"}, {}, "a.b", True),
        ({legacy.USERNAME_KEY: "a-2eb"}, {}, "a-2eb", False),
        ({}, {}, "alice", False),
        # ML Hub's own objects go through ML Hub's owner check, never the legacy one
        (
            {"mlhub.origin": "mlhub", legacy.USERNAME_KEY: "alice"},
            {legacy.USERNAME_KEY: "alice"},
            "alice",
            False,
        ),
    ],
)
def test_a_legacy_object_is_the_users_by_its_owner_metadata_not_its_name(
    labels, annotations, username, theirs
):
    assert legacy.is_users_legacy_object(labels, annotations, username) is theirs


def test_legacy_candidate_names_come_configured_first_without_repeats():
    def expand(template, scheme):
        return template.format(
            user_server="a-b", username="a-b" if scheme == "safe" else "a-2db", servername=""
        )

    names = legacy.candidate_names(expand, legacy.PVC_TEMPLATES, "home-{username}")
    assert names[:2] == ["home-a-b", "home-a-2db"]
    assert names[2] == "claim-a-b" and len(names) == len(set(names))
