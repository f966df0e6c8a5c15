"""DockerSpawner's volumes, read_only_volumes, mounts and links on ML Hub's Docker spawner (pure, no engine).

Templates are rendered by DockerSpawner's own code (its escaping), merged beside the workspace's own
volume, and refused when they would land on the workspace volume or ML Hub's own paths.
"""

import asyncio
from types import SimpleNamespace

import pytest
from docker.types import Mount
from tornado import web
from traitlets.config import Config

from mlhubspawner.docker import mounts, objects
from mlhubspawner.docker.spawner import MLHubDockerSpawner
from mlhubspawner.options import WorkspaceOptions

WORKSPACE = ["/workspace"]


def spawner(user="alice", server="", **settings):
    config = Config()
    for key, value in settings.items():
        setattr(config.DockerSpawner, key, value)
    made = MLHubDockerSpawner(config=config, hub_name="t1")
    made.user = SimpleNamespace(name=user)
    made.orm_spawner = SimpleNamespace(name=server, display_name=server, server=None) if server else None
    return made


def rendered(made):
    """``(binds, mounts)`` of one start, checked as a start checks them."""
    specs = made.parent_mount_specs()
    mounts.check_mounts(specs, WORKSPACE, own_volume="t1-ws-x")
    binds = {}
    for _, spec_binds, _ in specs:
        binds.update(spec_binds)
    return binds, [m for _, _, made_mounts in specs for m in made_mounts]


# ---- templates, escaping, modes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "escaped"),
    [("alice", "alice"), ("a.b@c", "a-2eb-40c"), ("Ünïcode", "-c3-9cn-c3-afcode"), ("x-y", "x-2dy")],
)
def test_user_names_are_escaped_as_dockerspawner_escapes_them(user, escaped):
    made = spawner(
        user,
        volumes={"/srv/home/{username}": "/home/shared/{username}", "cache-{username}": "/cache"},
        read_only_volumes={"/srv/datasets": "/datasets"},
    )
    binds, _ = rendered(made)
    assert binds == {
        f"/srv/home/{escaped}": {"bind": f"/home/shared/{escaped}", "mode": "rw"},
        f"cache-{escaped}": {"bind": "/cache", "mode": "rw"},
        "/srv/datasets": {"bind": "/datasets", "mode": "ro"},
    }
    # the same escaping as DockerSpawner's own escaped_name
    assert made.escaped_name == escaped


def test_server_name_prefix_and_image_templates():
    made = spawner(
        "bob",
        "gpu-1",
        prefix="lab",
        volumes={"{prefix}-{username}-{servername}": {"bind": "/data/{imagename}", "mode": "Z"}},
    )
    made.workspace_options = WorkspaceOptions(image="registry:5000/team/img:2")
    binds, _ = rendered(made)
    # {imagename}: the image of this start (users choose it), as DockerSpawner renders its own image
    assert binds == {"lab-bob-gpu-2d1": {"bind": "/data/registry-5000-team-img-2", "mode": "Z"}}


def test_read_only_volumes_and_dict_modes():
    made = spawner(
        volumes={"/srv/a": {"bind": "/a", "mode": "ro"}, "/srv/b": {"bind": "/b", "propagation": "rslave"}},
        read_only_volumes={"/srv/c": "/c", "/srv/d": {"bind": "/d", "mode": "ro,z"}},
    )
    binds, _ = rendered(made)
    assert binds["/srv/a"] == {"bind": "/a", "mode": "ro"}
    assert binds["/srv/b"] == {"bind": "/b", "mode": "rw", "propagation": "rslave"}
    assert binds["/srv/c"] == {"bind": "/c", "mode": "ro"}
    assert binds["/srv/d"] == {"bind": "/d", "mode": "ro,z"}


def test_mounts_as_dicts_and_as_mount_objects():
    made = spawner(
        "carol",
        mounts=[
            {"type": "bind", "source": "/srv/{username}", "target": "/mnt/{username}", "read_only": True},
            Mount(target="/scratch", source="", type="tmpfs", tmpfs_size="64m"),
            Mount(target="/models/{username}", source="models-{username}", type="volume"),
        ],
    )
    _, made_mounts = rendered(made)
    assert made_mounts[0] == {
        "Target": "/mnt/carol",
        "Source": "/srv/carol",
        "Type": "bind",
        "ReadOnly": True,
    }
    assert made_mounts[1]["Type"] == "tmpfs" and made_mounts[1]["TmpfsOptions"] == {"SizeBytes": 64 * 1024**2}
    assert made_mounts[2]["Target"] == "/models/carol" and made_mounts[2]["Source"] == "models-carol"


def test_a_custom_format_volume_name_is_used():
    made = spawner(volumes={"data-{username}": "/data"})
    made.format_volume_name = lambda template, s: template.replace("{username}", "CUSTOM")
    binds, _ = rendered(made)
    assert binds == {"data-CUSTOM": {"bind": "/data", "mode": "rw"}}


