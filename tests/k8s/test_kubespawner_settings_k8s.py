"""KubeSpawner's settings on MLHubKubernetesSpawner (issue 15), on the in-process fake kube-apiserver.

What an operator carries over from a KubeSpawner deployment lands in the workspace pod and PVC (storage,
volumes, init/extra containers, hooks, scheduling, ids); what ML Hub refuses fails the start with a message
naming the setting, before anything exists (a profile or group override can set it after hub start); and
``handle_legacy_names`` adopts the user's PVC (the data) and stops the user's pod of a stock KubeSpawner
deployment, never another user's whose name renders to the same object name.
"""

import functools
import sys
from pathlib import Path

import pytest
from tornado import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402
from mlhubspawner.kubernetes import legacy, objects  # noqa: E402

import kube_spawners  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8sparent"
NS = "default"
IMAGE = "mlhub-workspace:test"
STOCK_IMAGE = "quay.io/jupyter/base-notebook:2025-01-01"


fake = kube_spawners.fake_apiserver_fixture(NS)
stop_reflectors = kube_spawners.stop_reflectors_fixture()  # the stock spawners' too: one dict of reflectors


def make_spawner(fake, username, server="", **traits):
    config = kube_spawners.spawner_config(**traits)
    spawner = kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image=IMAGE, config=config
    )
    spawner.user_options = {}
    return spawner


def stock_spawner(fake, username, server="", **traits):
    """What a stock KubeSpawner deployment ran (``slug_scheme="escape"``: KubeSpawner 6's names)."""
    return kube_spawners.make_stock_spawner(
        fake,
        username,
        server,
        namespace=NS,
        image=STOCK_IMAGE,
        storage_pvc_ensure=True,
        storage_capacity="1Gi",
        **traits,
    )


owned = functools.partial(kube_spawners.owned_by, hub=HUB, namespace=NS)


def version(fake, resource, name):
    obj = fake.get(resource, NS, name)
    return obj and (obj["metadata"]["uid"], obj["metadata"]["resourceVersion"])


