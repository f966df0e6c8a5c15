"""The admin's profiles on a real hub with the Docker backend (the minimal workspace image).

What an operator and a user see: ``{"profile": "small"}`` by REST starts a container with the profile's
CPU, memory, shm, env and lifetime; the home page shows the profile, after a hub restart too; a user cannot
use a profile of a group they are not in (400 "unknown profile", nothing created, not in their form), nor go
beyond a profile's ceiling, nor set reserved env names through it. ``c.Spawner.mem_limit`` is the default of
the custom options, and DockerSpawner's ``allowed_images`` keys start their images. A bad profile stops the
hub at start, naming the profile and the field.
"""

import os
import re
import time

import pytest
from markupsafe import escape

from mlhubspawner import __version__, naming

from support import Hub, log_in, post_form

MB = 1024**2
IMAGE = os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")
HOSTILE_NAME = '<script>alert("profile")</script> GPU'
CONFIG = f"""
c.MLHubDockerSpawner.max_cpu_limit = 1.5
c.MLHubDockerSpawner.max_mem_limit = "2G"
c.MLHubDockerSpawner.max_days_to_live = 30
c.Spawner.mem_limit = "768M"
c.JupyterHub.load_groups = {{"gpu-team": {{"users": ["gina"]}}}}
c.DockerSpawner.allowed_images = {{"Minimal": {IMAGE!r}}}
c.MLHubSpawner.profiles = [
    {{
        "name": "Team small",
        "slug": "small",
        "description": "One CPU, 1 GB",
        "cpu_limit": 1,
        "mem_limit": "1G",
        "shm_size": "128M",
        "env": {{"PROFILE_TEAM": "ml"}},
        "days_to_live": 3,
    }},
    {{"name": {HOSTILE_NAME!r}, "slug": "gpu-team", "cpu_limit": 0.5, "groups": ["gpu-team"]}},
]
"""


@pytest.fixture(scope="module")
def phub(docker, tmp_path_factory):
    hub = Hub(
        tmp_path_factory.mktemp("profiles-hub"), user_config=CONFIG, env={"MLHUB_WORKSPACE_IMAGES": None}
    )
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


@pytest.fixture(scope="module")
def admin(phub):
    session, r = log_in(phub, "admin")
    assert r.status_code == 302, r.text
    return session


def container_of(docker, hub, user, server):
    return docker.containers.get(naming.workspace_name(hub.hub_name, user, server))


def workspaces_of(docker, hub, user):
    labels = [f"{naming.LABEL_ORIGIN}={hub.hub_name}", f"{naming.LABEL_USER}={user}"]
    return docker.containers.list(all=True, filters={"label": labels})


def env_of(container):
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def test_a_profile_started_by_rest_sets_the_limits_env_and_lifetime_and_the_home_row_shows_it(
    phub, admin, docker
):
    r = phub.spawn("admin", "prof", {"profile": "small"})
    assert r.status_code in (201, 202), r.text
    container = container_of(docker, phub, "admin", "prof")
    host = container.attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["ShmSize"]) == (10**9, 1024 * MB, 128 * MB)
    env = env_of(container)
    assert (env["PROFILE_TEAM"], env["CPU_LIMIT"], env["MEM_LIMIT"]) == ("ml", "1", str(1024 * MB))
    expiration = int(container.labels[naming.LABEL_EXPIRATION])
    assert abs(expiration - (time.time() + 3 * 86400)) < 600  # the profile's 3 days, not the 30 allowed
    home = admin.get(f"{phub.url}/hub/home", timeout=30).text
    assert "Profile: Team small" in home

    phub.restart()  # the profile is in the server's state
    session, r = log_in(phub, "admin")
    assert r.status_code == 302
    assert "Profile: Team small" in session.get(f"{phub.url}/hub/home", timeout=30).text
    info = phub.api("GET", "users/admin").json()["servers"]["prof"]
    assert info["ready"]
    phub.stop_server("admin", "prof", remove=True)


def test_custom_options_take_the_parent_memory_limit_and_an_allowed_images_key(phub, docker):
    phub.create_user("carl")
    r = phub.spawn("carl", "mine", {"image": "Minimal"})
    assert r.status_code in (201, 202), r.text
    container = container_of(docker, phub, "carl", "mine")
    assert container.attrs["HostConfig"]["Memory"] == 768 * MB  # c.Spawner.mem_limit
    assert container.attrs["Config"]["Image"] == IMAGE
    assert "PROFILE_TEAM" not in env_of(container)
    phub.stop_server("carl", "mine", remove=True)


