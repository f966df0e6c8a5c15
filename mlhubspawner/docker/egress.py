"""Closed egress for Docker workspaces: one nftables table per hub on the engine's host.

Workspaces may reach the internet, the hub API and DNS; not the host's other services, not
link-local addresses (cloud metadata) and, unless an admin opens them, not private ranges (the
LAN). The rules match the bridges of this hub's user networks (``br-<network id>``: never reused,
so a removed network's entry can never match another hub's workspaces), in a table of our own
(``inet mlhub-<hub>``) with ``forward`` and ``input`` base chains. A ``drop`` there is final
whatever Docker's own iptables rules say; an ``accept`` only skips our later rules, so Docker's
isolation of networks from each other keeps working.

The hub usually has nothing but the Docker socket, so a short-lived helper container from an image
the engine already has (the hub image, which ships ``nft``) loads the table: ``network_mode=host``
and ``NET_ADMIN`` only, one ``nft -f`` transaction (delete + add), idempotent. The helper adds the
host's nameservers (its ``/etc/resolv.conf`` and systemd-resolved's upstream list) to the table's
``dns`` set: Docker's embedded resolver forwards workspaces' queries to them from the workspace's
own address, and they often sit in a private or link-local range.

:func:`build_ruleset` and the helper's arguments are pure; :func:`ensure_egress` is the I/O.
"""

import asyncio
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from docker.errors import APIError, ImageNotFound
from tornado import web

from .. import naming
from .._version import __version__

# always closed: link-local (the metadata services of AWS, GCP, Azure, Oracle, OpenStack, ECS tasks),
# Alibaba's metadata and Azure's WireServer (the host's nameservers keep port 53, e.g. Azure's DNS)
METADATA_RANGES = ("169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32")
# RFC 1918 and the shared (carrier-grade NAT) range: Tailscale-style overlays, Alibaba's metadata
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
COMPONENT_HELPER = "egress-firewall"
HELPER_TIMEOUT_SECONDS = 60
# a start reloads the table when the last load is older (e.g. a host's `nft flush ruleset` removed it)
RELOAD_SECONDS = 600
# where the helper sees the host's /run (systemd-resolved's upstream servers live there)
HOST_RUN = "/mlhub-host-run"

# Runs in the helper: the ruleset from the environment, plus the host's IPv4 nameservers (not
# loopback: Docker reaches those from the host itself), in one nft transaction.
HELPER_SCRIPT = r"""set -eu
servers=""
if [ "${MLHUB_EGRESS_ADD_DNS:-0}" = 1 ]; then
    servers=$(cat /etc/resolv.conf HOST_RUN/systemd/resolve/resolv.conf 2>/dev/null \
        | awk '$1 == "nameserver" && $2 ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/ && $2 !~ /^127\./ { print $2 }' \
        | sort -u | paste -sd, -)
fi
{
    printf '%s\n' "$MLHUB_EGRESS_RULES"
    if [ -n "$servers" ]; then
        printf 'add element inet %s dns { %s }\n' "$MLHUB_EGRESS_TABLE" "$servers"
    fi
} | nft -f -
echo "mlhub egress: loaded table inet $MLHUB_EGRESS_TABLE (host nameservers: ${servers:-none})"
""".replace("HOST_RUN", HOST_RUN)


class EgressError(RuntimeError):
    """The egress rules could not be applied."""


@dataclass(frozen=True)
class EgressPlan:
    """What one hub's table says: its bridges and the exceptions."""

    hub_name: str
    bridges: tuple = ()
    hub_port: int | None = None  # reachable on the host's addresses (a hub on the host)
    allow_private: bool = False
    dns_servers: tuple = ()  # reachable on port 53 besides the host's nameservers


def table_name(hub_name):
    return f"mlhub-{naming.validate_hub_name(hub_name)}"


def bridge_name(network_attrs):
    """The host interface of a Docker bridge network (``br-`` + 12 characters of its id by default)."""
    options = network_attrs.get("Options") or {}
    return options.get("com.docker.network.bridge.name") or f"br-{network_attrs['Id'][:12]}"


