"""Workspaces spawned through a real JupyterHub's REST API onto the real Docker engine."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlhubspawner import naming

from support import read_progress

GB = 1024**3


def container_of(docker, hub, user, server=""):
    return docker.containers.get(naming.workspace_name(hub.hub_name, user, server))


def exec_python(container, code):
    """Run python3 -c ``code`` in the workspace; returns (exit code, output)."""
    result = container.exec_run(["python3", "-c", code])
    return result.exit_code, result.output.decode(errors="replace")


def connect_code(ip, port, timeout=3):
    return f"import socket; socket.create_connection(({ip!r}, {port}), timeout={timeout}); print('connected')"


def ip_on_user_network(container, hub, user):
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][naming.network_name(hub.hub_name, user)][
        "IPAddress"
    ]


def wait_gone(docker, name, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the low-level listing: containers.list() inspects each one and races with the removal
        if not docker.api.containers(all=True, filters={"name": f"^{name}$"}):
            return True
        time.sleep(0.2)
    return False


def progress_messages(hub, user, server):
    """Follow the spawn's progress event stream to its end; returns the messages."""
    deadline = time.monotonic() + 10
    while True:  # until the spawn request has reached the hub
        r = hub.api("GET", f"users/{user}/servers/{server}/progress", stream=True, timeout=120)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200
    return read_progress(r)


