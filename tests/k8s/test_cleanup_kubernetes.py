"""The Kubernetes cleanup backend, driven through the app's sweep path, against the fake API server.

These are CONTRACT tests against ``tests/fake_k8s.py``, not tests against a cluster: they prove that
the backend lists the right objects (this hub's, in the hub's namespace), hands the planner what it
needs (raw owner names from the annotations, creation times, pod phases, the PVC grace-period mark)
and makes the right calls (deletes with background propagation and, as preconditions, the listed
uid and, for all but pods, the listed resourceVersion; merge patches of one annotation), and that
every object involved is valid against the Kubernetes 1.33 schemas. Nothing runs: there is no
kubelet, no garbage collector and no storage behind the fake's.

The objects are built with the Kubernetes spawner's own label and annotation builders
(``mlhubspawner.kubernetes.objects``), as the spawner creates them: a pod, its Service (owned by the
pod) and its PVC per workspace, one NetworkPolicy per user.
"""

import asyncio
import copy
import logging
import time
from types import SimpleNamespace

import pytest
from fake_k8s import running_fake
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from cleanup_service import sweep
from cleanup_service.app import Cleaner, CleanupService
from cleanup_service.backends import backend_class
from cleanup_service.backends.kubernetes import (
    ANNOTATION_ORPHANED_SINCE,
    KubernetesBackend,
    detect_namespace,
)
from cleanup_service.planner import CONTAINER, NETWORK, VOLUME, Resource, Rules
from mlhubspawner import naming
from mlhubspawner.kubernetes import objects

HUB = "cleanhub"
OTHER_HUB = "otherhub"
DAY = 86400
GRACE = 7 * DAY
RULES = Rules(HUB, min_age_seconds=600, volume_grace_seconds=GRACE)
LATER = 3600  # the sweeps run this long after the objects were created: older than the minimum age
KINDS = ("pods", "services", "persistentvolumeclaims", "networkpolicies")
KIND_NAME = dict(zip(KINDS, ("pod", "service", "persistentvolumeclaim", "networkpolicy"), strict=True))

log = logging.getLogger("test-cleanup-k8s")


@pytest.fixture(scope="module")
def fake():
    with running_fake(validate=True) as fake:
        yield fake
        assert not fake.rejected, fake.rejected


@pytest.fixture
def ns(fake, request):
    """A fresh namespace per test: the hub's own."""
    name = f"t{abs(hash(request.node.name)) % 10**8}"
    fake.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    fake.delete("namespaces", None, name)


@pytest.fixture
async def backend(fake, ns):
    backend = KubernetesBackend(HUB, log, namespace=ns, api_host=fake.url)
    yield backend
    await backend.close()


@pytest.fixture
def clock(monkeypatch):
    """The sweep's clock, LATER seconds ahead of the real one unless moved."""
    now = {"t": time.time() + LATER}
    monkeypatch.setattr(sweep, "utcnow", lambda: now["t"])
    return now


class StubHub:
    """The two Hub API calls a sweep makes; deleting a named server drops it from the listing."""

    def __init__(self, servers):
        # {user: {server: expiration}}
        self.servers = {user: dict(s) for user, s in servers.items()}
        self.deleted = []
        self.calls = 0

    async def list_users(self):
        return [
            {
                "name": user,
                "servers": {
                    name: {"ready": True, "state": {"mlhub": {"expiration": expiration}}}
                    for name, expiration in servers.items()
                },
            }
            for user, servers in copy.deepcopy(self.servers).items()
        ]

    async def delete_server(self, user, server):
        self.deleted.append((user, server))
        if server:
            self.servers[user].pop(server, None)


def meta(hub, user, server, component, expiration=0, name=None):
    return {
        "name": name or naming.workspace_name(hub, user, server),
        "labels": objects.owner_labels(hub, user, server, component=component, expiration=expiration),
        "annotations": objects.owner_annotations(user, server, expiration),
    }


