"""make run's MLHUB_USERS_DIR (run-hub.sh with a fake engine): the allow list's directory mounted read-only at
/resources/users, and anything else refused before the engine is asked to change anything."""

import pytest
from test_settings_variables import _env_args, _run_call, run_hub


def test_the_directory_is_mounted_read_only_at_resources_users(tmp_path):
    users = tmp_path / "allow list"  # a space in the path stays one argument
    users.mkdir()
    (users / "dynamic_whitelist.txt").write_text("alice\n")
    link = tmp_path / "users-link"
    link.symlink_to(users)
    result, calls = run_hub(tmp_path, {"MLHUB_USERS_DIR": str(link), "DYNAMIC_WHITELIST_ENABLED": "true"})
    assert result.returncode == 0, result.stderr
    argv = _run_call(calls)["argv"]
    # the real path (docker binds what a link names at the time), the whole directory, read-only
    assert f"{users}:/resources/users:ro" in argv
    assert argv[argv.index(f"{users}:/resources/users:ro") - 1] == "-v"
    assert "DYNAMIC_WHITELIST_ENABLED=true" in _env_args(argv)
    assert "note:" not in result.stderr


@pytest.mark.parametrize("env", [{}, {"MLHUB_USERS_DIR": ""}], ids=["unset", "empty"])
def test_unset_or_empty_mounts_nothing(tmp_path, env):
    result, calls = run_hub(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert not any("/resources/users" in arg for arg in _run_call(calls)["argv"])


@pytest.mark.parametrize("kind", ["file", "missing", "link-to-file"])
def test_a_path_that_is_no_directory_is_refused_before_anything_changes(tmp_path, kind):
    target = tmp_path / "dynamic_whitelist.txt"
    if kind != "missing":
        target.write_text("alice\n")  # the file itself, a common mistake
    if kind == "link-to-file":
        (tmp_path / "users").symlink_to(target)
        target = tmp_path / "users"
    result, calls = run_hub(tmp_path, {"MLHUB_USERS_DIR": str(target), "DYNAMIC_WHITELIST_ENABLED": "true"})
    assert result.returncode == 1
    assert f"MLHUB_USERS_DIR={target} is not a directory" in result.stderr
    assert "dynamic_whitelist.txt" in result.stderr
    # no docker call at all: a running hub is neither removed nor replaced
    assert calls == []


def test_a_directory_docker_cannot_mount_is_refused(tmp_path):
    users = tmp_path / "a:/etc"
    users.mkdir(parents=True)
    result, calls = run_hub(tmp_path, {"MLHUB_USERS_DIR": str(users), "DYNAMIC_WHITELIST_ENABLED": "true"})
    assert result.returncode == 1
    assert "contains ':'" in result.stderr
    assert calls == []


@pytest.mark.parametrize(
    "enabled, file, note",
    [
        ("true", False, "has no dynamic_whitelist.txt: until it does, only the admins can log in"),
        ("false", True, "the hub reads its allow list only with DYNAMIC_WHITELIST_ENABLED=true"),
        (None, True, "the hub reads its allow list only with DYNAMIC_WHITELIST_ENABLED=true"),
    ],
)
def test_notes_when_the_list_would_not_be_read(tmp_path, enabled, file, note):
    users = tmp_path / "users"
    users.mkdir()
    if file:
        (users / "dynamic_whitelist.txt").write_text("alice\n")
    env = {"MLHUB_USERS_DIR": str(users)} | (
        {} if enabled is None else {"DYNAMIC_WHITELIST_ENABLED": enabled}
    )
    result, calls = run_hub(tmp_path, env)
    assert result.returncode == 0, result.stderr  # a note, not a refusal: the hub still starts
    assert note in result.stderr
    assert f"{users}:/resources/users:ro" in _run_call(calls)["argv"]


def test_the_mount_is_not_an_environment_variable_of_the_hub(tmp_path):
    users = tmp_path / "users"
    users.mkdir()
    result, calls = run_hub(tmp_path, {"MLHUB_USERS_DIR": str(users)})
    assert result.returncode == 0, result.stderr
    assert not any(a.startswith("MLHUB_USERS_DIR") for a in _env_args(_run_call(calls)["argv"]))
