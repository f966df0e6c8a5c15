"""Issue 11, item 1 on Kubernetes, against the in-process fake kube-apiserver (``tests/fake_k8s.py``).

A stand-in, not a cluster: it proves which API calls MLHubKubernetesSpawner (over the unmodified
KubeSpawner) makes when a pod, PVC, Service or NetworkPolicy of another owner sits under the exact
name it will use: refuse, and leave the object as it is. The takeover of the issue (an attacker
named after a victim's old shortened name) is replayed with a copy of the old naming algorithm.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402
from mlhubspawner.kubernetes import objects  # noqa: E402

import kube_spawners  # noqa: E402
from old_naming import victim_and_attacker  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8snames"
NS = "default"


fake = kube_spawners.fake_apiserver_fixture(NS)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server):
    spawner = kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image="mlhub-workspace:test"
    )
    spawner.user_options = {}
    return spawner


def uid_and_version(fake, resource, name):
    obj = fake.get(resource, NS, name)
    return obj and (obj["metadata"]["uid"], obj["metadata"]["resourceVersion"])


def fingerprint(fake, resource, name):
    """What an owner cares about (the fake scheduler and kubelet update a new pod meanwhile)."""
    obj = fake.get(resource, NS, name)
    meta, spec = obj["metadata"], dict(obj.get("spec") or {})
    spec.pop("nodeName", None)
    return meta["uid"], meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"), spec


async def test_an_attacker_named_after_a_victims_shortened_name_gets_objects_of_their_own(fake):
    victim_name, attacker_name = victim_and_attacker(HUB, "train")
    victim = make_spawner(fake, victim_name, "train")
    await victim.start()
    pod, pvc = victim.pod_name, victim.pvc_name
    before = {r: uid_and_version(fake, r, pod) for r in ("pods", "services")}
    pvc_before = uid_and_version(fake, "persistentvolumeclaims", pvc)

    attacker = make_spawner(fake, attacker_name, "")
    try:
        await attacker.start()
        # the victim's pod, Service and PVC are untouched; the attacker has objects of their own
        assert {r: uid_and_version(fake, r, pod) for r in ("pods", "services")} == before
        assert uid_and_version(fake, "persistentvolumeclaims", pvc) == pvc_before
        assert fake.get("pods", NS, pod)["metadata"]["annotations"][naming.LABEL_USER] == victim_name
        assert attacker.pod_name != pod and attacker.pvc_name != pvc
        theirs = fake.get("pods", NS, attacker.pod_name)
        assert kube_spawners.claims(theirs) == [attacker.pvc_name]
        assert attacker.network_policy_name != victim.network_policy_name
    finally:
        await attacker.stop(now=True)
        await victim.stop(now=True)


def foreign_object(resource, name, other, server):
    """An object of user ``other`` of the same hub, under ``name``."""
    component = (
        naming.COMPONENT_VOLUME if resource == "persistentvolumeclaims" else naming.COMPONENT_WORKSPACE
    )
    metadata = {
        "name": name,
        "labels": objects.owner_labels(HUB, other, server, component),
        "annotations": objects.owner_annotations(other, server),
    }
    if resource == "pods":
        spec = {"containers": [{"name": "notebook", "image": "someone-elses:1"}]}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if resource == "persistentvolumeclaims":
        spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}
    if resource == "services":
        spec = {"ports": [{"port": 8080}], "selector": {naming.LABEL_ORIGIN: HUB}}
        return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}
    return objects.make_network_policy(name=name, hub_name=HUB, username=other)


KINDS = {
    "pods": "pod",
    "persistentvolumeclaims": "persistent volume claim",
    "services": "service",
    "networkpolicies": "network policy",
}


@pytest.mark.parametrize("resource", list(KINDS))
async def test_a_foreign_object_under_the_spawners_name_is_refused_and_untouched(fake, resource):
    user, server = f"squat-{resource}", "w"
    spawner = make_spawner(fake, user, server)
    name = spawner.network_policy_name if resource == "networkpolicies" else spawner.pod_name
    if resource == "persistentvolumeclaims":
        name = spawner.pvc_name
    fake.create(resource, NS, foreign_object(resource, name, "someone-else", server))
    before = fingerprint(fake, resource, name)
    try:
        with pytest.raises(Exception, match=f"Refusing to use {KINDS[resource]} '{name}'") as refused:
            await spawner.start()
        assert "does not belong to this workspace" in str(refused.value)
        assert fingerprint(fake, resource, name) == before
        # nothing of the refused start was created
        for other in KINDS:
            mine = fake.list(other, NS, label_selector=f"{naming.LABEL_USER}={objects.label_value(user)}")
            assert mine == [], (other, mine)
    finally:
        fake.delete(resource, NS, name)


async def test_a_pod_that_appears_after_the_checks_is_not_deleted_on_409(fake):
    """KubeSpawner deletes an existing pod on 409 and retries: not when the pod is someone else's."""
    spawner = make_spawner(fake, "racer", "w")

    async def no_check(volume):  # the foreign pod appears right after the checks
        fake.create("pods", NS, foreign_object("pods", spawner.pod_name, "someone-else", "w"))

    spawner._check_existing_owners = no_check
    try:
        with pytest.raises(Exception, match=f"Refusing to use pod '{spawner.pod_name}'"):
            await spawner.start()
        pod = fake.get("pods", NS, spawner.pod_name)
        assert pod["metadata"]["annotations"][naming.LABEL_USER] == "someone-else"
        assert await spawner.poll() == 1  # running, but not our workspace
        await spawner.stop(now=True)  # the hub stops the failed server: the pod stays
        assert fake.get("pods", NS, spawner.pod_name) is not None
    finally:
        fake.delete("pods", NS, spawner.pod_name)


async def test_a_users_network_policy_from_an_earlier_scheme_is_kept_up_to_date(fake):
    user = "legacy.np"  # its readable policy name is ambiguous now (hub "<hub>-legacy"): hashed
    old_name = f"{HUB}-{naming.escape(user)}"
    spawner = make_spawner(fake, user, "w")
    assert spawner.network_policy_name != old_name
    fake.create(
        "networkpolicies", NS, objects.make_network_policy(name=old_name, hub_name=HUB, username=user)
    )
    spawner.network_policy_blocked_cidrs = ["169.254.169.254/32", "10.9.0.0/16"]
    try:
        await spawner.start()
        selector = f"{naming.LABEL_ORIGIN}={HUB},{naming.LABEL_USER}={objects.label_value(user)}"
        (policy,) = fake.list("networkpolicies", NS, label_selector=selector)
        assert policy["metadata"]["name"] == old_name  # one policy per user, brought up to date
        assert "10.9.0.0/16" in str(policy["spec"]["egress"])
    finally:
        await spawner.stop(now=True)
        fake.delete("networkpolicies", NS, old_name)
