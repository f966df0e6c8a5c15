"""The hub container on the Docker engine: who am I, its front network, joining the user networks.

Workspaces reach the hub API as ``http://<HUB_NAME>:8081``: the hub container joins every user
network of its hub with ``HUB_NAME`` as network alias (the spawner does the same for new networks).
The public port listens only on the container's other ("front") networks, so from a workspace the
hub API is the only port that answers.

Docker forwards a published port (``-p 8080:8080``) to the container's address on its *gateway
network*, chosen by name among networks of equal priority and re-chosen at every ``network
connect``. A user network whose name sorted first would take the port away from the front. So the
hub container first joins its front network, named exactly ``HUB_NAME``: every user network is
called ``HUB_NAME-...`` and sorts after it, whatever the other names are.
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


def front_labels(hub_name):
    """Labels of a hub's front network (the cleanup service never removes ``component=front``)."""
    return {naming.LABEL_ORIGIN: hub_name, naming.LABEL_COMPONENT: naming.COMPONENT_FRONT}


def ensure_front_network(client, hub_name, log=print):
    """The network named exactly ``hub_name``, made (a plain bridge) if missing; returns its attrs.

    Raises ValueError when a network of that name exists that is not this hub's front network.
    """
    wanted = front_labels(hub_name)
    for attempt in range(2):
        # the name filter matches substrings: keep the exact name only
        found = [n for n in client.api.networks(names=[hub_name]) if n["Name"] == hub_name]
        if found:
            network = client.api.inspect_network(found[0]["Id"])
            labels = network.get("Labels") or {}
            if any(labels.get(k) != v for k, v in wanted.items()) or network.get("Internal"):
                raise ValueError(
                    f"a Docker network named {hub_name!r} exists that is not this hub's front network "
                    f"(labels {labels}); remove it (docker network rm {hub_name}) or choose another HUB_NAME"
                )
            return network
        try:
            created = client.api.create_network(
                hub_name, driver="bridge", labels=wanted, check_duplicate=True
            )
        except APIError as e:
            if e.status_code == 409 and attempt == 0:  # made by someone else meanwhile: look again
                continue
            raise
        log(f"created front network {hub_name}")
        return client.api.inspect_network(created["Id"])
    raise ValueError(f"the front network {hub_name!r} could not be made")


def join_front_network(client, container_id, hub_name, log=print):
    """Attach the hub container to its front network (before any user network); return its id."""
    attrs = client.api.inspect_container(container_id)
    if attrs["HostConfig"].get("NetworkMode") == "host":
        raise ValueError("the hub container cannot use --network host: it must join the user networks")
    network = ensure_front_network(client, hub_name, log=log)
    attached = {n.get("NetworkID") for n in (attrs["NetworkSettings"].get("Networks") or {}).values()}
    if network["Id"] not in attached:
        try:
            client.api.connect_container_to_network(container_id, network["Id"])
            log(f"joined front network {hub_name}")
        except APIError as e:
            if not is_already_attached(e):
                raise
    return network["Id"]


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