def create_workspace(fake, ns, user, server="", hub=HUB, expiration=0, volume=True):
    """A workspace as the spawner leaves it: pod, Service owned by the pod, PVC."""
    pod = fake.create(
        "pods",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta(hub, user, server, naming.COMPONENT_WORKSPACE, expiration),
            "spec": {"containers": [{"name": "notebook", "image": "mlhub-workspace:test"}]},
        },
    )
    service_meta = meta(hub, user, server, naming.COMPONENT_WORKSPACE, expiration)
    service_meta["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    ]
    fake.create(
        "services",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": service_meta,
            "spec": {
                "selector": {naming.LABEL_ORIGIN: hub},
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
            },
        },
    )
    if volume:
        fake.create(
            "persistentvolumeclaims",
            ns,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": meta(hub, user, server, naming.COMPONENT_VOLUME),
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
        )
    return pod["metadata"]["name"]


def create_policy(fake, ns, user, hub=HUB):
    body = objects.make_network_policy(name=naming.network_name(hub, user), hub_name=hub, username=user)
    return fake.create("networkpolicies", ns, body)["metadata"]["name"]


def snapshot(fake, ns, hub=HUB):
    """``{kind/name: (uid, annotations)}`` of every object of ``hub`` in ``ns``."""
    found = {}
    for kind in KINDS:
        for obj in fake.list(kind, ns, label_selector=f"{naming.LABEL_ORIGIN}={hub}"):
            found[f"{kind}/{obj['metadata']['name']}"] = (
                obj["metadata"]["uid"],
                obj["metadata"].get("annotations") or {},
            )
    return found


def of_user(found, user, hub=HUB):
    """The entries of ``found`` that belong to ``user``'s default and ``gpu`` workspaces and policy."""
    names = {naming.workspace_name(hub, user), naming.workspace_name(hub, user, "gpu")}
    names.add(naming.network_name(hub, user))
    return {k: v for k, v in found.items() if k.split("/", 1)[1] in names}


