"""KubeSpawner's public behaviour that operators rely on, as contract tests run on the stock
``kubespawner.KubeSpawner`` and on ``MLHubKubernetesSpawner`` alike (KubeSpawner's source distribution ships
no tests to run against ours).

Each scenario runs once per class on the in-process fake kube-apiserver (``tests/fake_k8s.py``: schemas
checked, pods made Running by its fake kubelet): start (pod, ready, URL), progress, names from templates and
KubeSpawner's legacy names, profiles, user namespaces, storage, services. Where ML Hub intentionally
differs, the test asserts the difference and says why; everything else is asserted the same for both.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402

import kube_spawners  # noqa: E402
from kube_spawners import claims  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "contract"
NS = "default"
IMAGE = "mlhub-workspace:test"
STOCK, MLHUB = "kubespawner", "mlhub"


fake = kube_spawners.fake_apiserver_fixture(NS)
stop_reflectors = (
    kube_spawners.stop_reflectors_fixture()
)  # KubeSpawner's class dict: both classes' reflectors


@pytest.fixture(params=[STOCK, MLHUB])
def kind(request):
    return request.param


@pytest.fixture
def spawn(fake, kind):
    """``spawn(username, server, **settings)``: a spawner of the class under test, configured alike."""
    made = []

    def make(username, server="", **settings):
        username = f"{kind[:5]}-{username}"  # the two classes' objects never meet
        if kind == STOCK:
            spawner = kube_spawners.make_stock_spawner(
                fake, username, server, namespace=NS, image=IMAGE, **settings
            )
        else:
            config = kube_spawners.spawner_config(**settings)
            spawner = kube_spawners.make_spawner(
                fake, username, server, hub_name=HUB, namespace=NS, image=IMAGE, config=config
            )
        spawner.user_options = {}
        made.append(spawner)
        return spawner

    yield make
    for spawner in made:
        # stop anything still running (a failed assertion mid-scenario)
        if spawner.pod_reflector and f"{spawner.namespace}/{spawner.pod_name}" in spawner.pod_reflector.pods:
            fake.delete("pods", spawner.namespace, spawner.pod_name)


def notebook_env(pod):
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
    return {e["name"]: e.get("value") for e in container.get("env", [])}


async def test_start_makes_a_running_pod_and_returns_its_url(fake, kind, spawn):
    spawner = spawn("start")
    url = await spawner.start()
    pod = fake.get("pods", NS, spawner.pod_name)
    assert pod["status"]["phase"] == "Running"
    assert any(c["name"] == "notebook" and c["image"] == IMAGE for c in pod["spec"]["containers"])
    assert notebook_env(pod)["JUPYTERHUB_API_TOKEN"] == spawner.api_token
    assert await spawner.poll() is None
    if kind == STOCK:
        assert url == f"http://{pod['status']['podIP']}:8888"
    else:
        # intended: ML Hub's workspaces listen on 8080 and are reached through their Service (services on
        # by default: the SSH front needs a stable name), not the pod IP
        assert url == f"http://{spawner.pod_name}.{NS}.svc.cluster.local:8080"
    await spawner.stop(now=True)
    assert fake.get("pods", NS, spawner.pod_name) is None
    assert await spawner.poll() == 1


async def test_progress_follows_the_pods_events_until_the_start_is_done(fake, kind, spawn):
    spawner = spawn("progress")
    started = spawner.start()
    assert spawner._start_future is started  # KubeSpawner's contract: set by start() itself
    events = [event async for event in spawner.progress()]
    assert started.done() and started.result()  # then the hub sends its final "ready" event
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress == sorted(progress) and all(0 < p < 100 for p in progress)
    # the pod's own events, as the spawn page shows them (the fake kubelet's: Scheduled, Pulled, Created...)
    reasons = [e["raw_event"]["reason"] for e in events if "raw_event" in e]
    assert "Scheduled" in reasons, events
    assert all(e["message"] for e in events)
    await spawner.stop(now=True)


async def test_names_come_from_the_templates(fake, kind, spawn):
    spawner = spawn(
        "names",
        "srv",
        pod_name_template="jupyter-{username}--{servername}",
        pvc_name_template="claim-{username}--{servername}",
        storage_pvc_ensure=True,
        storage_capacity="1Gi",
        services_enabled=True,
    )
    user = spawner.user.name
    assert (spawner.pod_name, spawner.pvc_name) == (f"jupyter-{user}--srv", f"claim-{user}--srv")
    await spawner.start()
    assert fake.get("pods", NS, spawner.pod_name) is not None
    assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is not None
    assert fake.get("services", NS, spawner.pod_name) is not None
    assert spawner.get_state()["pod_name"] == spawner.pod_name
    await spawner.stop(now=True)
    fake.delete("persistentvolumeclaims", NS, spawner.pvc_name)


async def test_default_names(fake, kind, spawn):
    spawner = spawn("dflt", "srv")
    if kind == STOCK:
        assert (spawner.pod_name, spawner.pvc_name) == (
            f"jupyter-{spawner.user.name}--srv",
            f"claim-{spawner.user.name}--srv",
        )
    else:
        # intended: ML Hub's default names carry the hub's name (two hubs can share a namespace) and are
        # collision-free for any user name (naming.py)
        assert (spawner.pod_name, spawner.pvc_name) == (
            naming.workspace_name(HUB, spawner.user.name, "srv"),
            naming.volume_name(HUB, spawner.user.name, "srv"),
        )


async def test_a_kubespawner_6_pvc_is_found_under_its_legacy_name(fake, kind, spawn):
    # a server of KubeSpawner 6 (escape scheme): the PVC is named with the escaped user name
    old = kube_spawners.make_stock_spawner(
        fake,
        f"{kind[:5]}-l.m",
        "",
        namespace=NS,
        image=IMAGE,
        slug_scheme="escape",
        storage_pvc_ensure=True,
        storage_capacity="1Gi",
    )
    await old.start()
    legacy_pvc = old.pvc_name
    assert legacy_pvc == f"claim-{kind[:5]}-2dl-2em"  # "-" and "." escaped
    await old.stop(now=True)
    uid = fake.get("persistentvolumeclaims", NS, legacy_pvc)["metadata"]["uid"]

    # intended: on ML Hub adopting it is a switch (off by default), and the owner annotation must be the user's
    spawner = spawn("l.m", storage_pvc_ensure=True, storage_capacity="1Gi", handle_legacy_names=True)
    spawner.load_state({"pod_name": spawner.pod_name})  # KubeSpawner 6's state: no kubespawner_version
    await spawner.start()
    try:
        assert spawner.pvc_name == legacy_pvc
        assert fake.get("persistentvolumeclaims", NS, legacy_pvc)["metadata"]["uid"] == uid
        if kind == MLHUB:  # KubeSpawner mounts a PVC only through volumes; ML Hub at volume_path
            assert claims(fake.get("pods", NS, spawner.pod_name)) == [legacy_pvc]
        assert spawner.get_state()["pvc_name"] == legacy_pvc  # remembered for the next start
    finally:
        await spawner.stop(now=True)
        fake.delete("persistentvolumeclaims", NS, legacy_pvc)


def profile_list():
    return [
        {
            "display_name": "Small",
            "slug": "small",
            "default": True,
            "kubespawner_override": {"environment": {"SIZE": "small"}, "node_selector": {"pool": "small"}},
        },
        {
            "display_name": "Big",
            "slug": "big",
            "kubespawner_override": {"environment": {"SIZE": "big"}, "extra_labels": {"size": "big"}},
        },
    ]


async def test_a_profile_applies_its_overrides_to_its_start(fake, kind, spawn):
    spawner = spawn("prof", profile_list=profile_list())
    spawner.user_options = {"profile": "big"}
    await spawner.start()
    pod = fake.get("pods", NS, spawner.pod_name)
    assert notebook_env(pod)["SIZE"] == "big" and pod["metadata"]["labels"]["size"] == "big"
    assert "pool" not in (pod["spec"].get("nodeSelector") or {})
    await spawner.stop(now=True)

    spawner.user_options = {}  # the default profile
    await spawner.start()
    pod = fake.get("pods", NS, spawner.pod_name)
    assert notebook_env(pod)["SIZE"] == "small" and pod["spec"]["nodeSelector"] == {"pool": "small"}
    if kind == STOCK:
        # KubeSpawner merges a profile's dicts into the spawner's own: the previous start's label stays
        assert pod["metadata"]["labels"]["size"] == "big"
    else:
        # intended: on ML Hub a profile's overrides hold for one start only (applied on copies, undone at stop)
        assert "size" not in pod["metadata"]["labels"]
    await spawner.stop(now=True)


async def test_an_unknown_profile_is_refused_before_anything_exists(fake, kind, spawn):
    spawner = spawn("noprof", profile_list=profile_list())
    spawner.user_options = {"profile": "huge"}
    with pytest.raises(Exception, match="huge") as error:
        await spawner.start()
    if kind == MLHUB:  # intended: a 400 naming the field and the offered profiles
        assert error.value.status_code == 400 and "small, big" in str(
            error.value.log_message % error.value.args
        )
    assert fake.get("pods", NS, spawner.pod_name) is None


async def test_user_namespaces(fake, kind, spawn):
    spawner = spawn("ns", enable_user_namespaces=True, user_namespace_template="ws-{username}")
    namespace = f"ws-{spawner.user.name}"
    assert spawner.namespace == namespace
    await spawner.start()
    try:
        assert fake.get("namespaces", None, namespace) is not None
        assert fake.get("pods", namespace, spawner.pod_name)["status"]["phase"] == "Running"
        assert fake.get("pods", NS, spawner.pod_name) is None
        policies = fake.list("networkpolicies", namespace)
        if kind == STOCK:
            assert policies == []
        else:
            # intended: ML Hub isolates each user's workspaces with a NetworkPolicy, in the user's namespace
            assert [p["metadata"]["name"] for p in policies] == [naming.network_name(HUB, spawner.user.name)]
            labels = fake.get("namespaces", None, namespace)["metadata"]["labels"]
            assert labels[naming.LABEL_ORIGIN] == HUB  # the cleanup service finds users' namespaces by it
    finally:
        await spawner.stop(now=True)
        fake.delete("namespaces", None, namespace)


async def test_storage_a_pvc_of_the_configured_class_and_size(fake, kind, spawn):
    spawner = spawn(
        "store",
        storage_pvc_ensure=True,
        storage_class="fast-ssd",
        storage_capacity="5Gi",
        storage_access_modes=["ReadWriteOnce"],
        storage_extra_labels={"backup": "daily"},
    )
    await spawner.start()
    try:
        pvc = fake.get("persistentvolumeclaims", NS, spawner.pvc_name)
        assert pvc["spec"]["storageClassName"] == "fast-ssd"
        assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["metadata"]["labels"]["backup"] == "daily"
        assert pvc["metadata"]["labels"]["hub.jupyter.org/username"]  # KubeSpawner's labels on both
        assert pvc["metadata"]["annotations"]["hub.jupyter.org/username"] == spawner.user.name
        pod = fake.get("pods", NS, spawner.pod_name)
        if kind == STOCK:
            assert claims(pod) == []  # KubeSpawner mounts it only when volumes/volume_mounts say so
        else:
            # intended: ML Hub mounts the workspace's PVC at volume_path (/workspace)
            assert claims(pod) == [spawner.pvc_name]
        await spawner.stop(now=True)
        assert fake.get("persistentvolumeclaims", NS, spawner.pvc_name) is not None  # the data stays
    finally:
        fake.delete("persistentvolumeclaims", NS, spawner.pvc_name)


async def test_services_one_per_pod_owned_by_it(fake, kind, spawn):
    spawner = spawn("svc", services_enabled=True)
    url = await spawner.start()
    service = fake.get("services", NS, spawner.pod_name)
    pod = fake.get("pods", NS, spawner.pod_name)
    assert service["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    assert url.startswith(f"http://{spawner.pod_name}.{NS}.svc.cluster.local:")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    if kind == STOCK:
        assert ports == {"http": 8888}
    else:
        # intended: ML Hub's Service also carries the workspace's sshd for the SSH front
        assert ports == {"http": 8080, "ssh": 22}
    await spawner.stop(now=True)
    assert fake.get("services", NS, spawner.pod_name) is None  # garbage-collected with its pod
