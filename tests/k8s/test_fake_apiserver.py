"""The fake kube-apiserver (tests/fake_k8s.py) driven by real clients: unmodified KubeSpawner 7 through
kubernetes_asyncio, raw HTTP for the protocol details (watch, patch, Status errors) and, when available,
helm 3. A contract test of our clients and of the fake, not an end-to-end test of pods."""

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fake_k8s import (
    RESOURCE_TYPES,
    FakeKubernetes,
    reset_kubespawner_clients,
    use_kubeconfig,
    write_kubeconfig_file,
)

import support

# kubernetes_asyncio reads KUBECONFIG once, at import: point it at a dummy config before kubespawner is
# imported (the server address is overridden per spawner by k8s_api_host).
_KUBECONFIG_DIR = tempfile.mkdtemp(prefix="mlhub-fake-k8s-")
atexit.register(shutil.rmtree, _KUBECONFIG_DIR, ignore_errors=True)
use_kubeconfig(write_kubeconfig_file(os.path.join(_KUBECONFIG_DIR, "kubeconfig"), "http://127.0.0.1:9"))

from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402
from kubespawner import KubeSpawner  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class User:
    """The part of jupyterhub.user.User that KubeSpawner reads."""

    def __init__(self, name, uid):
        self.name = name
        self.id = uid
        self.escaped_name = name
        self.url = f"/user/{name}/"
        self.server = None
        self.spawners = {}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    previous = os.environ["KUBECONFIG"]
    fake = FakeKubernetes(pod_start_seconds=0.2).start()
    use_kubeconfig(fake.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config"))
    yield fake
    fake.stop()
    use_kubeconfig(previous)


@pytest.fixture
async def make_spawner(fake):
    from jupyterhub.objects import Hub

    made = []

    def make(user="alice", uid=1, **config):
        spawner = KubeSpawner(
            user=User(user, uid),
            hub=Hub(),
            api_token="fake-api-token",
            oauth_client_id=f"jupyterhub-user-{user}",
            k8s_api_host=fake.url,
            namespace="default",
            image="quay.io/jupyter/base-notebook:2025-01-01",
            **{"start_timeout": 20, "k8s_api_request_retry_timeout": 10, **config},
        )
        made.append(spawner)
        return spawner

    fake.fail_pods = lambda pod: None
    yield make
    await KubeSpawner._stop_all_reflectors()
    # the next module may point KubeSpawner at another fake in the same event loop
    await reset_kubespawner_clients()


def http(fake, method, path, body=None, content_type="application/json"):
    """(status, parsed JSON body) of one request to the fake."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(fake.url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def configmap(name, labels=None, data=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


# ------------------------------------------------------------------------------------------------------------
# KubeSpawner


async def test_kubespawner_start_poll_stop(fake, make_spawner):
    spawner = make_spawner("alice", 1)
    url = await spawner.start()
    pod = fake.get("pods", "default", spawner.pod_name)
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert url == f"http://{pod['status']['podIP']}:8888"
    assert pod["status"]["podIP"].startswith("10.244.")
    assert pod["metadata"]["labels"]["component"] == "singleuser-server"
    assert any(c["name"] == "notebook" for c in pod["spec"]["containers"])
    assert ("POST", "/api/v1/namespaces/default/pods") in fake.requests
    assert any(m == "GET" and "watch=True" in p and "/pods?" in p for m, p in fake.requests), "no pod watch"
    assert any(m == "GET" and "involvedObject.kind%3DPod" in p for m, p in fake.requests), "no event watch"
    assert fake.rejected == []
    assert await spawner.poll() is None
    reasons = [e["reason"] for e in spawner.events]
    assert "Scheduled" in reasons and "Started" in reasons

    await spawner.stop()
    assert fake.get("pods", "default", spawner.pod_name) is None
    assert any(
        m == "DELETE" and p.startswith(f"/api/v1/namespaces/default/pods/{spawner.pod_name}")
        for m, p in fake.requests
    )
    assert await spawner.poll() == 1


async def test_kubespawner_pvc_and_service(fake, make_spawner):
    spawner = make_spawner(
        "bob",
        2,
        storage_pvc_ensure=True,
        storage_capacity="1Gi",
        services_enabled=True,
        volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
        volume_mounts=[{"name": "home", "mountPath": "/home/jovyan"}],
    )
    url = await spawner.start()
    pod = fake.get("pods", "default", spawner.pod_name)
    pvc = fake.get("persistentvolumeclaims", "default", spawner.pvc_name)
    service = fake.get("services", "default", spawner.pod_name)
    assert pvc is not None and pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == spawner.pvc_name
    assert service is not None and service["spec"]["clusterIP"].startswith("10.")
    assert service["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    assert url == f"http://{spawner.pod_name}.default.svc.cluster.local:8888"
    assert fake.rejected == []

    await spawner.stop()
    assert fake.get("pods", "default", spawner.pod_name) is None
    # owner-reference garbage collection removed the service with its pod; the PVC has no owner and stays
    assert fake.get("services", "default", spawner.pod_name) is None
    assert fake.get("persistentvolumeclaims", "default", spawner.pvc_name) is not None


async def test_kubespawner_invalid_pod_is_refused(fake, make_spawner):
    def typo(spawner, pod):
        # a dict inside the model is sent as is: "valeu" is not a field of EnvVar
        pod.spec.containers[0].env.append({"name": "TYPO", "valeu": "x"})
        return pod

    spawner = make_spawner("carol", 3, modify_pod_hook=typo)
    before = len(fake.rejected)
    with pytest.raises(ApiException) as info:
        await spawner.start()
    assert info.value.status == 422
    assert "valeu" in info.value.body
    assert len(fake.rejected) == before + 1
    assert "valeu" in fake.rejected[-1]["error"]
    assert fake.rejected[-1]["object"]["kind"] == "Pod"
    assert fake.get("pods", "default", spawner.pod_name) is None

    # the same spawner with valid extra env gets through
    spawner = make_spawner("carol", 3, modify_pod_hook=lambda s, pod: pod, environment={"OK": "1"})
    await spawner.start()
    pod = fake.get("pods", "default", spawner.pod_name)
    assert {"name": "OK", "value": "1"} in pod["spec"]["containers"][0]["env"]
    await spawner.stop()


async def test_kubespawner_failed_pod(fake, make_spawner):
    spawner = make_spawner("dave", 4, start_timeout=2)
    fake.fail_pods = lambda pod: (
        "ErrImagePull: fake registry says no" if "dave" in pod["metadata"]["name"] else None
    )
    with pytest.raises(TimeoutError):
        await spawner.start()
    pod = fake.get("pods", "default", spawner.pod_name)
    assert pod["status"]["phase"] == "Failed"
    assert any(e["type"] == "Warning" and "ErrImagePull" in e["message"] for e in spawner.events)
    assert await spawner.poll() == 1  # the notebook container terminated with exit code 1
    await spawner.stop(now=True)
    assert fake.get("pods", "default", spawner.pod_name) is None


async def test_kubespawner_user_namespaces(fake, make_spawner):
    spawner = make_spawner("erin", 5, enable_user_namespaces=True, user_namespace_template="mlhub-{username}")
    url = await spawner.start()
    assert fake.get("namespaces", None, "mlhub-erin") is not None
    pod = fake.get("pods", "mlhub-erin", spawner.pod_name)
    assert url == f"http://{pod['status']['podIP']}:8888"
    assert any(m == "GET" and p.startswith("/api/v1/pods?") and "watch=True" in p for m, p in fake.requests)
    await spawner.stop()
    assert fake.list("pods", "mlhub-erin") == []
    # deleting a namespace deletes what is in it
    fake.create("configmaps", "mlhub-erin", configmap("left-over"))
    fake.delete("namespaces", None, "mlhub-erin")
    assert fake.get("configmaps", "mlhub-erin", "left-over") is None


async def test_networking_client(fake, make_spawner):
    """The calls our own spawner makes besides KubeSpawner's: NetworkPolicies through NetworkingV1Api."""
    from kubernetes_asyncio import client

    make_spawner("frank", 6)  # loads the client configuration for the fake
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np-frank", "labels": {"app": "mlhub"}},
        "spec": {"podSelector": {"matchLabels": {"user": "frank"}}, "policyTypes": ["Ingress"]},
    }
    async with client.ApiClient() as api_client:
        api = client.NetworkingV1Api(api_client)
        await api.create_namespaced_network_policy("default", body)
        with pytest.raises(ApiException) as info:
            await api.create_namespaced_network_policy("default", body)
        assert info.value.status == 409
        body["spec"]["policyTypes"] = ["Ingress", "Egress"]
        replaced = await api.replace_namespaced_network_policy("np-frank", "default", body)
        assert replaced.spec.policy_types == ["Ingress", "Egress"]
        assert replaced.metadata.generation == 2
        listed = await api.list_namespaced_network_policy("default", label_selector="app=mlhub")
        assert [p.metadata.name for p in listed.items] == ["np-frank"]
        await api.delete_namespaced_network_policy("np-frank", "default")
    assert fake.get("networkpolicies", "default", "np-frank") is None


