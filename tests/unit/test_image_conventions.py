"""The image conventions (mlhubspawner.images): which settings an image gets and what it is run with."""

import pytest

from mlhubspawner import images
from mlhubspawner.options import OptionsError, parse_options
from mlhubspawner.policy import WorkspacePolicy
from mlhubspawner.spawner_base import workspace_env

DEFAULTS = images.parse_image_settings(images.DEFAULT_IMAGE_SETTINGS)


@pytest.mark.parametrize(
    "image, convention",
    [
        ("mltooling/ml-workspace:0.13.2", "ml-workspace"),
        ("mltooling/ml-workspace-gpu:0.13.2", "ml-workspace"),
        ("docker.io/mltooling/ml-workspace:0.13.2", "ml-workspace"),
        ("jupyter/scipy-notebook:2023-10-20", "docker-stacks"),
        ("docker.io/jupyter/base-notebook", "docker-stacks"),
        ("quay.io/jupyter/pytorch-notebook@sha256:" + "0" * 64, "docker-stacks"),
        ("mlhub-workspace:0.1.0", "mlhub"),
        ("example.com/jupyter/scipy-notebook:1", "mlhub"),  # another registry's jupyter/ is not the stacks
        ("mltooling/ml-hub:1.0.0", "mlhub"),
    ],
)
def test_the_shipped_table_knows_the_well_known_images(image, convention):
    assert images.settings_for(image, DEFAULTS).convention == convention


def test_an_exact_name_wins_over_patterns_and_patterns_go_in_order():
    table = images.parse_image_settings(
        {
            "team/*": {"convention": "docker-stacks"},
            "team/special:1": {"convention": "ml-workspace"},
            "team/spe*": {"convention": "ml-workspace"},
        }
    )
    assert images.settings_for("team/special:1", table).convention == "ml-workspace"
    assert images.settings_for("team/special:2", table).convention == "docker-stacks"  # first pattern


def test_ml_workspace_runs_its_own_entrypoint_on_8080_as_root_with_the_originals_env():
    run = images.image_run(
        images.settings_for("mltooling/ml-workspace:0.13.2", DEFAULTS),
        spawner_cmd=["jupyterhub-singleuser"],
        spawner_port=8888,
        spawner_volume_path="/data",
    )
    assert (run.cmd, run.use_args, run.port, run.volume_path, run.run_as_root) == (
        None,
        False,
        8080,
        "/workspace",
        True,
    )
    env = images.image_env(run, service_prefix="/user/alice/train/")
    assert env == {
        "AUTHENTICATE_VIA_JUPYTER": "true",
        "SHUTDOWN_INACTIVE_KERNELS": "true",
        "WORKSPACE_BASE_URL": "/user/alice/train",
        "WORKSPACE_PORT": "8080",
    }


def test_docker_stacks_keeps_the_spawners_port_and_roots_jupyter_in_the_volume():
    run = images.image_run(
        images.settings_for("quay.io/jupyter/minimal-notebook:latest", DEFAULTS), spawner_port=8888
    )
    assert (run.cmd, run.use_args, run.port, run.volume_path, run.run_as_root) == (
        None,
        True,
        8888,
        "/home/jovyan/work",
        False,
    )
    assert images.image_env(run) == {"JUPYTERHUB_ROOT_DIR": "/home/jovyan/work"}
    assert images.image_env(run, volume_mounted=False) == {}
    # the admin's notebook_dir wins
    assert images.image_env(run, base={"JUPYTERHUB_ROOT_DIR": "/home/jovyan"}) == {}


def test_our_own_convention_is_unchanged():
    run = images.image_run(images.ImageSettings(), spawner_cmd=None, spawner_port=8080)
    assert (run.cmd, run.use_args, run.port, run.volume_path, run.run_as_root, run.env) == (
        None,
        True,
        8080,
        "/workspace",
        False,
        {},
    )
    assert images.image_env(run) == {}


def test_per_image_settings_override_the_conventions_defaults():
    table = images.parse_image_settings(
        {
            "corp/ws:*": {
                "convention": "ml-workspace",
                "env": {"SHUTDOWN_INACTIVE_KERNELS": "3600", "INCLUDE_TUTORIALS": "false"},
                "port": 8090,
                "run_as_root": False,
            },
            "corp/nb:*": {
                "convention": "docker-stacks",
                "volume_path": "/home/jovyan/",
                "cmd": "start-singleuser.sh",
            },
        }
    )
    ws = images.image_run(images.settings_for("corp/ws:1", table))
    assert (ws.port, ws.run_as_root) == (8090, False)
    env = images.image_env(ws, service_prefix="/user/a/")
    assert env["SHUTDOWN_INACTIVE_KERNELS"] == "3600" and env["INCLUDE_TUTORIALS"] == "false"
    assert env["WORKSPACE_PORT"] == "8090"
    nb = images.image_run(images.settings_for("corp/nb:1", table))
    assert (nb.cmd, nb.volume_path) == (("start-singleuser.sh",), "/home/jovyan")


@pytest.mark.parametrize(
    "table, named",
    [
        ({"x": {"convention": "ml_workspace"}}, "convention must be one of"),
        ({"x": {"convetion": "ml-workspace"}}, "unknown keys ['convetion']"),
        ({"x": {"convention": "ml-workspace", "env": {"AUTHENTICATE_VIA_JUPYTER": "false"}}}, "AUTHENTICATE"),
        ({"x": {"env": {"1BAD": "v"}}}, "1BAD"),
        ({"x": {"env": {"A": 1}}}, "NAME -> string"),
        ({"x": {"port": 0}}, "port"),
        ({"x": {"volume_path": "workspace"}}, "absolute"),
        ({"x": {"cmd": []}}, "cmd"),
        ({"x": {"run_as_root": "yes"}}, "run_as_root"),
        ({"x": "ml-workspace"}, "must be a dict"),
    ],
)
def test_bad_settings_fail_at_hub_start_naming_the_entry(table, named):
    with pytest.raises(ValueError) as error:
        WorkspacePolicy(workspace_image_settings=table)
    assert "workspace_image_settings" in str(error.value) and named in str(error.value)


def test_users_cannot_turn_off_the_workspace_auth_nor_move_its_base_url():
    policy = WorkspacePolicy(workspace_images=["mltooling/ml-workspace:0.13.2"]).policy("mlhub-workspace:1")
    for name in images.ML_WORKSPACE_FIXED_ENV:
        with pytest.raises(OptionsError) as error:
            parse_options({"image": "mltooling/ml-workspace:0.13.2", "env": {name: "false"}}, policy)
        assert error.value.field == "env" and name in error.value.message
    # and were the reserved names configured away, the convention's values still win over the user's
    options = parse_options(
        {"image": "mltooling/ml-workspace:0.13.2"},
        WorkspacePolicy(workspace_images=["mltooling/ml-workspace:0.13.2"], reserved_env_names=[]).policy(
            "mlhub-workspace:1"
        ),
    )
    options = type(options).from_dict({**options.to_dict(), "env": {"AUTHENTICATE_VIA_JUPYTER": "false"}})
    run = images.image_run(images.settings_for(options.image, DEFAULTS))
    env = workspace_env({"JUPYTERHUB_SERVICE_PREFIX": "/user/a/"}, options, "ws-a", "void", run)
    assert env["AUTHENTICATE_VIA_JUPYTER"] == "true" and env["WORKSPACE_BASE_URL"] == "/user/a"
