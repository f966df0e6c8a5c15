"""jupyterhub_config.py with the original's switches: IS_CLEANUP_SERVICE_ENABLED and DYNAMIC_WHITELIST_ENABLED."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlhubspawner.auth import ALLOW_LIST_FILE
from mlhubspawner.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]

LOAD = textwrap.dedent(
    """
    import json, sys
    from traitlets.config import PyFileConfigLoader
    try:
        c = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1]).load_config()
    except SystemExit as e:
        print(json.dumps({"exit": str(e)}))
        raise SystemExit(0)
    hub, native = c.JupyterHub, c.NativeAuthenticator
    print(json.dumps({
        "services": [s["name"] for s in hub.services],
        "roles": [r["name"] for r in hub.load_roles],
        "custom_scopes": sorted(hub.custom_scopes),
        "cleanup_page_links": hub.template_vars["mlhub_cleanup_service"],
        "allow_all": c.Authenticator.allow_all,
        "native_allow_all": native.allow_all if "allow_all" in native else None,
        "allowed_users_file": native.allowed_users_file if "allowed_users_file" in native else None,
    }))
    """
)


def load(tmp_path, env):
    user_config = tmp_path / "user_config.py"
    user_config.write_text("")
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MLHUB_DATA_DIR": str(tmp_path / "data"),
        "MLHUB_USER_CONFIG": str(user_config),
        "MLHUB_CHART_VALUES": str(tmp_path / "values.yaml"),  # none: the k8s mode without the chart
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(REPO)],
        env=full_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_register_the_cleanup_service_and_no_allow_list(tmp_path):
    out = load(tmp_path, {})
    assert "cleanup-service" in out["services"] and "cleanup-service" in out["roles"]
    assert out["cleanup_page_links"] is True
    assert (out["allow_all"], out["native_allow_all"], out["allowed_users_file"]) == (True, None, None)


@pytest.mark.parametrize("mode", ["docker", "k8s"])
def test_cleanup_service_off_registers_nothing_of_it(tmp_path, mode):
    out = load(tmp_path, {"IS_CLEANUP_SERVICE_ENABLED": "false", "EXECUTION_MODE": mode})
    assert "cleanup-service" not in out["services"]
    assert "cleanup-service" not in out["roles"]
    assert "ssh-front" in out["services"] and "idle-culler" in out["services"]  # the others stay
    # roles of the operator's that name the cleanup scopes still load
    assert {"custom:mlhub-cleanup:read", "custom:mlhub-cleanup:write"} <= set(out["custom_scopes"])
    assert out["cleanup_page_links"] is False


def test_allow_list_switch_sets_the_file_and_turns_allow_all_off(tmp_path):
    out = load(tmp_path, {"DYNAMIC_WHITELIST_ENABLED": "true"})
    assert out["allowed_users_file"] == ALLOW_LIST_FILE == "/resources/users/dynamic_whitelist.txt"
    assert out["native_allow_all"] is False


@pytest.mark.parametrize("name", ["DYNAMIC_WHITELIST_ENABLED", "IS_CLEANUP_SERVICE_ENABLED"])
def test_a_bad_switch_value_stops_the_hub_naming_it(tmp_path, name):
    out = load(tmp_path, {name: "yes please"})
    assert out == {"exit": f"ML Hub cannot start: {name}='yes please': expected true or false"}


# ---- the environment variables ----------------------------------------------------------------


def test_switch_defaults():
    s = load_settings({})
    assert (s.dynamic_whitelist_enabled, s.cleanup_service_enabled) == (False, True)
    s = load_settings({"DYNAMIC_WHITELIST_ENABLED": "true", "IS_CLEANUP_SERVICE_ENABLED": "false"})
    assert (s.dynamic_whitelist_enabled, s.cleanup_service_enabled) == (True, False)


@pytest.mark.parametrize("name", ["DYNAMIC_WHITELIST_ENABLED", "IS_CLEANUP_SERVICE_ENABLED"])
@pytest.mark.parametrize("value", ["yes please", "enabled", "2", "truee"])
def test_bad_switch_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=f"{name}=.*expected true or false"):
        load_settings({name: value})