# ------------------------------------------------------------------------------------------------------------
# protocol


def read_watch(fake, query, timeout=10):
    """All events of a watch request until the server closes it."""
    url = f"{fake.url}/api/v1/namespaces/default/configmaps?watch=1&{query}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers.get("Transfer-Encoding") == "chunked"
        return [json.loads(line) for line in response.read().decode().splitlines() if line]


def test_watch_from_resource_version_gets_later_changes_in_order(fake):
    first = fake.create("configmaps", "default", configmap("w-a", {"app": "w"}))
    since = first["metadata"]["resourceVersion"]
    results = {}

    def watch():
        t0 = time.monotonic()
        results["events"] = read_watch(
            fake, f"resourceVersion={since}&timeoutSeconds=2&labelSelector=app%3Dw"
        )
        results["seconds"] = time.monotonic() - t0

    reader = threading.Thread(target=watch)
    reader.start()
    time.sleep(0.3)
    status, _ = http(
        fake,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/w-a",
        {"data": {"k": "v2"}},
        "application/merge-patch+json",
    )
    assert status == 200
    fake.create("configmaps", "default", configmap("w-b", {"app": "w"}))
    fake.create("configmaps", "default", configmap("w-other", {"app": "other"}))
    fake.delete("configmaps", "default", "w-a")
    reader.join(10)
    assert not reader.is_alive()
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in results["events"]]
    assert events == [("MODIFIED", "w-a"), ("ADDED", "w-b"), ("DELETED", "w-a")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in results["events"]]
    assert versions == sorted(versions) and versions[0] > int(since)
    assert 1.8 < results["seconds"] < 5, "timeoutSeconds closes the watch"

    # replay: a later watch from the same resourceVersion gets the same changes from the history
    replay = read_watch(fake, f"resourceVersion={since}&timeoutSeconds=1&labelSelector=app%3Dw")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replay] == events
    # resourceVersion 0: the current state as ADDED
    current = read_watch(fake, "resourceVersion=0&timeoutSeconds=1&labelSelector=app%3Dw")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in current] == [("ADDED", "w-b")]


