"""Names and labels: DNS-safe, injective (across users, servers and hubs), stable."""

import itertools
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlhubspawner import naming

from old_naming import old_workspace_name, victim_and_attacker

DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


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


# ---- the takeover of issue 11: shortened names that escaping can produce -------------------


def victim_and_attacker_owners(hub, server):
    victim, attacker = victim_and_attacker(hub, server)
    return (hub, victim, server), (hub, attacker, "")


@pytest.mark.parametrize("server", ["train", ""])
def test_the_issues_attacker_no_longer_gets_the_victims_name(server):
    victim, attacker = victim_and_attacker_owners("mlhub", server)
    assert attacker != victim and old_workspace_name(*attacker) == old_workspace_name(*victim)  # today
    assert naming.workspace_name(*attacker) != naming.workspace_name(*victim)


def test_hashed_names_are_marked_and_stable():
    name = naming.workspace_name("mlhub", "first.lastname@physics.example-university.edu", "train")
    # persisted in spawner state and used as SSH host names: the scheme must not drift
    assert name == "mlhub-ws-first-2elastname-40physics----f9425e016fc63c25420284fe"
    assert naming.HASH_MARKER in name and naming.decode_workspace_name(name) == []


def test_hub_names_that_prefix_each_other_do_not_share_names():
    # readable forms would be equal: hub "a" + user "ws." and hub "a-ws" + user "2e"
    assert f"a-ws-{naming.escape('ws.')}" == f"a-ws-ws-{naming.escape('2e')}"
    assert naming.workspace_name("a", "ws.") != naming.workspace_name("a-ws", "2e")
    assert naming.network_name("a", "b.x") != naming.network_name("a-b", "2ex")
    # unambiguous readable names stay as they were (SPEC, README, existing workspaces)
    assert naming.network_name("mlhub", "Alice") == "mlhub--41lice"
    assert naming.workspace_name("mlhub", "bob", "-x") == "mlhub-ws-bob---2dx"


hubs = st.from_regex(naming.HUB_NAME_PATTERN, fullmatch=True).filter(lambda h: "--" not in h)
emails = st.builds(
    lambda a, b, c: f"{a}.{b}@{c}.example-university.edu",
    *(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=20) for _ in range(3)),
)
crafty = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.@_ Ü", min_size=1, max_size=40)
users = st.one_of(
    st.text(min_size=1, max_size=80), emails, crafty, st.sampled_from(["ws", "ws.", "2e", "-", "a"])
)
servers = st.one_of(
    st.just(""), st.text(min_size=1, max_size=40), crafty, st.sampled_from(["-x", "--", "2d"])
)


def assert_valid(name, hub):
    assert len(name) <= naming.MAX_NAME_LENGTH and DNS_LABEL.match(name), name
    assert name.startswith(f"{hub}-"), name  # sorts after the hub's front network <hub>


def lookalikes(name):
    """Tuples an attacker could pick to get ``name``: its readable decodings, and its shortened forms'."""
    found = set(naming.decode_workspace_name(name))
    for i in range(1, len(name)):  # every prefix of it, taken as a readable name
        found.update(naming.decode_workspace_name(name[:i]))
    return found


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(hubs, users, servers), min_size=2, max_size=6, unique=True))
@example([("mlhub", "ws.x", ""), ("mlhub-ws", "2ex", "")])
@example([("a", "b", "c--d"), ("a", "b--c", "d")])
def test_workspace_names_are_injective_and_valid(owners):
    names = {}
    for owner in owners:
        name = naming.workspace_name(*owner)
        assert_valid(name, owner[0])
        assert names.setdefault(name, owner) == owner, f"{owner} and {names[name]} share {name}"


@settings(max_examples=200, deadline=None)
@given(hubs, users, servers)
@example("mlhub", "firstname.lastname@physics.example-university.edu", "train")
@example("mlhub", "firstname.lastname@physics.example-university.edu", "")
def test_names_crafted_from_a_name_or_its_old_shortened_form_get_other_names(hub, user, server):
    owner = (hub, user, server)
    name = naming.workspace_name(*owner)
    for other in lookalikes(name) | lookalikes(old_workspace_name(*owner)):
        if other != owner:
            assert naming.workspace_name(*other) != name, (other, owner)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(hubs, users), min_size=2, max_size=6, unique=True))
@example([("a", "b.x"), ("a-b", "2ex")])
def test_network_names_are_injective_and_valid(owners):
    names = {}
    for owner in owners:
        name = naming.network_name(*owner)
        assert_valid(name, owner[0])
        assert names.setdefault(name, owner) == owner, f"{owner} and {names[name]} share {name}"
        for other in naming.decode_network_name(name):
            assert other == owner or naming.network_name(*other) != name


def test_owner_check_compares_hub_user_and_server():
    labels = naming.resource_labels("mlhub", "alice", "train")
    naming.check_owner("container", "x", naming.owner_of(labels), "mlhub", "alice", "train")
    naming.check_owner("network", "x", naming.owner_of(labels), "mlhub", "alice")  # any server
    for hub, user, server in [("other", "alice", "train"), ("mlhub", "bob", "train"), ("mlhub", "alice", "")]:
        with pytest.raises(naming.ForeignResourceError, match="Refusing to use container 'x'") as e:
            naming.check_owner("container", "x", naming.owner_of(labels), hub, user, server)
        assert "Nothing was changed" in str(e.value) and e.value.jupyterhub_message == str(e.value)
    with pytest.raises(naming.ForeignResourceError):  # unlabelled: not ours either
        naming.check_owner("volume", "x", naming.owner_of({}), "mlhub", "alice", "")
    # Kubernetes: raw names from the annotations
    found = naming.owner_of(
        {naming.LABEL_ORIGIN: "mlhub"}, {naming.LABEL_USER: "a.b", naming.LABEL_SERVER_NAME: ""}
    )
    naming.check_owner("pod", "x", found, "mlhub", "a.b", "")
