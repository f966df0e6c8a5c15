"""DockerSpawner's container settings on ML Hub's workspaces: the real engine, through a real hub.

An operator's ``volumes`` (a host directory and a named volume per user, by template),
``read_only_volumes``, ``mounts``, ``post_start_cmd``, ``extra_create_kwargs`` and ``extra_host_config``
reach the workspace beside ML Hub's own volume. A crafted user name reaches no one else's directory; a
mount over the workspace is refused naming the setting, at hub start or (set by a group override) at
the spawn, before anything is created; a mount the engine cannot make leaves nothing behind.
"""

import secrets

import pytest
from docker.errors import NotFound

from mlhubspawner import naming

from support import LABEL_ORIGIN, Hub, base_image, remove_by_label

TEST_LABEL = "mlhub.test"
BROKEN, BAD_TARGET, LINKED, BAD_LINK, REMOVED = "pmbroken", "pmbadtarget", "pmlink", "pmbadlink", "pmremove"


def hub_config(hub_name, root, extra=""):
    home, datasets = root / "home", root / "datasets"
    return f"""
c.DockerSpawner.prefix = {hub_name!r}
c.DockerSpawner.volumes = {{
    "{home}/{{username}}": "/mnt/home",
    "{{prefix}}-shared-{{username}}": {{"bind": "/mnt/shared", "mode": "rw"}},
}}
c.DockerSpawner.read_only_volumes = {{"{datasets}": "/mnt/datasets"}}
c.DockerSpawner.mounts = [
    {{"type": "volume", "source": "{{prefix}}-models-{{username}}", "target": "/mnt/models",
      "labels": {{"{TEST_LABEL}": {hub_name!r}}}}},
    {{"type": "tmpfs", "target": "/mnt/scratch"}},
]
c.DockerSpawner.post_start_cmd = "sh -c 'id -un > /tmp/post-start-ran'"
c.DockerSpawner.extra_create_kwargs = {{"labels": {{"{TEST_LABEL}": {hub_name!r}, "team": "{{username}}"}}}}
c.DockerSpawner.extra_host_config = {{"extra_hosts": {{"parent-settings.test": "10.11.12.13"}}}}
c.JupyterHub.load_groups = {{
    "pm-broken": {{"users": [{BROKEN!r}]}},
    "pm-bad": {{"users": [{BAD_TARGET!r}]}},
    "pm-link": {{"users": [{LINKED!r}]}},
    "pm-badlink": {{"users": [{BAD_LINK!r}]}},
    "pm-remove": {{"users": [{REMOVED!r}]}},
}}
c.DockerSpawner.group_overrides = {{
    "3-link": {{"groups": ["pm-link"], "spawner_override": {{"links": {{"{hub_name}-sidecar": "db"}}}}}},
    "4-badlink": {{"groups": ["pm-badlink"], "spawner_override": {{"links": {{"{hub_name}-nowhere": "db"}}}}}},
    "5-remove": {{"groups": ["pm-remove"], "spawner_override": {{"remove": True}}}},
    "1-broken": {{
        "groups": ["pm-broken"],
        "spawner_override": {{
            "mounts": [{{"type": "bind", "source": "{root}/missing-{{username}}", "target": "/mnt/missing"}}]
        }},
    }},
    "2-bad": {{"groups": ["pm-bad"], "spawner_override": {{"read_only_volumes": {{"{datasets}": "/workspace"}}}}}},
}}
c.MLHubDockerSpawner.max_servers_per_user = 2
{extra}"""


@pytest.fixture(scope="module")
def host_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("parent-mounts")
    (root / "home").mkdir()
    datasets = root / "datasets"
    datasets.mkdir()
    (datasets / "data.txt").write_text("a dataset\n")
    datasets.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def mhub(docker, host_dirs, tmp_path_factory):
    hub_name = f"t{secrets.token_hex(3)}"
    hub = Hub(tmp_path_factory.mktemp("mhub"), hub_name=hub_name, user_config=hub_config(hub_name, host_dirs))
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)
        remove_by_label(docker, f"{TEST_LABEL}={hub_name}")
        for volume in docker.volumes.list(filters={"name": f"{hub_name}-"}):
            volume.remove(force=True)  # the named volumes the engine made for the templates


def run(container, command, user=""):
    result = container.exec_run(["sh", "-c", command], user=user)
    return result.exit_code, result.output.decode(errors="replace").strip()


def owned(docker, hub, user):
    """Every container, volume and network labelled as ``user``'s on this hub."""
    labels = {"label": [f"{LABEL_ORIGIN}={hub.hub_name}", f"{naming.LABEL_USER}={user}"]}
    return (
        docker.containers.list(all=True, filters=labels)
        + docker.volumes.list(filters=labels)
        + docker.networks.list(filters=labels)
    )


