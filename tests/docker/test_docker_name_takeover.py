"""Issue 11, item 1 on the real engine, through a real JupyterHub: no user gets another's workspace.

The attack: a victim with a long e-mail user name whose workspace name used to be shortened to a
prefix + ``-`` + 10 hex digits; an attacker signs up as the un-escaped form of that shortened name
(computed here with a copy of the old algorithm) and spawns. Defence in depth: a container, volume
or network of another owner sitting under the exact name the spawner will use is refused, untouched.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from docker.models.networks import Network

from mlhubspawner import naming

from old_naming import old_workspace_name, victim_and_attacker
from support import base_image, read_progress


def by_owner(docker, hub, user, server):
    labels = [f"{naming.LABEL_ORIGIN}={hub.hub_name}", f"{naming.LABEL_USER}={user}"]
    labels.append(f"{naming.LABEL_SERVER_NAME}={server}")
    return docker.containers.list(all=True, filters={"label": labels})


def spawn_messages(hub, user, server):
    """POST the spawn and follow its progress to the end: the response text and every message."""
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(hub.api, "POST", hub.server_path(user, server), json={})
        messages = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not request.done():
            r = hub.api("GET", f"users/{user}/servers/{server}/progress", stream=True, timeout=60)
            if r.status_code == 200:
                messages = read_progress(r)
                break
            time.sleep(0.05)
        response = request.result()
    return response, messages


def forget(hub, user, *servers):
    """Stop (and remove) the user's servers, then delete the user."""
    for server in servers:
        model = hub.server_model(user, server)
        if model is not None:
            hub.stop_server(user, server, remove=bool(server))
    hub.api("DELETE", f"users/{user}")


@pytest.fixture
def foreign(docker):
    """Resources of someone else, created by the test (labelled, removed afterwards)."""
    made = []
    yield made
    for resource in reversed(made):
        try:
            resource.remove() if isinstance(resource, Network) else resource.remove(force=True)
        except Exception as e:  # noqa: BLE001 (clean-up must go on)
            print(f"could not remove {resource}: {e}")
    for container in docker.containers.list(all=True, filters={"label": "mlhub.test=names"}):
        container.remove(force=True)  # what a failed test's spawner created (labelled by the test)


def test_an_attacker_named_after_a_victims_shortened_name_gets_resources_of_their_own(hub, docker):
    victim, attacker = victim_and_attacker(hub.hub_name, "train")
    hub.create_user(victim)
    hub.create_user(attacker)
    try:
        assert hub.spawn(victim, "train").status_code in (201, 202)
        (container,) = by_owner(docker, hub, victim, "train")
        assert container.exec_run(["sh", "-c", "echo precious > /workspace/victim.txt"]).exit_code == 0
        volume = {m["Destination"]: m for m in container.attrs["Mounts"]}["/workspace"]["Name"]

        r = hub.spawn(attacker)  # the attacker's default server had the victim's name before
        assert r.status_code in (201, 202), r.text

        container.reload()  # still the victim's container (same id), still running
        assert container.status == "running", container.status
        assert container.labels[naming.LABEL_USER] == victim
        out = container.exec_run(["cat", "/workspace/victim.txt"]).output.decode()
        assert out.strip() == "precious"
        (theirs,) = by_owner(docker, hub, attacker, "")
        assert theirs.id != container.id and theirs.name != container.name
        mounts = {m["Destination"]: m for m in theirs.attrs["Mounts"]}
        assert mounts["/workspace"]["Name"] != volume
        assert docker.volumes.get(volume).attrs["Labels"][naming.LABEL_USER] == victim
        assert set(theirs.attrs["NetworkSettings"]["Networks"]).isdisjoint(
            container.attrs["NetworkSettings"]["Networks"]
        )
    finally:
        forget(hub, attacker, "")
        forget(hub, victim, "train")


@pytest.mark.parametrize("kind", ["container", "volume", "network"])
def test_a_foreign_resource_under_the_spawners_name_is_refused_and_untouched(hub, docker, foreign, kind):
    user, server, other = f"squat-{kind}", "w", "someone-else"
    hub.create_user(user)
    labels = naming.resource_labels(hub.hub_name, other, server, component=naming.COMPONENT_WORKSPACE)
    labels["mlhub.test"] = "names"
    name = (
        naming.network_name(hub.hub_name, user)
        if kind == "network"
        else naming.workspace_name(hub.hub_name, user, server)
    )
    if kind == "container":
        resource = docker.containers.run(
            base_image(docker),
            ["sleep", "infinity"],
            name=name,
            labels=labels,
            network_mode="none",
            detach=True,
        )
    elif kind == "volume":
        resource = docker.volumes.create(name, labels=labels)
    else:
        resource = docker.networks.create(name, labels=labels)
    foreign.append(resource)
    before = resource.attrs
    try:
        response, messages = spawn_messages(hub, user, server)
        said = response.text + "\n".join(messages)
        assert f"Refusing to use {kind} {name!r}" in said, (response.status_code, said)
        assert "does not belong to this workspace" in said
        resource.reload()
        assert resource.id == before.get("Id", before.get("Name"))
        if kind == "container":
            assert resource.status == "running"
        if kind == "network":
            assert not resource.attrs.get("Containers")  # nothing attached to it
        labels = resource.labels if kind == "container" else resource.attrs["Labels"]
        assert labels[naming.LABEL_USER] == other
        # nothing of the refused spawn is left: no container, no volume
        assert by_owner(docker, hub, user, server) == []
        if kind != "volume":
            mine = docker.volumes.list(filters={"label": f"{naming.LABEL_USER}={user}"})
            assert [v.name for v in mine] == []
    finally:
        forget(hub, user, server)