async def settle(fake, ns, predicate, timeout=10):
    """Wait until ``predicate(snapshot)`` holds (pods leave after their short grace period)."""
    deadline = time.monotonic() + timeout
    while True:
        found = snapshot(fake, ns)
        if predicate(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never settled: {sorted(found)}")
        await asyncio.sleep(0.05)


async def wait_phase(fake, ns, name, phases=("Running",), timeout=10):
    deadline = time.monotonic() + timeout
    while (fake.get("pods", ns, name) or {}).get("status", {}).get("phase") not in phases:
        assert time.monotonic() < deadline, fake.get("pods", ns, name)
        await asyncio.sleep(0.05)


def acted(report, action=None):
    return {(a["kind"], a["name"]) for a in report["actions"] if action in (None, a["action"])}


# ---- the sweeps ---------------------------------------------------------------------------------------


async def test_users_sweep_removes_a_deleted_users_workspace_and_its_pvc_only_after_the_grace_period(
    fake, ns, backend, clock
):
    for user in ("alice", "bob", "Dora.Lee", "Eve.X"):
        create_workspace(fake, ns, user)
        create_workspace(fake, ns, user, "gpu")
        create_policy(fake, ns, user)
    # another hub in the same namespace, and this hub's label in another namespace: never touched
    create_workspace(fake, ns, "bob", hub=OTHER_HUB)
    create_policy(fake, ns, "bob", hub=OTHER_HUB)
    create_workspace(fake, "default", "bob", "elsewhere")
    others = snapshot(fake, ns, OTHER_HUB), snapshot(fake, "default")
    await wait_phase(fake, ns, naming.workspace_name(HUB, "bob"))
    before = snapshot(fake, ns)
    hub = StubHub({"alice": {"": 0, "gpu": 0}, "Dora.Lee": {"": 0, "gpu": 0}})
    cleaner = Cleaner(hub, backend, RULES, log)

    # the dry run is exactly what the sweep then does, and changes nothing
    report = await cleaner.report("users")
    assert snapshot(fake, ns) == before
    gone = {"bob": "bob", "Eve.X": "Eve.X"}
    expected_removed = set()
    expected_marked = set()
    for user in gone:
        for server in ("", "gpu"):
            name = naming.workspace_name(HUB, user, server)
            expected_removed |= {(CONTAINER, f"pod/{name}"), (NETWORK, f"service/{name}")}
            expected_marked.add((VOLUME, f"persistentvolumeclaim/{name}"))
        expected_removed.add((NETWORK, f"networkpolicy/{naming.network_name(HUB, user)}"))
    assert acted(report, "remove") == expected_removed
    assert acted(report, "mark_orphaned") == expected_marked
    assert acted(report) == expected_removed | expected_marked
    assert {a["user"] for a in report["actions"]} == {"bob", "Eve.X"}  # raw names, from the annotations

    result = await cleaner.run("users")
    assert (result["done"], result["failed"]) == (len(expected_removed | expected_marked), 0)
    marked_at = clock["t"]
    gone_pods = {f"pods/{naming.workspace_name(HUB, user, s)}" for user in gone for s in ("", "gpu")}
    after = await settle(fake, ns, lambda f: not gone_pods & set(f))  # every removed pod, not only bob's
    for user in ("alice", "Dora.Lee"):  # existing users: every object as it was
        assert of_user(after, user) == of_user(before, user)
    for user in gone:
        left = of_user(after, user)
        assert set(left) == {
            f"persistentvolumeclaims/{naming.workspace_name(HUB, user, s)}" for s in ("", "gpu")
        }
        for key, (uid, annotations) in left.items():
            assert uid == before[key][0]
            assert float(annotations[ANNOTATION_ORPHANED_SINCE]) == pytest.approx(marked_at, abs=0.01)
    assert (snapshot(fake, ns, OTHER_HUB), snapshot(fake, "default")) == others

    # a day later: kept, and the mark is not moved
    clock["t"] += DAY
    result = await cleaner.run("users")
    assert acted(result, "keep") == expected_marked and acted(result) == expected_marked
    assert snapshot(fake, ns) == after

    # the grace period is over: the PVCs go, nothing else
    clock["t"] = marked_at + GRACE + 1
    result = await cleaner.run("users")
    assert acted(result) == expected_marked and acted(result, "remove") == expected_marked
    assert result["failed"] == 0
    final = snapshot(fake, ns)
    assert final == {
        k: v for k, v in before.items() if k in of_user(before, "alice") or k in of_user(before, "Dora.Lee")
    }
    assert (snapshot(fake, ns, OTHER_HUB), snapshot(fake, "default")) == others


async def test_expired_sweep_removes_the_pod_and_keeps_the_pvc(fake, ns, backend, clock):
    now = clock["t"]
    create_workspace(fake, ns, "alice", "gpu", expiration=now - 10)
    create_workspace(fake, ns, "alice", "", expiration=now + DAY)
    create_policy(fake, ns, "alice")
    before = snapshot(fake, ns)
    hub = StubHub({"alice": {"gpu": now - 10, "": now + DAY}})
    cleaner = Cleaner(hub, backend, RULES, log)

    gpu = naming.workspace_name(HUB, "alice", "gpu")
    result = await cleaner.run("expired")
    assert hub.deleted == [("alice", "gpu")]
    assert {(a["action"], a["kind"], a.get("name") or a.get("server")) for a in result["actions"]} == {
        ("delete_server", "server", "gpu"),
        ("remove", CONTAINER, f"pod/{gpu}"),
    }
    after = await settle(fake, ns, lambda f: f"pods/{gpu}" not in f)
    # the Service went with its pod (owner reference); the PVC, the other workspace and the policy stay
    assert set(before) - set(after) == {f"pods/{gpu}", f"services/{gpu}"}
    assert all(after[k] == before[k] for k in after)

    # the server is gone from the hub now: its PVC starts its grace period, the rest stays
    result = await cleaner.run("users")
    assert acted(result) == {(VOLUME, f"persistentvolumeclaim/{gpu}")}
    assert acted(result, "mark_orphaned") == acted(result)
    pvc = fake.get("persistentvolumeclaims", ns, gpu)
    assert ANNOTATION_ORPHANED_SINCE in pvc["metadata"]["annotations"]


async def test_a_stopped_pod_of_a_deleted_server_goes_a_running_one_stays(fake, ns, backend, clock):
    old, live = naming.workspace_name(HUB, "carol", "old"), naming.workspace_name(HUB, "carol", "live")
    fake.pod_exit = lambda pod: 0 if pod["metadata"]["name"] == old else None
    try:
        create_workspace(fake, ns, "carol", "old", volume=False)
        create_workspace(fake, ns, "carol", "live", volume=False)
        await wait_phase(fake, ns, old, ("Succeeded",))
        await wait_phase(fake, ns, live)
    finally:
        fake.pod_exit = lambda pod: None
    cleaner = Cleaner(StubHub({"carol": {"": 0}}), backend, RULES, log)
    result = await cleaner.run("users")
    assert acted(result) == {(CONTAINER, f"pod/{old}")}
    await settle(fake, ns, lambda f: f"pods/{old}" not in f and f"pods/{live}" in f)


async def test_a_pvc_whose_server_is_back_loses_its_mark(fake, ns, backend, clock):
    create_workspace(fake, ns, "alice", "a")
    name = naming.workspace_name(HUB, "alice", "a")
    resources = await backend.list_resources()
    (pvc,) = [r for r in resources if r.kind == VOLUME]
    await backend.mark_orphaned(pvc, 1234.5)
    assert fake.get("persistentvolumeclaims", ns, name)["metadata"]["annotations"][
        ANNOTATION_ORPHANED_SINCE
    ] == ("1234.500")
    (pvc,) = [r for r in await backend.list_resources() if r.kind == VOLUME]
    assert pvc.orphaned_since == 1234.5

    result = await Cleaner(StubHub({"alice": {"a": 0}}), backend, RULES, log).run("users")
    assert acted(result, "unmark") == {(VOLUME, f"persistentvolumeclaim/{name}")}
    annotations = fake.get("persistentvolumeclaims", ns, name)["metadata"]["annotations"]
    assert ANNOTATION_ORPHANED_SINCE not in annotations
    assert annotations[naming.LABEL_USER] == "alice"  # the other annotations stay


@pytest.mark.parametrize("value", ["soon", "nan", "inf"])
async def test_an_unreadable_mark_starts_the_grace_period_again(fake, ns, backend, clock, value):
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(HUB, "bob", "", naming.COMPONENT_VOLUME),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    body["metadata"]["annotations"][ANNOTATION_ORPHANED_SINCE] = value
    name = fake.create("persistentvolumeclaims", ns, body)["metadata"]["name"]
    (pvc,) = await backend.list_resources()
    assert pvc.orphaned_since is None
    result = await Cleaner(StubHub({}), backend, RULES, log).run("users")
    assert acted(result, "mark_orphaned") == {(VOLUME, f"persistentvolumeclaim/{name}")}
    annotations = fake.get("persistentvolumeclaims", ns, name)["metadata"]["annotations"]
    assert float(annotations[ANNOTATION_ORPHANED_SINCE]) == pytest.approx(clock["t"], abs=0.01)


async def test_young_objects_are_left_alone(fake, ns, backend, clock):
    create_workspace(fake, ns, "bob")
    create_policy(fake, ns, "bob")
    before = snapshot(fake, ns)
    clock["t"] = time.time()  # just created
    result = await Cleaner(StubHub({}), backend, RULES, log).run("users")
    assert result["actions"] == []
    assert snapshot(fake, ns) == before


async def test_the_policy_of_a_deleted_user_stays_while_a_young_pod_of_theirs_is_there(
    fake, ns, backend, clock
):
    policy = f"networkpolicy/{create_policy(fake, ns, 'bob')}"
    await asyncio.sleep(2.1)  # the API server stamps whole seconds
    pod = f"pod/{create_workspace(fake, ns, 'bob', volume=False)}"
    created = {r.name: r.created for r in await backend.list_resources()}
    clock["t"] = created[pod] + 0.5
    rules = Rules(HUB, min_age_seconds=1, volume_grace_seconds=GRACE)
    assert clock["t"] - created[policy] > 1
    result = await Cleaner(StubHub({}), backend, rules, log).run("users")
    assert acted(result) == {(NETWORK, policy)} and acted(result, "keep") == {(NETWORK, policy)}


async def test_objects_whose_raw_owner_is_unknown_are_never_listed(fake, ns, backend):
    # an escaped (hashed) label and no annotation: the raw name cannot be known
    labels = objects.owner_labels(HUB, "Dora.Lee", "", component=naming.COMPONENT_WORKSPACE)
    fake.create(
        "pods",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "no-annotations", "labels": labels},
            "spec": {"containers": [{"name": "notebook", "image": "x"}]},
        },
    )
    # a plain label value is its own raw value
    labels = objects.owner_labels(HUB, "frank", "", component=naming.COMPONENT_WORKSPACE)
    fake.create(
        "pods",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "plain", "labels": labels},
            "spec": {"containers": [{"name": "notebook", "image": "x"}]},
        },
    )
    resources = await backend.list_resources()
    assert [(r.name, r.user, r.server) for r in resources] == [("pod/plain", "frank", "")]