def test_named_workspace_with_options(hub, docker):
    user = hub.create_user("ada")
    before = time.time()
    options = {
        "cpu_limit": "0.5",
        "mem_limit": "1G",
        "shm_size": "128M",
        "env": {"FOO": "bar"},
        "days_to_live": 2,
    }
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(hub.api, "POST", f"users/{user}/servers/train", json=options)
        messages = progress_messages(hub, user, "train")
        assert request.result().status_code in (201, 202), request.result().text
    for expected in (
        "Checking image",
        "Preparing network",
        "Starting the workspace",
        "Waiting for the workspace",
    ):
        assert any(m.startswith(expected) for m in messages), messages
    assert any("and volume" in m for m in messages), messages
    assert hub.wait_ready(user, "train")
    container = container_of(docker, hub, user, "train")
    attrs = container.attrs
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == GB
    assert host["ShmSize"] == 128 * 1024**2
    labels = attrs["Config"]["Labels"]
    assert labels["mlhub.origin"] == hub.hub_name
    assert labels["mlhub.user"] == "ada"
    assert labels["mlhub.server_name"] == "train"
    expiry = int(labels["mlhub.expiration_timestamp_seconds"])
    assert before + 2 * 86400 - 5 <= expiry <= time.time() + 2 * 86400
    env = dict(line.split("=", 1) for line in attrs["Config"]["Env"])
    assert env["FOO"] == "bar"
    assert env["MAX_NUM_THREADS"] == "1"
    assert env["SSH_JUMPHOST_TARGET"] == container.name
    # the persistent volume, labelled, at /workspace
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    volume = docker.volumes.get(mounts["/workspace"]["Name"])
    assert volume.attrs["Labels"]["mlhub.origin"] == hub.hub_name
    assert volume.attrs["Labels"]["mlhub.user"] == "ada"
    # the user network, labelled
    network = docker.networks.get(naming.network_name(hub.hub_name, user))
    assert network.attrs["Labels"]["mlhub.origin"] == hub.hub_name
    assert set(attrs["NetworkSettings"]["Networks"]) == {network.name}
    # the workspace answers through the proxy, and reaches the hub API through its gateway
    assert hub.get_through_proxy(user, "train").status_code == 200
    lab = hub.get_through_proxy(user, "train", path="lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    assert "python3" in hub.get_through_proxy(user, "train", path="api/kernelspecs").json()["kernelspecs"]
    code, out = exec_python(
        container,
        "import os, urllib.request as u; print(u.urlopen(os.environ['JUPYTERHUB_API_URL'], timeout=5).status)",
    )
    assert (code, out.strip()) == (0, "200")
    # the options of the start are kept in the spawner state, with the remaining lifetime
    model = hub.api("GET", f"users/{user}", params={"include_stopped_servers": 1}).json()
    state = model["servers"]["train"]["state"]["mlhub"]
    assert state["options"]["cpu_limit"] == 0.5
    assert state["options"]["env"] == {"FOO": "bar"}
    assert state["expiration"] == pytest.approx(expiry, abs=1)
    assert state["names"] == {"container": container.name, "network": network.name, "volume": volume.name}
    hub.stop_server(user, "train", remove=True)
    assert wait_gone(docker, container.name), "a deleted server's container must be removed"
    assert docker.volumes.get(volume.name), "its volume stays (the cleanup policy decides)"


def test_default_server_data_survives_stop_start_and_update(hub, docker):
    user = hub.create_user("bea")
    first = {"cpu_limit": 1, "shm_size": "64M", "env": {"ONLY_FIRST": "1"}}
    assert hub.spawn(user, options=first).status_code in (201, 202)
    container = container_of(docker, hub, user)
    first_id = container.id
    assert container.exec_run(["sh", "-c", "echo kept > /workspace/data.txt"]).exit_code == 0

    hub.stop_server(user)
    # a refused start changes nothing: the last good options stay the defaults
    bad = hub.api("POST", hub.server_path(user), json={"cpu_limit": "-1"})
    assert bad.status_code == 400
    assert hub.spawn(user).status_code in (201, 202)  # no body: the previous options
    container = container_of(docker, hub, user)
    assert container.id == first_id  # nothing changed, so the same container is started again
    assert container.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert container.exec_run(["cat", "/workspace/data.txt"]).output == b"kept\n"

    hub.stop_server(user)
    # the user network was removed meanwhile: the start recreates it and a fresh container
    docker.networks.get(naming.network_name(hub.hub_name, user)).remove()
    assert hub.spawn(user).status_code in (201, 202)
    recreated_id = container_of(docker, hub, user).id
    assert container_of(docker, hub, user).exec_run(["cat", "/workspace/data.txt"]).output == b"kept\n"

    hub.stop_server(user)
    assert hub.spawn(user, options={"cpu_limit": 1, "update": True}).status_code in (201, 202)
    updated = container_of(docker, hub, user)
    assert updated.id not in (first_id, recreated_id)  # recreated from the image
    # nothing of the earlier options leaks into this start
    assert updated.attrs["HostConfig"]["ShmSize"] == 256 * 1024**2
    assert not any(e.startswith("ONLY_FIRST=") for e in updated.attrs["Config"]["Env"])
    assert updated.exec_run(["cat", "/workspace/data.txt"]).output == b"kept\n"
    assert hub.get_through_proxy(user).status_code == 200
    hub.stop_server(user)


def test_users_are_isolated_but_own_workspaces_reach_each_other(hub, docker):
    alice, bob = hub.create_user("cleo"), hub.create_user("dan")
    for user, server in [(alice, "one"), (alice, "two"), (bob, "one")]:
        assert hub.spawn(user, server, {"mem_limit": "512M"}).status_code in (201, 202)
    a1, a2, b1 = (container_of(docker, hub, u, s) for u, s in [(alice, "one"), (alice, "two"), (bob, "one")])
    assert exec_python(a1, connect_code(ip_on_user_network(a2, hub, alice), 8080)) == (0, "connected\n")
    code, out = exec_python(a1, connect_code(ip_on_user_network(b1, hub, bob), 8080))
    assert code != 0 and "connected" not in out
    code, out = exec_python(b1, connect_code(ip_on_user_network(a1, hub, alice), 8080))
    assert code != 0 and "connected" not in out
    # a third workspace is over cleo's quota of 2: refused, nothing created
    r = hub.api("POST", f"users/{alice}/servers/three", json={})
    assert r.status_code == 400
    assert "at most 2 running workspaces" in r.json()["message"]
    assert not docker.containers.list(
        all=True, filters={"name": naming.workspace_name(hub.hub_name, alice, "three")}
    )
    for user, server in [(alice, "one"), (alice, "two"), (bob, "one")]:
        hub.stop_server(user, server, remove=True)


def test_running_workspace_survives_a_hub_restart(hub, docker):
    user = hub.create_user("eve")
    assert hub.spawn(user, "keep").status_code in (201, 202)
    container_id = container_of(docker, hub, user, "keep").id
    hub.restart()
    assert hub.wait_ready(user, "keep", timeout=30)
    assert container_of(docker, hub, user, "keep").id == container_id
    deadline = time.monotonic() + 30
    while hub.get_through_proxy(user, "keep").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert hub.get_through_proxy(user, "keep").status_code == 200
    hub.stop_server(user, "keep", remove=True)


BAD_OPTIONS = [
    ({"cpu_limit": -1}, "cpu_limit"),
    ({"cpu_limit": 0}, "cpu_limit"),
    ({"cpu_limit": "NaN"}, "cpu_limit"),
    ({"cpu_limit": 1e12}, "cpu_limit"),
    ({"mem_limit": "a lot"}, "mem_limit"),
    ({"image": "someone/else:latest"}, "image"),
    ({"image": "mlhub-test-missing:1"}, "image"),  # offered, but missing and not pullable
    ({"env": "NO_EQUALS_SIGN"}, "env"),
    ({"env": {"JUPYTERHUB_API_TOKEN": "stolen"}}, "env"),
    ({"days_to_live": 0}, "days_to_live"),
    ({"days_to_live": 365}, "days_to_live"),
    ({"gpus": 5}, "gpus"),  # more than the engine has (the stand-in: 4)
    ({"mem_limit": "2G"}, None),  # fine alone; with a running 2G workspace it breaks the 3G quota
]


@pytest.mark.parametrize("options,field", BAD_OPTIONS)
def test_bad_input_is_a_400_and_creates_nothing(hub, docker, options, field):
    user = hub.create_user(f"bad{BAD_OPTIONS.index((options, field))}")
    quota_case = field is None
    if quota_case:  # one workspace already uses 2G of the user's 3G
        assert hub.spawn(user, "big", {"mem_limit": "2G"}).status_code in (201, 202)
        field = "mem_limit"
    r = hub.api("POST", f"users/{user}/servers/x", json=options)
    assert r.status_code == 400, r.text
    assert field in r.json()["message"]
    label = {"label": [f"mlhub.origin={hub.hub_name}", f"mlhub.user={user}", "mlhub.server_name=x"]}
    assert docker.containers.list(all=True, filters=label) == []
    assert docker.volumes.list(filters=label) == []
    if quota_case:
        hub.stop_server(user, "big", remove=True)
    else:
        assert docker.networks.list(names=[naming.network_name(hub.hub_name, user)]) == []