# ---- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"volumes": {"/srv/x": "/workspace"}}, r"volumes\['/srv/x'\]: /workspace is where ML Hub mounts"),
        ({"volumes": {"/srv/x": "/workspace/"}}, "is where ML Hub mounts the workspace's own volume"),
        ({"read_only_volumes": {"/srv/x": "//workspace"}}, r"read_only_volumes\['/srv/x'\]: //workspace"),
        (
            {"mounts": [{"type": "bind", "source": "/srv", "target": "/workspace"}]},
            r"mounts\[0\]: /workspace",
        ),
        ({"volumes": {"/srv/x": "data"}}, "the container path 'data' is relative"),
        ({"mounts": [{"type": "volume", "source": "v", "target": "rel/x"}]}, "is relative"),
        ({"volumes": {"/srv/x": "/run"}}, "would cover /run/mlhub-sshd, .* hub API token"),
        ({"volumes": {"/srv/x": "/run/mlhub-sshd"}}, "would cover /run/mlhub-sshd"),
        ({"read_only_volumes": {"/srv/x": "/etc/ssh"}}, "would cover /etc/ssh/mlhub"),
        ({"volumes": {"/srv/x": "/workspace/.mlhub/ssh"}}, "would cover /workspace/.mlhub, .*host keys"),
        ({"volumes": {"/srv/x": "/opt/mlhub/venv"}}, "would cover /opt/mlhub"),
        ({"volumes": {"/srv/x": "/data/../workspace"}}, r"contains \. or \.\."),
        ({"volumes": {"/srv/../etc": "/data"}}, r"the source '/srv/../etc' contains \.\."),
        ({"volumes": {"/srv/a": "/data", "/srv/b": "/data/"}}, r"/data is already a mount target"),
        ({"volumes": {"t1-ws-x": "/other"}}, "is the workspace's own volume"),
        ({"volumes": {"/srv/x": {"bind": "/d", "mode": "rw;rm -rf"}}}, "is not a bind mode"),
        ({"volumes": {"/srv/{home}": "/d"}}, r"unknown placeholder \{home\}; known: .*username"),
        ({"volumes": {"/srv/x": {"mode": "ro"}}}, r"volumes: unknown placeholder \{bind\}|volumes: "),
        ({"mounts": [{"type": "npipe", "source": "x", "target": "/x"}]}, "type 'npipe' is not one of"),
        ({"mounts": [{"type": "nfs", "source": "x", "target": "/x"}]}, r"mounts\[0\]: type 'nfs'"),
        ({"mounts": [{"type": "bind", "source": "/x"}]}, r"mounts\[0\]: 'target' is missing"),
        ({"mounts": [{"type": "bind", "source": "/x", "target": "/y", "bogus": 1}]}, r"mounts\[0\]: .*bogus"),
        ({"mounts": ["/x:/y"]}, r"mounts\[0\]: expected a dict"),
    ],
)
def test_refused_mounts_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        rendered(spawner(**settings))


def test_a_sub_directory_of_the_workspace_and_its_parent_are_allowed():
    binds, _ = rendered(spawner(volumes={"/srv/shared": "/workspace/shared", "/srv/home": "/home"}))
    assert binds["/srv/shared"]["bind"] == "/workspace/shared"


# ---- attacks: a crafted user name cannot reach another user's directory ------------------------------


@pytest.mark.parametrize("user", ["../alice", "x/../../alice", "alice/..", "..", "a/b"])
def test_an_escaped_user_name_stays_inside_its_directory(user):
    binds, _ = rendered(spawner(user, volumes={"/srv/home/{username}": "/home/own"}))
    (source,) = binds
    assert source.startswith("/srv/home/") and "/" not in source.removeprefix("/srv/home/")
    assert ".." not in source.split("/")


@pytest.mark.parametrize("user", ["../alice", "bob/../alice", "alice/secret", "..", "."])
def test_a_raw_user_name_that_would_leave_its_directory_is_refused(user):
    for settings in (
        {"volumes": {"/srv/home/{raw_username}": "/home/own"}},
        {"read_only_volumes": {"/srv/ro": "/mnt/{raw_username}"}},
        {"mounts": [{"type": "bind", "source": "/srv/{raw_username}", "target": "/own"}]},
    ):
        with pytest.raises(ValueError, match=r"\{raw_username\} is .* cannot be used in a path"):
            rendered(spawner(user, **settings))


def test_a_plain_raw_user_name_is_rendered_as_it_is():
    binds, _ = rendered(spawner("a.b@c", volumes={"/srv/home/{raw_username}": "/home/own"}))
    assert binds == {"/srv/home/a.b@c": {"bind": "/home/own", "mode": "rw"}}


