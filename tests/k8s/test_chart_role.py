"""The chart's Role grants every call the spawner and the cleanup service make.

A stand-in, not a cluster: the fake API server (``tests/fake_k8s.py``) enforces the Role that
``helm template`` renders for the hub's service account, as a kube-apiserver's RBAC authorizer would:
a call the Role does not grant is 403 Forbidden here, as on a real cluster, and the test names it.
Driven through whole lifecycles: a workspace started, stopped, started again (its PVC and
NetworkPolicy reused), deleted; then a cleanup sweep of its deleted user, PVC grace period included. The
chart is rendered with GPUs on (``singleuser.gpu.max``), so its ClusterRole (get/list on nodes) is enforced
too: the GPU pools of the form and a GPU workspace need nothing more, and it grants nothing else.

The fixture also plays the OwnerReferencesPermissionEnforcement admission plugin (on by default on OpenShift,
optional elsewhere), which the fake does not: an object sent with an owner reference needs ``delete`` on
itself, and one with ``blockOwnerDeletion: true`` needs ``update`` on its owner's ``<resource>/finalizers``
(KubeSpawner's workspace Service names its pod so).
"""

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client import ApiException
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fake_k8s import resource_type  # noqa: E402

from cleanup_service import sweep  # noqa: E402
from cleanup_service.app import Cleaner  # noqa: E402
from cleanup_service.backends.kubernetes import KubernetesBackend  # noqa: E402
from cleanup_service.planner import Rules  # noqa: E402
from mlhubspawner import naming  # noqa: E402

import kube_spawners  # noqa: E402
from support import REPO, helm_binary  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "mlhub-ns"
HUB = "mlhub"  # the release name of the rendering below
log = logging.getLogger("test-chart-role")


def rendered_role():
    """The Role, the ClusterRole's rules and their subject as ``helm template mlhub helm/mlhub`` renders them
    for workspaces with GPUs."""
    result = subprocess.run(
        [helm_binary(), "template", HUB, str(REPO / "helm/mlhub"), "--namespace", NS]
        + ["--set", "singleuser.gpu.max=2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    role = next(doc for doc in docs if doc["kind"] == "Role")
    (subject,) = next(doc for doc in docs if doc["kind"] == "RoleBinding")["subjects"]
    cluster_role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    assert next(doc for doc in docs if doc["kind"] == "ClusterRoleBinding")["subjects"] == [subject]
    return (
        role["rules"],
        cluster_role["rules"],
        f"system:serviceaccount:{subject['namespace']}:{subject['name']}",
    )


def enforce_owner_reference_permissions(fake):
    """Check what OwnerReferencesPermissionEnforcement checks on the clients' creates and updates: an owner
    reference needs ``delete`` on the object, ``blockOwnerDeletion`` ``update`` on the owner's finalizers.
    Records every owner reference seen in ``fake.owner_references`` (kind of object, kind of owner, block)."""
    fake.owner_references = []
    create, update = fake._create, fake._update

    def admit(rtype, namespace, obj, context):
        if not context or context.get("method") not in ("POST", "PUT", "PATCH"):
            return  # the fake's own controllers and the test's direct writes
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            fake.owner_references.append((rtype.kind, ref["kind"], bool(ref.get("blockOwnerDeletion"))))
            fake._authorize("DELETE", False, rtype, namespace, meta.get("name") or "x", None)
            if ref.get("blockOwnerDeletion"):
                owner = resource_type(ref["kind"])
                fake._authorize("PUT", False, owner, namespace, ref["name"], "finalizers")

    def checked_create(rtype, namespace, obj, dry_run=False, validate=True, context=None):
        admit(rtype, namespace, obj, context)
        return create(rtype, namespace, obj, dry_run=dry_run, validate=validate, context=context)

    def checked_update(rtype, namespace, name, body, subresource=None, dry_run=False, context=None, **kw):
        admit(rtype, namespace, body, context)
        return update(rtype, namespace, name, body, subresource, dry_run, context, **kw)

    fake._create, fake._update = checked_create, checked_update


def enforce_the_charts_role(fake):
    """The fake authorizes like RBAC with the chart's Role (and owner references like
    OwnerReferencesPermissionEnforcement)."""
    rules, cluster_rules, subject = rendered_role()
    enforce_owner_reference_permissions(fake)
    fake.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    fake.add_node("gpu-1", allocatable={"nvidia.com/gpu": 4}, labels={"nvidia.com/gpu.product": "NVIDIA-L4"})
    fake.enforce_role(rules, NS, subject, cluster_rules)


fake = kube_spawners.fake_apiserver_fixture(NS, prepare=enforce_the_charts_role)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server, config=None):
    spawner = kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image="mlhub-workspace:test", config=config
    )
    spawner.user_options = {}
    return spawner