async def test_resources_carry_what_the_planner_needs(fake, ns, backend):
    create_workspace(fake, ns, "Dora.Lee", "Big GPU", expiration=1_900_000_000)
    create_policy(fake, ns, "Dora.Lee")
    name = naming.workspace_name(HUB, "Dora.Lee", "Big GPU")
    await wait_phase(fake, ns, name)
    resources = {r.name: r for r in await backend.list_resources()}
    created = fake.get("pods", ns, name)["metadata"]["creationTimestamp"]
    pod = resources[f"pod/{name}"]
    assert (pod.kind, pod.user, pod.server, pod.running) == (CONTAINER, "Dora.Lee", "Big GPU", True)
    for key, (uid, _) in snapshot(fake, ns).items():  # removal goes by the listed uid
        kind, _, object_name = key.partition("/")
        assert resources[f"{KIND_NAME[kind]}/{object_name}"].id == uid
    assert abs(pod.created - time.time()) < 60 and created
    assert pod.labels[naming.LABEL_ORIGIN] == HUB
    assert pod.labels[naming.LABEL_EXPIRATION] == "1900000000"
    assert resources[f"persistentvolumeclaim/{name}"].kind == VOLUME
    assert resources[f"persistentvolumeclaim/{name}"].orphaned_since is None
    assert resources[f"service/{name}"].kind == NETWORK
    policy = resources[f"networkpolicy/{naming.network_name(HUB, 'Dora.Lee')}"]
    assert (policy.kind, policy.user, policy.server) == (NETWORK, "Dora.Lee", "")