def test_watch_selector_transitions_bookmarks_and_gone(fake):
    fake.create("configmaps", "default", configmap("s-a", {"tier": "x"}))
    since = max(int(c["metadata"]["resourceVersion"]) for c in fake.list("configmaps"))
    http(
        fake,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/s-a",
        {"metadata": {"labels": {"tier": "y"}}},
        "application/strategic-merge-patch+json",
    )
    events = read_watch(fake, f"resourceVersion={since}&timeoutSeconds=1&labelSelector=tier%3Dx")
    assert [e["type"] for e in events] == ["DELETED"], "leaving the selector is a DELETED"
    events = read_watch(fake, f"resourceVersion={since}&timeoutSeconds=1&labelSelector=tier+in+%28y%2Cz%29")
    assert [e["type"] for e in events] == ["ADDED"], "entering the selector is an ADDED"
    events = read_watch(
        fake, "resourceVersion=1&timeoutSeconds=1&sendInitialEvents=true&allowWatchBookmarks=true"
    )
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}

    small = FakeKubernetes(validate=False).start()
    try:
        small._history = type(small._history)(small._history, maxlen=3)
        for n in range(5):
            small.create("configmaps", "default", configmap(f"c{n}"))
        url = f"{small.url}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2&timeoutSeconds=1"
        with urllib.request.urlopen(url, timeout=10) as response:
            (event,) = [json.loads(line) for line in response.read().decode().splitlines()]
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
    finally:
        small.stop()


