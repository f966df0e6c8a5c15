"""``singleuser.userNamespaces``: every user's workspaces in a namespace of their own, on the chart's RBAC.

A stand-in, not a cluster: the fake API server (``tests/fake_k8s.py``) authorizes like RBAC with the Role and
the ClusterRole that ``helm template`` renders for the hub's service account, so a call the chart does not grant
is 403 Forbidden here as on a real cluster. A workspace starts in its user's namespace, which the hub makes and
labels; the cleanup service then removes a deleted user's workspace there, and never touches a namespace that is
not the hub's, whatever the labels of the objects in it say.
"""

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cleanup_service import sweep  # noqa: E402
from cleanup_service.app import Cleaner  # noqa: E402
from cleanup_service.backends.kubernetes import KubernetesBackend  # noqa: E402
from cleanup_service.planner import Rules  # noqa: E402
from mlhubspawner import chart_values, naming  # noqa: E402

import kube_spawners  # noqa: E402
from support import REPO, helm_binary  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "hub-ns"
HUB = "mlhub"
KINDS = ("pods", "services", "persistentvolumeclaims", "networkpolicies")
log = logging.getLogger("test-user-namespaces")


def render(*sets):
    result = subprocess.run(
        [helm_binary(), "template", HUB, str(REPO / "helm/mlhub"), "--namespace", NS]
        + [arg for s in sets for arg in ("--set", s)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result


def rendered_rbac():
    """The Role's rules, the ClusterRoles' rules and the subject, with user namespaces on."""
    result = render("singleuser.userNamespaces.enabled=true")
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    role = next(doc for doc in docs if doc["kind"] == "Role")
    (subject,) = next(doc for doc in docs if doc["kind"] == "RoleBinding")["subjects"]
    cluster_rules = [rule for doc in docs if doc["kind"] == "ClusterRole" for rule in doc["rules"]]
    bindings = [doc for doc in docs if doc["kind"] == "ClusterRoleBinding"]
    assert bindings and all(b["subjects"] == [subject] for b in bindings)
    return role["rules"], cluster_rules, f"system:serviceaccount:{subject['namespace']}:{subject['name']}"


def enforce_the_charts_rbac(fake):
    rules, cluster_rules, subject = rendered_rbac()
    fake.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    fake.enforce_role(rules, NS, subject, cluster_rules)


fake = kube_spawners.fake_apiserver_fixture(NS, prepare=enforce_the_charts_rbac)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server=""):
    """A spawner configured as the chart's values configure it (``chart_values``)."""
    config = Config()
    # KubeSpawner's {hubnamespace} is the service account's namespace, in a pod only
    values = {"singleuser": {"userNamespaces": {"enabled": True, "template": "ws-{username}"}}}
    for trait, value in chart_values.spawner_settings(values).items():
        if trait in ("enable_user_namespaces", "user_namespace_template"):
            config.MLHubKubernetesSpawner[trait] = value
    config.MLHubKubernetesSpawner.max_gpus = 0  # the chart's default singleuser.gpu.max: no node reader
    spawner = kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image="mlhub-workspace:test", config=config
    )
    spawner.user_options = {}
    return spawner


async def test_the_chart_maps_the_values_and_refuses_a_shared_namespace():
    traits = chart_values.spawner_settings({"singleuser": {"userNamespaces": {"enabled": True}}})
    assert traits["enable_user_namespaces"] is True
    assert "enable_user_namespaces" not in chart_values.spawner_settings({"singleuser": {}})
    # one namespace for everyone is not what the setting is for: the schema names the field
    result = render("singleuser.userNamespaces.enabled=true", "singleuser.userNamespaces.template=shared")
    assert result.returncode != 0 and "userNamespaces.template" in result.stderr
    # off by default: no cluster-wide rights beyond the node reader
    default = [doc for doc in yaml.safe_load_all(render().stdout) if doc]
    assert not [doc for doc in default if doc["kind"] == "ClusterRole"]


async def test_a_workspace_lives_in_its_users_namespace_on_the_charts_rights_alone(fake):
    spawner = make_spawner(fake, "ada", "train")
    assert spawner.namespace == "ws-ada"
    try:
        await spawner.start()
        namespace = fake.get("namespaces", None, "ws-ada")
        assert namespace["metadata"]["labels"][naming.LABEL_ORIGIN] == HUB
        assert fake.get("pods", "ws-ada", spawner.pod_name) is not None
        assert fake.get("persistentvolumeclaims", "ws-ada", spawner.pvc_name) is not None
        await spawner.stop(now=True)
        await spawner.delete_forever()
    finally:
        assert fake.forbidden == [], fake.forbidden


async def test_cleanup_follows_a_deleted_user_into_their_namespace_and_nowhere_else(fake, monkeypatch):
    spawner = make_spawner(fake, "bob")
    await spawner.start()
    user_ns = spawner.namespace
    # someone else's namespace holding an object that claims to be the hub's (labels anyone can write)
    fake.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}})
    decoy = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "decoy",
            "labels": {
                naming.LABEL_ORIGIN: HUB,
                naming.LABEL_USER: "bob",
                naming.LABEL_COMPONENT: "workspace",
            },
        },
        "spec": {"ports": [{"port": 80}]},
    }
    fake.create("services", "team-x", decoy)
    now = {"t": time.time() + 3600}
    monkeypatch.setattr(sweep, "utcnow", lambda: now["t"])

    class NoUsers:  # bob has been deleted from the hub
        async def list_users(self):
            return []

        async def delete_server(self, user, server):
            raise AssertionError("no server of an existing user is touched")

    backend = KubernetesBackend(HUB, log, namespace=NS, api_host=fake.url, user_namespaces=True)
    rules = Rules(HUB, min_age_seconds=600, volume_grace_seconds=86400)
    try:
        cleaner = Cleaner(NoUsers(), backend, rules, log)
        first = await cleaner.run("users")
        assert any(f"/{user_ns}/" in action["name"] for action in first["actions"]), first
        now["t"] += 2 * 86400
        second = await cleaner.run("users")  # the PVC's grace period is over
        assert (first["failed"], second["failed"]) == (0, 0), (first, second)
        for _ in range(100):
            left = [obj for kind in KINDS for obj in fake.list(kind, user_ns)]
            if not left:
                break
            await asyncio.sleep(0.05)
        assert left == []
        assert fake.get("services", "team-x", "decoy") is not None
    finally:
        await backend.close()
        assert fake.forbidden == [], fake.forbidden


async def test_without_the_setting_cleanup_stays_in_the_hubs_namespace(fake):
    spawner = make_spawner(fake, "cy")
    await spawner.start()
    backend = KubernetesBackend(HUB, log, namespace=NS, api_host=fake.url)
    try:
        listed = await backend.list_resources()
        assert not [r for r in listed if r.user == "cy"]
    finally:
        await backend.close()
        await spawner.stop(now=True)
        await spawner.delete_forever()
