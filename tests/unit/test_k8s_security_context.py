"""Workspace pods under Pod Security: the security contexts ``objects.secure_pod`` adds to KubeSpawner's pod,
the conflicts ``objects.pod_security_conflicts`` reports, and NetworkPolicy peers across namespaces.

Every pod is validated against the Kubernetes 1.33 schema (kubernetes-validate, strict).
"""

import sys
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient, V1Capabilities, V1SecurityContext
from kubespawner.objects import make_pod

from mlhubspawner.kubernetes import objects

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pod_security  # noqa: E402

K8S_VERSION = "1.33.0"


@pytest.fixture
async def api_client():
    client = ApiClient()
    yield client
    await client.close()


def validated(api_client, pod):
    data = api_client.sanitize_for_serialization(pod)
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Pod")
    kubernetes_validate.validate(data, K8S_VERSION, strict=True)
    return data


def kubespawner_pod(**overrides):
    """KubeSpawner's pod with ML Hub's defaults (uid 1000, gid 100, fs_gid 100)."""
    settings = dict(
        name="mlhub-ws-alice--train",
        image="someone/root-image:1",
        port=8080,
        cmd=None,
        uid=1000,
        gid=100,
        fs_gid=100,
        volumes=[{"name": "mlhub-workspace", "persistentVolumeClaim": {"claimName": "v"}}],
        volume_mounts=[{"name": "mlhub-workspace", "mountPath": "/workspace"}],
    )
    return make_pod(**{**settings, **overrides})


def restricted_fields_missing(data):
    """The Pod Security ``restricted`` fields a pod (API JSON) lacks, checked directly."""
    spec = data["spec"]
    psc = spec.get("securityContext") or {}
    missing = []
    if psc.get("runAsNonRoot") is not True:
        missing.append("runAsNonRoot")
    if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        missing.append("seccompProfile")
    for container in spec.get("initContainers", []) + spec["containers"]:
        csc = container.get("securityContext") or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            missing.append(f"{container['name']}: allowPrivilegeEscalation")
        if "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
            missing.append(f"{container['name']}: drop ALL")
        if csc.get("runAsUser") == 0 or psc.get("runAsUser") == 0:
            missing.append(f"{container['name']}: root")
    return missing


def test_restricted_workspace_pod_runs_as_1000_and_can_write_its_volume(api_client):
    pod = kubespawner_pod(init_containers=[{"name": "fetch", "image": "busybox"}])
    before = api_client.sanitize_for_serialization(pod)
    data = validated(api_client, objects.secure_pod(pod, low_port=22))
    assert api_client.sanitize_for_serialization(pod) == before  # a copy
    psc = data["spec"]["securityContext"]
    assert psc == {
        "fsGroup": 100,
        "fsGroupChangePolicy": "OnRootMismatch",
        "runAsUser": 1000,
        "runAsGroup": 100,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"}],
    }
    notebook = data["spec"]["containers"][0]["securityContext"]
    assert (notebook["runAsUser"], notebook["runAsGroup"]) == (1000, 100)  # whatever the image's USER
    for container in data["spec"]["initContainers"] + data["spec"]["containers"]:
        csc = container["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False, container["name"]
        assert csc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert csc["runAsNonRoot"] is True, container["name"]
    assert restricted_fields_missing(data) == []
    assert objects.pod_security_conflicts(objects.secure_pod(pod, low_port=22)) == []


def test_the_pod_security_standards_admit_the_workspace_pod(api_client):
    pod = kubespawner_pod(init_containers=[{"name": "fetch", "image": "busybox"}])
    assert (
        pod_security.violations(validated(api_client, objects.secure_pod(pod, low_port=22)), "restricted")
        == []
    )
    relaxed = objects.secure_pod(
        kubespawner_pod(uid=0, allow_privilege_escalation=True), level="baseline", low_port=22
    )
    assert pod_security.violations(validated(api_client, relaxed), "baseline") == []
    # KubeSpawner's pod alone (no ML Hub additions) is refused by a restricted namespace
    refused = pod_security.violations(validated(api_client, pod), "restricted")
    assert any(v.startswith("runAsNonRoot") for v in refused), refused


def test_kubespawners_pod_alone_is_not_restricted(api_client):
    # what KubeSpawner sends without ML Hub's additions: refused by a restricted namespace
    data = validated(api_client, kubespawner_pod())
    assert "runAsNonRoot" in restricted_fields_missing(data)
    assert "fsGroupChangePolicy" not in data["spec"]["securityContext"]


def test_baseline_relaxes_only_what_images_that_need_more_need(api_client):
    pod = kubespawner_pod(allow_privilege_escalation=True, uid=0, gid=0)
    data = validated(api_client, objects.secure_pod(pod, level="baseline", low_port=22))
    psc = data["spec"]["securityContext"]
    assert "runAsNonRoot" not in psc
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert psc["fsGroupChangePolicy"] == "OnRootMismatch"
    assert psc["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"}]
    csc = data["spec"]["containers"][0]["securityContext"]
    assert csc == {"runAsUser": 0, "runAsGroup": 0, "allowPrivilegeEscalation": True}
    assert objects.pod_security_conflicts(objects.secure_pod(pod, level="baseline"), "baseline") == []
    # the same pod under restricted: named, not silently changed
    conflicts = objects.pod_security_conflicts(objects.secure_pod(pod), "restricted")
    assert any("runs as root" in c for c in conflicts)
    assert any("allows privilege escalation" in c for c in conflicts)


