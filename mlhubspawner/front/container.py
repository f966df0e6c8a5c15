"""The hub container on the Docker engine: who am I, and joining this hub's user networks.

Workspaces reach the hub API as ``http://<HUB_NAME>:8081``: the hub container joins every user
network of its hub with ``HUB_NAME`` as network alias (the spawner does the same for new networks).
The public port listens only on the container's other ("front") networks, so from a workspace the
hub API is the only port that answers.
"""

import os
import re
from pathlib import Path

from docker.errors import APIError

from .. import naming
from ..docker.networks import is_already_attached

_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_id(mountinfo="/proc/self/mountinfo", hostname=None):
    """This container's id: from the engine's bind mounts (hostname, resolv.conf), else $HOSTNAME."""
    try:
        match = _CONTAINER_ID.search(Path(mountinfo).read_text())
    except OSError:
        match = None
    if match:
        return match.group(1)
    return hostname if hostname is not None else os.environ.get("HOSTNAME", "")


def user_networks(client, hub_name):
    """This hub's user networks (by label)."""
    labels = [f"{naming.LABEL_ORIGIN}={hub_name}", f"{naming.LABEL_COMPONENT}={naming.COMPONENT_NETWORK}"]
    return client.networks.list(filters={"label": labels})


def join_user_networks(client, container_id, hub_name, log=print):
    """Attach the hub container to every user network of its hub (alias ``hub_name``); return their ids."""
    attrs = client.api.inspect_container(container_id)
    attached = set((attrs["NetworkSettings"].get("Networks") or {}).keys())
    joined = set()
    for network in user_networks(client, hub_name):
        joined.add(network.id)
        if network.name in attached:
            continue
        try:
            client.api.connect_container_to_network(container_id, network.id, aliases=[hub_name])
            log(f"joined user network {network.name}")
        except APIError as e:
            if not is_already_attached(e):
                raise
    return joined


def front_addresses(client, container_id, user_network_ids):
    """The container's IPv4 addresses on networks other than the user networks (where -p publishes)."""
    attrs = client.api.inspect_container(container_id)
    if attrs["HostConfig"].get("NetworkMode") == "host":
        raise ValueError("the hub container cannot use --network host: it must join the user networks")
    addresses = []
    for network in (attrs["NetworkSettings"].get("Networks") or {}).values():
        if network.get("NetworkID") in user_network_ids:
            continue
        if network.get("IPAddress"):
            addresses.append(network["IPAddress"])
    return addresses