def mounts_of(container):
    return {m["Destination"]: m for m in container.attrs["Mounts"]}


def test_templates_host_bind_named_volume_read_only_and_post_start(mhub, docker, host_dirs):
    user = mhub.create_user("pm.Ünï")
    escaped = "pm-2e-c3-9cn-c3-af"  # DockerSpawner's escaping of the name (upper case escaped, then lowered)
    own = host_dirs / "home" / escaped
    own.mkdir()
    own.chmod(0o777)
    (own / "hello.txt").write_text("from the host\n")
    r = mhub.spawn(user)
    assert r.status_code in (201, 202), r.text
    container = docker.containers.get(naming.workspace_name(mhub.hub_name, user, ""))
    mounts = mounts_of(container)

    # the host directory of this user's escaped name, both ways
    assert mounts["/mnt/home"]["Source"] == str(own)
    assert run(container, "cat /mnt/home/hello.txt") == (0, "from the host")
    assert run(container, "echo from the workspace > /mnt/home/back.txt")[0] == 0
    assert (own / "back.txt").read_text() == "from the workspace\n"
    # the named volume of the template, made by the engine for this user
    assert mounts["/mnt/shared"]["Name"] == f"{mhub.hub_name}-shared-{escaped}"
    # (a new volume on a path the image lacks is root's, as with DockerSpawner)
    assert run(container, "echo kept > /mnt/shared/ok", user="root")[0] == 0
    # read-only: readable, never writable (not even by root)
    assert run(container, "cat /mnt/datasets/data.txt") == (0, "a dataset")
    code, out = run(container, "echo x > /mnt/datasets/new.txt", user="root")
    assert code != 0 and "Read-only file system" in out
    assert mounts["/mnt/datasets"]["RW"] is False
    # mounts: a labelled named volume and a tmpfs
    assert mounts["/mnt/models"]["Name"] == f"{mhub.hub_name}-models-{escaped}"
    assert (
        docker.volumes.get(f"{mhub.hub_name}-models-{escaped}").attrs["Labels"][TEST_LABEL] == mhub.hub_name
    )
    assert run(container, "stat -f -c %T /mnt/scratch") == (0, "tmpfs")
    # ML Hub's own volume is still there, writable, beside them
    assert mounts["/workspace"]["Name"] == naming.volume_name(mhub.hub_name, user, "")
    assert run(container, "touch /workspace/still-here")[0] == 0
    # post_start_cmd ran in the container, as its user; the extra settings reached the engine
    assert run(container, "cat /tmp/post-start-ran") == (0, "jovyan")
    assert container.labels["team"] == escaped
    assert run(container, "getent hosts parent-settings.test").__getitem__(1).startswith("10.11.12.13")
    assert mhub.get_through_proxy(user).status_code == 200
    mhub.stop_server(user)


def test_a_user_name_crafted_to_collide_reaches_only_its_own_directory(mhub, docker, host_dirs):
    # the victim's escaped name is "pmv-2d2eb"; the attacker "pmv.b" escapes to the victim's *raw* name
    victim, attacker = mhub.create_user("pmv-2eb"), mhub.create_user("pmv.b")
    victim_dir = host_dirs / "home" / "pmv-2d2eb"
    victim_dir.mkdir()
    (victim_dir / "secret.txt").write_text("the victim's\n")
    r = mhub.spawn(attacker)
    assert r.status_code in (201, 202), r.text
    container = docker.containers.get(naming.workspace_name(mhub.hub_name, attacker, ""))
    mounts = mounts_of(container)
    assert mounts["/mnt/home"]["Source"] == str(host_dirs / "home" / "pmv-2eb")
    assert mounts["/mnt/shared"]["Name"] == f"{mhub.hub_name}-shared-pmv-2eb"
    assert run(container, "ls -A /mnt/home") == (0, "")
    assert run(container, "cat /mnt/home/secret.txt")[0] != 0
    assert victim != attacker
    mhub.stop_server(attacker)


def test_a_mount_over_the_workspace_set_by_a_group_override_is_refused_before_anything_exists(mhub, docker):
    r = mhub.api("POST", mhub.server_path(BAD_TARGET), json={})
    assert r.status_code == 500, r.text
    message = r.json()["message"]
    assert "DockerSpawner.read_only_volumes" in message
    assert "/workspace is where ML Hub mounts the workspace's own volume" in message
    assert owned(docker, mhub, BAD_TARGET) == []


