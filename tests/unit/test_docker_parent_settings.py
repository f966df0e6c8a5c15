"""Every DockerSpawner setting on ML Hub's Docker spawner: applied, or refused at hub start naming it (no engine)."""

from pathlib import Path

import pytest
from dockerspawner import DockerSpawner
from traitlets.config import Config

from mlhubspawner._version import __version__ as mlhub_version
from mlhubspawner.docker import parent_settings
from mlhubspawner.docker.parent_settings import APPLIED, PARENT_SETTINGS, POLICY, REFUSED, REPLACED
from mlhubspawner.docker.spawner import MLHubDockerSpawner
from mlhubspawner.spawner_base import CONFIG_CHECK_USER, check_spawner_config, config_errors

DOCS = Path(__file__).resolve().parents[2] / "docs" / "docker-settings.md"

# a value an operator could have in a DockerSpawner config, for each setting ML Hub refuses
REFUSED_SAMPLES = {
    "apply_user_options": lambda spawner, options: None,
    "certs_volume_name": "certs-{username}",
    "container_image": "jupyter/base-notebook",
    "container_ip": "0.0.0.0",
    "container_name_template": "{prefix}-{username}",
    "container_port": 8888,
    "container_prefix": "lab",
    "host_ip": "0.0.0.0",
    "hub_ip_connect": "10.0.0.1",
    "image_whitelist": ["jupyter/base-notebook"],
    "move_certs_image": "busybox:1.36",
    "name_template": "lab-{username}",
    "network_name": "jupyterhub-network",
    "options_form": "<input name='image'>",
    "options_from_form": lambda form: {},
    "remove_containers": True,
    "ssl_alt_names": ["DNS:hub"],
    "ssl_alt_names_include_local": False,
    "tls": True,
    "tls_assert_hostname": "docker",
    "tls_ca": "/certs/ca.pem",
    "tls_cert": "/certs/cert.pem",
    "tls_key": "/certs/key.pem",
    "tls_verify": True,
    "use_docker_client_env": True,
}


def errors_of(**sections):
    config = Config()
    for section, values in sections.items():
        for key, value in values.items():
            setattr(config[section], key, value)
    return config_errors(MLHubDockerSpawner, config)


def test_the_table_lists_every_dockerspawner_setting():
    traits = set(DockerSpawner.class_traits(config=True))
    missing = sorted(traits - set(PARENT_SETTINGS))
    assert not missing, f"DockerSpawner settings not in parent_settings.PARENT_SETTINGS: {missing}"
    assert not sorted(set(PARENT_SETTINGS) - traits), "entries for settings DockerSpawner no longer has"
    assert {s.kind for s in PARENT_SETTINGS.values()} <= {APPLIED, POLICY, REPLACED, REFUSED}
    assert all(setting.note for setting in PARENT_SETTINGS.values())


def test_every_refused_setting_has_a_sample():
    refused = {name for name, s in PARENT_SETTINGS.items() if s.kind in (REPLACED, REFUSED)}
    assert refused == set(REFUSED_SAMPLES)


@pytest.mark.parametrize("name", sorted(REFUSED_SAMPLES))
def test_a_refused_setting_stops_the_hub_naming_it(name):
    errors = errors_of(DockerSpawner={name: REFUSED_SAMPLES[name]})
    assert any(error.startswith(f"c.DockerSpawner.{name} ") for error in errors), errors
    (error,) = [e for e in errors if e.startswith(f"c.DockerSpawner.{name} ")]
    assert error.endswith("; remove it")


def test_spawner_level_settings_are_named_in_their_section():
    errors = errors_of(Spawner={"options_form": "<input>", "ssl_alt_names": ["DNS:x"]})
    assert any(
        e.startswith("c.Spawner.options_form is replaced in ML Hub (ML Hub's options form") for e in errors
    )
    assert any(e.startswith("c.Spawner.ssl_alt_names is not supported") for e in errors)


def test_use_internal_ip_false_is_refused_true_is_fine():
    assert errors_of(DockerSpawner={"use_internal_ip": True}) == []
    (error,) = errors_of(DockerSpawner={"use_internal_ip": False})
    assert error.startswith("c.DockerSpawner.use_internal_ip = False is not supported")


