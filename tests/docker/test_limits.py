"""Shared-host limits of Docker workspaces, tried from inside a workspace the real hub spawned.

One tenant's workspace must not exhaust the host's process table, forge packets on its network, or
gain root through a setuid binary; a user cannot pile up named servers without end.
"""

import secrets

from mlhubspawner import naming

PIDS_LIMIT = 4096  # MLHubDockerSpawner.pids_limit's default

# start threads (each one a task of the workspace's pids cgroup) until the engine refuses one;
# bounded in count (limit + 1000) and time (60 s)
THREAD_BOMB = f"""
import threading, time
threading.stack_size(64 * 1024)
stop = threading.Event()
started, deadline = 0, time.monotonic() + 60
try:
    while started < {PIDS_LIMIT + 1000} and time.monotonic() < deadline:
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
except RuntimeError:
    pass
stop.set()
print(started)
"""

RAW_SOCKET = """
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
except PermissionError:
    print("refused")
else:
    print("raw socket open")
"""


def spawn_workspace(hub, docker, prefix):
    user = hub.create_user(f"{prefix}{secrets.token_hex(2)}")
    r = hub.spawn(user, options={"is_mount_volume": False})
    assert r.status_code in (201, 202), r.text
    return user, docker.containers.get(naming.workspace_name(hub.hub_name, user, ""))


def run(container, *command, user=""):
    result = container.exec_run(list(command), user=user)
    return result.exit_code, result.output.decode(errors="replace").strip()


def test_a_thread_bomb_stops_at_the_pids_limit(hub, docker):
    user, workspace = spawn_workspace(hub, docker, "bomb")
    code, out = run(workspace, "python3", "-c", THREAD_BOMB)
    assert code == 0, out
    assert int(out.splitlines()[-1]) < PIDS_LIMIT, f"{out} threads started: no limit"
    # the workspace itself survives it
    assert hub.get_through_proxy(user).status_code == 200
    hub.stop_server(user)


def test_no_raw_sockets_and_no_setuid_root(hub, docker):
    user, workspace = spawn_workspace(hub, docker, "raw")
    # even root in the workspace (images such as ml-workspace run as root) gets no raw socket
    assert run(workspace, "python3", "-c", RAW_SOCKET, user="root") == (0, "refused")
    # a setuid-root binary in the image (put there as root: image authors do) gives the user nothing
    assert (
        run(workspace, "sh", "-c", "cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id", user="root")[0]
        == 0
    )
    code, out = run(workspace, "/tmp/suid-id", "-u", user="1000")
    assert (code, out) == (0, "1000"), out
    hub.stop_server(user)


def test_the_sixth_named_server_is_refused(hub, docker):
    user = hub.create_user(f"many{secrets.token_hex(2)}")
    for index in range(5):
        r = hub.spawn(user, f"s{index}", {"is_mount_volume": False})
        assert r.status_code in (201, 202), r.text
        hub.stop_server(user, f"s{index}")  # stopped named servers still count
    r = hub.api("POST", f"users/{user}/servers/s5", json={"is_mount_volume": False})
    assert r.status_code == 400, r.text
    assert "already has the maximum of 5 named servers" in r.json()["message"]
    assert not docker.containers.list(
        all=True, filters={"name": naming.workspace_name(hub.hub_name, user, "s5")}
    )
    # deleting one makes room again
    hub.api("DELETE", f"users/{user}/servers/s0", json={"remove": True})
    r = hub.spawn(user, "s5", {"is_mount_volume": False})
    assert r.status_code in (201, 202), r.text
    hub.stop_server(user, "s5", remove=True)
