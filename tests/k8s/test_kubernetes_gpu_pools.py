"""GPU pools on Kubernetes through MLHubKubernetesSpawner, against the fake API server (``tests/fake_k8s.py``).

A stand-in, not a cluster: no real cluster, GPU, device plugin or GPU Feature Discovery runs here. The fake's
nodes carry what they would publish (``status.allocatable["nvidia.com/gpu"]``, MIG resources, the
``nvidia.com/gpu.product`` label) and its scheduler places a pod on a node matching its node selector and
extended resource limits. What this proves: the spawner reads the nodes, offers the pools, sends the limits
and node selector of the chosen type, refuses what is not offered before creating anything, and works on
without the right to list nodes.
"""

import functools
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, generate_latest
from tornado import web
from traitlets import TraitError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402
from mlhubspawner.kubernetes import MLHubKubernetesSpawner  # noqa: E402
from mlhubspawner.options import WorkspaceOptions  # noqa: E402

import kube_spawners  # noqa: E402
from kube_spawners import FakeUser  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "gputest"
NS = "default"
IMAGE = "mlhub-workspace:test"
GPU, MIG1, MIG3 = "nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb"
A100, H100 = "NVIDIA-A100-SXM4-40GB", "NVIDIA-H100-80GB-HBM3"
PRODUCT = "nvidia.com/gpu.product"
SETTINGS = {
    "max_gpus": 8,
    "max_gpus_per_user": 5,
    "gpu_resource_names": [GPU, MIG1],
    "gpu_nodes_cache_seconds": 0.0,  # every test sees the nodes as they are now
}


def add_gpu_nodes(fake):
    gpu_labels = {PRODUCT: A100, "nvidia.com/gpu.memory": "40960"}
    fake.add_node("a100-1", allocatable={GPU: 2}, labels=gpu_labels)
    fake.add_node("a100-2", allocatable={GPU: 4}, labels=gpu_labels)
    fake.add_node("mig-1", allocatable={MIG1: 7, MIG3: 2}, labels={PRODUCT: A100})
    fake.add_node("h100-down", allocatable={GPU: 8}, labels={PRODUCT: H100}, ready=False)
    fake.add_node("h100-cordoned", allocatable={GPU: 8}, labels={PRODUCT: H100}, unschedulable=True)


fake = kube_spawners.fake_apiserver_fixture(NS, prepare=add_gpu_nodes)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server, user=None, **traits):
    config = kube_spawners.spawner_config(**{**SETTINGS, **traits})
    return kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image=IMAGE, user=user, config=config
    )


owned_by = functools.partial(
    kube_spawners.owned_by, hub=HUB, namespace=NS, kinds=kube_spawners.POD_PVC_SERVICE
)


async def test_a_product_type_gets_its_limit_and_node_selector_and_the_form_counts_it(fake):
    spawner = make_spawner(fake, "alice", "train")
    spawner.user_options = {"gpus": "2", "gpu_type": f"{GPU}:{A100}", "is_mount_volume": False}
    await spawner.start()
    try:
        pod = fake.get("pods", NS, spawner.pod_name)
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["limits"][GPU] == "2"
        assert pod["spec"]["nodeSelector"] == {PRODUCT: A100}
        assert pod["spec"]["nodeName"] == "a100-1"  # the fake scheduler honours both
        assert pod["metadata"]["labels"][naming.LABEL_GPUS] == "2"
        assert spawner.get_state()["mlhub"]["options"]["gpu_type"] == f"{GPU}:{A100}"

        form = await make_spawner(fake, "bob", "look").get_options_form()
        assert f"{GPU} · {A100} (40 GB):" in form
        assert "4 of 6 free</span>\n        (at most 4 on one node)" in form
        assert f"{MIG1} · {A100}:" in form and "7 of 7 free" in form
        assert H100 not in form and MIG3 not in form  # unready, cordoned, not configured
        assert "At most 7 per workspace, from one node." in form  # the largest node (MIG), not max_gpus 8
        assert 'name="gpu_type"' in form and f'<option value="{MIG1}:{A100}">' in form
        # the hub's metrics: the schedulable nodes' GPUs of the offered resources (6 whole + 7 MIG slices)
        metrics = generate_latest(REGISTRY).decode()
        assert f'mlhub_gpus_total{{hub="{HUB}"}} 13.0' in metrics
        assert f'mlhub_gpus_allocated{{hub="{HUB}",user="alice"}} 2.0' in metrics
    finally:
        await spawner.stop(now=True)
    assert 'user="alice"' not in generate_latest(REGISTRY).decode()


