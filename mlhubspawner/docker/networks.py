"""Per-user Docker networks with race-free subnet allocation.

:class:`SubnetPool` is the pure part: which subnets of the configured private pool are taken.
:class:`NetworkAllocator` finds or creates a user's network. It lists the engine's networks once
(to learn subnets already used by anyone), then hands out subnets from memory under a lock, so
concurrent spawns never pick the same one. The engine stays the arbiter: a subnet that another
process took in the meantime is refused by Docker ("overlaps"), marked taken, and the next one is
tried. When the pool looks full, one fresh listing picks up subnets freed by others.
"""

import asyncio
import heapq
import ipaddress

from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool

from .. import naming

PRIVATE_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class PoolExhausted(RuntimeError):
    """No free subnet is left in the configured pool."""


def validate_pool(pool, prefix_length):
    """Check the pool setting: private IPv4 space, subnets no smaller than /29."""
    try:
        network = ipaddress.ip_network(pool)
    except ValueError as e:
        raise ValueError(f"subnet pool {pool!r} is not a network: {e}") from None
    if network.version != 4 or not any(network.subnet_of(r) for r in PRIVATE_RANGES):
        raise ValueError(f"subnet pool {pool} must lie inside 10/8, 172.16/12 or 192.168/16")
    if not network.prefixlen <= prefix_length <= 29:
        raise ValueError(
            f"subnet prefix /{prefix_length} must lie between the pool's /{network.prefixlen} and /29"
        )
    return network