async def test_a_workspaces_whole_life_needs_nothing_the_role_does_not_grant(fake):
    spawner = make_spawner(fake, "ada", "train")
    try:
        await spawner.start()
        assert await spawner.poll() is None
        await spawner.stop(now=True)
        # again: the PVC and the user's NetworkPolicy exist now, and are checked and reused
        await spawner.start()
        assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is not None
        await spawner.stop(now=True)
        await spawner.delete_forever()
    finally:
        assert fake.forbidden == [], fake.forbidden
    # the workspace's Service blocks its pod's deletion: on OpenShift that needs pods/finalizers update
    assert ("Service", "Pod", True) in fake.owner_references


async def test_a_cleanup_sweep_needs_nothing_the_role_does_not_grant(fake, monkeypatch):
    spawner = make_spawner(fake, "bob", "")
    await spawner.start()
    now = {"t": time.time() + 3600}
    monkeypatch.setattr(sweep, "utcnow", lambda: now["t"])

    class NoUsers:  # bob has been deleted from the hub
        async def list_users(self):
            return []

        async def delete_server(self, user, server):
            raise AssertionError("no server of an existing user is touched")

    backend = KubernetesBackend(HUB, log, namespace=NS, api_host=fake.url)
    rules = Rules(HUB, min_age_seconds=600, volume_grace_seconds=86400)
    try:
        cleaner = Cleaner(NoUsers(), backend, rules, log)
        first = await cleaner.run("users")  # pod, Service, NetworkPolicy go; the PVC is marked
        now["t"] += 2 * 86400
        second = await cleaner.run("users")  # the grace period is over: the PVC goes
        assert (first["failed"], second["failed"]) == (0, 0), (first, second)
        for _ in range(100):
            mine = [
                obj
                for resource in ("pods", "services", "persistentvolumeclaims", "networkpolicies")
                for obj in fake.list(resource, NS, label_selector=f"{naming.LABEL_ORIGIN}={HUB}")
            ]
            if not mine:
                break
            await asyncio.sleep(0.05)
        assert mine == []
    finally:
        await backend.close()
        assert fake.forbidden == [], fake.forbidden


async def test_gpu_pools_and_a_gpu_workspace_need_only_the_node_reader_and_it_grants_nothing_more(fake):
    config = Config()
    config.MLHubKubernetesSpawner.max_gpus = 2  # the chart's singleuser.gpu.max of the rendering
    spawner = make_spawner(fake, "cy", "gpu", config=config)
    spawner.user_options = {"gpus": 2, "gpu_type": "nvidia.com/gpu:NVIDIA-L4"}
    try:
        form = await spawner.get_options_form()
        assert "nvidia.com/gpu · NVIDIA-L4:" in form and "4 of 4 free" in form
        await spawner.start()
        pod = fake.get("pods", NS, spawner.pod_name)
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
        assert "2 of 4 free" in await spawner.get_options_form()
        await spawner.stop(now=True)
        await spawner.delete_forever()
    finally:
        assert fake.forbidden == [], fake.forbidden

    # the ClusterRole reads nodes and nothing else: no writes to nodes, nothing cluster-wide besides
    api = spawner.api
    refused = [
        api.patch_node("gpu-1", {"metadata": {"labels": {"x": "y"}}}),
        api.delete_node("gpu-1"),
        api.list_pod_for_all_namespaces(),
        api.list_namespaced_secret(NS),
        api.list_namespaced_pod("kube-system"),
        api.list_namespace(),
        api.list_persistent_volume(),
    ]
    for call in refused:
        with pytest.raises(ApiException) as error:
            await call
        assert error.value.status == 403
    assert len(fake.forbidden) == len(refused)
    assert fake.get("nodes", None, "gpu-1")["metadata"]["labels"].get("x") is None
    fake.forbidden.clear()
