"""The chart's singleuser values yield to an operator's c.KubeSpawner / c.Spawner values (config_precedence)."""

import pytest
from test_chart_values import load_hub_config, rendered
from traitlets.config import Config

from mlhubspawner.config_precedence import section_values, yield_to_operator
from mlhubspawner.kubernetes import MLHubKubernetesSpawner
from mlhubspawner.spawner_base import _config_probe, check_spawner_config

SPAWNER = "MLHubKubernetesSpawner"
PARENTS = MLHubKubernetesSpawner.section_names()[:-1]
CHART = {
    "image": "mlhub-workspace:0.1.0",
    "start_timeout": 300,
    "http_timeout": 120,
    "storage_capacity": "10Gi",
    "environment": {"TEAM": "ml"},
    "default_cpu_limit": 2.0,
}


def loaded(operator, ml_hub=None):
    """``(spawner, handed)``: ML Hub's own settings, the chart's, then the operator's, as jupyterhub_config.py."""
    c = Config()
    for section, values in (ml_hub or {}).items():
        c[section].update(values)
    before = section_values(c, PARENTS)
    chart_set = {}
    for trait, value in CHART.items():
        c[SPAWNER][trait] = chart_set[trait] = value
    operator(c)
    handed = yield_to_operator(c, SPAWNER, chart_set, PARENTS, before)
    return _config_probe(MLHubKubernetesSpawner, c), handed


def test_an_operators_kubespawner_values_win_over_the_charts_defaults():
    def operator(c):
        c.KubeSpawner.start_timeout = 900
        c.Spawner.http_timeout = 60
        c.KubeSpawner.image = "jupyter/scipy-notebook:2024-04-22"
        c.KubeSpawner.storage_capacity = "50Gi"

    spawner, handed = loaded(operator)
    assert (spawner.start_timeout, spawner.http_timeout) == (900, 60)
    assert spawner.image == "jupyter/scipy-notebook:2024-04-22"
    assert spawner.storage_capacity == "50Gi"
    assert handed == ["http_timeout", "image", "start_timeout", "storage_capacity"]
    # what the operator did not set keeps the chart's value
    assert spawner.environment == {"TEAM": "ml"} and spawner.default_cpu_limit == 2.0


def test_ml_hubs_own_section_and_settings_are_not_the_operators():
    def operator(c):
        c.MLHubKubernetesSpawner.start_timeout = 450  # the operator's, in ML Hub's section: kept
        c.KubeSpawner.start_timeout = 900

    spawner, handed = loaded(operator, ml_hub={"WorkspacePolicy": {"default_cpu_limit": 1.0}})
    assert spawner.start_timeout == 450
    # jupyterhub_config.py's own WorkspacePolicy default is not an operator's value: the chart's stays
    assert spawner.default_cpu_limit == 2.0
    assert handed == []


def test_an_operators_update_of_a_dict_is_applied_over_the_charts_value():
    def operator(c):
        c.KubeSpawner.environment.update({"EXTRA": "1"})

    spawner, handed = loaded(operator)
    assert spawner.environment == {"TEAM": "ml", "EXTRA": "1"}
    assert handed == ["environment"]
    assert CHART["environment"] == {"TEAM": "ml"}  # the chart's value itself untouched


def test_jupyterhub_config_hands_the_charts_values_to_the_operators_in_k8s_mode(tmp_path):
    env = {"EXECUTION_MODE": "k8s", "HUB_NAME": "team"}
    for name in "abc":
        (tmp_path / name).mkdir()
    chart = load_hub_config(tmp_path / "a", env, values=rendered())
    assert chart["image"] == "mlhub-workspace:0.1.0"
    own = load_hub_config(
        tmp_path / "b",
        env,
        values=rendered(hub__config={"KubeSpawner": {"image": "team/lab:2"}}),
    )
    assert own["image"] is None  # ML Hub's section no longer hides c.KubeSpawner.image (hub.config)
    mine = load_hub_config(
        tmp_path / "c",
        env,
        values=rendered(hub__config={"MLHubKubernetesSpawner": {"image": "team/lab:3"}}),
        user_config='c.KubeSpawner.image = "team/lab:4"\n',
    )
    assert mine["image"] == "team/lab:3"  # the operator's own value in ML Hub's section stays


def test_a_bad_operator_value_still_stops_the_hub_naming_it():
    c = Config()
    c.JupyterHub.spawner_class = "mlhub-kubernetes"
    c[SPAWNER].start_timeout = 300
    before = section_values(c, PARENTS)
    c.KubeSpawner.start_timeout = "soon"
    yield_to_operator(c, SPAWNER, {"start_timeout": c[SPAWNER].start_timeout}, PARENTS, before)
    with pytest.raises(SystemExit, match=r"'start_timeout' trait .*'soon'"):
        check_spawner_config(c)
