"""Workspace pods under Pod Security, and user namespaces, with MLHubKubernetesSpawner on the fake API server.

The workspaces run in namespaces labelled ``pod-security.kubernetes.io/enforce``, as an operator labels a
production namespace: the fake's Pod Security admission (``tests/pod_security.py``) refuses a pod that
violates the level with 403, as a real API server does. Each created pod is also checked with the same
pure checks, and validated against the 1.33 schema (``fake.rejected`` stays empty).

The module runs on its own event loop (see ``test_kubernetes_spawner.py``).
"""

import functools
import sys
from pathlib import Path

import pytest
from tornado import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402

import kube_spawners  # noqa: E402
import pod_security  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8ssec"
HUB_NS = "mlhub"
RESTRICTED_NS = "ws-restricted"
BASELINE_NS = "ws-baseline"
IMAGE = "mlhub-workspace:test"
# a custom image whose USER is root (the image is not run: its USER would apply without runAsUser)
ROOT_IMAGE = "someone/root-user:latest"


fake = kube_spawners.fake_apiserver_fixture(
    RESTRICTED_NS,
    prepare=lambda fake: kube_spawners.labelled_namespaces(
        fake, {HUB_NS: "baseline", RESTRICTED_NS: "restricted", BASELINE_NS: "baseline"}
    ),
)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server="", namespace=RESTRICTED_NS, **traits):
    config = kube_spawners.spawner_config(**{"workspace_images": [ROOT_IMAGE], **traits})
    return kube_spawners.make_spawner(
        fake,
        username,
        server,
        hub_name=HUB,
        namespace=namespace,
        image=IMAGE,
        config=config,
        hub_namespace=HUB_NS,
    )


owned_by = functools.partial(kube_spawners.owned_by, hub=HUB)


async def test_a_workspace_runs_in_a_restricted_namespace_as_1000_with_a_writable_volume(fake):
    spawner = make_spawner(fake, "alice")
    spawner.user_options = {"image": ROOT_IMAGE, "env": "UID=0\nUSER=root"}
    await spawner.start()
    pod = fake.get("pods", RESTRICTED_NS, spawner.pod_name)
    assert pod is not None and pod_security.violations(pod, "restricted") == []
    psc = pod["spec"]["securityContext"]
    # the volume: group 100 owns it, group-writable, re-chowned only when its top directory is not yet
    assert (psc["fsGroup"], psc["fsGroupChangePolicy"]) == (100, "OnRootMismatch")
    assert any(v.get("persistentVolumeClaim") for v in pod["spec"]["volumes"])
    # the image's USER is root: the pod runs it as 1000:100 anyway, never as root
    (container,) = pod["spec"]["containers"]
    assert container["image"] == ROOT_IMAGE
    assert (psc["runAsUser"], psc["runAsGroup"], psc["runAsNonRoot"]) == (1000, 100, True)
    csc = container["securityContext"]
    assert (csc["runAsUser"], csc["runAsGroup"]) == (1000, 100)
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    # sshd (uid 1000, no capabilities) can bind port 22
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"} in psc["sysctls"]
    assert {p["port"] for p in fake.get("services", RESTRICTED_NS, spawner.pod_name)["spec"]["ports"]} == {
        8080,
        22,
    }
    await spawner.stop(now=True)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"uid": 0}, "uid"),
        ({"securityContext": {"runAsUser": 0}}, "securityContext"),
        ({"container_security_context": {"privileged": True}}, "container_security_context"),
    ],
)
async def test_users_cannot_choose_who_the_workspace_runs_as(fake, options, field):
    spawner = make_spawner(fake, "mallory", "x")
    spawner.user_options = options
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert error.value.status_code == 400 and field in (error.value.log_message % error.value.args)
    assert owned_by(fake, "mallory") == set()


