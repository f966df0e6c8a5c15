"""The chart's ``singleuser.profileList`` (z2jh's): accepted by the values schema and handed to the spawner."""

import json
from pathlib import Path

import jsonschema
import yaml

from mlhubspawner import chart_values as cv
from mlhubspawner.kubernetes import MLHubKubernetesSpawner, profiles

CHART = Path(__file__).resolve().parents[2] / "helm/mlhub"
Z2JH_PROFILES = [
    {
        "display_name": "GPU",
        "slug": "gpu",
        "description": "One GPU",
        "default": True,
        "kubespawner_override": {"image": "team/cuda:12", "extra_resource_limits": {"nvidia.com/gpu": "1"}},
        "profile_options": {"size": {"display_name": "Size", "choices": {"s": {"display_name": "S"}}}},
    }
]


def singleuser_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    return {
        **schema["properties"]["singleuser"]["properties"]["profileList"],
        "definitions": schema.get("definitions"),
    }


def test_the_schema_takes_a_z2jh_profile_list_and_names_a_typo():
    schema = singleuser_schema()
    jsonschema.validate(Z2JH_PROFILES, schema)
    typo = [{"display_name": "X", "kubespawner_overide": {"image": "x"}}]  # silently ignored otherwise
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(typo))
    assert errors and "kubespawner_overide" in errors[0].message
    assert yaml.safe_load((CHART / "values.yaml").read_text())["singleuser"]["profileList"] == []


def test_profile_list_reaches_the_spawner():
    values = {"singleuser": {"profileList": Z2JH_PROFILES}, "_chart": {"hubName": "team"}}
    settings = cv.spawner_settings(values)
    assert settings["profile_list"] == Z2JH_PROFILES
    assert "profile_list" not in cv.spawner_settings({"singleuser": {"profileList": []}})
    settings_names = MLHubKubernetesSpawner.class_trait_names(config=True)
    assert profiles.profile_list_errors(settings["profile_list"], settings_names.__contains__) == []
