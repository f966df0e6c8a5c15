"""jupyterhub_config.py with a base_url (MLHUB_BASE_URL, the chart's hub.baseUrl, or the operator's config), and
the chart's singleuser.imageSettings as the hub reads it (mlhubspawner/chart_values.py)."""

import pytest
from test_chart_values import applied, load_hub_config, rendered

from mlhubspawner import chart_values as cv
from mlhubspawner import images


def test_k8s_the_charts_base_url_is_the_hubs(tmp_path):
    out = load_hub_config(tmp_path, {"EXECUTION_MODE": "k8s", "MLHUB_BASE_URL": "/ml/"}, values=rendered())
    assert "exit" not in out and out["spawner_class"] == "mlhub-kubernetes"


@pytest.mark.parametrize(
    "values, user_config",
    [
        ({"hub__config": {"JupyterHub": {"base_url": "/other/"}}}, ""),
        ({}, "c.JupyterHub.base_url = '/other/'\n"),
    ],
    ids=["hub.config", "userConfig"],
)
def test_k8s_another_base_url_than_the_charts_stops_the_hub(tmp_path, values, user_config):
    """The probes, the proxy pod and the Ingress follow hub.baseUrl: another value elsewhere is refused."""
    env = {"EXECUTION_MODE": "k8s", "MLHUB_BASE_URL": "/ml/"}
    out = load_hub_config(tmp_path, env, values=rendered(**values), user_config=user_config)
    assert out["exit"].startswith("ML Hub cannot start: c.JupyterHub.base_url='/other/'"), out
    assert "hub.baseUrl '/ml/'" in out["exit"]


@pytest.mark.parametrize(
    "user_config, env, message",
    [
        ("c.JupyterHub.base_url = '/ml'\n", {}, "c.JupyterHub.base_url='/ml' must start and end with '/'"),
        ("c.JupyterHub.base_url = '/ml/../x/'\n", {}, "c.JupyterHub.base_url='/ml/../x/' may not have '.'"),
        ("c.JupyterHub.base_url = '/a b/'\n", {}, "c.JupyterHub.base_url='/a b/' may hold only"),
        ("", {"MLHUB_BASE_URL": "//"}, "MLHUB_BASE_URL='//' has an empty segment"),
        ("", {"MLHUB_BASE_URL": "ml"}, "MLHUB_BASE_URL='ml' must start and end with '/'"),
    ],
)
def test_docker_a_bad_base_url_stops_the_hub_naming_the_setting(tmp_path, user_config, env, message):
    out = load_hub_config(tmp_path, {"EXECUTION_MODE": "docker", **env}, user_config=user_config)
    assert out["exit"].startswith(f"ML Hub cannot start: {message}"), out


def test_docker_the_user_config_base_url_is_accepted(tmp_path):
    out = load_hub_config(
        tmp_path,
        {"EXECUTION_MODE": "docker", "MLHUB_BASE_URL": "/env/"},
        user_config="c.JupyterHub.base_url = '/ml/'\n",
    )
    assert "exit" not in out and out["spawner_class"] == "mlhub-docker"


# ---- singleuser.imageSettings ------------------------------------------------------------------------------


def test_image_settings_come_first_and_keep_the_defaults_they_do_not_replace():
    table = {
        "registry.example.org/ml-workspace:*": {
            "convention": "ml-workspace",
            "env": {"SHUTDOWN_INACTIVE_KERNELS": "3600"},
        },
        "jupyter/*": {"convention": "mlhub"},
    }
    c = applied(rendered(singleuser__imageSettings=table))
    merged = c.MLHubKubernetesSpawner.workspace_image_settings
    assert list(merged) == [
        "registry.example.org/ml-workspace:*",
        "jupyter/*",
        *(k for k in images.DEFAULT_IMAGE_SETTINGS if k != "jupyter/*"),
    ]
    assert merged["jupyter/*"] == {"convention": "mlhub"}  # the operator's entry replaced the default's
    parsed = images.parse_image_settings(merged)
    assert images.settings_for("registry.example.org/ml-workspace:0.13", parsed).convention == "ml-workspace"
    assert images.settings_for("quay.io/jupyter/scipy-notebook:x", parsed).convention == "docker-stacks"
    assert images.settings_for("jupyter/scipy-notebook:x", parsed).convention == "mlhub"


def test_no_image_settings_keep_the_spawners_default():
    assert "workspace_image_settings" not in applied(rendered()).MLHubKubernetesSpawner
    assert (
        "workspace_image_settings"
        not in applied(rendered(singleuser__imageSettings={})).MLHubKubernetesSpawner
    )


@pytest.mark.parametrize(
    "table, message",
    [
        ({"x:*": {"convention": "ml-workspace", "env": {"WORKSPACE_BASE_URL": "/"}}}, "set by ML Hub"),
        ({"x:*": {"convention": "other"}}, "convention must be one of"),
        ({"x:*": {"bogus": 1}}, "unknown keys ['bogus']"),
        ({"x:*": {"port": 0}}, "port must be a TCP port"),
        ({"x:*": {"volume_path": "/"}}, "volume_path must be an absolute path"),
    ],
)
def test_bad_image_settings_stop_the_hub_naming_the_value(table, message):
    with pytest.raises(cv.ChartValuesError) as refused:
        applied(rendered(singleuser__imageSettings=table))
    assert str(refused.value).startswith("singleuser.imageSettings['x:*']") and message in str(refused.value)