# ---- removal and marking --------------------------------------------------------------------------------


async def test_removing_what_is_already_gone_or_was_recreated_is_not_an_error(fake, ns, backend):
    create_workspace(fake, ns, "bob")
    name = naming.workspace_name(HUB, "bob")
    resources = {r.name: r for r in await backend.list_resources()}
    fake.delete("persistentvolumeclaims", ns, name)
    await backend.remove(resources[f"persistentvolumeclaim/{name}"])  # 404: already gone

    # the pod was deleted and created again under the same name since the listing: left alone
    fake.delete("pods", ns, name)
    create_workspace(fake, ns, "bob", volume=False)
    new_uid = fake.get("pods", ns, name)["metadata"]["uid"]
    await backend.remove(resources[f"pod/{name}"])
    recreated = fake.get("pods", ns, name)["metadata"]
    assert recreated["uid"] == new_uid and "deletionTimestamp" not in recreated

    # the current listing's object is removed, with its dependents in the background
    resources = {r.name: r for r in await backend.list_resources()}
    await backend.remove(resources[f"pod/{name}"])
    await settle(fake, ns, lambda f: f"pods/{name}" not in f and f"services/{name}" not in f)


async def test_a_namesake_recreated_since_the_listing_survives_the_sweep(fake, ns, backend, clock, caplog):
    """A deleted user signs up again and starts a workspace under the same names while a sweep runs.

    Between the sweep's listing and its removals a dry run lists the namespace (the report is not
    serialized with sweeps) while the old objects are gone: the sweep must still delete only the objects
    it listed, by their uid, and leave the new ones (same names, new uids) alone.
    """
    name = create_workspace(fake, ns, "bob")
    policy = create_policy(fake, ns, "bob")
    pvc = next(r for r in await backend.list_resources() if r.name == f"persistentvolumeclaim/{name}")
    await backend.mark_orphaned(pvc, clock["t"] - GRACE - 1)  # its grace period is over
    cleaner = Cleaner(StubHub({}), backend, RULES, log)
    original = backend.list_resources
    recreated, raced = {}, []

    async def listing_then_race():
        listed = await original()
        if not raced:
            raced.append(True)
            for kind in ("services", "persistentvolumeclaims", "networkpolicies", "pods"):
                fake.delete(kind, ns, policy if kind == "networkpolicies" else name)
            await cleaner.report("users")  # a dry run in between: its listing sees none of them
            create_workspace(fake, ns, "bob")
            create_policy(fake, ns, "bob")
            recreated.update(snapshot(fake, ns))
        return listed

    backend.list_resources = listing_then_race
    with caplog.at_level(logging.INFO, logger=log.name):
        result = await cleaner.run("users")
    planned = {
        (CONTAINER, f"pod/{name}"),
        (NETWORK, f"service/{name}"),
        (NETWORK, f"networkpolicy/{policy}"),
        (VOLUME, f"persistentvolumeclaim/{name}"),
    }
    assert acted(result, "remove") == planned
    assert (result["done"], result["failed"]) == (4, 0)  # left alone is not an error
    await asyncio.sleep(0.3)  # a deleted pod would be gone by now (its grace period is 0.1 s)
    assert set(recreated) == {
        f"pods/{name}",
        f"services/{name}",
        f"persistentvolumeclaims/{name}",
        f"networkpolicies/{policy}",
    }
    assert snapshot(fake, ns) == recreated  # the new objects, untouched
    assert all(
        "deletionTimestamp" not in fake.get(k.split("/")[0], ns, k.split("/")[1])["metadata"]
        for k in recreated
    )
    said = [r.getMessage() for r in caplog.records if "left alone" in r.getMessage()]
    for _, listed in planned:
        assert any(m.startswith(f"{listed} was re-created since the listing") for m in said), (listed, said)