def test_the_admins_own_security_settings_are_kept(api_client):
    pod = kubespawner_pod(
        pod_security_context={
            "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/ws.json"},
            "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}],
            "fsGroupChangePolicy": "Always",
        },
        container_security_context={"capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE"]}},
        init_containers=[{"name": "init", "image": "busybox"}],
    )
    # a client model as the security context (KubeSpawner passes models through as they are)
    pod.spec.init_containers[0].security_context = V1SecurityContext(
        capabilities=V1Capabilities(drop=["MKNOD"]), read_only_root_filesystem=True
    )
    data = validated(api_client, objects.secure_pod(pod, low_port=22))
    psc = data["spec"]["securityContext"]
    assert psc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/ws.json"}
    assert psc["fsGroupChangePolicy"] == "Always"
    assert psc["sysctls"] == [
        {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"},
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"},
    ]
    notebook = data["spec"]["containers"][0]["securityContext"]
    assert notebook["capabilities"] == {"drop": ["ALL", "NET_RAW"], "add": ["NET_BIND_SERVICE"]}
    init = data["spec"]["initContainers"][0]["securityContext"]
    assert init["readOnlyRootFilesystem"] is True and init["capabilities"]["drop"] == ["ALL", "MKNOD"]
    assert restricted_fields_missing(data) == []


def test_no_port_sysctl_when_every_port_is_unprivileged(api_client):
    assert objects.lowest_bound_port([8080, 22]) == 22
    assert objects.lowest_bound_port([8888, 2222]) is None
    assert objects.lowest_bound_port([8080, 0]) is None
    data = validated(api_client, objects.secure_pod(kubespawner_pod(), low_port=None))
    assert "sysctls" not in data["spec"]["securityContext"]
    # an admin's higher value is lowered to the port sshd binds; a lower one kept
    for configured, expected in (("1024", "22"), ("0", "0")):
        pod = kubespawner_pod(
            pod_security_context={
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": configured}]
            }
        )
        psc = objects.secure_pod(pod, low_port=22).spec.security_context
        assert psc["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start", "value": expected}]


def test_no_fs_group_no_change_policy(api_client):
    data = validated(api_client, objects.secure_pod(kubespawner_pod(fs_gid=None)))
    assert "fsGroup" not in data["spec"]["securityContext"]
    assert "fsGroupChangePolicy" not in data["spec"]["securityContext"]


@pytest.mark.parametrize(
    "overrides, level, expected",
    [
        ({"uid": 0}, "restricted", "runs as root"),
        ({"privileged": True}, "baseline", "is privileged"),
        ({"container_security_context": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "baseline", "SYS_ADMIN"),
        ({"container_security_context": {"capabilities": {"add": ["CHOWN"]}}}, "restricted", "CHOWN"),
        ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "baseline", "hostPath"),
        ({"volumes": [{"name": "nfs", "nfs": {"server": "n", "path": "/"}}]}, "restricted", "nfs"),
        ({"extra_pod_config": {"hostNetwork": True}}, "baseline", "hostNetwork"),
        (
            {"extra_container_config": {"ports": [{"containerPort": 80, "hostPort": 80}]}},
            "baseline",
            "hostPort",
        ),
        ({"pod_security_context": {"seccompProfile": {"type": "Unconfined"}}}, "baseline", "Unconfined"),
        ({"pod_security_context": {"runAsNonRoot": False}}, "restricted", "runs as root"),
    ],
)
def test_settings_the_level_refuses_are_named(overrides, level, expected):
    pod = objects.secure_pod(kubespawner_pod(**overrides), level=level)
    conflicts = objects.pod_security_conflicts(pod, level)
    assert any(expected in c for c in conflicts), conflicts


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="privileged"):
        objects.secure_pod(kubespawner_pod(), level="privileged")


def test_peers_in_another_namespace_name_the_hubs_namespace():
    peers = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "hub"}}},
        {"ipBlock": {"cidr": "10.0.0.1/32"}},
        {"namespaceSelector": {"matchLabels": {"team": "a"}}},
    ]
    moved = objects.peers_in_namespace(peers, "mlhub")
    assert moved[0] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "hub"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlhub"}},
    }
    assert moved[1:] == peers[1:]
    assert "namespaceSelector" not in peers[0]  # a copy