def test_a_profile_of_a_group_is_only_for_its_members(phub, admin, docker):
    phub.create_user("olga")  # not in the group; gina is (c.JupyterHub.load_groups)
    assert "gpu-team" in phub.api("GET", "users/gina").json()["groups"]
    refused = phub.api("POST", "users/olga/servers/w", json={"profile": "gpu-team"})
    missing = phub.api("POST", "users/olga/servers/w", json={"profile": "no-such-profile"})
    assert refused.status_code == missing.status_code == 400
    assert refused.json()["message"] == "Invalid profile: unknown profile 'gpu-team'"
    assert missing.json()["message"] == "Invalid profile: unknown profile 'no-such-profile'"
    assert workspaces_of(docker, phub, "olga") == []
    olga_form = admin.get(f"{phub.url}/hub/spawn/olga/w", timeout=30).text
    assert 'value="small"' in olga_form, olga_form
    hidden = olga_form.count("gpu-team"), olga_form.count(str(escape(HOSTILE_NAME)))
    assert hidden == (0, 0), [
        olga_form[max(0, m.start() - 300) : m.end() + 100] for m in re.finditer("gpu-team", olga_form)
    ]

    gina_form = admin.get(f"{phub.url}/hub/spawn/gina/w", timeout=30).text
    assert 'value="gpu-team"' in gina_form
    assert HOSTILE_NAME not in gina_form and str(escape(HOSTILE_NAME)) in gina_form  # text, never markup
    r = phub.spawn("gina", "w", {"profile": "gpu-team"})
    assert r.status_code in (201, 202), r.text
    assert container_of(docker, phub, "gina", "w").attrs["HostConfig"]["NanoCpus"] == 5 * 10**8
    phub.stop_server("gina", "w", remove=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"cpu_limit": 1.2}, "Invalid cpu_limit: at most 1 CPUs are allowed"),  # the policy allows 1.5
        ({"mem_limit": "1.5G"}, "Invalid mem_limit: at most 1G is allowed"),
        ({"days_to_live": 10}, "Invalid days_to_live: at most 3 days"),
        ({"image": "mlhub-test-other:1"}, "Invalid image: 'mlhub-test-other:1' is not one of the offered"),
        ({"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "Invalid env: JUPYTERHUB_API_TOKEN is reserved"),
        ({"env": "MLHUB_ORIGIN=other"}, "Invalid env: MLHUB_ORIGIN is reserved"),
        ({"bogus": 1}, "Invalid bogus: unknown option"),
    ],
)
def test_an_override_beyond_the_profile_is_a_400_and_creates_nothing(phub, docker, override, message):
    phub.create_user("otto")
    r = phub.api("POST", "users/otto/servers/x", json={"profile": "small", **override})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(message)
    assert workspaces_of(docker, phub, "otto") == []


def test_a_bad_profile_stops_the_hub_naming_the_profile_and_the_field(docker, tmp_path):
    config = 'c.MLHubSpawner.profiles = [{"name": "Big", "mem_limit": "lots"}, {"name": "Huge", "cpu_limit": 64}]\n'
    config += "c.MLHubDockerSpawner.max_cpu_limit = 8\n"
    hub = Hub(tmp_path, user_config=config, env={"MLHUB_WORKSPACE_IMAGES": None})
    try:
        with pytest.raises(RuntimeError) as stopped:
            hub.start(timeout=60)
    finally:
        hub.destroy(docker)
    assert "ML Hub cannot start: MLHubSpawner.profiles[0] ('Big'): mem_limit: expected a size" in str(
        stopped.value
    )
    config = 'c.MLHubSpawner.profiles = [{"name": "Huge", "cpu_limit": 64}]\nc.MLHubDockerSpawner.max_cpu_limit = 8\n'
    hub = Hub(tmp_path / "second", user_config=config, env={"MLHUB_WORKSPACE_IMAGES": None})
    try:
        with pytest.raises(RuntimeError) as stopped:
            hub.start(timeout=60)
    finally:
        hub.destroy(docker)
    assert (
        "MLHubSpawner.profiles[0] ('huge'): cpu_limit: 64 is above MLHubDockerSpawner.max_cpu_limit = 8"
        in str(stopped.value)
    )


def test_the_form_starts_the_chosen_profile_ignoring_the_hidden_custom_fields(phub, admin, docker):
    form = admin.get(f"{phub.url}/hub/spawn/admin/viaform", timeout=30).text
    assert form.index('value="small"') < form.index('value="custom"') < form.index('name="cpu_limit"')
    assert 'class="mlhub-custom-fields"' in form  # shown only while Custom is chosen (mlhub.css)
    assert "One CPU, 1 GB" in form  # the description

    r = post_form(admin, phub, "spawn/admin/viaform", {"profile": "gpu-team", "is_mount_volume": "on"})
    assert r.status_code == 400 and "unknown profile" in r.text  # admin is not in the group either
    name = naming.workspace_name(phub.hub_name, "admin", "viaform")
    assert name not in [c.name for c in workspaces_of(docker, phub, "admin")]

    fields = {
        "profile": "small",
        "cpu_limit": "1.5",
        "mem_limit": "2G",
        "env": "JUPYTERHUB_X=1",
        "is_mount_volume": "on",
    }
    r = post_form(admin, phub, "spawn/admin/viaform", fields)
    assert r.status_code == 200, r.text
    phub.wait_ready("admin", "viaform")
    host = container_of(docker, phub, "admin", "viaform").attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"]) == (10**9, 1024 * MB)  # the profile's, not the hidden fields'
    phub.stop_server("admin", "viaform", remove=True)
