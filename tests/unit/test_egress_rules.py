"""Closed egress, the pure parts: the Docker nftables ruleset and helper, the per-user NetworkPolicy defaults.

The rules' effect on real traffic is tested on the engine (tests/docker/test_egress.py); the chart's policies
in tests/chart/test_chart.py.
"""

import ipaddress
import secrets

import kubernetes_validate
import pytest

from mlhubspawner.docker import egress
from mlhubspawner.docker.spawner import MLHubDockerSpawner
from mlhubspawner.kubernetes import objects

K8S_VERSION = "1.33.0"


def policy_reaches(policy, ip, port):
    """Whether an egress rule of the policy lets ``ip:port`` out (ipBlocks and rules without peers)."""
    ip = ipaddress.ip_address(ip)
    for rule in policy["spec"]["egress"]:
        if rule.get("ports") and not any(p["port"] == port for p in rule["ports"]):
            continue
        if "to" not in rule:
            return True
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block and ip in ipaddress.ip_network(block["cidr"]):
                if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                    return True
    return False


def chain(ruleset, name):
    """The rules of one chain of the ruleset."""
    return ruleset.split(f"chain {name} {{\n")[1].split("\n    }")[0]


# ---- Docker: the nftables table -------------------------------------------------------------------------------------


def test_ruleset_reloads_one_table_atomically_and_drops_what_the_issue_names():
    plan = egress.EgressPlan("mlhub", bridges=("br-0123456789ab",), hub_port=8081)
    text = egress.build_ruleset(plan)
    # delete + add in one file (nft -f is one transaction): idempotent, never a moment without rules
    assert text.startswith(
        "table inet mlhub-mlhub {}\ndelete table inet mlhub-mlhub\ntable inet mlhub-mlhub {"
    )
    assert 'set bridges { type ifname; elements = { "br-0123456789ab" }; }' in text
    assert "type filter hook forward priority filter; policy accept;" in text
    assert "type filter hook input priority filter; policy accept;" in text
    out = chain(text, "workspace_out")
    to_host = chain(text, "workspace_to_host")
    for cidr in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
        assert cidr in out
    # only the hub API port of the host; everything else to the host is dropped
    assert "tcp dport 8081 accept" in to_host and to_host.strip().endswith("drop")
    # established replies first (the proxy's connections to workspaces), same-bridge traffic, DNS before drops
    assert (
        out.index("ct state established,related accept")
        < out.index("@same_bridge accept")
        < out.index("drop")
    )
    assert out.index("ip daddr @dns udp dport 53 accept") < out.index("drop")


def test_private_switch_keeps_link_local_and_the_host_closed():
    text = egress.build_ruleset(egress.EgressPlan("mlhub", allow_private=True))
    out = chain(text, "workspace_out")
    assert "169.254.0.0/16" in out and "10.0.0.0/8" not in out and "192.168.0.0/16" not in out
    assert "100.100.100.200/32" in out and "168.63.129.16/32" in out  # Alibaba metadata, Azure WireServer
    to_host = chain(text, "workspace_to_host")
    # a hub in a container: no port of the host at all (replies and DNS aside)
    accepted = [line.strip() for line in to_host.splitlines() if line.strip().endswith("accept")]
    assert accepted == [
        "ct state established,related accept",
        "ip daddr @dns udp dport 53 accept",
        "ip daddr @dns tcp dport 53 accept",
    ]
    assert to_host.strip().endswith("drop")


def test_dns_servers_and_bridges_are_validated():
    text = egress.build_ruleset(egress.EgressPlan("mlhub", dns_servers=("10.255.255.53",)))
    assert "set dns { type ipv4_addr; elements = { 10.255.255.53 }; }" in text
    with pytest.raises(ValueError, match="not an IP address"):
        egress.build_ruleset(egress.EgressPlan("mlhub", dns_servers=("10.0.0.1; drop",)))
    with pytest.raises(ValueError, match="not a network interface name"):
        egress.build_ruleset(egress.EgressPlan("mlhub", bridges=('br-x" }; flush ruleset',)))
    with pytest.raises(ValueError, match="hub name"):
        egress.table_name("Bad Hub")