class SubnetPool:
    """The subnets of ``pool`` of size ``/prefix_length``: which are free, lowest first."""

    def __init__(self, pool, prefix_length):
        self.network = validate_pool(pool, prefix_length)
        self.prefix_length = prefix_length
        self._step = 2 ** (32 - prefix_length)
        self._size = 2 ** (prefix_length - self.network.prefixlen)
        self._taken = set()
        self._free = []  # heap of indices known to be free, lazily filled
        self._next = 0  # indices >= _next have never been handed out nor marked

    def _index(self, subnet):
        return (int(subnet.network_address) - int(self.network.network_address)) // self._step

    def subnet(self, index):
        address = int(self.network.network_address) + index * self._step
        return ipaddress.ip_network((address, self.prefix_length))

    def mark_taken(self, cidr):
        """Record a subnet used by anyone (any size): every pool subnet it overlaps is taken."""
        other = ipaddress.ip_network(cidr, strict=False)
        if other.version != 4 or not other.overlaps(self.network):
            return
        first = max(int(other.network_address), int(self.network.network_address))
        last = min(int(other.broadcast_address), int(self.network.broadcast_address))
        base = int(self.network.network_address)
        for index in range((first - base) // self._step, (last - base) // self._step + 1):
            self._taken.add(index)

    def release(self, cidr):
        """Give a subnet back (its network was removed)."""
        index = self._index(ipaddress.ip_network(cidr))
        if index in self._taken:
            self._taken.discard(index)
            heapq.heappush(self._free, index)

    def allocate(self):
        """Take the lowest free subnet; raise :class:`PoolExhausted` when none is left."""
        while self._free:
            index = heapq.heappop(self._free)
            if index not in self._taken:
                self._taken.add(index)
                return self.subnet(index)
        while self._next < self._size:
            index, self._next = self._next, self._next + 1
            if index not in self._taken:
                self._taken.add(index)
                return self.subnet(index)
        raise PoolExhausted(f"no free /{self.prefix_length} subnet left in {self.network}")

    def reset(self, used_cidrs):
        """Forget everything and mark ``used_cidrs`` taken (after a fresh listing)."""
        self._taken.clear()
        self._free.clear()
        self._next = 0
        for cidr in used_cidrs:
            self.mark_taken(cidr)


def network_subnets(network_attrs):
    """The IPv4 subnets of a network as Docker inspects/lists it."""
    configs = ((network_attrs.get("IPAM") or {}).get("Config")) or []
    return [c["Subnet"] for c in configs if c.get("Subnet") and ":" not in c["Subnet"]]


def network_gateway(network_attrs):
    for config in ((network_attrs.get("IPAM") or {}).get("Config")) or []:
        if config.get("Gateway") and ":" not in config["Gateway"]:
            return config["Gateway"]
    return None


def hub_is_attached(network_attrs, container):
    """Whether ``container`` (an id, id prefix or name) is attached to the inspected network."""
    for container_id, endpoint in (network_attrs.get("Containers") or {}).items():
        if container_id.startswith(container) or endpoint.get("Name") == container:
            return True
    return False


def is_already_attached(error):
    """Whether a connect-to-network error says the container is on that network already."""
    text = str(getattr(error, "explanation", "") or error).lower()
    return "already exists" in text or "already attached" in text


def _is_overlap(error):
    return "overlap" in str(error.explanation or error).lower()


def _is_name_conflict(error):
    return error.status_code == 409 or "already exists" in str(error.explanation or "")


class NetworkAllocator:
    """Find or create per-user networks; ``docker`` is an async ``(method, *args, **kw)`` caller."""

    def __init__(self, docker, pool, prefix_length, log):
        self.docker = docker
        self.pool = SubnetPool(pool, prefix_length)
        self.log = log
        self._lock = asyncio.Lock()
        self._name_locks = {}
        self._loaded = False

    async def _refresh(self):
        networks = await self.docker("networks")
        used = [s for n in networks for s in network_subnets(n)]
        self.pool.reset(used)
        self._loaded = True
        self.log.debug("Subnet pool %s: %d subnets in use on the engine", self.pool.network, len(used))

    async def _reserve(self):
        async with self._lock:
            if not self._loaded:
                await self._refresh()
            try:
                return self.pool.allocate()
            except PoolExhausted:
                await self._refresh()  # others may have freed subnets
                return self.pool.allocate()

    async def _inspect(self, name):
        try:
            return await self.docker("inspect_network", name)
        except NotFound:
            return None

    def _owned(self, network, labels):
        """``network`` if its owner labels (hub, user) are those in ``labels``; else refuse it."""
        found = naming.owner_of(network.get("Labels"))
        try:
            naming.check_owner(
                "network",
                network["Name"],
                found,
                labels.get(naming.LABEL_ORIGIN),
                labels.get(naming.LABEL_USER),
            )
        except naming.ForeignResourceError:
            self.log.error("Refused network %s: it is labelled %s", network["Name"], found)
            raise
        return network

    async def ensure(self, name, labels, max_attempts=16):
        """Return the attributes of network ``name``, creating it on a free subnet if needed.

        An existing network is used only if its ``mlhub.origin`` and ``mlhub.user`` labels are
        those in ``labels`` (:class:`~mlhubspawner.naming.ForeignResourceError` otherwise).
        """
        lock = self._name_locks.setdefault(name, asyncio.Lock())
        async with lock:
            existing = await self._inspect(name)
            if existing is not None:
                return self._owned(existing, labels)
            for _ in range(max_attempts):
                subnet = await self._reserve()
                gateway = str(next(subnet.hosts()))
                ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=gateway)])
                try:
                    await self.docker(
                        "create_network",
                        name,
                        driver="bridge",
                        ipam=ipam,
                        labels=labels,
                        check_duplicate=True,
                    )
                except APIError as e:
                    if _is_overlap(e):
                        self.log.info("Subnet %s is taken on the engine, trying the next", subnet)
                        continue  # stays marked taken
                    self.pool.release(str(subnet))
                    if _is_name_conflict(e):
                        existing = await self._inspect(name)
                        if existing is not None:
                            return self._owned(existing, labels)
                    raise
                self.log.info("Created network %s on %s", name, subnet)
                return await self.docker("inspect_network", name)
            raise PoolExhausted(f"no usable subnet found for network {name}")

    def forget(self, network_attrs):
        """Release the subnets of a network that was removed."""
        for subnet in network_subnets(network_attrs):
            if ipaddress.ip_network(subnet).subnet_of(self.pool.network):
                self.pool.release(subnet)
