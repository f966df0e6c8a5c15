"""Pure Kubernetes builders: label values, resources, volumes, env, and the manifests, each
validated against the Kubernetes 1.33 API schemas (kubernetes-validate, strict)."""

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient, V1OwnerReference
from kubespawner.objects import make_pod, make_pvc, make_service
from kubespawner.slugs import is_valid_label

from mlhubspawner import naming
from mlhubspawner.kubernetes import objects
from mlhubspawner.options import WorkspaceOptions

GB = 1024**3
K8S_VERSION = "1.33.0"

AWKWARD_NAMES = [
    "alice",
    "Alice",
    "a.b",
    "a-b",
    "a_b",
    "_x",
    ".hidden",
    "-",
    "x.",
    "2e",
    "ü",
    "ユーザー",
    "user@example.com",
    "a" * 63,
    "a" * 64,
    "b" * 200,
    "." * 40,
    "",
]


@pytest.fixture
async def api_client():
    client = ApiClient()
    yield client
    await client.close()


def validated(api_client, obj, api_version="v1"):
    """The API JSON of a model (or dict), after checking it against the real schema."""
    data = api_client.sanitize_for_serialization(obj)
    data.setdefault("apiVersion", api_version)
    kubernetes_validate.validate(data, K8S_VERSION, strict=True)
    return data


def sample_options(**overrides):
    values = dict(
        image="mlhub-workspace:1",
        cpu_limit=2.0,
        mem_limit=4 * GB,
        shm_size=512 * 1024**2,
        env={"WANDB_MODE": "offline", "JUPYTERHUB_USER": "not-me"},
        days_to_live=None,
    )
    values.update(overrides)
    return WorkspaceOptions(**values)


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_label_values_are_valid_label_values(name):
    value = objects.label_value(name)
    assert objects.is_valid_label_value(value)
    assert is_valid_label(value) or value == ""  # KubeSpawner's own check, as a second opinion


def test_label_values_keep_the_escaped_form_when_it_is_valid():
    assert objects.label_value("alice") == "alice"
    assert objects.label_value("a.b") == naming.escape("a.b") == "a-2eb"
    assert objects.label_value("") == ""


def test_label_values_differ_for_different_names():
    names = AWKWARD_NAMES + ["a" * 62 + "x", "a" * 62 + "y", "-2e", "2e_x", naming.escape(".hidden")]
    values = [objects.label_value(n) for n in names]
    assert len(set(values)) == len(set(names))


def test_owner_labels_are_valid_and_raw_names_go_to_annotations():
    user, server = "Jane.Doe@example.com", "My Server"
    labels = objects.owner_labels("mlhub", user, server, naming.COMPONENT_WORKSPACE, 1700000000.7, 2)
    assert labels == {
        naming.LABEL_ORIGIN: "mlhub",
        naming.LABEL_USER: objects.label_value(user),
        naming.LABEL_SERVER_NAME: objects.label_value(server),
        naming.LABEL_EXPIRATION: "1700000000",
        naming.LABEL_COMPONENT: "workspace",
        naming.LABEL_GPUS: "2",
    }
    assert all(objects.is_valid_label_value(v) for v in labels.values())
    assert objects.owner_annotations(user, server, 1700000000.7) == {
        naming.LABEL_USER: user,
        naming.LABEL_SERVER_NAME: server,
        naming.LABEL_EXPIRATION: "1700000000",
    }
    # the default server: empty server name; no GPUs, no gpus label
    labels = objects.owner_labels("mlhub", "bob")
    assert labels[naming.LABEL_SERVER_NAME] == "" and naming.LABEL_GPUS not in labels
    assert labels[naming.LABEL_EXPIRATION] == "0"


def test_requests_are_a_ratio_of_the_limits_and_gpus_are_limits():
    resources = objects.resource_requirements(cpu_limit=2, mem_limit=4 * GB, gpu_count=2, request_ratio=0.5)
    assert resources == {
        "limits": {"cpu": "2000m", "memory": str(4 * GB), "nvidia.com/gpu": "2"},
        "requests": {"cpu": "1000m", "memory": str(2 * GB)},
    }
    assert objects.resource_requirements(cpu_limit=0.01, request_ratio=0.01) == {
        "limits": {"cpu": "10m"},
        "requests": {"cpu": "1m"},  # never 0
    }
    assert objects.resource_requirements(gpu_count=1, gpu_resource="amd.com/gpu") == {
        "limits": {"amd.com/gpu": "1"},
        "requests": {},
    }
    assert objects.resource_requirements() == {"limits": {}, "requests": {}}
    for ratio in (0, -1, 1.5):
        with pytest.raises(ValueError, match="request_ratio"):
            objects.resource_requirements(cpu_limit=1, request_ratio=ratio)