async def test_an_object_changed_since_the_listing_is_left_alone(fake, ns, backend, caplog):
    """A user's NetworkPolicy taken over again by their new workspace (replaced with the current settings)
    and a PVC whose mark changed keep their uid but not their resourceVersion: left alone. A pod's status
    changes all the time (the kubelet): its uid alone decides.
    """
    name = create_workspace(fake, ns, "bob")
    policy = create_policy(fake, ns, "bob")
    resources = {r.name: r for r in await backend.list_resources()}
    body = objects.make_network_policy(name=policy, hub_name=HUB, username="bob", hub_ports=(8081, 8082))
    # the spawner replaces the policy of its user with the current settings (_ensure_network_policy)
    core = client.CoreV1Api(await backend._client())
    networking = client.NetworkingV1Api(await backend._client())
    await networking.replace_namespaced_network_policy(policy, ns, body)
    await core.patch_namespaced_persistent_volume_claim(
        name,
        ns,
        {"metadata": {"annotations": {"example.org/touched": "yes"}}},
        _content_type="application/merge-patch+json",
    )
    await wait_phase(fake, ns, name)  # the pod's status changed since the listing
    before = snapshot(fake, ns)
    assert before[f"networkpolicies/{policy}"][0] == resources[f"networkpolicy/{policy}"].id
    with caplog.at_level(logging.INFO, logger=log.name):
        for key in (f"networkpolicy/{policy}", f"persistentvolumeclaim/{name}", f"pod/{name}"):
            await backend.remove(resources[key])
    after = await settle(fake, ns, lambda f: f"pods/{name}" not in f and f"services/{name}" not in f)
    # the pod went (with its Service, by owner reference); the policy and the PVC are as they were
    assert after == {k: v for k, v in before.items() if k not in (f"pods/{name}", f"services/{name}")}
    said = [r.getMessage() for r in caplog.records]
    for key in (f"networkpolicy/{policy}", f"persistentvolumeclaim/{name}"):
        assert any(m.startswith(f"{key} changed since the listing") and "left alone" in m for m in said), said