async def test_baseline_for_images_that_need_more(fake):
    spawner = make_spawner(
        fake, "bob", namespace=BASELINE_NS, pod_security_level="baseline", allow_privilege_escalation=True
    )
    await spawner.start()
    pod = fake.get("pods", BASELINE_NS, spawner.pod_name)
    assert pod_security.violations(pod, "baseline") == []
    assert pod_security.violations(pod, "restricted") != []  # sudo works: not restricted
    psc = pod["spec"]["securityContext"]
    assert "runAsNonRoot" not in psc and psc["fsGroup"] == 100 and psc["runAsUser"] == 1000
    csc = pod["spec"]["containers"][0]["securityContext"]
    assert csc["allowPrivilegeEscalation"] is True and "capabilities" not in csc
    await spawner.stop(now=True)


async def test_the_restricted_namespace_refuses_a_relaxed_workspace(fake):
    # an operator relaxes the level without relabelling the namespace: the API server says no
    spawner = make_spawner(
        fake, "carol", pod_security_level="baseline", uid=0, k8s_api_request_retry_timeout=2
    )
    with pytest.raises(Exception, match="(?i)forbidden|PodSecurity|403"):
        await spawner.start()
    assert fake.get("pods", RESTRICTED_NS, spawner.pod_name) is None


@pytest.mark.parametrize(
    "traits, named",
    [
        ({"uid": 0}, "runs as root"),
        ({"volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]}, "hostPath"),
        ({"privileged": True}, "privileged"),
        (
            {"init_containers": [{"name": "setup", "image": "busybox", "securityContext": {"runAsUser": 0}}]},
            "setup",
        ),
    ],
)
async def test_admin_settings_the_level_refuses_fail_the_start_naming_them(fake, traits, named):
    spawner = make_spawner(fake, "dave", "y", **traits)
    with pytest.raises(ValueError, match="pod_security_level") as error:
        await spawner.start()
    assert named in str(error.value)
    assert owned_by(fake, "dave") == set()  # refused before anything was created


async def test_init_containers_conform_too(fake):
    spawner = make_spawner(fake, "erin", init_containers=[{"name": "setup", "image": "busybox"}])
    await spawner.start()
    pod = fake.get("pods", RESTRICTED_NS, spawner.pod_name)
    assert pod_security.violations(pod, "restricted") == []
    (init,) = pod["spec"]["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000  # the notebook's user, for every container
    await spawner.stop(now=True)


async def test_user_namespaces_start_and_the_policy_selects_the_hubs_namespace(fake):
    spawner = make_spawner(
        fake, "frank", enable_user_namespaces=True, user_namespace_template="ws-{username}"
    )
    assert spawner.namespace == "ws-frank"
    await spawner.start()
    assert fake.get("namespaces", None, "ws-frank") is not None
    pod = fake.get("pods", "ws-frank", spawner.pod_name)
    assert pod is not None and pod_security.violations(pod, "restricted") == []
    policy = fake.get("networkpolicies", "ws-frank", naming.network_name(HUB, "frank"))
    hub_ns = {"matchLabels": {"kubernetes.io/metadata.name": HUB_NS}}
    # the hub and proxy (and the SSH front) live in the hub's namespace, not the user's
    same_user, *others = policy["spec"]["ingress"][0]["from"]
    assert "namespaceSelector" not in same_user  # the user's own pods: in the policy's namespace
    assert others and all(p["namespaceSelector"] == hub_ns for p in others)
    hub_rules = [r for r in policy["spec"]["egress"] if r.get("ports") == [{"protocol": "TCP", "port": 8081}]]
    assert [p["namespaceSelector"] for r in hub_rules for p in r["to"]] == [hub_ns]
    # DNS keeps its own namespace (kube-system)
    assert policy["spec"]["egress"][0]["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    await spawner.stop(now=True)
    assert fake.get("pods", "ws-frank", spawner.pod_name) is None


async def test_workspaces_in_the_hubs_namespace_keep_plain_peers(fake):
    spawner = make_spawner(fake, "gina", namespace=HUB_NS)
    await spawner.start()
    policy = fake.get("networkpolicies", HUB_NS, naming.network_name(HUB, "gina"))
    assert all("namespaceSelector" not in p for p in policy["spec"]["ingress"][0]["from"])
    await spawner.stop(now=True)
