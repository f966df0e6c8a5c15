"""The hub container's front network (pure parts): made or checked by name, never cleaned up."""

import pytest

from cleanup_service import planner
from cleanup_service.planner import NETWORK, Resource, Rules
from mlhubspawner.front import container


class FakeAPI:
    """The three network calls of docker-py's APIClient that ensure_front_network makes."""

    def __init__(self, networks=()):
        self.networks_by_id = {n["Id"]: n for n in networks}
        self.created = []

    def networks(self, names):
        return [n for n in self.networks_by_id.values() if any(name in n["Name"] for name in names)]

    def inspect_network(self, network_id):
        return self.networks_by_id[network_id]

    def create_network(self, name, driver, labels, check_duplicate):
        network = {"Id": f"id-{name}", "Name": name, "Labels": labels, "Internal": False}
        self.networks_by_id[network["Id"]] = network
        self.created.append((name, driver, labels))
        return {"Id": network["Id"]}


class FakeClient:
    def __init__(self, networks=()):
        self.api = FakeAPI(networks)


def test_front_network_is_made_once_with_the_hubs_name():
    client = FakeClient([{"Id": "x", "Name": "analytics-u-alice", "Labels": {}, "Internal": False}])
    made = container.ensure_front_network(client, "analytics", log=lambda m: None)
    assert made["Name"] == "analytics"
    assert client.api.created == [
        ("analytics", "bridge", {"mlhub.origin": "analytics", "mlhub.component": "front"})
    ]
    assert container.ensure_front_network(client, "analytics", log=lambda m: None)["Id"] == made["Id"]
    assert len(client.api.created) == 1


def test_a_foreign_network_of_the_hubs_name_stops_the_start():
    foreign = {"Id": "y", "Name": "analytics", "Labels": {"com.example": "x"}, "Internal": False}
    with pytest.raises(ValueError, match="docker network rm analytics"):
        container.ensure_front_network(FakeClient([foreign]), "analytics")


def test_cleanup_never_plans_the_front_network():
    front = Resource(NETWORK, "mlhub", container.front_labels("mlhub"), created=0.0)
    rules = Rules("mlhub", min_age_seconds=0)
    assert planner.plan_deleted_users({}, [front], now=1e6, rules=rules) == []
