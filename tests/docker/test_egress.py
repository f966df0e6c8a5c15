"""Closed egress on the real engine: what a workspace can and cannot reach.

Every target is a listener this test binds on this machine: on the user network's gateway (the
host), on a link-local and a private address it adds to the host (on its own veth end: this kernel
has no dummy interfaces), and on a "LAN host" (a network
namespace behind a veth pair it creates, with a private and a link-local address, reached through
the host's forwarding like a machine on the LAN or the cloud metadata server). No packet is sent to
an address not bound here. Interfaces, namespaces, tables and containers are removed afterwards.
"""

import ipaddress
import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from mlhubspawner import __version__, naming

from support import Hub, base_image, free_port, stop_process_group, wait_for

# answers "ok" on every (address, port) given as JSON in argv[1]
LISTENER = textwrap.dedent(
    """
    import json, socket, sys, threading
    def serve(sock):
        while True:
            conn, _ = sock.accept()
            try:
                conn.sendall(b"ok\\n")
            finally:
                conn.close()
    for host, port in json.loads(sys.argv[1]):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        threading.Thread(target=serve, args=(sock,), daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait()
    """
)

# run in the workspace: {"host:port": first line answered, or "ERR <reason>"}, all at once, 3 s each
PROBE = textwrap.dedent(
    """
    import json, socket, sys
    from concurrent.futures import ThreadPoolExecutor
    def probe(target):
        host, port = target.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=3) as s:
                try:
                    s.sendall(b"GET /hub/api HTTP/1.0\\r\\nHost: hub\\r\\n\\r\\n")
                except OSError:
                    pass
                return s.recv(200).decode(errors="replace").splitlines()[0]
        except Exception as e:
            return f"ERR {type(e).__name__} {e}"
    targets = sys.argv[1:]
    with ThreadPoolExecutor(len(targets)) as pool:
        print(json.dumps(dict(zip(targets, pool.map(probe, targets)))))
    """
)


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=check)


def host_nft(*args, check=True):
    """``nft`` on the host's tables, from the hub image (the machine itself may have no nft)."""
    image = os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}")
    return sh(
        *("docker", "run", "--rm", "--network", "host", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN"),
        *("--label", "mlhub.test=egress", "--entrypoint", "nft", image, *args),
        check=check,
    )


def free_slash24(prefix):
    """A ``<prefix>.<n>`` /24 (n in 200..249) that no route on this host uses."""
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout
    for _ in range(50):
        net = f"{prefix}.{200 + secrets.randbelow(50)}"
        if f"{net}." not in routes:
            return net
    raise RuntimeError(f"no free {prefix}.x/24 for the test")


@pytest.fixture(scope="module")
def targets():
    """Listeners on the host (dummy interface) and on a LAN host (network namespace behind a veth)."""
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"mlhubt{tag}", f"mle{tag}h", f"mle{tag}n"
    lan = free_slash24("192.168")
    link = free_slash24("169.254")
    t = {
        "lan_gw": f"{lan}.1",
        "lan": f"{lan}.2",  # the LAN host's private address
        "lan_metadata": f"{link}.254",  # a link-local address behind the host, like 169.254.169.254
        "host_link_local": f"{link}.1",  # an address of the host itself
        "host_private": f"{lan}.129",  # a private address of the host itself
        "port": free_port(),
    }
    processes = []
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{t['lan_gw']}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "route", "add", f"{t['lan_metadata']}/32", "dev", host_if)
        for address in (f"{t['lan']}/30", f"{t['lan_metadata']}/32"):
            sh("ip", "-n", ns, "addr", "add", address, "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", t["lan_gw"])
        # the host's own link-local and private addresses (this kernel has no dummy module: the veth's end)
        sh("ip", "addr", "add", f"{t['host_link_local']}/32", "dev", host_if)
        sh("ip", "addr", "add", f"{t['host_private']}/32", "dev", host_if)
        lan_listeners = [(t["lan"], t["port"]), (t["lan"], 53), (t["lan_metadata"], t["port"])]
        host_listeners = [(t["host_link_local"], t["port"]), (t["host_private"], t["port"])]
        for prefix, listeners in ((["ip", "netns", "exec", ns], lan_listeners), ([], host_listeners)):
            process = subprocess.Popen(
                [*prefix, sys.executable, "-c", LISTENER, json.dumps(listeners)],
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            processes.append(process)
            assert process.stdout.readline().strip() == "listening"
        yield t
    finally:
        for process in processes:
            stop_process_group(process, timeout=5)
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)