def test_a_typical_dockerspawner_config_is_accepted():
    config = {
        "volumes": {
            "/srv/nfs/home/{username}": {"bind": "/home/shared/{username}", "mode": "rw"},
            "jupyterhub-shared": "/shared",
        },
        "read_only_volumes": {"/srv/datasets": "/datasets"},
        "mounts": [{"type": "bind", "source": "/srv/models", "target": "/models", "read_only": True}],
        "links": {"db": "db"},
        "post_start_cmd": "touch /tmp/started",
        "extra_create_kwargs": {"user": "1000", "labels": {"team": "ml"}},
        "extra_host_config": {"dns": ["10.0.0.53"]},
        "environment": {"TEAM": "ml"},
        "pull_policy": "never",
        "remove": True,
        "prefix": "lab",
        "escape": "legacy",
        "use_internal_ip": True,
        "http_timeout": 120,
        "cpu_limit": 2.0,
        "mem_limit": "2G",
        "allowed_images": ["jupyter/base-notebook"],
    }
    assert errors_of(DockerSpawner=config, MLHubDockerSpawner={"http_timeout": 120}) == []


def test_mount_values_are_checked_at_hub_start_naming_the_setting():
    errors = errors_of(
        DockerSpawner={
            "volumes": {"/srv/{username}": "/workspace"},
            "read_only_volumes": {"/srv/ro": "relative"},
            "mounts": [{"type": "nfs", "source": "x", "target": "/x"}],
            "extra_create_kwargs": {"name": "mine", "labels": {"mlhub.origin": "other"}},
            "extra_host_config": {"network_mode": "host", "binds": ["/etc:/etc"]},
        }
    )
    expected = [
        "DockerSpawner.mounts[0]: type 'nfs' is not one of bind, volume, tmpfs",
        "DockerSpawner.extra_create_kwargs['name'] is refused",
        "DockerSpawner.extra_create_kwargs['labels']['mlhub.origin'] is refused",
        "DockerSpawner.extra_host_config['network_mode'] is refused",
        "DockerSpawner.extra_host_config['binds'] is refused: use volumes / read_only_volumes",
    ]
    for text in expected:
        assert any(text in error for error in errors), (text, errors)
    errors = errors_of(
        DockerSpawner={"volumes": {"/srv/{username}": "/workspace"}, "read_only_volumes": {"/srv/ro": "rel"}}
    )
    # templates are rendered for the check's user, escaped as DockerSpawner escapes names
    rendered = MLHubDockerSpawner._escape(CONFIG_CHECK_USER)
    assert any(f"volumes['/srv/{rendered}']: /workspace is where ML Hub mounts" in e for e in errors), errors
    assert any("read_only_volumes['/srv/ro']: the container path 'rel' is relative" in e for e in errors)


def test_the_workspace_paths_of_every_offered_image_are_protected():
    # a docker-stacks image offered: its volume is at /home/jovyan/work; a custom volume_path too
    errors = errors_of(
        MLHubDockerSpawner={"workspace_images": ["jupyter/base-notebook"], "volume_path": "/data"},
        DockerSpawner={"volumes": {"jupyterhub-user-{username}": "/home/jovyan/work"}},
    )
    assert any("/home/jovyan/work is where ML Hub mounts the workspace's own volume" in e for e in errors)
    assert any(
        "/data is where" in e
        for e in errors_of(
            MLHubDockerSpawner={"volume_path": "/data"}, DockerSpawner={"volumes": {"/srv/d": "/data"}}
        )
    )
    # without such an image, /home/jovyan/work is an ordinary path
    assert errors_of(DockerSpawner={"volumes": {"jupyterhub-user-{username}": "/home/jovyan/work"}}) == []


def test_a_parent_value_overridden_by_ml_hubs_own_section_is_refused():
    (error,) = errors_of(
        DockerSpawner={"image": "jupyter/scipy-notebook"}, MLHubDockerSpawner={"image": "mlhub-workspace:1"}
    )
    assert error == (
        "c.DockerSpawner.image = 'jupyter/scipy-notebook' is overridden by c.MLHubDockerSpawner.image = "
        "'mlhub-workspace:1' (ML Hub's own configuration sets it): set c.MLHubDockerSpawner.image instead"
    )
    (error,) = errors_of(Spawner={"start_timeout": 60}, MLHubDockerSpawner={"start_timeout": 300})
    assert error.startswith(
        "c.Spawner.start_timeout = 60 is overridden by c.MLHubDockerSpawner.start_timeout"
    )
    # the same value twice is no conflict; a value only in the parent section applies
    assert errors_of(DockerSpawner={"image": "a:1"}, MLHubDockerSpawner={"image": "a:1"}) == []
    assert errors_of(DockerSpawner={"image": "a:1"}) == []


