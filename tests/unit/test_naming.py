"""Names and labels: DNS-safe, injective, stable."""

import itertools

import pytest

from mlhubspawner import naming


@pytest.mark.parametrize("name", ["mlhub", "a", "hub-2", "x" * 20])
def test_valid_hub_names(name):
    assert naming.validate_hub_name(name) == name


@pytest.mark.parametrize("name", ["", "MLHub", "2hub", "hub-", "-hub", "a--b", "x" * 21, "hub_1", "hub.x"])
def test_invalid_hub_names_are_refused_with_a_reason(name):
    with pytest.raises(ValueError, match="not a valid hub name"):
        naming.validate_hub_name(name)


USERS = ["alice", "Alice", "a-b", "a.b", "a@b.c", "ünï", "a b", "a-2db", "x" * 70, "ws", "-"]
SERVERS = ["", "x", "my-srv", "My Srv", "2d", "-2d"]


def test_workspace_names_are_dns_labels_and_never_collide():
    names = {}
    for user, server in itertools.product(USERS, SERVERS):
        name = naming.workspace_name("mlhub", user, server)
        assert len(name) <= 63
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        assert (user, server) == names.setdefault(name, (user, server)), f"{name} collides"


def test_network_names_are_per_user_and_distinct():
    networks = {naming.network_name("mlhub", user) for user in USERS}
    assert len(networks) == len(USERS)
    assert naming.network_name("mlhub", "alice") == "mlhub-alice"


def test_names_carry_the_hub_name_so_hubs_do_not_share_resources():
    assert naming.workspace_name("hub1", "alice", "x") != naming.workspace_name("hub2", "alice", "x")
    assert naming.workspace_name("mlhub", "alice") == "mlhub-ws-alice"
    assert naming.workspace_name("mlhub", "alice", "gpu") == "mlhub-ws-alice--gpu"
    assert naming.volume_name("mlhub", "alice", "gpu") == naming.workspace_name("mlhub", "alice", "gpu")


def test_labels_schema():
    labels = naming.resource_labels(
        "mlhub", "Al ice", "srv", component="workspace", expiration=1700000000.7, gpus=[0, 2]
    )
    assert labels == {
        "mlhub.origin": "mlhub",
        "mlhub.user": "Al ice",
        "mlhub.server_name": "srv",
        "mlhub.expiration_timestamp_seconds": "1700000000",
        "mlhub.component": "workspace",
        "mlhub.gpus": "0,2",
    }
    assert naming.resource_labels("mlhub", "bob")["mlhub.server_name"] == ""
    assert naming.resource_labels("mlhub", "bob")["mlhub.expiration_timestamp_seconds"] == "0"
    assert naming.origin_filter("mlhub", **{"mlhub.user": "bob"}) == {
        "label": ["mlhub.origin=mlhub", "mlhub.user=bob"]
    }