def test_crud_patch_and_status_errors(fake):
    base = "/api/v1/namespaces/default/configmaps"
    status, created = http(fake, "POST", base, {"apiVersion": "v1", "kind": "ConfigMap", **configmap("e-a")})
    assert status == 201 and created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]

    status, body = http(fake, "POST", base, configmap("e-a"))
    assert (status, body["kind"], body["status"], body["reason"], body["code"]) == (
        409,
        "Status",
        "Failure",
        "AlreadyExists",
        409,
    )
    status, body = http(fake, "GET", f"{base}/nope")
    assert (status, body["reason"], body["details"]["name"]) == (404, "NotFound", "nope")
    status, body = http(fake, "POST", base, {"metadata": {"name": "e-bad"}, "data": {"k": 1}})
    assert (status, body["reason"]) == (422, "Invalid")
    assert fake.rejected[-1]["object"]["metadata"]["name"] == "e-bad"
    assert fake.get("configmaps", "default", "e-bad") is None
    status, body = http(fake, "POST", base, {"metadata": {"generateName": "e-gen-"}, "data": {}})
    assert (
        status == 201
        and body["metadata"]["name"].startswith("e-gen-")
        and len(body["metadata"]["name"]) == 11
    )

    # PUT with a stale resourceVersion conflicts
    stale = dict(created, data={"k": "new"})
    status, updated = http(fake, "PUT", f"{base}/e-a", stale)
    assert status == 200 and updated["data"] == {"k": "new"}
    status, body = http(fake, "PUT", f"{base}/e-a", stale)
    assert (status, body["reason"]) == (409, "Conflict")

    ops = [{"op": "add", "path": "/data/j", "value": "1"}, {"op": "remove", "path": "/data/k"}]
    status, body = http(fake, "PATCH", f"{base}/e-a", ops, "application/json-patch+json")
    assert status == 200 and body["data"] == {"j": "1"}

    # strategic merge: containers merge by name, unlike merge-patch which replaces lists
    dep = {
        "metadata": {"name": "e-dep", "labels": {"app": "e"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "e"}},
            "template": {
                "metadata": {"labels": {"app": "e"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
                        {"name": "b", "image": "b:1"},
                    ]
                },
            },
        },
    }
    fake.create("deployments", "default", dep)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}
    path = "/apis/apps/v1/namespaces/default/deployments/e-dep"
    status, body = http(fake, "PATCH", path, patch, "application/strategic-merge-patch+json")
    containers = body["spec"]["template"]["spec"]["containers"]
    assert status == 200 and [(c["name"], c["image"]) for c in containers] == [("a", "a:1"), ("b", "b:2")]
    assert body["metadata"]["generation"] == 2
    assert support.wait_for(
        lambda: fake.get("deployments", "default", "e-dep")["status"].get("observedGeneration") == 2,
        timeout=10,
        interval=0.05,
    )
    rs = fake.list("replicasets", "default", label_selector="app=e")
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 1]
    status, body = http(fake, "PATCH", path, patch, "application/merge-patch+json")
    assert [c["name"] for c in body["spec"]["template"]["spec"]["containers"]] == ["b"]

    # deleting the deployment collects its replica sets and their pods
    status, body = http(fake, "DELETE", path, {"propagationPolicy": "Background"})
    assert status == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert fake.list("replicasets", "default", label_selector="app=e") == []
    assert fake.list("pods", "default", label_selector="app=e") == []

    # field selectors; label selector operators
    fake.create("configmaps", "default", configmap("f-1", {"env": "prod", "team": "a"}))
    fake.create("configmaps", "default", configmap("f-2", {"env": "dev"}))
    status, body = http(fake, "GET", f"{base}?fieldSelector=metadata.name%3Df-2")
    assert [i["metadata"]["name"] for i in body["items"]] == ["f-2"] and body["metadata"]["resourceVersion"]

    def names(selector):
        found = [c["metadata"]["name"] for c in fake.list("configmaps", "default", selector)]
        return [n for n in found if n.startswith("f-")]

    assert names("env notin (dev)") == ["f-1"]
    assert names("env!=prod") == ["f-2"]
    assert names("team") == ["f-1"]
    assert names("!team") == ["f-2"]
    assert names("env==dev,!team") == ["f-2"]

    status, body = http(fake, "POST", "/api/v1/namespaces/nowhere/configmaps", configmap("x"))
    assert (status, body["reason"]) == (404, "NotFound")