def test_a_mount_the_engine_cannot_make_leaves_nothing_behind(mhub, docker, host_dirs):
    r = mhub.api("POST", mhub.server_path(BROKEN), json={})
    assert r.status_code == 500, r.text
    assert "bind source path does not exist" in r.json()["message"]
    assert not (host_dirs / f"missing-{BROKEN}").exists()
    assert owned(docker, mhub, BROKEN) == []  # no container, no workspace volume, no network
    # the user can start again once the operator fixes it; nothing stale is in the way
    assert mhub.server_model(BROKEN) is None


def test_links_resolve_on_the_users_network(mhub, docker):
    # a container the operator put on the user's network (as the hub container is on every one)
    network = docker.networks.create(
        naming.network_name(mhub.hub_name, LINKED),
        labels=naming.resource_labels(mhub.hub_name, LINKED, component=naming.COMPONENT_NETWORK),
    )
    sidecar = docker.containers.run(
        base_image(docker),
        ["sleep", "infinity"],
        name=f"{mhub.hub_name}-sidecar",
        network=network.name,
        labels={TEST_LABEL: mhub.hub_name},
        detach=True,
    )
    try:
        sidecar.reload()
        address = sidecar.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        r = mhub.spawn(LINKED)
        assert r.status_code in (201, 202), r.text
        container = docker.containers.get(naming.workspace_name(mhub.hub_name, LINKED, ""))
        code, out = run(container, "getent hosts db")
        assert code == 0 and out.split()[0] == address, out
        mhub.stop_server(LINKED)
    finally:
        sidecar.remove(force=True)


def test_a_link_to_a_container_off_the_users_network_is_refused_leaving_nothing(mhub, docker):
    r = mhub.api("POST", mhub.server_path(BAD_LINK), json={})
    assert r.status_code == 500, r.text
    message = r.json()["message"]
    assert f"DockerSpawner.links: container '{mhub.hub_name}-nowhere' is not on" in message
    assert owned(docker, mhub, BAD_LINK) == []  # the network this start made is gone again


def test_remove_deletes_the_container_at_stop_and_keeps_the_volume(mhub, docker):
    assert mhub.spawn(REMOVED).status_code in (201, 202)
    name = naming.workspace_name(mhub.hub_name, REMOVED, "")
    assert run(docker.containers.get(name), "echo kept > /workspace/kept.txt")[0] == 0
    mhub.stop_server(REMOVED)
    with pytest.raises(NotFound):
        docker.containers.get(name)
    docker.volumes.get(naming.volume_name(mhub.hub_name, REMOVED, ""))
    # the next start makes a new container on the same volume
    assert mhub.spawn(REMOVED).status_code in (201, 202)
    assert run(docker.containers.get(name), "cat /workspace/kept.txt") == (0, "kept")
    mhub.stop_server(REMOVED)


def test_changed_settings_recreate_the_container(mhub, docker, host_dirs):
    user = mhub.create_user("pmre")
    assert mhub.spawn(user).status_code in (201, 202)
    name = naming.workspace_name(mhub.hub_name, user, "")
    first = docker.containers.get(name).id
    mhub.stop_server(user)
    assert mhub.spawn(user).status_code in (201, 202)
    assert docker.containers.get(name).id == first  # nothing changed: the same container
    mhub.stop_server(user)
    # the operator adds a read-only volume: the next start recreates the container with it
    config = mhub.workdir / "user_config.py"
    config.write_text(
        config.read_text() + f'c.DockerSpawner.read_only_volumes["{host_dirs}/datasets"] = "/mnt/more"\n'
    )
    mhub.restart()
    assert mhub.spawn(user).status_code in (201, 202)
    container = docker.containers.get(name)
    assert container.id != first
    assert run(container, "cat /mnt/more/data.txt") == (0, "a dataset")
    mhub.stop_server(user)
    with pytest.raises(NotFound):
        docker.containers.get(first)


def test_the_hub_refuses_to_start_naming_the_settings(docker, tmp_path_factory):
    hub = Hub(
        tmp_path_factory.mktemp("refused"),
        user_config=(
            'c.DockerSpawner.volumes = {"/srv/data": "/workspace"}\n'
            'c.DockerSpawner.network_name = "jupyterhub-network"\n'
        ),
    )
    try:
        with pytest.raises(RuntimeError, match="hub exited") as failed:
            hub.start(timeout=60)
    finally:
        hub.destroy(docker)
    log = str(failed.value)
    assert "ML Hub cannot start:" in log
    assert "DockerSpawner.volumes['/srv/data']: /workspace is where ML Hub mounts" in log
    assert "c.DockerSpawner.network_name is replaced in ML Hub" in log
    assert docker.containers.list(all=True, filters={"label": f"{LABEL_ORIGIN}={hub.hub_name}"}) == []