def start_hub(tmp_path_factory, docker, config="", env=None):
    hub = Hub(tmp_path_factory.mktemp("egress"), user_config=config, env=env)
    try:
        hub.start()
    except Exception:
        hub.destroy(docker)
        raise
    return hub


def destroy_hub(hub, docker):
    hub.destroy(docker)  # its nft table too
    assert f"mlhub-{hub.hub_name}\n" not in host_nft("list", "tables").stdout


@pytest.fixture(scope="module")
def closed_hub(docker, targets, tmp_path_factory):
    """A hub with the shipped defaults (plus the LAN host as an extra nameserver)."""
    hub = start_hub(
        tmp_path_factory, docker, f"c.MLHubDockerSpawner.egress_dns_servers = [{targets['lan']!r}]\n"
    )
    yield hub
    destroy_hub(hub, docker)


@pytest.fixture(scope="module")
def open_hub(docker, targets, tmp_path_factory):
    """A hub whose admin opened private ranges (``docker run -e MLHUB_EGRESS_ALLOW_PRIVATE=true`` for the image)."""
    hub = start_hub(tmp_path_factory, docker, env={"MLHUB_EGRESS_ALLOW_PRIVATE": "true"})
    yield hub
    destroy_hub(hub, docker)


def spawn(hub, docker, user):
    hub.create_user(user)
    r = hub.spawn(user)
    assert r.status_code in (201, 202), r.text
    container = docker.containers.get(naming.workspace_name(hub.hub_name, user, ""))
    network = docker.networks.get(naming.network_name(hub.hub_name, user))
    gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
    return container, network, gateway


def probe(container, *targets):
    result = container.exec_run(["python3", "-c", PROBE, *targets])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.decode().strip().splitlines()[-1])


def reached(answer):
    return not answer.startswith("ERR")


def test_default_closes_host_link_local_and_lan_but_not_hub_api_or_names(closed_hub, docker, targets):
    hub = closed_hub
    container, network, gateway = spawn(hub, docker, "eve")
    # a service of the host on the bridge gateway, which the workspace routes through
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER, json.dumps([(gateway, targets["port"])])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    peer = None
    try:
        assert listener.stdout.readline().strip() == "listening"
        # another container on the user's network, found by name through Docker's resolver
        peer = docker.containers.run(
            base_image(docker),
            ["sleep", "120"],
            name=f"{hub.hub_name}-egress-peer",
            detach=True,
            labels={naming.LABEL_ORIGIN: hub.hub_name, "mlhub.test": "egress"},
            network=network.name,
        )
        peer.reload()
        peer_ip = peer.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

        port = targets["port"]
        hub_port = int(hub.env["MLHUB_HUB_PORT"])
        answers = probe(
            container,
            f"{gateway}:{hub_port}",
            f"{gateway}:{port}",
            f"{targets['host_link_local']}:{port}",
            f"{targets['host_private']}:{port}",
            f"{targets['lan_metadata']}:{port}",
            f"{targets['lan']}:{port}",
            f"{targets['lan']}:53",
        )
        print(answers)
        assert answers[f"{gateway}:{hub_port}"].startswith("HTTP/1.1 200"), answers  # the hub API
        assert not reached(answers[f"{gateway}:{port}"]), answers  # the host's other services
        assert not reached(answers[f"{targets['host_link_local']}:{port}"]), answers
        assert not reached(answers[f"{targets['host_private']}:{port}"]), answers
        assert not reached(answers[f"{targets['lan_metadata']}:{port}"]), answers  # "cloud metadata"
        assert not reached(answers[f"{targets['lan']}:{port}"]), answers  # the LAN
        assert answers[f"{targets['lan']}:53"] == "ok", answers  # a configured nameserver, port 53 only

        resolved = container.exec_run(
            ["python3", "-c", f"import socket; print(socket.gethostbyname({peer.name!r}))"]
        )
        assert resolved.output.decode().strip() == peer_ip
        # the host's own nameservers are in the table's DNS set (Docker forwards queries to them)
        host_servers = [
            line.split()[1]
            for line in open("/etc/resolv.conf").read().splitlines()
            if line.startswith("nameserver") and ipaddress.ip_address(line.split()[1]).version == 4
        ]
        listed = host_nft("list", "set", "inet", f"mlhub-{hub.hub_name}", "dns").stdout
        for server in host_servers:
            if not server.startswith("127."):
                assert server in listed
        # the proxy still reaches the workspace
        assert hub.get_through_proxy("eve").status_code == 200
    finally:
        stop_process_group(listener, timeout=5)
        if peer is not None:
            peer.remove(force=True)
        hub.stop_server("eve")


