"""The cleanup planner (pure): what goes, what stays, and why."""

from cleanup_service import planner
from cleanup_service.planner import CONTAINER, NETWORK, VOLUME, HubServer, Resource, Rules
from cleanup_service.sweep import hub_view

NOW = 1_000_000.0
DAY = 86400
RULES = Rules("mlhub", min_age_seconds=600, volume_grace_seconds=7 * DAY)


def res(kind, user, server="", hub="mlhub", age=3600, running=False, orphaned_since=None, name=None):
    labels = {"mlhub.origin": hub, "mlhub.user": user, "mlhub.server_name": server}
    return Resource(
        kind, name or f"{kind}-{user}-{server}", labels, NOW - age, running, orphaned_since=orphaned_since
    )


def plan(users, resources):
    return {(a.kind, a.resource.name) for a in planner.plan_deleted_users(users, resources, NOW, RULES)}


def test_deleted_users_lose_containers_and_networks_volumes_get_a_grace_period():
    resources = [res(CONTAINER, "gone", running=True), res(NETWORK, "gone"), res(VOLUME, "gone")]
    assert plan({"alice": {""}}, resources) == {
        ("remove", "container-gone-"),
        ("remove", "network-gone-"),
        ("mark_orphaned", "volume-gone-"),
    }


def test_volume_removed_only_after_its_grace_period():
    fresh = res(VOLUME, "gone", orphaned_since=NOW - DAY)
    old = res(VOLUME, "gone", name="old", orphaned_since=NOW - 8 * DAY)
    assert plan({}, [fresh, old]) == {("keep", "volume-gone-"), ("remove", "old")}


def test_existing_users_and_servers_are_never_touched():
    resources = [res(CONTAINER, "alice", "a"), res(NETWORK, "alice"), res(VOLUME, "alice", "a")]
    assert plan({"alice": {"", "a"}}, resources) == set()


def test_stopped_container_of_a_deleted_server_goes_a_running_one_stays():
    stopped = res(CONTAINER, "alice", "old")
    running = res(CONTAINER, "alice", "live", running=True, name="live")
    assert plan({"alice": {""}}, [stopped, running]) == {("remove", "container-alice-old")}


def test_a_network_stays_while_a_young_container_is_still_on_it():
    young = res(CONTAINER, "gone", age=60)
    assert plan({}, [young, res(NETWORK, "gone")]) == {("keep", "network-gone-")}


def test_other_hubs_and_young_resources_are_skipped():
    other = res(CONTAINER, "gone", hub="otherhub")
    young = res(CONTAINER, "gone", age=60, name="young")
    assert plan({}, [other, young]) == set()


def test_a_volume_with_an_owner_again_loses_its_mark():
    assert plan({"alice": {"a"}}, [res(VOLUME, "alice", "a", orphaned_since=NOW - DAY)]) == {
        ("unmark", "volume-alice-a")
    }


def test_expired_servers_are_deleted_and_their_containers_removed():
    servers = [
        HubServer("alice", "old", expiration=NOW - 10),
        HubServer("alice", "", expiration=NOW - 10),
        HubServer("alice", "new", expiration=NOW + 10),
        HubServer("bob", "never", expiration=0),
    ]
    resources = [res(CONTAINER, "alice", "old"), res(CONTAINER, "alice", "new"), res(CONTAINER, "alice", "")]
    actions = planner.plan_expired(servers, resources, NOW, RULES)
    assert {(a.kind, a.server.name if a.server else a.resource.name) for a in actions} == {
        ("delete_server", "old"),
        ("delete_server", ""),
        ("remove", "container-alice-old"),
        ("remove", "container-alice-"),
    }
    report = planner.as_report("expired", actions, NOW)
    assert report["counts"] == {"delete_server:server": 2, "remove:container": 2}
    assert all(a["reason"] == "expired 10 s ago" for a in report["actions"])


def test_hub_view_reads_expirations_from_server_state():
    users, servers = hub_view(
        [
            {"name": "alice", "servers": {"": {"ready": True, "state": {"mlhub": {"expiration": 5.0}}}}},
            {"name": "bob", "servers": {}},
        ]
    )
    assert users == {"alice": {""}, "bob": set()}
    assert servers == [HubServer("alice", "", 5.0, True)]
