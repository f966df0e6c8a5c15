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
        ({"START_NGINX": "maybe"}, "START_NGINX"),
        ({"START_SSH": "2"}, "START_SSH"),
        ({"START_JHUB": "enabled"}, "START_JHUB"),
        ({"START_CHP": "y"}, "START_CHP"),
        ({"ADDITIONAL_ARGS": "--custom-header 'X-Team: ml hub"}, "ADDITIONAL_ARGS"),
        ({"MLHUB_PUBLIC_HOSTNAMES": "hub.example.org,ml_hub.example.org"}, "MLHUB_PUBLIC_HOSTNAMES"),
        ({"MLHUB_PUBLIC_HOSTNAMES": "hub..example.org"}, "MLHUB_PUBLIC_HOSTNAMES"),
        ({"MLHUB_PUBLIC_HOSTNAMES": "https://hub.example.org"}, "MLHUB_PUBLIC_HOSTNAMES"),
        pytest.param(
            {"MLHUB_PUBLIC_HOSTNAMES": "hüb.example.org"},
            "MLHUB_PUBLIC_HOSTNAMES",
        ),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        load_settings(env)


@pytest.mark.parametrize("value", ["tooshort", "x" * 11, " leading-space-pass", "line\nbreak-password"])
def test_a_weak_admin_password_names_the_variable_never_the_value(value):
    with pytest.raises(SettingsError, match="MLHUB_ADMIN_PASSWORD") as refused:
        load_settings({"MLHUB_ADMIN_PASSWORD": value})
    assert value.strip() not in str(refused.value)


def test_the_admin_password_is_read_but_never_shown():
    assert load_settings({}).admin_password == ""
    s = load_settings({"MLHUB_ADMIN_PASSWORD": "operator-Chosen-pass-42"})
    assert s.admin_password == "operator-Chosen-pass-42"
    assert "operator-Chosen" not in repr(s)


def test_hub_image_defaults_run_nginx_ssh_and_the_hub_but_not_a_separate_proxy():
    s = load_settings({})
    assert (s.start_nginx, s.start_ssh, s.start_jhub, s.start_chp) == (True, True, True, False)
    assert (s.additional_args, s.public_hostnames) == ((), ())


def test_additional_args_are_split_like_a_shell_and_host_names_normalised():
    s = load_settings(
        {
            "START_CHP": "TRUE",
            "START_SSH": " off ",
            "ADDITIONAL_ARGS": "--log-level=debug --custom-header 'X-Team: ml hub'",
            "MLHUB_PUBLIC_HOSTNAMES": " Hub.Example.org, ,10-0-0-1.nip.io,",
        }
    )
    assert (s.start_chp, s.start_ssh) == (True, False)
    assert s.additional_args == ("--log-level=debug", "--custom-header", "X-Team: ml hub")
    assert s.public_hostnames == ("hub.example.org", "10-0-0-1.nip.io")


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"MLHUB_HUB_SERVICE_URL": "mlhub-hub:8081"}, "MLHUB_HUB_SERVICE_URL"),
        ({"MLHUB_HUB_SERVICE_URL": "http://mlhub-hub:8081/hub"}, "MLHUB_HUB_SERVICE_URL"),
        ({"MLHUB_PROXY_API_LISTEN": "everywhere"}, "MLHUB_PROXY_API_LISTEN"),
        ({"MLHUB_SSH_FRONT_TOKEN": "short"}, "MLHUB_SSH_FRONT_TOKEN"),
    ],
)
def test_chart_split_settings_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        load_settings(env)


def test_chart_split_settings():
    s = load_settings(
        {
            "MLHUB_HUB_SERVICE_URL": "http://mlhub-hub:8081/",
            "MLHUB_PROXY_API_LISTEN": "0.0.0.0",
            "MLHUB_SSH_FRONT_TOKEN": "a" * 64,
        }
    )
    assert (s.hub_service_url, s.proxy_api_listen, s.ssh_front_token) == (
        "http://mlhub-hub:8081",
        "0.0.0.0",
        "a" * 64,
    )
    assert load_settings({}).proxy_api_listen == "127.0.0.1"
