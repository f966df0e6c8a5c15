"""Subnet pool (pure): private ranges only, lowest free first, freed subnets reused."""

import ipaddress

import pytest

from mlhubspawner.docker.networks import (
    PoolExhausted,
    SubnetPool,
    network_gateway,
    network_subnets,
    validate_pool,
)


@pytest.mark.parametrize(
    "pool,prefix,message",
    [
        ("172.33.0.0/16", 24, "must lie inside"),
        ("8.8.0.0/16", 24, "must lie inside"),
        ("fd00::/64", 80, "must lie inside"),
        ("10.0.0.0/24", 16, "between"),
        ("10.0.0.0/24", 30, "between"),
        ("not-a-net", 24, "not a network"),
    ],
)
def test_pool_setting_is_validated(pool, prefix, message):
    with pytest.raises(ValueError, match=message):
        validate_pool(pool, prefix)


def test_allocates_lowest_free_and_reuses_released():
    pool = SubnetPool("10.1.0.0/22", 24)
    got = [str(pool.allocate()) for _ in range(4)]
    assert got == ["10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]
    with pytest.raises(PoolExhausted):
        pool.allocate()
    pool.release("10.1.2.0/24")
    assert str(pool.allocate()) == "10.1.2.0/24"


def test_foreign_networks_of_any_size_are_skipped():
    pool = SubnetPool("10.2.0.0/16", 24)
    pool.mark_taken("10.2.0.0/23")  # covers two subnets
    pool.mark_taken("10.2.3.128/25")  # part of one
    pool.mark_taken("192.168.0.0/24")  # outside: ignored
    assert [str(pool.allocate()) for _ in range(2)] == ["10.2.2.0/24", "10.2.4.0/24"]


def test_reset_after_a_fresh_listing():
    pool = SubnetPool("10.3.0.0/24", 26)
    for _ in range(4):
        pool.allocate()
    pool.reset(["10.3.0.64/26"])
    assert str(pool.allocate()) == "10.3.0.0/26"
    assert str(pool.allocate()) == "10.3.0.128/26"


def test_allocation_cost_stays_flat_for_thousands_of_networks():
    pool = SubnetPool("10.0.0.0/8", 24)
    subnets = {pool.allocate() for _ in range(5000)}
    assert len(subnets) == 5000
    assert all(s.subnet_of(ipaddress.ip_network("10.0.0.0/8")) for s in subnets)


def test_reads_docker_ipam():
    attrs = {"IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}, {"Subnet": "fd00::/64"}]}}
    assert network_subnets(attrs) == ["10.9.0.0/24"]
    assert network_gateway(attrs) == "10.9.0.1"
    assert network_subnets({"IPAM": None}) == []