def validate_dns_servers(values):
    """IPv4 addresses (port 53 opens to them); raise ValueError naming the bad one."""
    servers = []
    for value in values:
        try:
            address = ipaddress.ip_address(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if address.version != 4:
            raise ValueError(f"{value!r}: only IPv4 nameservers are supported")
        servers.append(str(address))
    return servers


def _elements(values, quote=False):
    items = [f'"{v}"' if quote else str(v) for v in values]
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def build_ruleset(plan):
    """The ``nft -f`` text that (re)loads the hub's table atomically."""
    table = table_name(plan.hub_name)
    for bridge in plan.bridges:
        if not bridge or len(bridge) > 15 or not all(ch.isalnum() or ch in "-_." for ch in bridge):
            raise ValueError(f"{bridge!r} is not a network interface name")
    pairs = [f'"{b}" . "{b}"' for b in plan.bridges]
    dns = validate_dns_servers(plan.dns_servers)
    blocked = list(METADATA_RANGES) + ([] if plan.allow_private else list(PRIVATE_RANGES))
    hub_rule = f"        tcp dport {int(plan.hub_port)} accept\n" if plan.hub_port else ""
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"    set bridges {{ type ifname;{_elements(plan.bridges, quote=True)} }}\n"
        f"    set same_bridge {{ type ifname . ifname;{' elements = { ' + ', '.join(pairs) + ' };' if pairs else ''} }}\n"
        f"    set dns {{ type ipv4_addr;{_elements(dns)} }}\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        "        iifname @bridges jump workspace_out\n"
        "    }\n"
        "    chain input {\n"
        "        type filter hook input priority filter; policy accept;\n"
        "        iifname @bridges jump workspace_to_host\n"
        "    }\n"
        "    chain workspace_out {\n"
        "        ct state established,related accept\n"
        "        iifname . oifname @same_bridge accept\n"
        "        ip daddr @dns udp dport 53 accept\n"
        "        ip daddr @dns tcp dport 53 accept\n"
        f"        ip daddr {{ {', '.join(blocked)} }} drop\n"
        "        meta nfproto ipv6 drop\n"
        "    }\n"
        "    chain workspace_to_host {\n"
        "        ct state established,related accept\n"
        f"{hub_rule}"
        "        ip daddr @dns udp dport 53 accept\n"
        "        ip daddr @dns tcp dport 53 accept\n"
        "        drop\n"
        "    }\n"
        "}\n"
    )


def removal_ruleset(hub_name):
    """The ``nft -f`` text that removes the hub's table (if any)."""
    table = table_name(hub_name)
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


def helper_create_kwargs(image, hub_name, ruleset, add_dns=True):
    """``create_container`` arguments of the helper that loads ``ruleset`` (host config apart)."""
    return {
        "image": image,
        "name": f"{hub_name}-egress-{secrets.token_hex(4)}",
        "entrypoint": ["/bin/sh", "-c", HELPER_SCRIPT],
        "command": [],
        "user": "0",
        "environment": {
            "MLHUB_EGRESS_RULES": ruleset,
            "MLHUB_EGRESS_TABLE": table_name(hub_name),
            "MLHUB_EGRESS_ADD_DNS": "1" if add_dns else "0",
        },
        "labels": {naming.LABEL_ORIGIN: hub_name, naming.LABEL_COMPONENT: COMPONENT_HELPER},
    }


