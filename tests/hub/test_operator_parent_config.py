"""An operator's DockerSpawner config on a real hub: c.Spawner/c.DockerSpawner values win over ML Hub's defaults.

ML Hub's own image (``MLHUB_WORKSPACE_IMAGE``) and waits (120 s, 300 s) are only defaults: a
``jupyterhub_config.py`` written for DockerSpawner that sets ``c.Spawner.http_timeout``,
``c.Spawner.start_timeout`` and ``c.DockerSpawner.image`` starts the hub, and its workspaces use those
values. A config with several problems (a bad profile, a refused DockerSpawner setting, a value of the wrong
type) stops the hub once, with one message naming all of them, before anything is created.
"""

import os
import re

import pytest

from mlhubspawner import __version__, naming

from support import Hub

IMAGE = os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")
OPERATOR_CONFIG = f"""
c.Spawner.http_timeout = 77
c.Spawner.start_timeout = 99
c.DockerSpawner.image = {IMAGE!r}
c.Spawner.pre_spawn_hook = lambda spawner: spawner.log.info(
    "operator hook: http_timeout=%s start_timeout=%s image=%s",
    spawner.http_timeout,
    spawner.start_timeout,
    spawner.image,
)
"""


def containers_of(docker, hub):
    return docker.containers.list(all=True, filters={"label": f"{naming.LABEL_ORIGIN}={hub.hub_name}"})


def test_an_operators_spawner_timeouts_and_image_win_over_ml_hubs_defaults(docker, tmp_path):
    # ML Hub's default image is one the engine does not have: only c.DockerSpawner.image can start
    hub = Hub(
        tmp_path,
        user_config=OPERATOR_CONFIG,
        env={"MLHUB_WORKSPACE_IMAGE": "mlhub-test-missing:1", "MLHUB_WORKSPACE_IMAGES": None},
    )
    try:
        hub.start(timeout=90)
        user = hub.create_user("olivia")
        assert hub.spawn(user).status_code in (201, 202)
        log = hub.log_tail(400)
        assert f"operator hook: http_timeout=77 start_timeout=99 image={IMAGE}" in log
        assert "ML Hub cannot start" not in log
        (container,) = containers_of(docker, hub)
        assert container.attrs["Config"]["Image"] == IMAGE
        assert container.status == "running"
        assert hub.get_through_proxy(user).status_code == 200
        hub.stop_server(user)
    finally:
        hub.destroy(docker)


def test_every_problem_of_the_config_is_named_in_one_message_and_nothing_is_created(docker, tmp_path):
    config = (
        'c.MLHubSpawner.profiles = [{"name": "Big", "mem_limit": "lots"}]\n'
        'c.DockerSpawner.network_name = "jupyterhub-network"\n'
        'c.DockerSpawner.volumes = {"/srv/data": "/workspace"}\n'
        'c.Spawner.start_timeout = "soon"\n'
    )
    hub = Hub(tmp_path, user_config=config, env={"MLHUB_WORKSPACE_IMAGES": None})
    try:
        with pytest.raises(RuntimeError, match="hub exited") as stopped:
            hub.start(timeout=90)
        assert containers_of(docker, hub) == []
        assert not [n for n in docker.networks.list() if n.name.startswith(f"{hub.hub_name}-")]
    finally:
        hub.destroy(docker)
    log = str(stopped.value)
    (message,) = [line for line in log.splitlines() if "ML Hub cannot start" in line]
    assert message.count("ML Hub cannot start") == 1
    assert (
        "MLHubSpawner.profiles[0] ('Big'): mem_limit: expected a size such as 512M or 4G, got 'lots'"
        in message
    )
    assert "c.DockerSpawner.network_name is replaced in ML Hub" in message
    assert re.search(r"DockerSpawner\.volumes\['/srv/data'\]: /workspace is where ML Hub mounts", message)
    assert re.search(r"c\.Spawner\.start_timeout: The 'start_timeout' trait .* not the str 'soon'", message)
