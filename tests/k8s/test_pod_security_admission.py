"""Pod Security admission in the fake kube-apiserver (tests/fake_k8s.py, rules in tests/pod_security.py),
driven by the real kubernetes_asyncio client: what a cluster with ``pod-security.kubernetes.io/enforce``
labels answers. Then the field tests: the chart's pods against the standards (pure checker) and a workspace
started by MLHubKubernetesSpawner in a namespace enforcing ``restricted``.

Nothing runs: a pod the fake admits is not proven to start on a real node (see the README's Kubernetes
section for what only a real cluster shows)."""

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from fake_k8s import running_fake
from traitlets.config import Config

from mlhubspawner.kubernetes import MLHubKubernetesSpawner

import kube_spawners
import pod_security
import support
from kube_spawners import kubeconfig_for

# one loop for the module: KubeSpawner caches its API client per loop (the sync chart test needs none)
module_loop = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mlhub"
LEVEL = "pod-security.kubernetes.io/enforce"
NAMESPACES = {
    "locked": {LEVEL: "restricted"},
    "base": {LEVEL: "baseline", f"{LEVEL}-version": "v1.33"},
    "warned": {
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "baseline",
    },
    "workspaces": {LEVEL: "restricted"},
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with running_fake() as fake, kubeconfig_for(fake, tmp_path_factory.mktemp("kube"), "default"):
        for name, labels in NAMESPACES.items():
            fake.create("namespaces", None, {"metadata": {"name": name, "labels": labels}})
        yield fake
    assert not fake.rejected, fake.rejected


@pytest_asyncio.fixture(loop_scope="module")
async def api(fake):
    from kubernetes_asyncio import client

    configuration = client.Configuration(host=fake.url)
    async with client.ApiClient(configuration) as api_client:
        yield api_client


def pod(name, **container_sc):
    """A pod with one container "notebook" whose securityContext is ``container_sc``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "notebook", "image": "busybox:1", "securityContext": container_sc}]},
    }


RESTRICTED_SC = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


async def create_pod(api, namespace, body):
    """(status, body as dict, Warning headers) of creating a pod."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    try:
        response = await core.create_namespaced_pod(namespace, body, _preload_content=False)
    except ApiException as e:
        return e.status, json.loads(e.body), e.headers.getall("Warning", []) if e.headers else []
    return response.status, await response.json(), response.headers.getall("Warning", [])


@module_loop
async def test_restricted_namespace_refuses_a_root_pod_naming_each_rule(fake, api):
    status, body, _ = await create_pod(api, "locked", pod("root"))
    assert status == 403
    assert body["kind"] == "Status" and body["reason"] == "Forbidden" and body["code"] == 403
    assert body["details"] == {"name": "root", "kind": "pods"}
    assert body["message"] == (
        'pods "root" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "notebook" must set securityContext.allowPrivilegeEscalation=false), unrestricted '
        'capabilities (container "notebook" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot '
        '!= true (pod or container "notebook" must set securityContext.runAsNonRoot=true), seccompProfile (pod '
        'or container "notebook" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
        '"Localhost")'
    )
    assert fake.get("pods", "locked", "root") is None


@module_loop
async def test_restricted_namespace_admits_a_conforming_pod(fake, api):
    status, body, warnings = await create_pod(api, "locked", pod("fine", **RESTRICTED_SC))
    assert status == 201 and body["metadata"]["namespace"] == "locked" and warnings == []
    for _ in range(50):
        if fake.get("pods", "locked", "fine")["status"]["phase"] == "Running":
            break
        await asyncio.sleep(0.1)
    assert fake.get("pods", "locked", "fine")["status"]["phase"] == "Running"


@module_loop
async def test_restricted_refuses_one_missing_setting_among_many(api):
    sc = {**RESTRICTED_SC, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    status, body, _ = await create_pod(api, "locked", pod("admin", **sc))
    assert status == 403
    assert body["message"].endswith(
        'violates PodSecurity "restricted:latest": unrestricted capabilities (container "notebook" must not '
        'include "SYS_ADMIN" in securityContext.capabilities.add)'
    )


@module_loop
async def test_baseline_refuses_privileged_but_admits_root(fake, api):
    status, body, _ = await create_pod(api, "base", pod("priv", privileged=True))
    assert status == 403
    assert body["message"] == (
        'pods "priv" is forbidden: violates PodSecurity "baseline:v1.33": privileged (container "notebook" must '
        "not set securityContext.privileged=true)"
    )
    status, body, _ = await create_pod(api, "base", pod("root", runAsUser=0))
    assert status == 201
    assert fake.get("pods", "base", "root") is not None


@module_loop
async def test_warn_label_admits_with_a_warning_header_and_audit_records(fake, api):
    status, _, warnings = await create_pod(api, "warned", pod("loud", runAsUser=0))
    assert status == 201
    assert len(warnings) == 1 and warnings[0].startswith(
        '299 - "would violate PodSecurity \\"restricted:latest\\"'
    )
    assert 'runAsUser=0 (container \\"notebook\\" must not set runAsUser=0)' in warnings[0]
    status, _, _ = await create_pod(api, "warned", pod("hostnet", **RESTRICTED_SC) | {})
    hostnet = pod("hostnet2", **RESTRICTED_SC)
    hostnet["spec"]["hostNetwork"] = True
    status, _, warnings = await create_pod(api, "warned", hostnet)
    assert status == 201 and "host namespaces (hostNetwork=true)" in warnings[0]
    audited = [a for a in fake.pod_security_audit if a["namespace"] == "warned"]
    assert audited == [
        {
            "kind": "Pod",
            "namespace": "warned",
            "name": "hostnet2",
            "level": "baseline",
            "violations": ["host namespaces (hostNetwork=true)"],
        }
    ]


@module_loop
async def test_deployment_with_a_violating_template_is_created_with_a_warning(fake, api):
    """As on a real cluster: the Deployment is accepted with a Warning; its ReplicaSet's pods are refused
    (FailedCreate event) and the Deployment never becomes available."""
    from kubernetes_asyncio import client

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rooty"},
        "spec": {
            "selector": {"matchLabels": {"app": "rooty"}},
            "template": {
                "metadata": {"labels": {"app": "rooty"}},
                "spec": pod("x", runAsUser=0)["spec"],
            },
        },
    }
    data, status, headers = await client.AppsV1Api(api).create_namespaced_deployment_with_http_info(
        "locked", deployment
    )
    assert status == 201 and data.metadata.name == "rooty"
    (warning,) = headers.getall("Warning")
    assert warning.startswith(
        '299 - "would violate PodSecurity \\"restricted:latest\\": allowPrivilegeEscalation'
    )
    assert 'runAsUser=0 (container \\"notebook\\" must not set runAsUser=0)' in warning
    recorded = [w for w in fake.pod_security_warnings if w["kind"] == "Deployment" and w["name"] == "rooty"]
    assert [(w["namespace"], w["level"]) for w in recorded] == [("locked", "restricted")]

    failed = []
    for _ in range(50):
        failed = [e for e in fake.list("events", "locked") if e["reason"] == "FailedCreate"]
        if failed and "ReplicaFailure" in str(fake.get("deployments", "locked", "rooty")["status"]):
            break
        await asyncio.sleep(0.1)
    assert failed and failed[0]["involvedObject"]["kind"] == "ReplicaSet" and failed[0]["type"] == "Warning"
    assert 'is forbidden: violates PodSecurity "restricted:latest": ' in failed[0]["message"]
    status = fake.get("deployments", "locked", "rooty")["status"]
    assert "readyReplicas" not in status
    assert {c["type"]: c["status"] for c in status["conditions"]}["ReplicaFailure"] == "True"
    assert [p for p in fake.list("pods", "locked") if p["metadata"]["name"].startswith("rooty-")] == []


@module_loop
async def test_fake_wide_default_level_and_label_overrides(fake, api):
    """The AdmissionConfiguration ``defaults`` stand-in: FakeKubernetes(pod_security=...) or the attribute
    applies to namespaces without a label; a label wins."""
    fake.create("namespaces", None, {"metadata": {"name": "plain"}})
    fake.create("namespaces", None, {"metadata": {"name": "open", "labels": {LEVEL: "privileged"}}})
    fake.pod_security = "baseline"
    try:
        status, body, _ = await create_pod(api, "plain", pod("priv", privileged=True))
        assert status == 403 and '"baseline:latest": privileged' in body["message"]
        status, _, _ = await create_pod(api, "open", pod("priv", privileged=True))
        assert status == 201
    finally:
        fake.pod_security = "privileged"
    status, _, _ = await create_pod(api, "plain", pod("priv", privileged=True))
    assert status == 201  # nothing configured: privileged, no checks (as every other test relies on)


@module_loop
async def test_an_invalid_level_label_is_refused(api):
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        await client.CoreV1Api(api).create_namespace(
            {"metadata": {"name": "typo", "labels": {LEVEL: "strict"}}}
        )
    assert raised.value.status == 422
    message = json.loads(raised.value.body)["message"]
    assert 'Invalid value: "strict": must be one of privileged, baseline, restricted' in message


# ------------------------------------------------------------------------------------------------------------
# field tests


def render_chart(*args):
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
        "KUBECONFIG": os.devnull,  # never a real cluster by accident
    }
    result = subprocess.run(
        [support.helm_binary(), "template", "mlhub", str(CHART), "--namespace", "ml", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


CHART_VALUES = {"default": [], "max": ["-f", str(REPO / "tests/chart/values-max.yaml")]}


def chart_pod_templates(docs):
    """{"<Kind>/<name>": pod or pod template} of every pod the rendered chart makes."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d if d["kind"] == "Pod" else pod_security.pod_template(d)
        for d in docs
        if d["kind"] == "Pod" or pod_security.pod_template(d) is not None
    }


@pytest.mark.parametrize("which", CHART_VALUES)
def test_chart_pods_pass_restricted(which):
    """Every pod the chart makes (the hub and proxy Deployments' templates, the pre-puller, any other workload)
    conforms to ``restricted`` (pure checker)."""
    templates = chart_pod_templates(render_chart(*CHART_VALUES[which]))
    assert {"Deployment/mlhub-hub", "Deployment/mlhub-proxy"} <= set(templates)
    assert {name: pod_security.violations(t, "restricted") for name, t in templates.items()} == {
        name: [] for name in templates
    }


@pytest.mark.parametrize("which", CHART_VALUES)
def test_helm_install_into_a_restricted_namespace_admits_every_pod(fake, tmp_path, which):
    """``helm install`` into a namespace labelled ``enforce=restricted``: every Deployment's ReplicaSet creates
    its pods and admission refuses none (a refusal is a FailedCreate event, as on a cluster)."""
    namespace = f"chart-{which}"
    fake.create("namespaces", None, {"metadata": {"name": namespace, "labels": {LEVEL: "restricted"}}})
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
        "KUBECONFIG": fake.write_kubeconfig(tmp_path / "kubeconfig", namespace),
    }
    result = subprocess.run(
        [support.helm_binary(), "install", "mlhub", str(CHART), "--namespace", namespace,
         *CHART_VALUES[which]],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deployments = fake.list("deployments", namespace)
    assert {d["metadata"]["name"] for d in deployments} == {"mlhub-hub", "mlhub-proxy"}

    def refused():
        return [e["message"] for e in fake.list("events", namespace) if e["reason"] == "FailedCreate"]

    def pods_of(deployment):
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        return fake.list("pods", namespace, label_selector=selector)

    # the fake's controllers act just after the install returns
    support.wait_for(lambda: refused() or all(pods_of(d) for d in deployments), timeout=30, interval=0.2)
    assert refused() == []
    assert [a for a in fake.pod_security_audit if a["namespace"] == namespace] == []
    for deployment in deployments:
        (made,) = pods_of(deployment)
        assert made["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert pod_security.violations(made, "restricted") == []


@module_loop
async def test_workspace_pod_is_admitted_under_restricted(fake, tmp_path):
    """A workspace started by MLHubKubernetesSpawner with its defaults in a namespace enforcing
    ``restricted``: the pod must be admitted (and run), as on a cluster with Pod Security admission."""
    spawner = kube_spawners.make_spawner(
        fake,
        "alice",
        "secure",
        hub_name="psa",
        namespace="workspaces",
        image="mlhub-workspace:test",
        config=Config(),
    )
    spawner.start_timeout = 10
    spawner.k8s_api_request_retry_timeout = 5
    spawner.user_options = {"cpu_limit": "1", "mem_limit": "1G"}
    refused = []
    try:
        try:
            await spawner.start()
        except Exception as e:  # noqa: BLE001 - reported below with what the admission said
            refused.append(repr(e))
        forbidden = [
            f"{a['name']}: {a['violations']}"
            for a in fake.pod_security_audit
            if a["namespace"] == "workspaces" and a["kind"] == "Pod"
        ]
        assert not forbidden, f"workspace pod refused by Pod Security restricted: {forbidden} ({refused})"
        assert not refused, refused
        admitted = fake.get("pods", "workspaces", spawner.pod_name)
        assert admitted is not None and admitted["status"]["phase"] == "Running"
        assert pod_security.violations(admitted, "restricted") == []
        await spawner.stop(now=True)
        assert fake.get("pods", "workspaces", spawner.pod_name) is None
    finally:
        # the way KubeSpawner's own tests end its shared pod/event watches
        await MLHubKubernetesSpawner._stop_all_reflectors()