async def test_a_refused_delete_is_left_alone_even_when_it_cannot_be_read_back(
    fake, ns, backend, monkeypatch, caplog
):
    """The chart's Role may not grant 'get' on a kind: the 409's own message then says why."""
    policy = create_policy(fake, ns, "bob")
    listed = next(r for r in await backend.list_resources() if r.name == f"networkpolicy/{policy}")
    fake.delete("networkpolicies", ns, policy)
    uid = fake.get("networkpolicies", ns, create_policy(fake, ns, "bob"))["metadata"]["uid"]

    async def forbidden(self, name, namespace, **kwargs):
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(client.NetworkingV1Api, "read_namespaced_network_policy", forbidden)
    with caplog.at_level(logging.INFO, logger=log.name):
        await backend.remove(listed)
    assert fake.get("networkpolicies", ns, policy)["metadata"]["uid"] == uid
    said = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"networkpolicy/{policy} is not the object listed") and "left alone" in m for m in said
    )


async def test_a_resource_listed_without_its_uid_is_never_removed_by_name(fake, ns, backend):
    name = create_workspace(fake, ns, "bob", volume=False)
    listed = next(r for r in await backend.list_resources() if r.name == f"pod/{name}")
    uid = fake.get("pods", ns, name)["metadata"]["uid"]
    assert listed.id == uid
    # e.g. built by hand, or by another backend: no uid
    nameless = Resource(listed.kind, listed.name, listed.labels, listed.created, running=listed.running)
    with pytest.raises(ValueError, match="without its uid"):
        await backend.remove(nameless)
    await asyncio.sleep(0.3)
    assert fake.get("pods", ns, name)["metadata"]["uid"] == uid


async def test_one_failing_item_does_not_stop_the_sweep(fake, ns, backend, clock, monkeypatch):
    for user in ("bob", "eve"):
        create_workspace(fake, ns, user, volume=False)
    failing = naming.workspace_name(HUB, "bob")
    original = client.CoreV1Api.delete_namespaced_pod

    def delete(self, name, namespace, **kwargs):
        if name == failing:
            raise ApiException(status=500, reason="Internal Server Error")
        return original(self, name, namespace, **kwargs)

    monkeypatch.setattr(client.CoreV1Api, "delete_namespaced_pod", delete)
    cleaner = Cleaner(StubHub({}), backend, RULES, log)
    result = await cleaner.run("users")
    assert result["failed"] == 1 and result["done"] == 3
    assert failing in result["errors"][0] and "HTTP 500" in result["errors"][0]
    assert cleaner.status.last_error == result["errors"][0]
    eve = naming.workspace_name(HUB, "eve")
    await settle(fake, ns, lambda f: f"pods/{eve}" not in f and f"pods/{failing}" in f)

    monkeypatch.setattr(client.CoreV1Api, "delete_namespaced_pod", original)
    result = await cleaner.run("users")
    assert result["failed"] == 0
    await settle(fake, ns, lambda f: not f)


async def test_listing_follows_continue_tokens(backend):
    """The fake returns whole lists; a real API server pages them."""
    pages = {None: (["a", "b"], "next"), "next": (["c"], None)}
    calls = []

    async def list_page(namespace, **kwargs):
        calls.append((namespace, kwargs))
        items, token = pages[kwargs.get("_continue")]
        return SimpleNamespace(items=items, metadata=SimpleNamespace(_continue=token))

    assert await backend._list("pod", list_page) == ["a", "b", "c"]
    selector = {"label_selector": f"{naming.LABEL_ORIGIN}={HUB}", "limit": backend.page_size}
    assert calls == [(backend.namespace, selector), (backend.namespace, {**selector, "_continue": "next"})]


