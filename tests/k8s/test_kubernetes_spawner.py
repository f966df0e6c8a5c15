"""MLHubKubernetesSpawner against the in-process fake kube-apiserver (``tests/fake_k8s.py``).

These are CONTRACT tests, not tests against a cluster: they prove that the unmodified KubeSpawner
underneath, driven by our subclass, makes the right API calls and that every object it sends (pod,
PVC, Service, NetworkPolicy) is valid against the real Kubernetes 1.33 schemas (the fake answers 422
otherwise and records it in ``fake.rejected``). Nothing runs: the fake's kubelet marks pods Running,
there is no DNS, no network plugin enforcing the NetworkPolicy and no GPU device plugin.

The module runs on its own event loop: KubeSpawner caches its API client per loop and its
reflectors per class, so a fresh loop and stopped reflectors keep other modules' fakes apart.
"""

import functools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets import TraitError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming, sshkeys  # noqa: E402
from mlhubspawner.kubernetes import objects  # noqa: E402
from mlhubspawner.options import WorkspaceOptions  # noqa: E402

import kube_spawners  # noqa: E402
import pod_security  # noqa: E402
from kube_spawners import FakeUser  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8stest"
NS = "default"
GB = 1024**3
IMAGE = "mlhub-workspace:test"
POLICY = {
    "max_cpu_limit": 4.0,
    "max_mem_limit": "8G",
    "max_gpus": 2,
    "max_days_to_live": 30.0,
    "workspace_images": ["mlhub-workspace:other"],
}


fake = kube_spawners.fake_apiserver_fixture(
    NS, prepare=lambda fake: fake.add_node("gpu-node", allocatable={"nvidia.com/gpu": "2"})
)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username="alice", server="train", user=None, **traits):
    config = kube_spawners.spawner_config(**{**POLICY, **traits})
    return kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image=IMAGE, user=user, config=config
    )


def mine(fake, resource, **labels):
    selector = ",".join(f"{k}={v}" for k, v in {naming.LABEL_ORIGIN: HUB, **labels}.items())
    return fake.list(resource, NS, label_selector=selector)


# every object of this hub owned by a user, as ``kind/name``
owned_by = functools.partial(kube_spawners.owned_by, hub=HUB, namespace=NS)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def assert_owner_metadata(obj, username, server, component):
    labels, annotations = obj["metadata"]["labels"], obj["metadata"]["annotations"]
    for key, value in labels.items():
        assert objects.is_valid_label_value(value), (key, value)
    assert labels[naming.LABEL_ORIGIN] == HUB
    assert labels[naming.LABEL_USER] == objects.label_value(username)
    assert labels[naming.LABEL_SERVER_NAME] == objects.label_value(server)
    assert labels[naming.LABEL_COMPONENT] == component
    assert annotations[naming.LABEL_USER] == username
    assert annotations[naming.LABEL_SERVER_NAME] == server