def helper_host_config():
    """The helper's host config: the host's network namespace, ``NET_ADMIN`` and nothing else."""
    return {
        "network_mode": "host",
        "cap_drop": ["ALL"],
        "cap_add": ["NET_ADMIN"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "binds": [f"/run:{HOST_RUN}:ro"],
        "mem_limit": "64m",
        "pids_limit": 64,
    }


def hub_api_port(api_url):
    """The port of the hub API URL (the one port of the host that workspaces may reach)."""
    parts = urlsplit(api_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


# ---- I/O: the helper container and the per-process state --------------------------------------


async def run_helper(docker, client, image, hub_name, ruleset, add_dns=True):
    """Load ``ruleset`` with a helper container from ``image``; its output. Raises EgressError.

    ``docker`` is the spawner's async ``(method, *args, **kwargs)`` caller, ``client`` its docker-py
    client (for ``create_host_config``).
    """
    kwargs = helper_create_kwargs(image, hub_name, ruleset, add_dns)
    kwargs["host_config"] = client.create_host_config(**helper_host_config())
    try:
        container = await docker("create_container", **kwargs)
    except ImageNotFound:
        raise EgressError(f"the helper image {image} is not on the Docker engine") from None
    except APIError as e:
        raise EgressError(f"could not create the helper container: {e.explanation or e}") from None
    try:
        await docker("start", container["Id"])
        result = await docker("wait", container["Id"], timeout=HELPER_TIMEOUT_SECONDS)
        output = (await docker("logs", container["Id"])).decode(errors="replace").strip()
    except APIError as e:
        raise EgressError(f"the helper container failed: {e.explanation or e}") from None
    finally:
        try:
            await docker("remove_container", container["Id"], v=True, force=True)
        except APIError:
            pass
    if result.get("StatusCode") != 0:
        raise EgressError(f"the helper ({image}) exited with {result.get('StatusCode')}: {output[-1500:]}")
    return output


class _HubFirewall:
    """The table of one hub as this process last loaded it; one load at a time."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.plan = None
        self.loaded_at = 0.0

    def covers(self, wanted):
        """Whether the last load holds ``wanted`` and is recent."""
        return time.monotonic() - self.loaded_at < RELOAD_SECONDS and _covers(self.plan, wanted)


_firewalls = {}


def _wanted(spawner, bridges):
    return EgressPlan(
        hub_name=spawner.hub_name,
        bridges=tuple(sorted(bridges)),
        hub_port=hub_api_port(spawner.hub.api_url) if spawner.connect_hub_via_gateway else None,
        allow_private=spawner.egress_allow_private,
        dns_servers=tuple(spawner.egress_dns_servers),
    )


def _covers(applied, wanted):
    return (
        applied is not None
        and set(wanted.bridges) <= set(applied.bridges)
        and (applied.hub_port, applied.allow_private, applied.dns_servers)
        == (wanted.hub_port, wanted.allow_private, wanted.dns_servers)
    )


async def helper_image(spawner):
    """The configured helper image, else ``$MLHUB_HUB_IMAGE``, the hub container's image, ``mlhub:<version>``."""
    if spawner.egress_helper_image:
        return spawner.egress_helper_image
    if os.environ.get("MLHUB_HUB_IMAGE"):
        return os.environ["MLHUB_HUB_IMAGE"]
    if spawner.hub_container:
        container = await spawner.docker("inspect_container", spawner.hub_container)
        return container["Image"]
    return f"mlhub:{__version__}"


async def ensure_egress(spawner, network):
    """Make sure the hub's table covers ``network`` (inspected) before a workspace starts on it.

    Loads the table once per process, again for each new network (all of this hub's networks at
    once, so concurrent spawns share one load) and at a start when the last load is older than
    ``RELOAD_SECONDS``. A failure is a spawn error: never silently open.
    """
    if not spawner.egress_firewall:
        return
    firewall = _firewalls.setdefault(spawner.hub_name, _HubFirewall())
    if firewall.covers(_wanted(spawner, [bridge_name(network)])):
        return
    async with firewall.lock:
        if firewall.covers(_wanted(spawner, [bridge_name(network)])):
            return
        networks = await spawner.docker(
            "networks",
            filters=naming.origin_filter(
                spawner.hub_name, **{naming.LABEL_COMPONENT: naming.COMPONENT_NETWORK}
            ),
        )
        plan = _wanted(spawner, {bridge_name(network)} | {bridge_name(n) for n in networks})
        try:
            image = await helper_image(spawner)
            output = await run_helper(
                spawner.docker, spawner.client, image, spawner.hub_name, build_ruleset(plan)
            )
        except (EgressError, APIError, ValueError) as e:
            message = (
                f"Could not apply the workspace egress firewall ({e}). Workspaces do not start "
                "without it; on engines where it cannot work (no nftables on the host, a rootless "
                "or remote engine) an admin can set c.MLHubDockerSpawner.egress_firewall = False."
            )
            spawner.log.error(message)
            error = web.HTTPError(500, "%s", message)
            error.jupyterhub_message = message
            raise error from None
        firewall.plan, firewall.loaded_at = plan, time.monotonic()
        spawner.log.info(
            "%s (%d networks)", output.splitlines()[-1] if output else "egress", len(plan.bridges)
        )