async def test_only_pvcs_are_marked(backend):
    with pytest.raises(ValueError, match="only PVCs"):
        await backend.mark_orphaned(Resource(CONTAINER, "pod/x", {}, 0.0), 1.0)
    with pytest.raises(ValueError, match="not a resource"):
        await backend.remove(Resource(VOLUME, "pod/x", {}, 0.0))


# ---- namespace and client configuration ------------------------------------------------------------------


def test_namespace_order(tmp_path, fake):
    sa = tmp_path / "namespace"
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="from-kubeconfig")
    env = {"HUB_NAME": "not-a-namespace", "KUBECONFIG": kubeconfig, "POD_NAMESPACE": "from-env"}
    sa.write_text("from-file\n")
    assert detect_namespace(env, sa) == "from-env"
    del env["POD_NAMESPACE"]
    assert detect_namespace(env, sa) == "from-file"
    sa.write_text("  \n")  # empty: next source
    assert detect_namespace(env, sa) == "from-kubeconfig"
    assert detect_namespace(env, tmp_path / "missing") == "from-kubeconfig"
    # a list of kubeconfigs, the first without the file
    env["KUBECONFIG"] = f"{tmp_path / 'missing.yaml'}:{kubeconfig}"
    assert detect_namespace(env, sa) == "from-kubeconfig"
    (tmp_path / "broken").write_text(": : [")
    env["KUBECONFIG"] = str(tmp_path / "broken")
    assert detect_namespace(env, sa) == "default"
    env["KUBECONFIG"] = str(tmp_path / "missing.yaml")
    assert detect_namespace(env, sa) == "default"
    assert detect_namespace({"HUB_NAME": "mlhub", "KUBECONFIG": "/nonexistent"}, "/nonexistent") == "default"


def test_invalid_namespace_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a valid Kubernetes namespace"):
        detect_namespace({"POD_NAMESPACE": "Not_Valid"}, tmp_path / "missing")
    with pytest.raises(ValueError, match="not a valid Kubernetes namespace"):
        KubernetesBackend(HUB, log, namespace="-bad")


async def test_kubeconfig_gives_the_server_and_the_namespace(fake, ns, tmp_path, monkeypatch):
    create_workspace(fake, ns, "bob", volume=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "config", namespace=ns))
    monkeypatch.setattr("cleanup_service.backends.kubernetes.SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "no"))
    backend = KubernetesBackend(HUB, log, state_path=tmp_path / "unused.json")
    try:
        assert backend.namespace == ns
        names = {r.name for r in await backend.list_resources()}
        assert names == {
            f"pod/{naming.workspace_name(HUB, 'bob')}",
            f"service/{naming.workspace_name(HUB, 'bob')}",
        }
    finally:
        await backend.close()
    assert not (tmp_path / "unused.json").exists()


async def test_in_cluster_configuration_when_kubernetes_service_host_is_set(fake, ns, monkeypatch):
    calls = []

    def incluster(client_configuration=None, **kwargs):
        calls.append(kwargs)
        client_configuration.host = fake.url

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr(config, "load_incluster_config", incluster)
    backend = KubernetesBackend(HUB, log, namespace=ns)
    try:
        assert await backend.list_resources() == []
    finally:
        await backend.close()
    assert calls == [{}]


async def test_the_app_builds_the_kubernetes_backend_in_the_pods_namespace(monkeypatch, tmp_path):
    assert backend_class("k8s") is KubernetesBackend
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:9/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "x")
    monkeypatch.setenv("POD_NAMESPACE", "hub-ns")
    monkeypatch.setenv("HUB_NAME", HUB)
    monkeypatch.setenv("MLHUB_DATA_DIR", str(tmp_path))
    service = CleanupService(execution_mode="kubernetes")
    cleaner = service.build()
    try:
        assert isinstance(cleaner.backend, KubernetesBackend)
        assert (cleaner.backend.namespace, cleaner.backend.hub_name) == ("hub-ns", HUB)
    finally:
        await cleaner.backend.close()