async def test_start_creates_pod_pvc_service_and_network_policy(fake):
    spawner = make_spawner(fake)
    spawner.user_options = {
        "cpu_limit": "2",
        "mem_limit": "4G",
        "shm_size": "1G",
        "gpus": "1",
        "env": "WANDB_MODE=offline\nHF_HOME=/workspace/hf",
        "days_to_live": 2,
    }
    name = naming.workspace_name(HUB, "alice", "train")
    assert (spawner.pod_name, spawner.pvc_name) == (name, naming.volume_name(HUB, "alice", "train"))

    url = await spawner.start()

    assert url == f"http://{name}.{NS}.svc.cluster.local:8080"
    assert spawner.ssh_target() == (f"{name}.{NS}.svc.cluster.local", 22)
    assert f'permitopen="{name}.{NS}.svc.cluster.local:22"' in sshkeys.forwarding_options(
        [spawner.ssh_target()]
    )
    pod = fake.get("pods", NS, name)
    assert_owner_metadata(pod, "alice", "train", "workspace")
    labels = pod["metadata"]["labels"]
    assert labels[naming.LABEL_GPUS] == "1"
    assert int(labels[naming.LABEL_EXPIRATION]) == int(spawner.expiration) > 0
    assert pod["metadata"]["annotations"][naming.LABEL_EXPIRATION] == labels[naming.LABEL_EXPIRATION]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "limits": {"cpu": "2000m", "memory": str(4 * GB), "nvidia.com/gpu": "1"},
        "requests": {"cpu": "1000m", "memory": str(2 * GB)},
    }
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # Pod Security restricted; the volume writable by uid 1000 (group 100 owns it)
    assert pod_security.violations(pod, "restricted") == []
    psc = pod["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (1000, 100, 100)
    assert psc["fsGroupChangePolicy"] == "OnRootMismatch"
    env = env_of(container)
    assert env["WANDB_MODE"] == "offline" and env["HF_HOME"] == "/workspace/hf"
    assert env["JUPYTER_IMAGE_SPEC"] == IMAGE
    assert env["SSH_JUMPHOST_TARGET"] == spawner.ssh_target()[0]
    assert (env["CPU_LIMIT"], env["MAX_NUM_THREADS"], env["MEM_LIMIT"]) == ("2", "2", str(4 * GB))
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin sets it to the GPU it allocates
    assert env["JUPYTERHUB_USER"] == "alice" and env["JUPYTERHUB_API_TOKEN"] == spawner.api_token
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["mlhub-workspace"]["persistentVolumeClaim"] == {"claimName": spawner.pvc_name}
    assert volumes["mlhub-shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(GB)}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"mlhub-workspace": "/workspace", "mlhub-shm": "/dev/shm"}

    pvc = fake.get("persistentvolumeclaims", NS, spawner.pvc_name)
    assert_owner_metadata(pvc, "alice", "train", "volume")
    assert pvc["spec"]["resources"]["requests"] == {"storage": "10Gi"}

    service = fake.get("services", NS, name)
    assert_owner_metadata(service, "alice", "train", "workspace")
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", 8080, 8080),
        ("ssh", 22, 22),
    }
    assert service["spec"]["selector"][naming.LABEL_ORIGIN] == HUB
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]

    policy = fake.get("networkpolicies", NS, naming.network_name(HUB, "alice"))
    assert policy["metadata"]["labels"][naming.LABEL_COMPONENT] == "network"
    assert policy["metadata"]["annotations"][naming.LABEL_USER] == "alice"
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in selected.items())
    # closed by default: metadata and private ranges (IPv4 and IPv6), DNS only to kube-dns
    internet_v4, internet_v6 = policy["spec"]["egress"][-1]["to"]
    assert {"169.254.0.0/16", "10.0.0.0/8", "100.64.0.0/10"} <= set(internet_v4["ipBlock"]["except"])
    assert {"fd00:ec2::254/128", "fd00:ec2::23/128", "fc00::/7"} <= set(internet_v6["ipBlock"]["except"])
    assert policy["spec"]["egress"][0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}

    state = spawner.get_state()
    assert state["pod_name"] == name and state["pvc_name"] == spawner.pvc_name
    assert state["mlhub"]["options"]["cpu_limit"] == 2.0
    assert state["mlhub"]["expiration"] == spawner.expiration

    assert await spawner.poll() is None
    await spawner.stop(now=True)
    assert await spawner.poll() == 1
    assert fake.get("pods", NS, name) is None
    assert fake.get("services", NS, name) is None  # garbage-collected with its pod
    assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is not None  # data stays
    assert fake.get("networkpolicies", NS, naming.network_name(HUB, "alice")) is not None


async def test_restart_keeps_the_pvc_and_state_survives_a_new_spawner(fake):
    spawner = make_spawner(fake, "carol", "")
    spawner.user_options = {"cpu_limit": 1, "mem_limit": "1G"}
    await spawner.start()
    assert spawner.pod_name == naming.workspace_name(HUB, "carol")
    uid = fake.get("persistentvolumeclaims", NS, spawner.pvc_name)["metadata"]["uid"]
    state = spawner.get_state()
    await spawner.stop(now=True)

    again = make_spawner(fake, "carol", "")
    again.load_state(state)
    assert again.workspace_options == spawner.workspace_options
    assert (again.pod_name, again.pvc_name, again.expiration) == (
        spawner.pod_name,
        spawner.pvc_name,
        spawner.expiration,
    )
    again.user_options = {"cpu_limit": 1.5, "mem_limit": "1G", "update": True}
    await again.start()
    assert fake.get("persistentvolumeclaims", NS, again.pvc_name)["metadata"]["uid"] == uid
    (container,) = fake.get("pods", NS, again.pod_name)["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"] == "1500m"
    assert container["imagePullPolicy"] == "Always"  # an update pulls the image again
    assert env_of(container)["NVIDIA_VISIBLE_DEVICES"] == "void"  # no GPUs: none from the node either
    await again.stop(now=True)


async def test_awkward_names_give_valid_names_and_labels(fake):
    username, server = "jane.doe@example.com", "Exp_1.b"
    spawner = make_spawner(fake, username, server)
    spawner.user_options = {"is_mount_volume": False, "image": "mlhub-workspace:other"}
    await spawner.start()
    pod = fake.get("pods", NS, spawner.pod_name)
    assert_owner_metadata(pod, username, server, "workspace")
    assert len(spawner.pod_name) <= 63 and spawner.pod_name == naming.workspace_name(HUB, username, server)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "mlhub-workspace:other"
    # no volume wanted: no PVC, no mount; the shm default (256M) still applies
    assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is None
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["mlhub-shm"]
    assert "limits" not in container["resources"] or "cpu" not in container["resources"]["limits"]
    assert fake.get("networkpolicies", NS, naming.network_name(HUB, username)) is not None
    await spawner.stop(now=True)
    # the next start decides afresh: a volume now
    spawner.user_options = {}
    await spawner.start()
    assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is not None
    await spawner.stop(now=True)