def test_internal_ssl_is_refused():
    (error,) = errors_of(JupyterHub={"internal_ssl": True})
    assert error.startswith("c.JupyterHub.internal_ssl is not supported")


def test_a_bad_trait_value_is_reported_not_raised():
    (error,) = errors_of(DockerSpawner={"pull_policy": "sometimes"})
    assert "pull_policy" in error


def test_the_hub_start_check_exits_once_naming_every_refused_setting():
    # jupyterhub_config.py calls check_spawner_config(c) after the operator's config
    config = Config()
    config.JupyterHub.spawner_class = "mlhub-docker"
    config.DockerSpawner.network_name = "jupyterhub-network"
    config.DockerSpawner.volumes = {"/srv/x": "/run/mlhub-sshd"}
    config.MLHubSpawner.profiles = [{"name": "Big", "mem_limit": "lots"}]
    with pytest.raises(SystemExit) as exited:
        check_spawner_config(config)
    message = str(exited.value.code)
    assert message.startswith("ML Hub cannot start: ") and message.count("ML Hub cannot start") == 1
    assert "c.DockerSpawner.network_name is replaced in ML Hub" in message
    assert "DockerSpawner.volumes['/srv/x']: /run/mlhub-sshd would cover /run/mlhub-sshd" in message
    assert "MLHubSpawner.profiles[0] ('Big'): mem_limit: expected a size" in message
    # another spawner class: not ours to check
    config.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
    assert check_spawner_config(config) is None


def test_a_refused_setting_is_named_beside_a_value_that_cannot_load():
    errors = errors_of(
        DockerSpawner={"pull_policy": "sometimes", "network_name": "jupyterhub-network", "port": "x"},
        MLHubDockerSpawner={"volume_path": "/data"},
        Spawner={"volumes": {"/srv/d": "/data"}},
    )
    assert len(errors) == 4, errors
    # each named by the section that sets it
    assert any(e.startswith("c.DockerSpawner.pull_policy: The 'pull_policy' trait of a") for e in errors)
    assert any(e.startswith("c.DockerSpawner.port: The 'port' trait of a MLHubDockerSpawner") for e in errors)
    assert any(e.startswith("c.DockerSpawner.network_name is replaced in ML Hub") for e in errors)
    # the other settings are still checked with their values (the moved workspace path among them)
    assert any("Spawner.volumes['/srv/d']: /data is where ML Hub mounts" in e for e in errors), errors


def test_ml_hubs_waits_and_image_are_defaults_the_parent_sections_override(monkeypatch):
    monkeypatch.setenv("MLHUB_WORKSPACE_IMAGE", "mlhub-workspace-ml:1")
    spawner = MLHubDockerSpawner(config=Config())
    assert (spawner.http_timeout, spawner.start_timeout, spawner.image) == (120, 300, "mlhub-workspace-ml:1")
    monkeypatch.delenv("MLHUB_WORKSPACE_IMAGE")
    assert MLHubDockerSpawner(config=Config()).image == f"mlhub-workspace:{mlhub_version}"
    config = Config()
    config.Spawner.http_timeout = 77
    config.Spawner.start_timeout = 99
    config.DockerSpawner.image = "jupyter/base-notebook:2024-01-01"
    spawner = MLHubDockerSpawner(config=config)
    assert (spawner.http_timeout, spawner.start_timeout, spawner.image) == (
        77,
        99,
        "jupyter/base-notebook:2024-01-01",
    )
    assert config_errors(MLHubDockerSpawner, config) == []


def test_the_docs_table_is_generated_from_the_table():
    text = DOCS.read_text()
    assert parent_settings.markdown_table() in text, (
        "docs/docker-settings.md is stale: regenerate its table with "
        "python -m mlhubspawner.docker.parent_settings table"
    )