def test_admin_switch_opens_the_lan_but_not_the_host_or_link_local(open_hub, docker, targets):
    container, _, gateway = spawn(open_hub, docker, "fay")
    port = targets["port"]
    answers = probe(
        container,
        f"{targets['lan']}:{port}",
        f"{targets['lan_metadata']}:{port}",
        f"{targets['host_link_local']}:{port}",
        f"{targets['host_private']}:{port}",
        f"{gateway}:{int(open_hub.env['MLHUB_HUB_PORT'])}",
    )
    print(answers)
    assert answers[f"{targets['lan']}:{port}"] == "ok", answers
    assert not reached(answers[f"{targets['lan_metadata']}:{port}"]), answers
    assert not reached(answers[f"{targets['host_link_local']}:{port}"]), answers
    assert not reached(answers[f"{targets['host_private']}:{port}"]), answers
    assert answers[f"{gateway}:{int(open_hub.env['MLHUB_HUB_PORT'])}"].startswith("HTTP/1.1 200")
    open_hub.stop_server("fay")


def test_rules_cover_every_network_of_the_hub_and_reload_idempotently(closed_hub, docker):
    """A second user's new network joins the table; a hub restart loads the same table again."""
    hub = closed_hub
    unlabelled_before = {v.name for v in docker.volumes.list() if not v.attrs.get("Labels")}
    for user in ("gus", "hal"):
        spawn(hub, docker, user)
    bridges = [
        f"br-{docker.networks.get(naming.network_name(hub.hub_name, u)).id[:12]}" for u in ("gus", "hal")
    ]
    listed = host_nft("list", "set", "inet", f"mlhub-{hub.hub_name}", "bridges").stdout
    assert all(bridge in listed for bridge in bridges)
    # a restarted hub loads its table again, with the networks of workspaces still running (hal's)
    hub.restart()
    hub.stop_server("gus")
    assert hub.spawn("gus").status_code in (201, 202)
    listed = host_nft("list", "set", "inet", f"mlhub-{hub.hub_name}", "bridges").stdout
    assert all(bridge in listed for bridge in bridges)
    assert host_nft("list", "tables").stdout.count(f"mlhub-{hub.hub_name}\n") == 1
    # no helper container is left behind
    assert not docker.containers.list(
        all=True,
        filters={"label": [f"{naming.LABEL_ORIGIN}={hub.hub_name}", "mlhub.component=egress-firewall"]},
    )
    # nor the anonymous /data volume the hub image declares (one per load, forever, before the fix)
    assert {v.name for v in docker.volumes.list() if not v.attrs.get("Labels")} <= unlabelled_before
    for user in ("gus", "hal"):
        hub.stop_server(user)


def test_a_helper_that_cannot_load_the_rules_is_a_clear_spawn_error(docker, tmp_path_factory):
    """An image without nft: the spawn fails with a message naming the off switch; no container."""
    hub = start_hub(
        tmp_path_factory, docker, f"c.MLHubDockerSpawner.egress_helper_image = {base_image(docker)!r}\n"
    )
    try:
        hub.create_user("ivy")
        r = hub.api("POST", "users/ivy/server", json={})
        if r.status_code == 202:
            wait_for(lambda: hub.server_model("ivy") is None, 60)
        assert hub.server_model("ivy") is None
        assert "egress_firewall = False" in hub.log_tail(200)
        assert not docker.containers.list(
            all=True, filters={"name": naming.workspace_name(hub.hub_name, "ivy", "")}
        )
    finally:
        destroy_hub(hub, docker)