@pytest.mark.parametrize("setting", ["storage_pvc_ensure", "persistent_volumes"])
async def test_the_admin_can_turn_volumes_off(fake, setting):
    spawner = make_spawner(fake, "ivan", setting.replace("_", "-"), **{setting: False})
    spawner.user_options = {"is_mount_volume": True}
    for _ in range(2):  # the second start must not take the first start's decision for the setting
        await spawner.start()
        assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is None
        assert [v["name"] for v in fake.get("pods", NS, spawner.pod_name)["spec"]["volumes"]] == ["mlhub-shm"]
        await spawner.stop(now=True)


async def test_a_second_workspace_shares_the_policy_and_brings_it_up_to_date(fake):
    user = FakeUser("dave")
    first = make_spawner(fake, user=user, server="a")
    await first.start()
    second = make_spawner(
        fake, user=user, server="b", network_policy_blocked_cidrs=["169.254.169.254/32", "10.9.0.0/16"]
    )
    await second.start()
    policies = mine(fake, "networkpolicies", **{naming.LABEL_USER: "dave"})
    assert [p["metadata"]["name"] for p in policies] == [naming.network_name(HUB, "dave")]
    assert policies[0]["spec"]["egress"][-1]["to"][0]["ipBlock"]["except"] == [
        "169.254.169.254/32",
        "10.9.0.0/16",
    ]
    # both pods are selected by it; another user's pods are not
    pods = mine(fake, "pods", **policies[0]["spec"]["podSelector"]["matchLabels"])
    assert {p["metadata"]["name"] for p in pods} == {first.pod_name, second.pod_name}
    await first.stop(now=True)
    await second.stop(now=True)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"cpu_limit": 64}, "cpu_limit"),
        ({"mem_limit": "lots"}, "mem_limit"),
        ({"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "env"),
        ({"image": "evil/miner:latest"}, "image"),
        ({"gpus": "3"}, "gpus"),
        ({"gpus": "0,1"}, "gpus"),  # ids are the device plugin's choice on Kubernetes
        ({"days_to_live": 365}, "days_to_live"),
        ({"profile": "big"}, "profile"),
    ],
)
async def test_bad_options_are_a_400_naming_the_field_and_create_nothing(fake, options, field):
    spawner = make_spawner(fake, "eve", "x")
    spawner.user_options = options
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert error.value.status_code == 400
    assert error.value.field == field
    assert owned_by(fake, "eve") == set()


async def test_bad_options_are_refused_when_the_hub_applies_them(fake):
    spawner = make_spawner(fake, "eve", "y")
    with pytest.raises(web.HTTPError) as error:
        await spawner.apply_user_options(spawner, {"cpu_limit": "-1"})
    assert (error.value.status_code, error.value.field) == (400, "cpu_limit")
    assert owned_by(fake, "eve") == set()


async def test_quota_refusal_creates_nothing(fake):
    user = FakeUser("frank")
    # another running workspace of the same user, as the mixin sees it
    user.spawners["busy"] = SimpleNamespace(
        active=True, workspace_options=WorkspaceOptions(image=IMAGE, cpu_limit=3)
    )
    spawner = make_spawner(fake, user=user, server="more", max_total_cpu_per_user=4.0)
    spawner.user_options = {"cpu_limit": 2}
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert (error.value.status_code, error.value.field) == (400, "cpu_limit")
    assert "quota" in error.value.log_message % error.value.args
    assert owned_by(fake, "frank") == set()

    spawner = make_spawner(fake, user=user, server="one-too-many", max_servers_per_user=1)
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert error.value.field == "quota"
    assert owned_by(fake, "frank") == set()


async def test_node_size_caps_the_policy_and_the_form_is_ml_hubs(fake):
    spawner = make_spawner(fake, "gina", "z", node_cpus=2.0, node_memory="3G")
    assert await spawner.host_resources() == (2.0, 3 * GB)
    spawner.user_options = {"cpu_limit": 3}
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert error.value.field == "cpu_limit"
    form = await spawner.get_options_form()
    assert 'name="cpu_limit"' in form and 'name="gpus"' in form
    assert owned_by(fake, "gina") == set()


@pytest.mark.parametrize(
    "trait, value", [("resource_request_ratio", 0), ("resource_request_ratio", 1.5), ("node_memory", "lots")]
)
async def test_bad_settings_name_the_setting(fake, trait, value):
    with pytest.raises((ValueError, TraitError), match=trait):
        make_spawner(fake, "hal", "s", **{trait: value})


async def test_a_restarts_progress_follows_the_restart(fake):
    spawner = make_spawner(fake, "kim", "again")
    await spawner.start()
    await spawner.stop(now=True)
    # as the hub does: start, then the spawn page asks for progress at once
    started = spawner.start()
    assert spawner._start_future is started  # KubeSpawner's contract: set by start() itself
    events = [event async for event in spawner.progress()]
    # the previous start's finished future would have ended it at once, mid-restart
    assert started.done(), events
    assert started.result() == f"http://{spawner.pod_name}.{NS}.svc.cluster.local:8080"
    assert fake.get("pods", NS, spawner.pod_name) is not None
    await spawner.stop(now=True)