def test_bridge_names_of_docker_networks():
    assert egress.bridge_name({"Id": "0123456789abcdef", "Options": {}}) == "br-0123456789ab"
    named = {"Id": "0123456789abcdef", "Options": {"com.docker.network.bridge.name": "mlhub0"}}
    assert egress.bridge_name(named) == "mlhub0"
    assert egress.hub_api_port("http://127.0.0.1:8081/hub/api") == 8081
    assert egress.hub_api_port("https://hub/hub/api") == 443


def test_helper_has_the_host_network_and_net_admin_only():
    kwargs = egress.helper_create_kwargs("mlhub:1", "mlhub", "rules")
    host = egress.helper_host_config()
    assert host["network_mode"] == "host"
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] == ["NET_ADMIN"]
    assert host["read_only"] and "no-new-privileges" in host["security_opt"]
    assert kwargs["environment"]["MLHUB_EGRESS_RULES"] == "rules"
    assert kwargs["environment"]["MLHUB_EGRESS_TABLE"] == "mlhub-mlhub"
    assert kwargs["labels"]["mlhub.origin"] == "mlhub"
    assert "nft -f -" in egress.HELPER_SCRIPT and "/etc/resolv.conf" in egress.HELPER_SCRIPT
    # the nameservers the helper reads are IPv4 and not loopback (Docker reaches those from the host itself)
    assert "!~ /^127\\./" in egress.HELPER_SCRIPT


def test_spawner_settings_have_closed_defaults_and_refuse_bad_nameservers():
    spawner = MLHubDockerSpawner()
    assert spawner.egress_firewall is True
    assert spawner.egress_allow_private is False
    with pytest.raises(ValueError, match="egress_dns_servers: 'dns.example.org' is not an IP address"):
        spawner.egress_dns_servers = ["dns.example.org"]
    with pytest.raises(ValueError, match="only IPv4"):
        spawner.egress_dns_servers = ["fd00::53"]


# ---- Kubernetes: the per-user NetworkPolicy ---------------------------------------------------------------------------


def test_per_user_policy_defaults_close_private_ranges_and_every_metadata_address():
    policy = objects.make_network_policy(name="mlhub-bob", hub_name="mlhub", username="bob")
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, OpenStack
        "169.254.170.2",  # ECS task metadata
        "100.100.100.200",  # Alibaba
        "168.63.129.16",  # Azure WireServer
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fe80::1",
        "10.0.0.1",  # nodes, LAN
        "172.20.0.1",
        "192.168.0.1",
        "100.64.0.1",
        "fd12::1",
    ):
        for port in (80, 443, 10250):
            assert not policy_reaches(policy, address, port), (address, port)
    assert policy_reaches(policy, "93.184.216.34", 443)
    assert policy_reaches(policy, "2606:2800:220:1:248:1893:25c8:1946", 443)


def test_per_user_policy_dns_goes_to_the_cluster_resolver_only():
    policy = objects.make_network_policy(name="mlhub-bob", hub_name="mlhub", username="bob")
    dns = [r for r in policy["spec"]["egress"] if any(p["port"] == 53 for p in r.get("ports", []))]
    assert dns == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]
    for address in ("10.0.0.10", "192.168.1.1", "169.254.169.254"):
        assert not policy_reaches(policy, address, 53)
    nodelocal = objects.make_network_policy(
        name="n",
        hub_name="mlhub",
        username="bob",
        dns_peers=[{"ipBlock": {"cidr": "169.254.20.10/32"}}],
        dns_ports=[53, 5353],
    )
    kubernetes_validate.validate(nodelocal, K8S_VERSION, strict=True)
    assert policy_reaches(nodelocal, "169.254.20.10", 5353)
    assert not policy_reaches(nodelocal, "169.254.20.10", 80)


def test_kubernetes_spawner_refuses_a_bad_cidr():
    from mlhubspawner.kubernetes.spawner import MLHubKubernetesSpawner

    with pytest.raises(ValueError, match="'example.org' is not a CIDR"):
        MLHubKubernetesSpawner(network_policy_blocked_cidrs=["example.org"])


