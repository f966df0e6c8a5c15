"""The network allocator against the real Docker engine: concurrent, race-free, reusing freed subnets."""

import asyncio
import ipaddress
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlhubspawner.docker.networks import NetworkAllocator, PoolExhausted, network_subnets

LABEL = "mlhub.test=allocator"


@pytest.fixture
def api(docker):
    """docker-py's low-level client, called off the event loop like the spawner does."""
    executor = ThreadPoolExecutor(8)

    def call(method, *args, **kwargs):
        return asyncio.wrap_future(executor.submit(getattr(docker.api, method), *args, **kwargs))

    yield call
    for network in docker.networks.list(filters={"label": LABEL}):
        network.remove()
    executor.shutdown()


@pytest.fixture
def pool():
    """A /24 of 10.250/16 that no other test run is likely to use at the same time."""
    return f"10.250.{secrets.randbelow(250)}.0/24"


def names(count):
    prefix = f"mlhubtest-{secrets.token_hex(3)}"
    return [f"{prefix}-{i}" for i in range(count)]


async def test_concurrent_users_get_distinct_subnets(api, pool):
    allocator = NetworkAllocator(api, pool, 28, logging.getLogger("test"))
    created = await asyncio.gather(*(allocator.ensure(n, {"mlhub.test": "allocator"}) for n in names(12)))
    subnets = [network_subnets(n)[0] for n in created]
    assert len(set(subnets)) == 12
    assert all(ipaddress.ip_network(s).subnet_of(ipaddress.ip_network(pool)) for s in subnets)


async def test_same_user_twice_at_once_gets_one_network(api, pool, docker):
    allocator = NetworkAllocator(api, pool, 28, logging.getLogger("test"))
    (name,) = names(1)
    a, b = await asyncio.gather(*(allocator.ensure(name, {"mlhub.test": "allocator"}) for _ in range(2)))
    assert a["Id"] == b["Id"]
    assert len(docker.networks.list(names=[name])) == 1


async def test_subnet_taken_behind_its_back_is_skipped_and_freed_ones_reused(api, pool, docker):
    allocator = NetworkAllocator(api, pool, 28, logging.getLogger("test"))
    first, second, third = names(3)
    a = await allocator.ensure(first, {"mlhub.test": "allocator"})
    # another process takes the next subnet after our listing
    base = ipaddress.ip_network(pool)
    foreign_subnet = str(list(base.subnets(new_prefix=28))[1])
    ipam = {"Driver": "default", "Config": [{"Subnet": foreign_subnet}]}
    foreign = docker.api.create_network(second + "-foreign", ipam=ipam, labels={"mlhub.test": "allocator"})
    b = await allocator.ensure(second, {"mlhub.test": "allocator"})
    assert network_subnets(b)[0] not in (network_subnets(a)[0], foreign_subnet)
    # a removed network's subnet is handed out again
    docker.api.remove_network(a["Id"])
    allocator.forget(a)
    c = await allocator.ensure(third, {"mlhub.test": "allocator"})
    assert network_subnets(c) == network_subnets(a)
    docker.api.remove_network(foreign["Id"])


async def test_full_pool_is_a_clear_error(api, pool):
    allocator = NetworkAllocator(api, pool.replace("/24", "/28"), 29, logging.getLogger("test"))
    one, two, three = names(3)
    await allocator.ensure(one, {"mlhub.test": "allocator"})
    await allocator.ensure(two, {"mlhub.test": "allocator"})
    with pytest.raises(PoolExhausted, match="no free /29 subnet"):
        await allocator.ensure(three, {"mlhub.test": "allocator"})