async def test_an_operators_kubespawner_settings_reach_the_pod_and_the_pvc(fake):
    spawner = make_spawner(
        fake,
        "olive",
        "carry",
        storage_class="fast-ssd",
        storage_capacity="25Gi",
        storage_access_modes=["ReadWriteOnce"],
        storage_extra_labels={"backup": "daily"},
        storage_extra_annotations={"team": "vision"},
        storage_selector={"matchLabels": {"tier": "ssd"}},
        volumes=[{"name": "datasets", "persistentVolumeClaim": {"claimName": "shared-datasets"}}],
        volume_mounts=[{"name": "datasets", "mountPath": "/datasets", "readOnly": True}],
        init_containers=[{"name": "warm-cache", "image": "busybox:1.36", "command": ["true"]}],
        extra_containers=[{"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "1d"]}],
        extra_pod_config={"terminationGracePeriodSeconds": 7},
        extra_container_config={"workingDir": "/workspace"},
        lifecycle_hooks={"preStop": {"exec": {"command": ["sync"]}}},
        service_account="workspaces",
        automount_service_account_token=False,
        node_selector={"pool": "cpu"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        node_affinity_required=[
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
        ],
        uid=1001,
        fs_gid=2000,
        supplemental_gids=[3000],
        extra_labels={"team": "vision"},
        environment={"FROM_KUBESPAWNER": "yes"},
    )
    await spawner.start()
    try:
        pod = fake.get("pods", NS, spawner.pod_name)
        spec = pod["spec"]
        notebook = next(c for c in spec["containers"] if c["name"] == "notebook")
        mounts = {m["name"]: m for m in notebook["volumeMounts"]}
        # the operator's volume beside ML Hub's PVC at /workspace
        assert mounts["datasets"]["mountPath"] == "/datasets" and mounts["datasets"]["readOnly"] is True
        assert mounts[objects.WORKSPACE_VOLUME]["mountPath"] == "/workspace"
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]}
        assert (
            claims["datasets"] == "shared-datasets" and claims[objects.WORKSPACE_VOLUME] == spawner.pvc_name
        )
        assert [c["name"] for c in spec["initContainers"]] == ["warm-cache"]
        assert [c["name"] for c in spec["containers"]] == ["notebook", "sidecar"]
        # Pod Security restricted hardens the operator's containers too
        assert spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["terminationGracePeriodSeconds"] == 7
        assert notebook["workingDir"] == "/workspace"
        assert notebook["lifecycle"] == {"preStop": {"exec": {"command": ["sync"]}}}
        assert spec["serviceAccountName"] == "workspaces" and spec["automountServiceAccountToken"] is False
        assert spec["nodeSelector"] == {"pool": "cpu"}
        assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "zone"
        psc = spec["securityContext"]
        assert (psc["runAsUser"], psc["fsGroup"], psc["supplementalGroups"]) == (1001, 2000, [3000])
        assert pod["metadata"]["labels"]["team"] == "vision"
        assert pod["metadata"]["labels"][naming.LABEL_ORIGIN] == HUB  # ML Hub's labels beside them
        assert {"name": "FROM_KUBESPAWNER", "value": "yes"} in notebook["env"]

        pvc = fake.get("persistentvolumeclaims", NS, spawner.pvc_name)
        assert pvc["spec"]["storageClassName"] == "fast-ssd"
        assert pvc["spec"]["resources"]["requests"] == {"storage": "25Gi"}
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["spec"]["selector"] == {"matchLabels": {"tier": "ssd"}}
        assert pvc["metadata"]["labels"]["backup"] == "daily"
        assert pvc["metadata"]["annotations"]["team"] == "vision"
        assert pvc["metadata"]["labels"][naming.LABEL_COMPONENT] == naming.COMPONENT_VOLUME
    finally:
        await spawner.stop(now=True)


@pytest.mark.parametrize(
    "setting, value, named",
    [
        ("volume_mounts", [{"name": "home", "mountPath": "/workspace"}], "covers the workspace volume"),
        ("volume_mounts", [{"name": "sa", "mountPath": "/var/run/secrets"}], "credentials"),
        ("extra_container_config", {"env": [{"name": "A", "value": "1"}]}, "extra_container_config: 'env'"),
        ("extra_resource_limits", {"nvidia.com/gpu": "2"}, "extra_resource_limits: 'nvidia.com/gpu'"),
        ("services_enabled", False, "services_enabled"),
        ("extra_labels", {naming.LABEL_USER: "someone-else"}, "extra_labels: 'mlhub.user'"),
    ],
)
async def test_a_refused_setting_set_after_hub_start_fails_the_start_naming_it(fake, setting, value, named):
    # a group override or a profile sets it on the spawner: the hub-start check never saw it
    username = f"late-{setting.replace('_', '-')}"
    spawner = make_spawner(fake, username, "x")
    setattr(spawner, setting, value)
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    message = error.value.log_message % error.value.args
    assert error.value.status_code == 500 and setting in message and named in message
    assert owned(fake, username) == set()  # nothing half-created


async def test_a_profile_that_mounts_over_the_workspace_is_refused_at_its_start(fake):
    profiles = [
        {"display_name": "Plain", "slug": "plain", "default": True},
        {
            "display_name": "Bad mount",
            "slug": "bad",
            "kubespawner_override": {"volume_mounts": [{"name": "x", "mountPath": "/workspace"}]},
        },
    ]
    spawner = make_spawner(fake, "pat", "p", profile_list=profiles)
    spawner.user_options = {"profile": "bad"}
    try:
        with pytest.raises(web.HTTPError) as error:
            await spawner.start()
        assert "volume_mounts" in error.value.log_message % error.value.args
        assert owned(fake, "pat") == set()
    finally:
        await spawner.stop(now=True)
    # the same spawner's next start with the plain profile keeps nothing of it
    spawner.user_options = {"profile": "plain"}
    await spawner.start()
    try:
        mounts = [
            m["mountPath"]
            for m in fake.get("pods", NS, spawner.pod_name)["spec"]["containers"][0]["volumeMounts"]
        ]
        assert mounts.count("/workspace") == 1
    finally:
        await spawner.stop(now=True)


# ---- handle_legacy_names: from a stock KubeSpawner deployment -------------------------------------


async def stock_deployment(fake, username, server="", **traits):
    """The user's server started by a stock KubeSpawner (KubeSpawner 6's names): its PVC and running pod."""
    stock = stock_spawner(fake, username, server, slug_scheme="escape", **traits)
    await stock.start()
    return stock.pvc_name, stock.pod_name


async def test_a_users_kubespawner_pvc_is_adopted_and_the_old_pod_stopped(fake):
    pvc_name, pod_name = await stock_deployment(fake, "a.b")
    assert (pvc_name, pod_name) == ("claim-a-2eb", "jupyter-a-2eb")  # KubeSpawner 6's escaped names
    data = version(fake, "persistentvolumeclaims", pvc_name)[0]

    spawner = make_spawner(fake, "a.b", handle_legacy_names=True)
    try:
        await spawner.start()
        assert spawner.pvc_name == pvc_name
        assert fake.get("pods", NS, pod_name) is None  # the old hub's server no longer holds the volume
        pod = fake.get("pods", NS, spawner.pod_name)
        assert kube_spawners.claims(pod) == [pvc_name]
        pvc = fake.get("persistentvolumeclaims", NS, pvc_name)
        assert pvc["metadata"]["uid"] == data  # the same PVC: the user's data
        assert pvc["metadata"]["labels"][naming.LABEL_ORIGIN] == HUB  # now ML Hub's (cleanup, owner checks)
        assert pvc["metadata"]["annotations"][legacy.USERNAME_KEY] == "a.b"  # KubeSpawner's kept
        assert fake.get("persistentvolumeclaims", NS, naming.volume_name(HUB, "a.b")) is None
        state = spawner.get_state()
        await spawner.stop(now=True)

        # the next start (a new hub process) mounts it again, without looking for legacy names
        again = make_spawner(fake, "a.b")
        again.load_state(state)
        await again.start()
        assert again.pvc_name == pvc_name
        await again.stop(now=True)
    finally:
        fake.delete("persistentvolumeclaims", NS, pvc_name)


async def test_without_the_switch_nothing_of_kubespawners_is_touched(fake):
    pvc_name, pod_name = await stock_deployment(fake, "c.d")
    before = version(fake, "persistentvolumeclaims", pvc_name), version(fake, "pods", pod_name)
    spawner = make_spawner(fake, "c.d")  # handle_legacy_names defaults to False on ML Hub
    try:
        await spawner.start()
        assert spawner.pvc_name == naming.volume_name(HUB, "c.d")
        assert (version(fake, "persistentvolumeclaims", pvc_name), version(fake, "pods", pod_name)) == before
    finally:
        await spawner.stop(now=True)
        fake.delete("pods", NS, pod_name)
        fake.delete("persistentvolumeclaims", NS, pvc_name)


@pytest.mark.parametrize("annotated", [True, False], ids=["kubespawner-annotation", "label-only"])
async def test_a_user_whose_name_renders_to_anothers_pvc_name_cannot_adopt_it(fake, annotated):
    # the victim "e.f" ran on KubeSpawner 6: claim-e-2ef, jupyter-e-2ef. The attacker signs up as "e-2ef":
    # KubeSpawner 7's safe names of that user are exactly claim-e-2ef and jupyter-e-2ef
    victim, attacker = "e.f", "e-2ef"
    pvc_name, pod_name = await stock_deployment(fake, victim)
    if not annotated:  # KubeSpawner before 0.12: no annotations, the escaped name as the label
        fake.delete("pods", NS, pod_name)
        pvc = fake.get("persistentvolumeclaims", NS, pvc_name)
        fake.delete("persistentvolumeclaims", NS, pvc_name)
        labels = {**pvc["metadata"]["labels"], legacy.USERNAME_KEY: "e-2ef"}
        spec = {k: v for k, v in pvc["spec"].items() if k != "volumeName"}
        fake.create(
            "persistentvolumeclaims", NS, {"metadata": {"name": pvc_name, "labels": labels}, "spec": spec}
        )
        # the name and the label alone are the attacker's too
    before = version(fake, "persistentvolumeclaims", pvc_name), version(fake, "pods", pod_name)

    spawner = make_spawner(fake, attacker, handle_legacy_names=True)
    assert pvc_name in spawner._legacy_names(legacy.PVC_TEMPLATES, spawner.pvc_name_template)
    try:
        await spawner.start()
        # the victim's PVC and running server are untouched; the attacker has a new PVC of their own
        assert (version(fake, "persistentvolumeclaims", pvc_name), version(fake, "pods", pod_name)) == before
        assert spawner.pvc_name == naming.volume_name(HUB, attacker)
        pod = fake.get("pods", NS, spawner.pod_name)
        assert kube_spawners.claims(pod) == [spawner.pvc_name]
        assert f"persistentvolumeclaims/{pvc_name}" not in owned(fake, attacker)
    finally:
        await spawner.stop(now=True)

    # the victim adopts it
    owner = make_spawner(fake, victim, handle_legacy_names=True)
    try:
        await owner.start()
        assert owner.pvc_name == pvc_name
        assert fake.get("pods", NS, pod_name) is None
    finally:
        await owner.stop(now=True)
        fake.delete("persistentvolumeclaims", NS, pvc_name)


async def test_kubespawners_own_legacy_search_cannot_hand_over_anothers_pvc(fake):
    # the victim "x-2ey" ran on KubeSpawner 7 with the operator's "claim-{username}": claim-x-2ey. The hub
    # database came from KubeSpawner 6 for the attacker "x.y" (a state without kubespawner_version), whose
    # escaped name is x-2ey: KubeSpawner's own legacy search takes that PVC by its name alone
    victim, attacker = "x-2ey", "x.y"
    stock = stock_spawner(fake, victim, pvc_name_template="claim-{username}")
    await stock.start()
    pvc_name = stock.pvc_name
    assert pvc_name == "claim-x-2ey"
    await stock.stop(now=True)
    before = version(fake, "persistentvolumeclaims", pvc_name)
    old_state = {"pod_name": "jupyter-x-2ey"}  # KubeSpawner 6's state of the attacker's server

    # the stock class hands the victim's PVC over (shown here, not ML Hub's behaviour)
    plain = stock_spawner(fake, attacker, pvc_name_template="claim-{username}")
    plain.load_state(old_state)
    plain.pod_name = plain._expand_user_properties(plain.pod_name_template)
    await plain.start()
    assert plain.pvc_name == pvc_name
    await plain.stop(now=True)

    spawner = make_spawner(fake, attacker, handle_legacy_names=True, pvc_name_template="claim-{username}")
    spawner.load_state(old_state)
    spawner.pod_name = naming.workspace_name(HUB, attacker)
    try:
        await spawner.start()
        assert spawner.pvc_name == "claim-x-y---b24ca9b7"  # a PVC of the attacker's own
        pod = fake.get("pods", NS, spawner.pod_name)
        assert kube_spawners.claims(pod) == [spawner.pvc_name]
        assert version(fake, "persistentvolumeclaims", pvc_name) == before
    finally:
        await spawner.stop(now=True)
        fake.delete("persistentvolumeclaims", NS, pvc_name)
        fake.delete("persistentvolumeclaims", NS, spawner.pvc_name)


async def test_a_pvc_template_without_the_server_name_is_one_home_for_all_of_a_users_servers(fake):
    # KubeSpawner's common "claim-{username}": the default server and a named one mount the same PVC
    first = make_spawner(fake, "hana", "", pvc_name_template="claim-{username}")
    second = make_spawner(fake, "hana", "gpu", pvc_name_template="claim-{username}")
    other = make_spawner(fake, "hanb", "", pvc_name_template="claim-{username}")
    try:
        await first.start()
        await second.start()
        assert first.pvc_name == second.pvc_name == "claim-hana"
        for spawner in (first, second):
            assert kube_spawners.claims(fake.get("pods", NS, spawner.pod_name)) == ["claim-hana"]
        # another user's is still refused: the owner check compares the user (and the hub)
        other.pvc_name = "claim-hana"
        with pytest.raises(naming.ForeignResourceError, match="claim-hana"):
            await other.start()
    finally:
        for spawner in (first, second, other):
            await spawner.stop(now=True)
        fake.delete("persistentvolumeclaims", NS, "claim-hana")


async def test_a_migrated_hub_database_stops_the_users_old_server(fake):
    # the hub's database came along: the user's server record names KubeSpawner's running pod
    pvc_name, pod_name = await stock_deployment(fake, "p.q")
    spawner = make_spawner(fake, "p.q", handle_legacy_names=True)
    spawner.load_state({"pod_name": pod_name, "namespace": NS})
    try:
        assert await spawner.poll() == 1  # not an ML Hub workspace: the hub treats the server as stopped
        await spawner.stop(now=True)  # and stops it: the user's old server is gone
        assert fake.get("pods", NS, pod_name) is None
        assert fake.get("persistentvolumeclaims", NS, pvc_name) is not None  # the data stays for adoption
    finally:
        fake.delete("persistentvolumeclaims", NS, pvc_name)