def test_volumes_pvc_and_memory_backed_shm():
    volumes, mounts = objects.workspace_volumes(pvc_name="mlhub-ws-alice", shm_size=256 * 1024**2)
    assert volumes == [
        {"name": "mlhub-workspace", "persistentVolumeClaim": {"claimName": "mlhub-ws-alice"}},
        {"name": "mlhub-shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(256 * 1024**2)}},
    ]
    assert mounts == [
        {"name": "mlhub-workspace", "mountPath": "/workspace"},
        {"name": "mlhub-shm", "mountPath": "/dev/shm"},
    ]
    assert objects.workspace_volumes() == ([], [])
    assert objects.workspace_volumes(pvc_name="p", volume_path="/data")[1] == [
        {"name": "mlhub-workspace", "mountPath": "/data"}
    ]


def test_env_user_vars_lose_to_the_hub_and_gpus_follow_the_device_plugin():
    base = {"JUPYTERHUB_USER": "alice", "JUPYTER_IMAGE_SPEC": "configured:default"}
    env = objects.workspace_env(base, sample_options(), ssh_host="ws.ns.svc.cluster.local")
    assert env["WANDB_MODE"] == "offline"
    assert env["JUPYTERHUB_USER"] == "alice"
    assert env["JUPYTER_IMAGE_SPEC"] == env["JUPYTER_IMAGE"] == "mlhub-workspace:1"
    assert env["SSH_JUMPHOST_TARGET"] == "ws.ns.svc.cluster.local"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert (env["CPU_LIMIT"], env["MAX_NUM_THREADS"], env["MEM_LIMIT"]) == ("2", "2", str(4 * GB))
    env = objects.workspace_env(
        {"NVIDIA_VISIBLE_DEVICES": "all"}, sample_options(), ssh_host="h", gpu_count=1
    )
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    env = objects.workspace_env({}, sample_options(cpu_limit=None, mem_limit=None), ssh_host="h")
    assert not {"CPU_LIMIT", "MAX_NUM_THREADS", "MEM_LIMIT"} & set(env)
    # never more threads than the quota: 1.5 CPUs is 1 thread, half a CPU still 1
    for cpus, threads in ((1.5, "1"), (0.5, "1"), (2.9, "2")):
        env = objects.workspace_env({}, sample_options(cpu_limit=cpus), ssh_host="h")
        assert env["MAX_NUM_THREADS"] == threads, cpus


async def test_customized_pod_is_valid_and_keeps_kubespawner_settings(api_client):
    pod = make_pod(
        name="mlhub-ws-alice--train",
        image="configured:default",
        port=8080,
        cmd=None,
        env={"A": "1"},
        labels={"component": "singleuser-server"},
        annotations={"hub.jupyter.org/username": "alice"},
        node_selector={"pool": "workspaces"},
        extra_resource_limits={"example.com/fpga": "1"},
        volumes=[{"name": "extra", "emptyDir": {}}],
        volume_mounts=[{"name": "extra", "mountPath": "/extra"}],
        tolerations=[{"key": "dedicated", "operator": "Exists"}],
    )
    before = api_client.sanitize_for_serialization(pod)
    labels = objects.owner_labels("mlhub", "Alice", "train", naming.COMPONENT_WORKSPACE, 5, 1)
    volumes, mounts = objects.workspace_volumes(pvc_name="mlhub-ws-alice--train", shm_size=GB)
    customized = objects.customize_pod(
        pod,
        image="mlhub-workspace:1",
        labels=labels,
        annotations=objects.owner_annotations("Alice", "train", 5),
        resources=objects.resource_requirements(
            cpu_limit=1.5, mem_limit=2 * GB, gpu_count=1, request_ratio=0.5
        ),
        volumes=volumes,
        volume_mounts=mounts,
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=list(objects.DEFAULT_GPU_TOLERATIONS),
        image_pull_policy="Always",
    )
    assert api_client.sanitize_for_serialization(pod) == before  # a copy: KubeSpawner's pod is untouched
    data = validated(api_client, customized)
    assert data["metadata"]["labels"] == {"component": "singleuser-server", **labels}
    assert data["metadata"]["annotations"][naming.LABEL_USER] == "Alice"
    container = data["spec"]["containers"][0]
    assert container["image"] == "mlhub-workspace:1" and container["imagePullPolicy"] == "Always"
    assert container["resources"] == {
        "limits": {"example.com/fpga": "1", "cpu": "1500m", "memory": str(2 * GB), "nvidia.com/gpu": "1"},
        "requests": {"cpu": "750m", "memory": str(GB)},
    }
    assert [v["name"] for v in data["spec"]["volumes"]] == ["extra", "mlhub-workspace", "mlhub-shm"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/extra", "/workspace", "/dev/shm"}
    assert data["spec"]["nodeSelector"] == {"pool": "workspaces", "nvidia.com/gpu.present": "true"}
    assert data["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


def test_customize_pod_needs_the_notebook_container():
    pod = make_pod(name="p", image="i", port=8080, cmd=None)
    pod.spec.containers[0].name = "other"
    with pytest.raises(ValueError, match="notebook"):
        objects.customize_pod(pod, image="i", labels={}, annotations={}, resources={})


async def test_customized_service_exposes_ssh_and_selects_one_hubs_pod(api_client):
    owner = V1OwnerReference(
        api_version="v1", kind="Pod", name="mlhub-ws-alice", uid="1234", block_owner_deletion=True
    )
    service = make_service(
        name="mlhub-ws-alice",
        port=8080,
        selector={"component": "singleuser-server", "hub.jupyter.org/username": "alice"},
        owner_references=[owner],
    )
    customized = objects.customize_service(
        service,
        labels=objects.owner_labels("mlhub", "alice", component=naming.COMPONENT_WORKSPACE),
        annotations=objects.owner_annotations("alice"),
        selector={naming.LABEL_ORIGIN: "mlhub"},
        ssh_port=22,
    )
    data = validated(api_client, customized)
    assert data["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": 8080},
        {"name": "ssh", "port": 22, "targetPort": 22, "protocol": "TCP"},
    ]
    assert data["spec"]["selector"] == {
        "component": "singleuser-server",
        "hub.jupyter.org/username": "alice",
        naming.LABEL_ORIGIN: "mlhub",
    }
    assert data["metadata"]["labels"][naming.LABEL_ORIGIN] == "mlhub"
    assert len(api_client.sanitize_for_serialization(service)["spec"]["ports"]) == 1
    # applying it twice does not add a second ssh port
    again = objects.customize_service(customized, labels={}, annotations={}, selector={}, ssh_port=2222)
    assert [p.port for p in again.spec.ports] == [8080, 2222]


async def test_customized_pvc_is_valid(api_client):
    pvc = make_pvc(
        name="mlhub-ws-alice",
        storage_class=None,
        access_modes=["ReadWriteOnce"],
        selector=None,
        storage="10Gi",
        labels={"component": "singleuser-storage"},
    )
    customized = objects.customize_pvc(
        pvc,
        labels=objects.owner_labels("mlhub", "a.b", component=naming.COMPONENT_VOLUME),
        annotations=objects.owner_annotations("a.b"),
    )
    data = validated(api_client, customized)
    assert data["metadata"]["labels"][naming.LABEL_USER] == "a-2eb"
    assert data["metadata"]["labels"][naming.LABEL_COMPONENT] == "volume"
    assert data["metadata"]["annotations"][naming.LABEL_USER] == "a.b"
    assert data["spec"]["resources"] == {"requests": {"storage": "10Gi"}}


@pytest.mark.parametrize("username", ["alice", ".hidden", "x" * 100, "Jane.Doe@example.com"])
def test_network_policy_is_valid_and_isolates_users(username):
    policy = objects.make_network_policy(
        name=naming.network_name("mlhub", username), hub_name="mlhub", username=username
    )
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    user_pods = {
        naming.LABEL_ORIGIN: "mlhub",
        naming.LABEL_USER: objects.label_value(username),
        naming.LABEL_COMPONENT: "workspace",
    }
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": user_pods}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # ingress: the same user's pods, and the hub/proxy pods of the namespace, nothing else
    assert spec["ingress"] == [
        {
            "from": [
                {"podSelector": {"matchLabels": user_pods}},
                {
                    "podSelector": {
                        "matchExpressions": [
                            {
                                "key": "app.kubernetes.io/component",
                                "operator": "In",
                                "values": ["hub", "proxy"],
                            }
                        ]
                    }
                },
            ]
        }
    ]
    dns, same_user, hub, internet = spec["egress"]
    assert dns == {
        "to": [dict(p) for p in objects.DEFAULT_DNS_PEERS],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    assert same_user == {"to": [{"podSelector": {"matchLabels": user_pods}}]}
    assert hub == {
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "hub"}}}],
        "ports": [{"protocol": "TCP", "port": 8081}],
    }
    # the internet, IPv4 and IPv6, without metadata and private ranges (tests/unit/test_egress_rules.py)
    assert [peer["ipBlock"]["cidr"] for peer in internet["to"]] == ["0.0.0.0/0", "::/0"]
    meta = policy["metadata"]
    assert all(objects.is_valid_label_value(v) for v in meta["labels"].values())
    assert meta["labels"][naming.LABEL_COMPONENT] == "network"
    assert meta["annotations"][naming.LABEL_USER] == username


def test_network_policy_settings():
    policy = objects.make_network_policy(
        name="mlhub-bob",
        hub_name="mlhub",
        username="bob",
        ingress_from=[{"podSelector": {"matchLabels": {"app": "ssh-front"}}}],
        hub_peers=[],
        hub_ports=[],
        blocked_cidrs=["169.254.169.254/32", "10.0.0.0/16"],
    )
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    assert policy["spec"]["ingress"][0]["from"][1] == {"podSelector": {"matchLabels": {"app": "ssh-front"}}}
    assert len(policy["spec"]["egress"]) == 3  # no hub rule without hub peers
    assert policy["spec"]["egress"][-1]["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32", "10.0.0.0/16"]
    open_hub = objects.make_network_policy(name="n", hub_name="mlhub", username="bob", hub_ports=[])
    assert "ports" not in open_hub["spec"]["egress"][2]
