"""The public port stays up whatever HUB_NAME: the hub container on its user networks, tried for real.

Docker forwards a published port to the container's address on its *gateway network*, which it picks
among the container's networks by name (among other things) and re-picks at every ``network connect``.
A hub named e.g. ``analytics`` sorts before ``bridge``: once the hub container joined the first user
network ``analytics-...``, the port went to an address where the front does not listen, and every
connection to it was reset. The hub image keeps a front network named exactly ``HUB_NAME``, which
sorts before every user network (``HUB_NAME-...``).

The same hub container also shows the rest of its isolation: no IP forwarding between the networks
it joins, and a data directory (database, tokens, keys) that the front's other accounts cannot read.
"""

import os
import secrets
import socket

import pytest
import requests

from mlhubspawner import __version__, naming

from support import HubContainer, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def ssh_banner(port):
    """The first line the public port sends to a client that says nothing (sslh → sshd)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        return s.recv(64).decode(errors="replace")


def login_page(hub):
    try:
        return requests.get(f"{hub.url}/hub/login", timeout=5, verify=False).status_code
    except requests.ConnectionError as e:
        return f"connection failed: {e}"


@pytest.fixture(scope="module")
def early_hub(docker, tmp_path_factory):
    """A hub whose name sorts before ``bridge`` (like ``analytics``), unique per run."""
    env = {"CLEANUP_INTERVAL_SECONDS": "-1", "CLEANUP_MIN_AGE_SECONDS": "0"}
    hub = HubContainer(docker, tmp_path_factory.mktemp("early"), hub_name=f"a{secrets.token_hex(3)}", env=env)
    try:
        yield hub.start()
    finally:
        hub.destroy()


def test_front_keeps_answering_after_workspaces_join(early_hub, docker):
    assert early_hub.hub_name < "bridge"
    users = [early_hub.create_user(name) for name in ("ana", "ben")]
    for user in users:
        r = early_hub.spawn(user)
        assert r.status_code in (201, 202), r.text
        # the hub container is on the user's network now; the public port must still answer
        assert login_page(early_hub) == 200
        assert early_hub.get_through_proxy(user).status_code == 200
        assert ssh_banner(early_hub.port).startswith("SSH-2.0-")

    # the published port goes to the front network, named exactly like the hub
    early_hub.container.reload()
    networks = early_hub.container.attrs["NetworkSettings"]["Networks"]
    assert early_hub.hub_name in networks
    front = docker.networks.get(early_hub.hub_name)
    assert front.attrs["Labels"] == {"mlhub.origin": early_hub.hub_name, "mlhub.component": "front"}
    assert not front.attrs["Internal"]


def test_front_network_survives_a_cleanup_sweep_and_a_recreated_container(early_hub, docker):
    r = requests.post(
        f"{early_hub.url}/services/cleanup-service/users",
        headers={"Authorization": f"token {early_hub.token}"},
        json={},
        timeout=120,
        verify=False,
    )
    assert r.status_code == 200, r.text
    assert early_hub.hub_name not in {a.get("name") for a in r.json()["actions"]}, r.text
    assert docker.networks.get(early_hub.hub_name)
    assert login_page(early_hub) == 200

    early_hub.remove()  # the container is gone; /data and the front network stay
    early_hub.run().start()
    assert wait_for(lambda: login_page(early_hub) == 200, timeout=30)
    assert early_hub.get_through_proxy("ana").status_code == 200
    assert ssh_banner(early_hub.port).startswith("SSH-2.0-")


# the front's accounts besides root: nginx's workers, sslh, the proxy, the SSH jump account, the key lookup
FRONT_ACCOUNTS = ("www-data", "sslh", "nobody", "tunnel", "mlhub-keys")


def test_front_accounts_cannot_read_the_hub_data(early_hub):
    code, listing = early_hub.exec("sh", "-c", "ls /data/*.sqlite")
    assert code == 0 and "/data/jupyterhub.sqlite" in listing, listing
    for account in FRONT_ACCOUNTS:
        for command in (
            ["cat", "/data/jupyterhub.sqlite"],
            ["ls", "/data"],
            ["cat", "/data/ssh-front.token"],
        ):
            code, out = early_hub.exec(*command, user=account)
            assert code != 0 and "Permission denied" in out, (account, command, out)
    code, modes = early_hub.exec("sh", "-c", "stat -c '%a %U %n' /data /data/*.sqlite")
    for line in modes.splitlines():
        mode, owner, path = line.split()
        assert owner == "root" and mode in (("700",) if path == "/data" else ("600",)), line


def test_no_ip_forwarding_in_the_hub_container(early_hub, docker):
    assert early_hub.exec("cat", "/proc/sys/net/ipv4/ip_forward") == (0, "0\n")
    # started without --sysctl net.ipv4.ip_forward=0 (Docker's hosts forward): refused, saying how
    image = os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}")
    container = docker.containers.run(image, detach=True, labels={"mlhub.test": "ipforward"})
    try:
        status = container.wait(timeout=60)
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)
    assert status["StatusCode"] != 0
    assert "--sysctl net.ipv4.ip_forward=0" in output, output


UDP_LISTENER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
while True:
    data, peer = s.recvfrom(100)
    with open("/tmp/received", "a") as f:
        f.write(f"{data.decode()} from {peer[0]}\\n")
"""


def test_the_hub_does_not_route_between_user_networks(early_hub, docker):
    """A tenant with a route through the hub's address on their network reaches no other tenant's network."""
    attacker, victim = early_hub.create_user("mallory"), early_hub.create_user("victor")
    for user in (attacker, victim):
        assert early_hub.spawn(user).status_code in (201, 202)
    net_a, net_b = (
        docker.networks.get(naming.network_name(early_hub.hub_name, u)) for u in (attacker, victim)
    )
    early_hub.container.reload()
    hub_on_a = early_hub.container.attrs["NetworkSettings"]["Networks"][net_a.name]["IPAddress"]
    target = docker.containers.get(naming.workspace_name(early_hub.hub_name, victim))
    target_ip = target.attrs["NetworkSettings"]["Networks"][net_b.name]["IPAddress"]
    subnet_b = net_b.attrs["IPAM"]["Config"][0]["Subnet"]
    target.exec_run(["python3", "-c", UDP_LISTENER], detach=True)
    send = "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[2].encode(), (sys.argv[1], 9999))"
    # control: the listener works (a datagram from the victim's own workspace arrives)
    assert wait_for(
        lambda: (
            target.exec_run(["python3", "-c", send, target_ip, "self"]).exit_code == 0
            and "self from" in target.exec_run(["cat", "/tmp/received"]).output.decode()
        ),
        timeout=20,
        interval=0.5,
    )
    # the attacker: a container on their own network, allowed to set routes (NET_ADMIN)
    image = docker.containers.get(naming.workspace_name(early_hub.hub_name, attacker)).image
    helper = docker.containers.run(
        image,
        ["sleep", "120"],
        entrypoint=[],
        user="root",
        detach=True,
        network=net_a.name,
        cap_add=["NET_ADMIN"],
        labels={"mlhub.test": early_hub.hub_name},
    )
    try:
        route = helper.exec_run(["ip", "route", "add", subnet_b, "via", hub_on_a])
        assert route.exit_code == 0, route.output
        for _ in range(5):
            helper.exec_run(["python3", "-c", send, target_ip, "forwarded"])
        wait_for(lambda: False, timeout=3)  # time for a forwarded datagram to arrive
        received = target.exec_run(["cat", "/tmp/received"]).output.decode()
        assert "forwarded" not in received, received
    finally:
        helper.remove(force=True)