def test_delete_preconditions_uid_and_resource_version(fake):
    """Like a real kube-apiserver: a DeleteOptions precondition that does not match is 409 Conflict with
    "Precondition failed", and nothing is deleted; matching preconditions delete."""
    policy = {
        "metadata": {"name": "pre-np"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    paths = {
        "configmaps": "/api/v1/namespaces/default/configmaps/pre-cm",
        "networkpolicies": "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/pre-np",
    }
    created = {
        "configmaps": fake.create("configmaps", "default", configmap("pre-cm")),
        "networkpolicies": fake.create("networkpolicies", "default", policy),
    }
    for plural, path in paths.items():
        meta = created[plural]["metadata"]
        name = meta["name"]
        qualified = plural if plural == "configmaps" else f"{plural}.networking.k8s.io"
        for preconditions, label, wanted, actual in (
            ({"uid": "0d5c2a7e-0000-4000-8000-000000000000"}, "UID", None, meta["uid"]),
            ({"uid": meta["uid"], "resourceVersion": "1"}, "ResourceVersion", "1", meta["resourceVersion"]),
        ):
            status, body = http(fake, "DELETE", path, {"preconditions": preconditions})
            assert (status, body["reason"], body["code"]) == (409, "Conflict", 409), body
            wanted = wanted or preconditions["uid"]
            assert body["message"].startswith(f'Operation cannot be fulfilled on {qualified} "{name}": ')
            assert body["message"].endswith(
                f"Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"
            )
            assert fake.get(plural, "default", name)["metadata"]["uid"] == meta["uid"]  # not deleted
        current = {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        status, body = http(fake, "DELETE", path, {"preconditions": current})
        assert status == 200, body
        assert fake.get(plural, "default", name) is None


def test_discovery(fake):
    status, version = http(fake, "GET", "/version")
    assert status == 200 and version["gitVersion"] == "v1.33.0"
    status, core = http(fake, "GET", "/api/v1")
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["namespaced"] and pods["kind"] == "Pod" and "watch" in pods["verbs"]
    namespaces = next(r for r in core["resources"] if r["name"] == "namespaces")
    assert namespaces["namespaced"] is False
    status, groups = http(fake, "GET", "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "networking.k8s.io", "rbac.authorization.k8s.io", "policy"} <= names
    status, netpol = http(fake, "GET", "/apis/networking.k8s.io/v1")
    assert "networkpolicies" in {r["name"] for r in netpol["resources"]}
    status, _ = http(fake, "GET", "/openapi/v2")
    assert status == 404


POD_TEMPLATE = {
    "metadata": {"labels": {"app": "kinds"}},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
}
SELECTOR = {"matchLabels": {"app": "kinds"}}
MINIMAL = {
    "pods": POD_TEMPLATE,
    "services": {"spec": {"ports": [{"port": 80}], "selector": {"app": "kinds"}}},
    "endpoints": {"subsets": []},
    "persistentvolumeclaims": {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    },
    "persistentvolumes": {
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"}}
    },
    "secrets": {"data": {"k": "dg=="}},
    "configmaps": {"data": {"k": "v"}},
    "events": {
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": "kinds"},
        "reason": "R",
        "message": "m",
    },
    "namespaces": {},
    "serviceaccounts": {},
    "nodes": {},
    "resourcequotas": {"spec": {"hard": {"pods": "10"}}},
    "limitranges": {"spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}},
    "deployments": {"spec": {"selector": SELECTOR, "template": POD_TEMPLATE}},
    "replicasets": {"spec": {"selector": SELECTOR, "template": POD_TEMPLATE}},
    "statefulsets": {"spec": {"serviceName": "s", "selector": SELECTOR, "template": POD_TEMPLATE}},
    "daemonsets": {"spec": {"selector": SELECTOR, "template": POD_TEMPLATE}},
    "controllerrevisions": {"revision": 1},
    "networkpolicies": {"spec": {"podSelector": {}}},
    "ingresses": {"spec": {"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}},
    "ingressclasses": {"spec": {"controller": "example.org/ingress"}},
    "roles": {"rules": []},
    "rolebindings": {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}},
    "clusterroles": {"rules": []},
    "clusterrolebindings": {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}
    },
    "poddisruptionbudgets": {"spec": {"minAvailable": 1, "selector": SELECTOR}},
    "jobs": {
        "spec": {"template": {**POD_TEMPLATE, "spec": {**POD_TEMPLATE["spec"], "restartPolicy": "Never"}}}
    },
    "cronjobs": {
        "spec": {
            "schedule": "@daily",
            "jobTemplate": {
                "spec": {"template": {"spec": {**POD_TEMPLATE["spec"], "restartPolicy": "Never"}}}
            },
        }
    },
    "storageclasses": {"provisioner": "example.org/disk"},
    "priorityclasses": {"value": 10},
    "leases": {"spec": {}},
}


def test_every_kind_round_trips_with_valid_defaults(fake):
    """Every resource type: create, let the fake controllers act, patch (which validates the whole result,
    status included), and check that everything the fake stores is valid: the fake's own defaults and
    statuses must not be what a test trips over."""
    import kubernetes_validate

    assert set(MINIMAL) == {r.plural for r in RESOURCE_TYPES}
    before = len(fake.rejected)
    fake.create("namespaces", None, {"metadata": {"name": "kinds"}})
    created = []
    for rtype in RESOURCE_TYPES:
        if rtype.plural == "namespaces":
            continue
        namespace = "kinds" if rtype.namespaced else None
        manifest = MINIMAL[rtype.plural]
        meta = {**manifest.get("metadata", {}), "name": f"all-{rtype.singular}"}
        obj = fake.create(rtype.plural, namespace, {**manifest, "metadata": meta})
        created.append((rtype, namespace, obj["metadata"]["name"]))
    time.sleep(3 * fake.pod_start_seconds + 0.3)  # kubelet, controllers, job completion
    for rtype, namespace, name in created:
        prefix = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else "/api/v1"
        path = (
            f"{prefix}/namespaces/{namespace}/{rtype.plural}/{name}"
            if namespace
            else f"{prefix}/{rtype.plural}/{name}"
        )
        status, body = http(
            fake, "PATCH", path, {"metadata": {"labels": {"patched": "yes"}}}, "application/merge-patch+json"
        )
        assert status == 200, (rtype.plural, body)
    assert fake.rejected[before:] == []
    for rtype in RESOURCE_TYPES:
        for obj in fake.list(rtype.plural):
            kubernetes_validate.validate(obj, "1.33.0", strict=True)
    assert fake.get("jobs", "kinds", "all-job")["status"]["succeeded"] == 1
    assert (
        len(fake.list("pods", "kinds", label_selector="app=kinds")) == 5
    )  # pod, rs, deployment's rs, sts, ds
    fake.delete("namespaces", None, "kinds")
    for rtype, namespace, name in created:
        if namespace is None:
            fake.delete(rtype.plural, None, name)
    assert fake.list("pods", "kinds") == []


# ------------------------------------------------------------------------------------------------------------
# helm

CHART_YAML = """apiVersion: v2
name: fake-probe
version: 0.1.0
"""
VALUES_YAML = """replicas: 1
greeting: hello
"""
CONFIGMAP_YAML = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  labels: {app.kubernetes.io/instance: {{ .Release.Name }}}
data:
  greeting: {{ .Values.greeting | quote }}
"""
DEPLOYMENT_YAML = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels: {app.kubernetes.io/instance: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: web, app.kubernetes.io/instance: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: web, app.kubernetes.io/instance: {{ .Release.Name }}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports: [{containerPort: 80}]
          env: [{name: GREETING, value: {{ .Values.greeting | quote }}}]
"""
TEST_POD_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations: {"helm.sh/hook": test}
spec:
  restartPolicy: Never
  containers: [{name: probe, image: busybox:1.36, command: [wget, -qO-, "http://{{ .Release.Name }}-web"]}]
"""


def test_helm_install_upgrade_test_uninstall(fake, tmp_path):
    helm_bin = support.helm_binary()
    chart = tmp_path / "chart"
    (chart / "templates" / "tests").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(CHART_YAML)
    (chart / "values.yaml").write_text(VALUES_YAML)
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP_YAML)
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT_YAML)
    (chart / "templates" / "tests" / "probe.yaml").write_text(TEST_POD_YAML)
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
    }
    env["HELM_DATA_HOME"] = str(tmp_path / "data")

    def helm(*args):
        command = [helm_bin, *args, "--kubeconfig", kubeconfig, "--namespace", "probe"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    before = len(fake.rejected)
    helm("install", "rel", str(chart), "--create-namespace", "--wait", "--timeout", "60s")
    assert fake.get("configmaps", "probe", "rel-config")["data"] == {"greeting": "hello"}
    deployment = fake.get("deployments", "probe", "rel-web")
    assert deployment["status"]["readyReplicas"] == 1
    releases = fake.list("secrets", "probe", label_selector="owner=helm,name=rel")
    assert [s["metadata"]["labels"]["status"] for s in releases] == ["deployed"]

    helm(
        "upgrade",
        "rel",
        str(chart),
        "--set",
        "replicas=2",
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    )
    assert fake.get("configmaps", "probe", "rel-config")["data"] == {"greeting": "hi"}
    deployment = fake.get("deployments", "probe", "rel-web")
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["generation"] == 2
    assert support.wait_for(
        lambda: len(fake.list("pods", "probe", label_selector="app=web,pod-template-hash")) == 2,
        timeout=10,
        interval=0.05,
    )
    assert any(m == "PATCH" and "/deployments/rel-web" in p for m, p in fake.requests)

    out = helm("test", "rel", "--timeout", "60s")
    assert "Succeeded" in out

    helm("uninstall", "rel", "--wait", "--timeout", "60s")
    assert fake.get("configmaps", "probe", "rel-config") is None
    assert fake.get("deployments", "probe", "rel-web") is None
    assert fake.list("replicasets", "probe") == []
    assert fake.list("secrets", "probe", label_selector="owner=helm") == []
    assert fake.rejected[before:] == []