def test_extra_host_config_binds_are_refused_at_start():
    made = spawner(extra_host_config=lambda s: {"binds": {"/etc": {"bind": "/workspace", "mode": "rw"}}})
    made.workspace_options = WorkspaceOptions(image="img:1")
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(made._parent_spec("/workspace", "t1-ws-x"))
    assert raised.value.status_code == 500
    assert "extra_host_config['binds'] is refused: use volumes / read_only_volumes" in (
        raised.value.jupyterhub_message
    )


def test_a_refused_target_at_start_is_a_500_naming_the_setting():
    made = spawner(volumes={"/srv/x": "/home/jovyan/work"})
    made.workspace_options = WorkspaceOptions(image="jupyter/base-notebook")
    # docker-stacks images have their volume at /home/jovyan/work
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(made._parent_spec("/home/jovyan/work", "t1-ws-x"))
    assert "DockerSpawner.volumes['/srv/x']: /home/jovyan/work is where ML Hub mounts" in (
        raised.value.jupyterhub_message
    )
    assert raised.value.jupyterhub_message.startswith("The hub's configuration refuses this workspace")


# ---- builders: merged beside ML Hub's own volume, part of the config hash ----------------------------


def test_host_config_merges_binds_and_mounts_beside_the_workspace_volume():
    mount = Mount(target="/m", source="/srv/m", type="bind", read_only=True)
    host = objects.make_host_config(
        network="n",
        volume="t1-ws-alice",
        binds={"/srv/ds": {"bind": "/datasets", "mode": "ro"}},
        mounts=[mount],
    )
    assert host["binds"] == {
        "t1-ws-alice": {"bind": "/workspace", "mode": "rw"},
        "/srv/ds": {"bind": "/datasets", "mode": "ro"},
    }
    assert host["mounts"] == [{"Target": "/m", "Source": "/srv/m", "Type": "bind", "ReadOnly": True}]
    # without the workspace's volume (is_mount_volume false) the operator's binds still apply
    assert objects.make_host_config(network="n", binds={"/srv/ds": {"bind": "/d", "mode": "ro"}})[
        "binds"
    ] == {"/srv/ds": {"bind": "/d", "mode": "ro"}}
    with pytest.raises(ValueError, match="the workspace's own volume"):
        objects.make_host_config(network="n", volume="v", binds={"v": {"bind": "/x", "mode": "rw"}})


def test_links_go_to_the_user_networks_endpoint():
    kwargs = objects.make_container_kwargs(
        name="c", image="i", env={}, labels={}, port=8080, links={"db-1": "db", "cache": "cache"}, network="n"
    )
    # HostConfig.Links resolves on Docker's default bridge only; on a user network, the endpoint's do
    assert kwargs["networking_config"] == {"EndpointsConfig": {"n": {"Links": ["cache:cache", "db-1:db"]}}}
    assert "networking_config" not in objects.make_container_kwargs(
        name="c", image="i", env={}, labels={}, port=8080, links={}, network="n"
    )


def test_config_hash_changes_with_the_operator_mounts_only():
    def digest(links=None, **extra):
        kwargs = objects.make_container_kwargs(
            name="c", image="i", env={}, labels={}, port=8080, links=links, network="n"
        )
        return objects.config_hash(kwargs, objects.make_host_config(network="n", volume="v", **extra))

    plain = digest()
    # nothing configured: the same host config (and hash) as before these settings were applied
    assert digest(binds={}, mounts=[], links={}) == plain
    assert objects.make_host_config(network="n", volume="v", binds={}, mounts=[]) == {
        "network_mode": "n",
        "restart_policy": {"Name": "no"},
        "binds": {"v": {"bind": "/workspace", "mode": "rw"}},
    }
    changed = {
        digest(binds={"/srv/a": {"bind": "/a", "mode": "rw"}}),
        digest(binds={"/srv/a": {"bind": "/a", "mode": "ro"}}),
        digest(mounts=[Mount(target="/m", source="m")]),
        digest(links={"db": "db"}),
    }
    assert len(changed) == 4 and plain not in changed


def test_extra_create_environment_is_merged_not_replacing_the_workspace_env():
    kwargs = objects.make_container_kwargs(
        name="c",
        image="i",
        env={"JUPYTERHUB_API_TOKEN": "t", "A": "1"},
        labels={"mlhub.origin": "t1"},
        port=8080,
        extra={"environment": {"B": "2", "A": "3"}, "labels": {"team": "x"}, "user": "root"},
    )
    assert kwargs["environment"] == ["A=3", "B=2", "JUPYTERHUB_API_TOKEN=t"]
    assert kwargs["labels"] == {"mlhub.origin": "t1", "team": "x"}
    assert kwargs["user"] == "root"
    listed = objects.make_container_kwargs(
        name="c", image="i", env={"A": "1"}, labels={}, port=8080, extra={"environment": ["B=2", "C"]}
    )
    assert listed["environment"] == ["A=1", "B=2", "C="]