def test_switches_as_environment_variables():
    from mlhubspawner.settings import SettingsError, load_settings

    assert (load_settings({}).egress_firewall, load_settings({}).egress_allow_private) == (True, False)
    settings = load_settings({"MLHUB_EGRESS_ALLOW_PRIVATE": "true", "MLHUB_EGRESS_FIREWALL": "false"})
    assert (settings.egress_firewall, settings.egress_allow_private) == (False, True)
    with pytest.raises(SettingsError, match="MLHUB_EGRESS_ALLOW_PRIVATE='lan'"):
        load_settings({"MLHUB_EGRESS_ALLOW_PRIVATE": "lan"})


# ---- Docker: when the table is (re)loaded ---------------------------------------------------------------------------


class FakeEngine:
    """The spawner's ``docker(method, ...)`` caller: records helper runs, answers like the engine."""

    def __init__(self, networks, exit_code=0):
        self.networks, self.exit_code, self.loads = networks, exit_code, []

    async def __call__(self, method, *args, **kwargs):
        if method == "networks":
            return list(self.networks)
        if method == "create_container":
            self.loads.append(kwargs["environment"]["MLHUB_EGRESS_RULES"])
            return {"Id": "helper"}
        if method == "wait":
            return {"StatusCode": self.exit_code}
        if method == "logs":
            return b"nft: command not found" if self.exit_code else b"mlhub egress: loaded"
        return None


def fake_spawner(engine, hub_name, **settings):
    from types import SimpleNamespace

    return SimpleNamespace(
        hub_name=hub_name,
        docker=engine,
        client=SimpleNamespace(create_host_config=lambda **kw: kw),
        hub=SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api"),
        log=SimpleNamespace(info=lambda *a: None, error=lambda *a: None),
        **{
            "egress_firewall": True,
            "egress_allow_private": False,
            "egress_dns_servers": [],
            "egress_helper_image": "mlhub:test",
            "connect_hub_via_gateway": True,
            "hub_container": "",
            **settings,
        },
    )


async def test_table_is_loaded_once_per_network_and_covers_all_of_the_hubs_networks(monkeypatch):
    a, b = {"Id": "a" * 64}, {"Id": "b" * 64}
    engine = FakeEngine([a])
    spawner = fake_spawner(engine, f"tload{secrets.token_hex(3)}")
    await egress.ensure_egress(spawner, a)
    await egress.ensure_egress(spawner, a)  # nothing new: no helper
    assert len(engine.loads) == 1 and '"br-aaaaaaaaaaaa"' in engine.loads[0]
    engine.networks.append(b)
    await egress.ensure_egress(spawner, b)  # a new network: the whole table again, with both bridges
    assert len(engine.loads) == 2 and '"br-aaaaaaaaaaaa", "br-bbbbbbbbbbbb"' in engine.loads[1]
    # an old load is refreshed at the next start (the host's ruleset may have been flushed)
    monkeypatch.setattr(egress.time, "monotonic", lambda: 10**9)
    await egress.ensure_egress(spawner, a)
    assert len(engine.loads) == 3


async def test_a_failed_load_is_a_spawn_error_and_the_off_switch_loads_nothing():
    from tornado import web

    engine = FakeEngine([], exit_code=127)
    spawner = fake_spawner(engine, f"tfail{secrets.token_hex(3)}")
    with pytest.raises(web.HTTPError) as error:
        await egress.ensure_egress(spawner, {"Id": "c" * 64})
    assert error.value.status_code == 500
    assert "nft: command not found" in error.value.jupyterhub_message
    assert "egress_firewall = False" in error.value.jupyterhub_message
    # not marked loaded: the next start tries again
    with pytest.raises(web.HTTPError):
        await egress.ensure_egress(spawner, {"Id": "c" * 64})
    assert len(engine.loads) == 2
    off = FakeEngine([])
    await egress.ensure_egress(fake_spawner(off, "toff", egress_firewall=False), {"Id": "d" * 64})
    assert off.loads == []