async def test_a_mig_slice_is_requested_by_its_resource_name(fake):
    spawner = make_spawner(fake, "carol", "mig", gpu_node_selector={"nvidia.com/gpu.present": "true"})
    spawner.user_options = {"gpus": 3, "gpu_type": MIG1, "is_mount_volume": False}
    await spawner.start()
    try:
        pod = fake.get("pods", NS, spawner.pod_name)
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["limits"][MIG1] == "3" and GPU not in container["resources"]["limits"]
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # no product asked for
        assert pod["spec"]["tolerations"] == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
        assert "NVIDIA_VISIBLE_DEVICES" not in {e["name"] for e in container["env"]}
    finally:
        await spawner.stop(now=True)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"gpus": 1, "gpu_type": MIG3}, "gpu_type"),  # on a node, but not configured
        ({"gpus": 1, "gpu_type": f"{GPU}:{H100}"}, "gpu_type"),  # only on unready / cordoned nodes
        ({"gpus": 1, "gpu_type": "cpu"}, "gpu_type"),
        ({"gpus": 1, "gpu_type": "memory"}, "gpu_type"),
        ({"gpus": 1, "gpu_type": f"{GPU}:{A100},kubernetes.io/hostname=a100-2"}, "gpu_type"),
        ({"gpus": 1, "gpu_type": f"{GPU}:{A100}\n{PRODUCT}"}, "gpu_type"),
        ({"gpu_type": "nvidia.com/gpu:NVIDIA-B200"}, "gpu_type"),
        ({"gpus": 5, "gpu_type": f"{GPU}:{A100}"}, "gpus"),  # no A100 node has 5
        ({"gpus": 8}, "gpus"),  # no node has 8
        ({"gpus": "0,1", "gpu_type": MIG1}, "gpus"),
    ],
)
async def test_what_is_not_offered_is_a_400_and_creates_nothing(fake, options, field):
    spawner = make_spawner(fake, "eve", "x")
    spawner.user_options = options
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert (error.value.status_code, error.value.field) == (400, field)
    assert owned_by(fake, "eve") == set()


async def test_the_quota_counts_gpus_of_every_type(fake):
    user = FakeUser("frank")
    user.spawners["mig"] = SimpleNamespace(
        active=True, workspace_options=WorkspaceOptions(image=IMAGE, gpus="3", gpu_type=MIG1)
    )
    spawner = make_spawner(fake, "frank", "more", user=user)
    spawner.user_options = {"gpus": 3, "gpu_type": f"{GPU}:{A100}"}
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert (
        error.value.field == "gpus"
        and "6 GPUs in total, at most 5" in error.value.log_message % error.value.args
    )
    assert owned_by(fake, "frank") == set()


async def test_the_node_list_is_shared_by_all_spawners_for_a_while(fake):
    MLHubKubernetesSpawner._gpu_node_cache.clear()
    before = sum(1 for method, path in fake.requests if method == "GET" and path.startswith("/api/v1/nodes"))
    for name in ("one", "two", "three"):
        await make_spawner(fake, "gina", name, gpu_nodes_cache_seconds=30.0).get_options_form()
    after = sum(1 for method, path in fake.requests if method == "GET" and path.startswith("/api/v1/nodes"))
    assert after - before == 1
    MLHubKubernetesSpawner._gpu_node_cache.clear()


async def test_a_spawner_without_gpus_never_reads_the_nodes(fake):
    before = len(fake.requests)
    form = await make_spawner(fake, "hal", "cpu", max_gpus=0).get_options_form()
    assert 'name="gpus"' not in form
    assert not [p for _, p in fake.requests[before:] if p.startswith("/api/v1/nodes")]


@pytest.mark.parametrize("names", [["cpu"], ["nvidia.com/gpu", "nvidia.com/gpu"], [], ["kubernetes.io/gpu"]])
async def test_bad_resource_names_name_the_setting(fake, names):
    with pytest.raises((ValueError, TraitError), match="gpu_resource_names"):
        make_spawner(fake, "ivan", "s", gpu_resource_names=names)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


async def test_without_the_right_to_list_nodes_the_form_degrades_and_says_so_once(fake):
    """No ClusterRole: node listing is 403; the hub logs it once and offers the configured names, unsized."""
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    namespaced = [
        {
            "apiGroups": [""],
            "resources": ["pods", "services", "persistentvolumeclaims", "events"],
            "verbs": verbs,
        },
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": verbs},
    ]
    fake.enforce_role(namespaced, NS, "system:serviceaccount:default:hub")
    records = Records()
    try:
        spawner = make_spawner(fake, "judy", "w", max_gpus_per_user=None)
        spawner.log.addHandler(records)
        for _ in range(2):
            form = await spawner.get_options_form()
            assert 'name="gpus"' in form and "At most 8 per workspace" in form  # the admin's max alone
            assert "mlhub-gpu-pools" not in form  # no sizes known
            assert f'<option value="{MIG1}">{MIG1} · any model</option>' in form
        assert any("nodes" in m for m in fake.forbidden)
        warned = [m for m in records.messages if "Cannot list the cluster's nodes" in m]
        assert len(warned) == 1 and "403" in warned[0] and "rbac.listNodes" in warned[0]

        # a configured resource still works; a product cannot be checked, so it is refused
        spawner.user_options = {"gpus": 1, "gpu_type": f"{GPU}:{A100}"}
        with pytest.raises(web.HTTPError) as error:
            await spawner.start()
        assert error.value.field == "gpu_type" and owned_by(fake, "judy") == set()
        spawner.user_options = {"gpus": 8, "gpu_type": MIG1, "is_mount_volume": False}
        await spawner.start()
        (container,) = fake.get("pods", NS, spawner.pod_name)["spec"]["containers"]
        assert container["resources"]["limits"][MIG1] == "8"
        await spawner.stop(now=True)
    finally:
        fake.role_rules, fake.cluster_role_rules = None, []
        spawner.log.removeHandler(records)
