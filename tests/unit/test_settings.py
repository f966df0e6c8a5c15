"""Environment variables: defaults, and a start-up error naming the variable for bad values."""

import pytest

from mlhubspawner.settings import SettingsError, load_settings


def test_defaults():
    s = load_settings({})
    assert (s.hub_name, s.execution_mode, s.cleanup_interval_seconds, s.ssl_enabled) == (
        "mlhub",
        "docker",
        3600,
        False,
    )
    assert s.hub_address == "gateway"


def test_aliases_and_values():
    s = load_settings(
        {
            "EXECUTION_MODE": "local",
            "CLEANUP_INTERVAL_SECONDS": "-1",
            "SSL_ENABLED": "on",
            "HUB_NAME": "team-hub",
        }
    )
    assert (s.execution_mode, s.cleanup_interval_seconds, s.ssl_enabled, s.hub_name) == (
        "docker",
        -1,
        True,
        "team-hub",
    )


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"HUB_NAME": "My_Hub"}, "HUB_NAME"),
        ({"HUB_NAME": "a" * 21}, "HUB_NAME"),
        ({"EXECUTION_MODE": "swarm"}, "EXECUTION_MODE"),
        ({"CLEANUP_INTERVAL_SECONDS": "soon"}, "CLEANUP_INTERVAL_SECONDS"),
        ({"CLEANUP_INTERVAL_SECONDS": "0"}, "CLEANUP_INTERVAL_SECONDS"),
        ({"CLEANUP_MIN_AGE_SECONDS": "-5"}, "CLEANUP_MIN_AGE_SECONDS"),
        ({"SSL_ENABLED": "perhaps"}, "SSL_ENABLED"),
        ({"MLHUB_PORT": "99999"}, "MLHUB_PORT"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        load_settings(env)