def test_a_users_network_from_an_earlier_scheme_is_kept(hub, docker, foreign):
    user = "legacy.net"  # its readable network name is ambiguous now (hub "<hub>-legacy"): hashed
    old_name = f"{hub.hub_name}-{naming.escape(user)}"
    assert naming.network_name(hub.hub_name, user) != old_name
    labels = naming.resource_labels(hub.hub_name, user, "", component=naming.COMPONENT_NETWORK)
    foreign.append(docker.networks.create(old_name, labels=labels))  # made before the upgrade
    hub.create_user(user)
    try:
        assert hub.spawn(user, "w").status_code in (201, 202)
        (container,) = by_owner(docker, hub, user, "w")
        assert set(container.attrs["NetworkSettings"]["Networks"]) == {old_name}
        assert docker.networks.list(names=[naming.network_name(hub.hub_name, user)]) == []
    finally:
        forget(hub, user, "w")


def test_names_persisted_in_state_are_kept():
    """Workspaces created under the old scheme keep their container, volume and network names."""
    from types import SimpleNamespace

    from jupyterhub.objects import Hub as HubModel

    from mlhubspawner.docker import MLHubDockerSpawner

    user = SimpleNamespace(name="first.lastname@physics.example-university.edu", id=1, url="/user/x/")
    user.escaped_name, user.spawners = "x", {}
    spawner = MLHubDockerSpawner(
        user=user,
        orm_spawner=SimpleNamespace(
            name="train", display_name="train", server=None, user_options={}, state=None
        ),
        hub=HubModel(ip="hub", port=8081, base_url="/hub/"),
        db=None,
        hub_name="mlhub",
    )
    old = old_workspace_name("mlhub", user.name, "train")
    network = f"mlhub-{naming.escape(user.name)}"
    assert (spawner.object_name, spawner.network_name) != (old, network)
    spawner.load_state(
        {"object_id": "1", "mlhub": {"names": {"container": old, "network": network, "volume": old}}}
    )
    assert (spawner.object_name, spawner.volume_name, spawner.network_name) == (old, old, network)


def bare_spawner(username, server, hub_name):
    """The Docker spawner outside a hub (enough for its Docker calls)."""
    from types import SimpleNamespace

    from jupyterhub.objects import Hub as HubModel

    from mlhubspawner.docker import MLHubDockerSpawner

    user = SimpleNamespace(name=username, id=1, url=f"/user/{username}/", escaped_name=username, spawners={})
    return MLHubDockerSpawner(
        user=user,
        orm_spawner=SimpleNamespace(
            name=server, display_name=server, server=None, user_options={}, state=None
        ),
        hub=HubModel(ip="hub", port=8081, base_url="/hub/"),
        db=None,
        hub_name=hub_name,
    )


async def test_a_container_that_appears_before_create_is_not_replaced_on_409(docker, foreign):
    """The 409 "name already in use" path: once force-removed whatever had the name."""
    hub_name = "tnames"
    spawner = bare_spawner("racer", "w", hub_name)
    labels = naming.resource_labels(hub_name, "someone-else", "w", component=naming.COMPONENT_WORKSPACE)
    labels["mlhub.test"] = "names"
    theirs = docker.containers.run(
        base_image(docker),
        ["sleep", "infinity"],
        name=spawner.object_name,
        labels=labels,
        network_mode="none",
        detach=True,
    )
    foreign.append(theirs)
    mine = dict(
        name=spawner.object_name, image=base_image(docker), command=["true"], labels={"mlhub.test": "names"}
    )
    with pytest.raises(Exception, match=f"Refusing to use container '{spawner.object_name}'"):
        await spawner._create(mine, {"network_mode": "none"})
    theirs.reload()
    assert theirs.status == "running" and theirs.labels[naming.LABEL_USER] == "someone-else"
    # stop and delete of the server never reach it either
    assert await spawner.poll() == 0
    await spawner.stop(now=True)
    await spawner.delete_forever()
    theirs.reload()
    assert theirs.status == "running"
