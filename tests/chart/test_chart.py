"""The helm chart helm/mlhub: lint, render, validate every object against the Kubernetes API schemas, and check
what the chart promises (least-privilege RBAC, hub DB on a PVC, drain-friendly policy/v1 PDBs, NetworkPolicies
that block the cloud metadata IP, checksums that roll the hub, unique names per release, stable secrets,
values refused by the schema with a message naming the field). Against the in-process fake API server
(tests/fake_k8s.py): lookup keeps the generated secrets, install / upgrade / uninstall.

helm is the pinned binary at .mlhub/bin/helm (resources/scripts/get-helm.sh fetches it when missing); without it
the tests fail under CI=true and skip elsewhere. No cluster runs here: what needs one is listed in the README.
"""

import base64
import copy
import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from traitlets.config import Config

from mlhubspawner import chart_values
from mlhubspawner.settings import load_settings

import support

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mlhub"
VALUES_MAX = Path(__file__).with_name("values-max.yaml")
NAMESPACE = "ml"
METADATA_IP = ipaddress.ip_address("169.254.169.254")
# the oldest Kubernetes the chart supports (Chart.yaml kubeVersion), a current one, and the newest schemas shipped
K8S_VERSIONS = sorted(
    {"1.25.0", "1.33.0", kubernetes_validate.latest_version()}, key=lambda v: tuple(map(int, v.split(".")))
)


@pytest.fixture(scope="session")
def helm_bin():
    return support.helm_binary()


def run_helm(helm_bin, *args, check=True, kubeconfig=None):
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
    }
    env["KUBECONFIG"] = kubeconfig or os.devnull  # never a real cluster by accident
    result = subprocess.run([helm_bin, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def render(helm_bin):
    def render(*args, release="mlhub", namespace=NAMESPACE, kubeconfig=None):
        out = run_helm(
            helm_bin, "template", release, CHART, "--namespace", namespace, *args, kubeconfig=kubeconfig
        )
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return render


def find(docs, kind, suffix=None):
    found = [
        d for d in docs if d["kind"] == kind and (suffix is None or d["metadata"]["name"].endswith(suffix))
    ]
    return found


def one(docs, kind, suffix=None):
    found = find(docs, kind, suffix)
    assert len(found) == 1, f"{kind} *{suffix or ''}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(deployment):
    return {e["name"]: e for e in container(deployment)["env"]}


def secret_data(secret):
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def hub_values(docs):
    return yaml.safe_load(secret_data(one(docs, "Secret", "-hub-values"))["values.yaml"])


@pytest.fixture(scope="session")
def default_docs(render):
    return render()


@pytest.fixture(scope="session")
def max_docs(render):
    return render("-f", VALUES_MAX, release="r")


# ---- lint, schema, API validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", VALUES_MAX]], ids=["default", "max"])
def test_lint_strict(helm_bin, values):
    user_config = REPO / "resources/jupyterhub_user_config.py"
    result = run_helm(helm_bin, "lint", "--strict", CHART, "--set-file", f"userConfig={user_config}", *values)
    assert "0 chart(s) failed" in result.stdout


def test_values_schema_is_valid_draft7_and_closed():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    for key in ("image", "hub", "proxy", "singleuser", "cleanup", "networkPolicy", "ingress"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    for key in ("db", "ssl", "service", "pdb"):
        sub = schema["properties"]["hub"]["properties"][key]
        sub = schema["definitions"]["pdb"] if "$ref" in sub else sub
        assert sub["additionalProperties"] is False, key
    validator = jsonschema.Draft7Validator(schema)
    for path in (CHART / "values.yaml", VALUES_MAX):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path, errors)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("which", ["default", "max"])
def test_every_rendered_object_is_valid_for_kubernetes(request, which, version):
    docs = request.getfixturevalue(f"{which}_docs")
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {e.message} at {e.path}"
            )


def test_default_objects(default_docs):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default_docs)
    assert kinds == sorted(
        [
            ("DaemonSet", "mlhub-image-puller"),
            ("Deployment", "mlhub-hub"),
            ("Deployment", "mlhub-proxy"),
            ("NetworkPolicy", "mlhub-hub"),
            ("NetworkPolicy", "mlhub-image-puller"),
            ("NetworkPolicy", "mlhub-proxy"),
            ("NetworkPolicy", "mlhub-singleuser"),
            ("PersistentVolumeClaim", "mlhub-hub-db"),
            ("PodDisruptionBudget", "mlhub-hub"),
            ("PodDisruptionBudget", "mlhub-proxy"),
            ("Role", "mlhub-hub"),
            ("RoleBinding", "mlhub-hub"),
            ("Secret", "mlhub-hub-user-config"),
            ("Secret", "mlhub-hub-values"),
            ("Secret", "mlhub-secret"),
            ("Service", "mlhub-hub"),
            ("Service", "mlhub-proxy-api"),
            ("Service", "mlhub-proxy-public"),
            ("ServiceAccount", "mlhub-hub"),
        ]
    )
    for doc in default_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "mlhub"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# ---- RBAC ------------------------------------------------------------------------------------------------------------


def test_rbac_is_exactly_what_the_spawner_and_cleanup_call(default_docs):
    assert not find(default_docs, "ClusterRole") and not find(default_docs, "ClusterRoleBinding")
    role = one(default_docs, "Role")
    granted = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == {
        ("", "pods"): {"get", "list", "watch", "create", "delete"},
        # the workspace Service's owner reference to its pod sets blockOwnerDeletion (KubeSpawner): with
        # OwnerReferencesPermissionEnforcement (OpenShift) that needs update on the owner's finalizers
        ("", "pods/finalizers"): {"update"},
        ("", "services"): {"get", "list", "create", "delete"},
        ("", "persistentvolumeclaims"): {"get", "list", "create", "delete", "patch"},
        ("", "events"): {"list", "watch"},
        ("networking.k8s.io", "networkpolicies"): {"get", "list", "create", "update", "delete"},
    }
    binding = one(default_docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "mlhub-hub",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlhub-hub", "namespace": NAMESPACE}]
    hub_pod = one(default_docs, "Deployment", "-hub")["spec"]["template"]["spec"]
    assert hub_pod["serviceAccountName"] == "mlhub-hub"
    # the proxy pod never talks to the API server
    proxy_pod = one(default_docs, "Deployment", "-proxy")["spec"]["template"]["spec"]
    assert proxy_pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in proxy_pod


def cluster_rbac(docs):
    """``(ClusterRole rules, ClusterRoleBinding)`` of the rendering, or ``(None, None)``."""
    roles, bindings = find(docs, "ClusterRole"), find(docs, "ClusterRoleBinding")
    assert len(roles) == len(bindings) <= 1
    return (roles[0]["rules"], bindings[0]) if roles else (None, None)


def test_the_hub_may_read_nodes_when_workspaces_may_have_gpus(render, max_docs):
    """The GPU pools of the form need get/list on nodes (cluster-scoped): one ClusterRole, read-only, nodes only."""
    assert cluster_rbac(render()) == (None, None)  # no GPUs: a namespace admin can install the chart
    assert cluster_rbac(render("--set", "singleuser.gpu.max=2", "--set", "rbac.listNodes=false")) == (
        None,
        None,
    )
    for docs, release, namespace in (
        (render("--set", "singleuser.gpu.max=2"), "mlhub", NAMESPACE),
        (render("--set", "rbac.listNodes=true", namespace="other"), "mlhub", "other"),
        (max_docs, "r", NAMESPACE),
    ):
        rules, binding = cluster_rbac(docs)
        assert rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
        hub = one(docs, "ServiceAccount")["metadata"]["name"]
        # cluster-scoped names: two releases of one name in two namespaces must not share one
        name = f"{namespace}-{hub}-nodes"
        assert binding["metadata"]["name"] == name and release in hub
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": hub, "namespace": namespace}]


# ---- hub database, deployments, services -------------------------------------------------------------------------


def test_hub_db_on_a_pvc_by_default(default_docs):
    pvc = one(default_docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "storageClassName" not in pvc["spec"]  # the cluster's default StorageClass
    hub = one(default_docs, "Deployment", "-hub")
    assert hub["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in hub["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container(hub)["volumeMounts"]}
    assert mounts["data"] == "/data"
    assert chart_values.db_url(hub_values(default_docs)) == "sqlite:////data/jupyterhub.sqlite"


def test_hub_db_types(render):
    docs = render("--set", "hub.db.pvc.storageClassName=fast", "--set", "hub.db.pvc.storage=5Gi")
    assert one(docs, "PersistentVolumeClaim")["spec"]["storageClassName"] == "fast"
    memory = render("--set", "hub.db.type=sqlite-memory")
    assert not find(memory, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in one(memory, "Deployment", "-hub")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert chart_values.db_url(hub_values(memory)) == "sqlite://"
    url = "mysql+pymysql://mlhub@db:3306/mlhub"
    mysql = render("--set", "hub.db.type=mysql", "--set", f"hub.db.url={url}", "--set", "hub.db.password=pw")
    assert not find(mysql, "PersistentVolumeClaim")
    assert chart_values.db_url(hub_values(mysql)) == url
    env = env_of(one(mysql, "Deployment", "-hub"))
    assert env["MYSQL_PWD"]["valueFrom"]["secretKeyRef"] == {"name": "mlhub-secret", "key": "db-password"}
    assert secret_data(one(mysql, "Secret", "-secret"))["db-password"] == "pw"
    assert "password" not in hub_values(mysql)["hub"]["db"]


def test_admin_password_from_a_secret(render):
    """The admin's password reaches the hub from a Secret, never as plain env or in the mounted values."""
    assert "MLHUB_ADMIN_PASSWORD" not in env_of(
        one(render(), "Deployment", "-hub")
    )  # generated at first start
    docs = render("--set", "hub.adminPassword=correct-horse-battery")
    env = env_of(one(docs, "Deployment", "-hub"))
    assert env["MLHUB_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlhub-secret",
        "key": "admin-password",
    }
    assert secret_data(one(docs, "Secret", "-secret"))["admin-password"] == "correct-horse-battery"
    assert "adminPassword" not in hub_values(docs)["hub"]
    own = env_of(one(render("--set", "hub.existingAdminPasswordSecret=gitops-admin"), "Deployment", "-hub"))
    assert own["MLHUB_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "gitops-admin",
        "key": "admin-password",
    }


def test_hub_deployment(default_docs):
    hub = one(default_docs, "Deployment", "-hub")
    assert hub["spec"]["replicas"] == 1
    pod = hub["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "hub"
    c = container(hub)
    assert c["image"] == "mlhub:0.1.0"
    env = env_of(hub)
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    assert plain["START_JHUB"] == "true"
    assert plain["START_CHP"] == plain["START_NGINX"] == plain["START_SSH"] == "false"
    assert plain["EXECUTION_MODE"] == "k8s"
    assert plain["HUB_NAME"] == "mlhub"
    assert plain["MLHUB_CHART_VALUES"] == "/usr/local/etc/mlhub/values.yaml"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for name, key in (
        ("CONFIGPROXY_AUTH_TOKEN", "proxy-token"),
        ("JPY_COOKIE_SECRET", "cookie-secret"),
        ("MLHUB_SSH_FRONT_TOKEN", "ssh-front-token"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlhub-secret", "key": key}
    assert c["ports"] == [
        {"name": "hub", "containerPort": 8081, "protocol": "TCP"},
        {"name": "cleanup", "containerPort": 8002, "protocol": "TCP"},
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/hub/health", "port": "hub"}, probe
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/resources/jupyterhub_user_config.py"]["subPath"] == "jupyterhub_user_config.py"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["user-config"]["secret"]["secretName"] == "mlhub-hub-user-config"
    assert volumes["values"]["secret"]["secretName"] == "mlhub-hub-values"
    assert mounts["/usr/local/etc/mlhub"]["name"] == "values"


def pod_env_for_settings(deployment, secrets):
    """The env a pod's entrypoint would see (secret refs resolved, downward API faked)."""
    env = {}
    for name, entry in env_of(deployment).items():
        if "value" in entry:
            env[name] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            env[name] = secrets[entry["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[name] = {"metadata.namespace": NAMESPACE, "status.podIP": "10.244.0.7"}[
                entry["valueFrom"]["fieldRef"]["fieldPath"]
            ]
    return env


@pytest.mark.parametrize("which", ["default", "max"])
def test_hub_and_proxy_env_pass_the_image_settings(request, which):
    """The entrypoint (mlhubspawner/settings.py) accepts both pods' env: the split is wired as it expects."""
    docs = request.getfixturevalue(f"{which}_docs")
    secrets = secret_data(one(docs, "Secret", "-secret"))
    hub = load_settings(pod_env_for_settings(one(docs, "Deployment", "-hub"), secrets))
    proxy = load_settings(pod_env_for_settings(one(docs, "Deployment", "-proxy"), secrets))
    assert (hub.start_jhub, hub.start_chp, hub.start_nginx, hub.start_ssh) == (True, False, False, False)
    assert (proxy.start_jhub, proxy.start_chp, proxy.start_nginx, proxy.start_ssh) == (
        False,
        True,
        True,
        True,
    )
    assert hub.execution_mode == proxy.execution_mode == "k8s"
    assert hub.hub_name == proxy.hub_name
    assert hub.ssh_front_token == proxy.ssh_front_token and len(hub.ssh_front_token) >= 32
    hub_service = one(docs, "Service", "-hub")
    assert hub_service["spec"]["ports"][0]["port"] == 8081
    assert proxy.hub_service_url == f"http://{hub_service['metadata']['name']}:8081"
    assert proxy.proxy_api_listen == "0.0.0.0"
    assert proxy.ssl_enabled is (which == "max")
    if which == "max":
        assert proxy.public_hostnames == ("hub.example.org", "ml.example.org")
        assert proxy.additional_args == ("--log-level=debug", "--timeout=600000")
        assert hub.cleanup_interval_seconds == 600 and hub.idle_timeout_seconds == 7200


def test_proxy_deployment_and_services(default_docs):
    proxy = one(default_docs, "Deployment", "-proxy")
    assert proxy["spec"]["strategy"] == {"type": "Recreate"}
    assert proxy["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy"
    c = container(proxy)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"public": 8080, "proxy-api": 8001}
    assert c["readinessProbe"]["httpGet"] == {"path": "/_chp_healthz", "port": "public", "scheme": "HTTP"}
    volumes = {v["name"]: v for v in proxy["spec"]["template"]["spec"]["volumes"]}
    assert volumes["ssh-host-keys"]["secret"]["items"] == [
        {"key": "ssh-host-ecdsa-key", "path": "ssh_host_ecdsa_key"}
    ]
    services = {s["metadata"]["name"]: s["spec"] for s in find(default_docs, "Service")}
    assert services["mlhub-hub"]["type"] == "ClusterIP"
    assert services["mlhub-hub"]["ports"][0]["port"] == 8081
    assert services["mlhub-proxy-api"]["type"] == "ClusterIP"
    assert services["mlhub-proxy-api"]["ports"] == [
        {"name": "proxy-api", "port": 8001, "targetPort": "proxy-api", "protocol": "TCP"}
    ]
    public = services["mlhub-proxy-public"]
    assert public["type"] == "ClusterIP"  # a LoadBalancer only when asked for
    assert public["ports"] == [{"name": "http", "port": 80, "targetPort": "public", "protocol": "TCP"}]
    for name, spec in services.items():
        component = "hub" if name == "mlhub-hub" else "proxy"
        assert spec["selector"]["app.kubernetes.io/component"] == component


def test_public_service_published(max_docs):
    spec = one(max_docs, "Service", "-proxy-public")["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["ports"] == [
        {"name": "https", "port": 443, "targetPort": "public", "protocol": "TCP", "nodePort": 30443},
        {"name": "ssh", "port": 22, "targetPort": "public", "protocol": "TCP", "nodePort": 30022},
    ]
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["loadBalancerSourceRanges"] == ["198.51.100.0/24"]


@pytest.mark.parametrize("which", ["default", "max"])
def test_no_privileges(request, which):
    docs = request.getfixturevalue(f"{which}_docs")
    for deployment in find(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert not pod.get("initContainers")
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(deployment)["securityContext"]
        assert sc.get("privileged", False) is False
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        for volume in pod["volumes"]:
            assert "hostPath" not in volume


# ---- read-only root filesystem: the pods write only to their volumes ------------------------------------------

WRITABLE = {"/data", "/run/mlhub", "/tmp"}
SIZE_LIMITS = {  # (/run/mlhub, /tmp) of values.yaml and of values-max.yaml (null: no limit)
    "default": {"hub": ("64Mi", "1Gi"), "proxy": ("4Gi", "256Mi")},
    "max": {"hub": ("128Mi", "2Gi"), "proxy": (None, "512Mi")},
}


def volumes_of(deployment):
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def mounts_of(deployment):
    return {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}


@pytest.mark.parametrize("which", ["default", "max"])
def test_pods_write_only_to_their_volumes_and_read_secrets_by_group(request, which):
    """The image writes only to /data, /run/mlhub and /tmp (a1's contract): each is a volume of the pod, the
    last two emptyDirs with their sizeLimit; every other mount is a Secret, read-only, mode 0440 (owner root,
    group the pod's fsGroup: the non-root user reads it by its group)."""
    docs = request.getfixturevalue(f"{which}_docs")
    for component in ("hub", "proxy"):
        deployment = one(docs, "Deployment", f"-{component}")
        volumes, mounts = volumes_of(deployment), mounts_of(deployment)
        assert {path for path, m in mounts.items() if not m.get("readOnly")} == WRITABLE, component
        run, tmp = (volumes[mounts[path]["name"]]["emptyDir"] for path in ("/run/mlhub", "/tmp"))
        assert (run.get("sizeLimit"), tmp.get("sizeLimit")) == SIZE_LIMITS[which][component]
        secrets = {path: volumes[m["name"]]["secret"] for path, m in mounts.items() if m.get("readOnly")}
        expected = {
            "hub": {"/usr/local/etc/mlhub", "/resources/jupyterhub_user_config.py"},
            "proxy": {"/etc/mlhub/ssh-host-keys"} | ({"/resources/ssl"} if which == "max" else set()),
        }[component]
        assert set(secrets) == expected
        for path, secret in secrets.items():
            assert secret["defaultMode"] == 0o440, path
            assert all("mode" not in item for item in secret.get("items", [])), path


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def restricted_pod(uid):
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_hub_and_proxy_run_as_their_accounts_by_default(default_docs):
    """Pod Security ``restricted`` by default: the hub as the image's mlhub (1000), the proxy as tunnel (1001, the
    one account its non-root sshd can log in), fsGroup their gid, no capability, a read-only root filesystem."""
    for component, uid in (("hub", 1000), ("proxy", 1001)):
        deployment = one(default_docs, "Deployment", f"-{component}")
        assert deployment["spec"]["template"]["spec"]["securityContext"] == restricted_pod(uid), component
        assert container(deployment)["securityContext"] == RESTRICTED_CONTAINER, component


def test_openshift_nulls_leave_the_ids_to_the_cluster(render):
    """OpenShift's restricted-v2 assigns the uid and fsGroup from the namespace's range and refuses pods naming
    others: null leaves them out, and the pod still conforms to ``restricted``."""
    import pod_security

    ids = ("runAsUser", "runAsGroup", "fsGroup")
    args = [a for key in ids for a in ("--set", f"hub.podSecurityContext.{key}=null")]
    hub = one(render(*args), "Deployment", "-hub")
    pod = hub["spec"]["template"]["spec"]
    assert pod["securityContext"] == {k: v for k, v in restricted_pod(1000).items() if k not in ids}
    assert container(hub)["securityContext"] == RESTRICTED_CONTAINER
    assert pod_security.violations(hub["spec"]["template"], "restricted") == []


@pytest.mark.parametrize("component", ["hub", "proxy"])
def test_root_with_run_as_non_root_is_refused_naming_the_fix(helm_bin, component):
    """An operator's old values (runAsUser 0) merged with runAsNonRoot true would make a pod the kubelet never
    starts (CreateContainerConfigError): the chart refuses it at install time instead."""
    args = [
        "--set", f"{component}.podSecurityContext.runAsNonRoot=true",
        "--set", f"{component}.containerSecurityContext.runAsUser=0",
    ]  # fmt: skip
    result = run_helm(helm_bin, "template", "x", CHART, *args, check=False)
    assert result.returncode != 0
    assert f"{component}: runAsUser 0 (root) with runAsNonRoot true" in result.stderr
    assert "Set a non-root runAsUser" in result.stderr


# ---- PDBs -------------------------------------------------------------------------------------------------------------


def test_pdbs_are_policy_v1_and_never_block_a_drain(render, default_docs, max_docs):
    for docs in (default_docs, max_docs):
        pdbs = find(docs, "PodDisruptionBudget")
        assert {p["metadata"]["name"].rsplit("-", 1)[1] for p in pdbs} == {"hub", "proxy"}
        for pdb in pdbs:
            assert pdb["apiVersion"] == "policy/v1"
            assert "minAvailable" not in pdb["spec"]
            allowed = pdb["spec"]["maxUnavailable"]
            # one replica: the eviction of that pod must be allowed
            assert (allowed >= 1) if isinstance(allowed, int) else int(allowed.rstrip("%")) > 0
            component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
            deployment = one(docs, "Deployment", f"-{component}")
            assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
            assert deployment["spec"]["replicas"] == 1
    assert not find(
        render("--set", "hub.pdb.enabled=false", "--set", "proxy.pdb.enabled=false"), "PodDisruptionBudget"
    )


# ---- NetworkPolicies --------------------------------------------------------------------------------------------------


def egress_reaches(policy, ip, port=80):
    """Whether an egress rule of the policy lets traffic to ``ip:port`` out (ipBlocks and open rules only)."""
    ip = ipaddress.ip_address(ip)
    for rule in policy["spec"].get("egress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("port") in (None, port) for p in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True  # any destination on these ports
        for peer in peers:
            block = peer.get("ipBlock")
            if block and ip in ipaddress.ip_network(block["cidr"]):
                if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                    return True
    return False


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("which", ["default", "max"])
def test_network_policies(request, which):
    docs = request.getfixturevalue(f"{which}_docs")
    values = hub_values(docs)
    hub_name = values["_chart"]["hubName"]
    policies = {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in find(docs, "NetworkPolicy")
    }
    assert set(policies) == {"hub", "proxy", "singleuser", "image-puller"}
    hub_labels = one(docs, "Deployment", "-hub")["spec"]["template"]["metadata"]["labels"]
    proxy_labels = one(docs, "Deployment", "-proxy")["spec"]["template"]["metadata"]["labels"]
    workspace_labels = {"mlhub.component": "workspace", "mlhub.origin": hub_name, "mlhub.user": "alice"}
    for policy in policies.values():
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        # the cloud metadata service is never reachable (DNS on port 53 aside)
        assert not egress_reaches(policy, METADATA_IP, 80)
        assert not egress_reaches(policy, METADATA_IP, 443)
    assert selects(policies["hub"]["spec"]["podSelector"], hub_labels)
    assert selects(policies["proxy"]["spec"]["podSelector"], proxy_labels)
    assert policies["singleuser"]["spec"]["podSelector"]["matchLabels"] == {
        "mlhub.component": "workspace",
        "mlhub.origin": hub_name,
    }
    # the hub API: from the proxy, the workspaces and the hub itself, on 8081 only; the cleanup service's
    # API (8002) from the proxy (its route /services/cleanup-service/) and the hub's own health check only
    hub_in, cleanup_in = policies["hub"]["spec"]["ingress"]
    assert cleanup_in["ports"] == [{"port": 8002, "protocol": "TCP"}]
    cleanup_sources = [peer["podSelector"] for peer in cleanup_in["from"]]
    assert [selects(s, proxy_labels) for s in cleanup_sources] == [True, False]
    assert [selects(s, hub_labels) for s in cleanup_sources] == [False, True]
    assert not any(selects(s, workspace_labels) for s in cleanup_sources)
    assert hub_in["ports"] == [{"port": 8081, "protocol": "TCP"}]
    sources = [peer["podSelector"] for peer in hub_in["from"]]
    assert any(selects(s, proxy_labels) for s in sources)
    assert any(selects(s, workspace_labels) for s in sources)
    # the proxy: the public port from anywhere, its API only from the hub; no internet egress
    public, api = policies["proxy"]["spec"]["ingress"]
    assert public == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    assert api["ports"] == [{"port": 8001, "protocol": "TCP"}]
    assert [selects(p["podSelector"], hub_labels) for p in api["from"]] == [True]
    assert not egress_reaches(policies["proxy"], "93.184.216.34", 443)
    # the proxy reaches the hub pod on the hub API and the cleanup service's port, nothing else of it
    to_hub = [
        r
        for r in policies["proxy"]["spec"]["egress"]
        if any(selects(p.get("podSelector", {"matchLabels": {"x": "y"}}), hub_labels) for p in r["to"])
    ]
    assert [p["port"] for r in to_hub for p in r["ports"]] == [8081, 8002]
    # workspaces: reachable from the hub and proxy pods only (the spawner adds the same user's pods)
    (ws_in,) = policies["singleuser"]["spec"]["ingress"]
    peers = [p["podSelector"] for p in ws_in["from"]]
    assert len(peers) == 2
    assert any(selects(s, hub_labels) for s in peers) and any(selects(s, proxy_labels) for s in peers)
    assert not any(selects(s, workspace_labels) for s in peers)
    assert egress_reaches(policies["singleuser"], "93.184.216.34", 443)  # the internet
    # the spawner's per-user policies block what the chart's policy blocks
    except_list = [
        e for rule in policies["singleuser"]["spec"]["egress"] for p in rule.get("to", []) if "ipBlock" in p
        for e in p["ipBlock"].get("except", [])
    ]  # fmt: skip
    assert values["_chart"]["blockedCIDRs"] == except_list
    if which == "max":
        assert not egress_reaches(policies["singleuser"], "10.1.2.3", 443)  # privateIPs: false
        assert not egress_reaches(policies["singleuser"], "100.64.0.1", 443)
        assert egress_reaches(policies["singleuser"], "10.20.30.40", 5432)  # extraEgress


def test_network_policies_can_be_turned_off(render):
    docs = render("--set", "networkPolicy.enabled=false", "--set", "singleuser.networkPolicy.enabled=false")
    assert not find(docs, "NetworkPolicy")
    assert hub_values(docs)["singleuser"]["networkPolicy"]["enabled"] is False


# ---- checksums, names, secrets ---------------------------------------------------------------------------------------


def pod_annotations(docs, component):
    return one(docs, "Deployment", f"-{component}")["spec"]["template"]["metadata"]["annotations"]


def test_checksums_roll_the_hub_on_config_changes_only(render, default_docs, tmp_path):
    again = render()
    # offline, the generated secrets are drawn anew: both pods roll with them (checksum/secret), nothing else
    # differs (install and upgrade keep them: test_lookup_keeps_generated_secrets)
    for component in ("hub", "proxy"):
        a = copy.deepcopy(one(default_docs, "Deployment", f"-{component}")["spec"]["template"])
        b = one(again, "Deployment", f"-{component}")["spec"]["template"]
        assert a["metadata"]["annotations"].pop("checksum/secret") != b["metadata"]["annotations"].pop(
            "checksum/secret"
        )
        assert a == b, component
    base = pod_annotations(default_docs, "hub")
    assert set(base) == {"checksum/values", "checksum/user-config", "checksum/secret"}
    user_config = tmp_path / "jupyterhub_user_config.py"
    user_config.write_text("c.MLHubKubernetesSpawner.max_cpu_limit = 8\n")
    changed = pod_annotations(render("--set-file", f"userConfig={user_config}"), "hub")
    assert changed["checksum/user-config"] != base["checksum/user-config"]
    assert changed["checksum/values"] == base["checksum/values"]
    values_changed = pod_annotations(render("--set", "singleuser.image.tag=0.2.0"), "hub")
    assert values_changed["checksum/values"] != base["checksum/values"]
    assert values_changed["checksum/user-config"] == base["checksum/user-config"]
    # the proxy rolls with its certificate (and the secrets, drawn anew offline), not with the hub's values
    assert (
        pod_annotations(render("--set", "singleuser.image.tag=0.2.0"), "proxy")["checksum/tls"]
        == (pod_annotations(default_docs, "proxy")["checksum/tls"])
    )
    gitops = ["--set", "existingSecret=mine"]
    assert pod_annotations(
        render(*gitops, "--set", "singleuser.image.tag=0.2.0"), "proxy"
    ) == pod_annotations(render(*gitops), "proxy")


def test_user_config_reaches_its_secret(render, tmp_path):
    """The user config may hold OAuth client secrets: a Secret (not a ConfigMap), mounted where it always was."""
    user_config = tmp_path / "jupyterhub_user_config.py"
    text = 'c.GenericOAuthenticator.client_secret = "s3cret"\nprint("it\'s: #1")\n'
    user_config.write_text(text)
    docs = render("--set-file", f"userConfig={user_config}")
    assert not find(docs, "ConfigMap")
    assert secret_data(one(docs, "Secret", "-hub-user-config")) == {"jupyterhub_user_config.py": text}
    assert "userConfig" not in hub_values(docs)
    hub = one(docs, "Deployment", "-hub")
    volumes = {v["name"]: v for v in hub["spec"]["template"]["spec"]["volumes"]}
    assert volumes["user-config"]["secret"]["secretName"] == "mlhub-hub-user-config"
    mounts = {m["mountPath"]: m for m in container(hub)["volumeMounts"]}
    assert mounts["/resources/jupyterhub_user_config.py"]["name"] == "user-config"


def test_two_releases_in_one_namespace_never_collide(render):
    a = render(release="alpha")
    b = render(release="beta")
    names_a = {(d["kind"], d["metadata"]["name"]) for d in a}
    names_b = {(d["kind"], d["metadata"]["name"]) for d in b}
    assert names_a and not names_a & names_b
    assert hub_values(a)["_chart"]["hubName"] == "alpha"
    assert hub_values(b)["_chart"]["hubName"] == "beta"
    for component in ("hub", "proxy"):
        sel_a = one(a, "Deployment", f"-{component}")["spec"]["selector"]["matchLabels"]
        sel_b = one(b, "Deployment", f"-{component}")["spec"]["selector"]["matchLabels"]
        assert sel_a != sel_b
    # every reference to another object names one of the same release
    for docs, names in ((a, names_a), (b, names_b)):
        hub = one(docs, "Deployment", "-hub")
        for volume in hub["spec"]["template"]["spec"]["volumes"]:
            if "emptyDir" in volume:
                continue
            ref = volume.get("secret", {}).get("secretName") or volume.get("configMap", {}).get("name")
            ref = ref or volume.get("persistentVolumeClaim", {}).get("claimName")
            assert any(ref == n for _, n in names), ref
        for entry in env_of(hub).values():
            key_ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if key_ref:
                assert ("Secret", key_ref["name"]) in names


def test_long_release_names_stay_valid(render):
    release = "a-release-name-that-is-quite-long-indeed-x"
    docs = render("--set", "hub.name=long", release=release)
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_generated_secrets_offline(render, default_docs, tmp_path):
    data = secret_data(one(default_docs, "Secret", "-secret"))
    assert set(data) == {"proxy-token", "cookie-secret", "ssh-front-token", "ssh-host-ecdsa-key"}
    assert len(data["proxy-token"]) == 64 and data["proxy-token"].isalnum()
    assert len(data["ssh-front-token"]) == 64 and data["ssh-front-token"].isalnum()
    bytes.fromhex(data["cookie-secret"])
    assert len(data["cookie-secret"]) == 64
    assert data["ssh-host-ecdsa-key"].startswith("-----BEGIN EC PRIVATE KEY-----")
    if shutil.which("ssh-keygen"):
        key = tmp_path / "host_key"
        key.write_text(data["ssh-host-ecdsa-key"])
        key.chmod(0o600)
        public = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True, text=True, check=True)
        assert public.stdout.startswith("ecdsa-sha2-nistp256 ")
    # helm template has no cluster to look the existing Secret up in: each offline render draws anew
    # (install and upgrade keep them: test_lookup_keeps_generated_secrets)
    assert secret_data(one(render(), "Secret", "-secret"))["proxy-token"] != data["proxy-token"]
    # the tokens never reach the values the hub reads
    text = secret_data(one(default_docs, "Secret", "-hub-values"))["values.yaml"]
    for key in ("proxy-token", "cookie-secret", "ssh-front-token"):
        assert data[key] not in text


def test_provided_secrets_are_used(render):
    token, cookie = "t" * 48, "ab" * 32
    docs = render("--set", f"proxy.secretToken={token}", "--set", f"hub.cookieSecret={cookie}")
    data = secret_data(one(docs, "Secret", "-secret"))
    assert (data["proxy-token"], data["cookie-secret"]) == (token, cookie)
    text = secret_data(one(docs, "Secret", "-hub-values"))["values.yaml"]
    assert token not in text and cookie not in text


# ---- TLS, ingress, GPUs ----------------------------------------------------------------------------------------------


def certificate_names(pem):
    cert = x509.load_pem_x509_certificate(pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def test_tls_generated_certificate(max_docs):
    tls = one(max_docs, "Secret", "-tls")
    assert tls["type"] == "kubernetes.io/tls"
    data = secret_data(tls)
    names = certificate_names(data["tls.crt"])
    public = "r-ml-proxy-public"
    assert {
        "hub.example.org",
        "ml.example.org",
        "team-a",
        "localhost",
        public,
        f"{public}.{NAMESPACE}.svc",
    } <= names
    assert "-----BEGIN" in data["tls.key"]
    proxy = one(max_docs, "Deployment", "-proxy")
    volumes = {v["name"]: v for v in proxy["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == tls["metadata"]["name"]
    assert {i["path"] for i in volumes["tls"]["secret"]["items"]} == {"cert.crt", "cert.key"}
    mounts = {m["name"]: m["mountPath"] for m in container(proxy)["volumeMounts"]}
    assert mounts["tls"] == "/resources/ssl"
    assert env_of(proxy)["SSL_ENABLED"]["value"] == "true"
    assert container(proxy)["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def self_signed(tmp_path, name):
    """A certificate and its key (PEM files) for ``name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_provided_and_existing(render, tmp_path):
    cert, key = self_signed(tmp_path, "hub.example.org")
    docs = render(
        "--set",
        "hub.ssl.enabled=true",
        "--set-file",
        f"hub.ssl.cert={cert}",
        "--set-file",
        f"hub.ssl.key={key}",
    )
    data = secret_data(one(docs, "Secret", "-tls"))
    assert data["tls.crt"] == cert.read_text() and data["tls.key"] == key.read_text()
    assert "cert" not in hub_values(docs)["hub"]["ssl"] and "key" not in hub_values(docs)["hub"]["ssl"]
    existing = render("--set", "hub.ssl.enabled=true", "--set", "hub.ssl.existingSecret=hub-cert")
    assert not find(existing, "Secret", "-tls")
    volumes = one(existing, "Deployment", "-proxy")["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v for v in volumes}["tls"]["secret"]["secretName"] == "hub-cert"
    assert one(existing, "Service", "-proxy-public")["spec"]["ports"][0]["port"] == 443


def test_ingress_is_http_only(default_docs, max_docs):
    assert not find(default_docs, "Ingress")
    ingress = one(max_docs, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["hub.example.org", "ml.example.org"]
    for rule in ingress["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        assert path["backend"]["service"] == {"name": "r-ml-proxy-public", "port": {"number": 443}}
    assert ingress["spec"]["tls"] == [
        {"secretName": "hub-example-org-tls", "hosts": ["hub.example.org", "ml.example.org"]}
    ]


def test_default_values_bound_every_lifetime(default_docs):
    """A default install caps workspace lifetimes at 90 days, like a hub without the chart."""
    c = chart_values.apply_chart_values(Config(), hub_values(default_docs))
    assert c.MLHubKubernetesSpawner.max_days_to_live == 90


def test_hub_reads_the_rendered_values(max_docs):
    """The values the chart mounts are what mlhubspawner.chart_values maps onto the spawner (GPUs included)."""
    values = hub_values(max_docs)
    c = chart_values.apply_chart_values(Config(), values)
    services = {s["metadata"]["name"] for s in find(max_docs, "Service")}
    assert c.JupyterHub.hub_connect_url == "http://r-ml-hub:8081" and "r-ml-hub" in services
    assert c.ConfigurableHTTPProxy.api_url == "http://r-ml-proxy-api:8001" and "r-ml-proxy-api" in services
    assert c.JupyterHub.db_url == "postgresql://mlhub@db.example.org:5432/mlhub"
    assert c.JupyterHub.log_level == "DEBUG"
    assert c.JupyterHub.shutdown_on_logout is True
    sp = c.MLHubKubernetesSpawner
    assert sp.hub_name == "team-a" and sp.namespace == NAMESPACE
    assert sp.image == "registry.example.org:5000/ml/workspace:2.1"
    assert sp.image_pull_secrets == ["regcred"]
    assert (sp.max_gpus, sp.gpu_resource_name) == (4, "nvidia.com/gpu")
    assert sp.gpu_resource_names == ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb"]
    assert sp.gpu_node_selector == {"nvidia.com/gpu.present": "true"}
    assert sp.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert (sp.storage_capacity, sp.storage_class) == ("50Gi", "fast")
    assert sp.resource_request_ratio == 0.25
    assert sp.environment == {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "4"}
    hub_labels = one(max_docs, "Deployment", "-hub")["spec"]["template"]["metadata"]["labels"]
    assert selects(sp.network_policy_hub_peers[0]["podSelector"], hub_labels)
    assert (
        "100.64.0.0/10" in sp.network_policy_blocked_cidrs and "10.0.0.0/8" in sp.network_policy_blocked_cidrs
    )
    # secrets stay out of the mounted values
    assert "password" not in values["hub"]["db"]


# ---- the schema refuses bad values, naming the field ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--set", "singleuser.storage.capacity=5"],
            "singleuser.storage.capacity: Invalid type. Expected: string",
        ),
        (["--set", "hub.name=Bad_Name"], "hub.name: Does not match pattern"),
        (["--set", "bogus=1"], "Additional property bogus is not allowed"),
        (["--set", "hub.bogus=1"], "Additional property bogus is not allowed"),
        (["--set", "hub.db.type=postgres"], "hub.db.url"),
        (["--set", "hub.db.type=oracle"], "hub.db.type"),
        (["--set", "proxy.service.type=External"], "proxy.service.type"),
        (["--set", "hub.pdb.maxUnavailable=0"], "hub.pdb.maxUnavailable"),
        (
            ["--set", "hub.containerSecurityContext.privileged=true"],
            "hub.containerSecurityContext.privileged",
        ),
        (["--set", "hub.podSecurityContext.runAsUser=-1"], "hub.podSecurityContext.runAsUser"),
        (["--set", "hub.podSecurityContext.runAsUser=root"], "hub.podSecurityContext.runAsUser"),
        (["--set", "proxy.podSecurityContext.fsGroup=1.5"], "proxy.podSecurityContext.fsGroup"),
        (
            ["--set", "hub.podSecurityContext.fsGroupChangePolicy=Never"],
            "hub.podSecurityContext.fsGroupChangePolicy",
        ),
        (
            ["--set", "proxy.podSecurityContext.seccompProfile.type=Off"],
            "proxy.podSecurityContext.seccompProfile.type",
        ),
        (
            ["--set", "proxy.containerSecurityContext.readOnlyRootFilesystem=yes"],
            "proxy.containerSecurityContext.readOnlyRootFilesystem",
        ),
        (
            ["--set", "hub.containerSecurityContext.capabilities.add={net_admin}"],
            "hub.containerSecurityContext.capabilities.add.0",
        ),
        (["--set", "hub.tmpSizeLimit=big"], "hub.tmpSizeLimit"),
        (["--set", "proxy.runSizeLimit=1 Gi"], "proxy.runSizeLimit"),
        (["--set", "hub.extraEnv.HUB_NAME=x"], "hub.extraEnv"),
        (["--set", "cleanup.intervalSeconds=5"], "cleanup.intervalSeconds"),
        (["--set", "singleuser.requestRatio=0"], "singleuser.requestRatio"),
        (["--set", "singleuser.memory.max=lots"], "singleuser.memory.max"),
        (["--set", "singleuser.lifetime.maxDays=1e7"], "singleuser.lifetime.maxDays"),
        (["--set", "hub.cookieSecret=not-hex"], "hub.cookieSecret"),
        (["--set", "hub.adminPassword=short"], "hub.adminPassword"),
        (["--set", "hub.extraEnv.MLHUB_ADMIN_PASSWORD=in-plain-text-here"], "hub.extraEnv"),
        (["--set", "hub.ssl.cert=-----BEGIN CERTIFICATE-----x"], "hub.ssl.key"),
        (
            ["--set", "singleuser.networkPolicy.blockedCIDRs={example.org}"],
            "singleuser.networkPolicy.blockedCIDRs",
        ),
        (["--set", "singleuser.gpu.resourceNames={cpu}"], "singleuser.gpu.resourceNames.0"),
        (["--set", "singleuser.gpu.resourceNames={kubernetes.io/gpu}"], "singleuser.gpu.resourceNames.0"),
        (["--set", "rbac.listNodes=yes"], "rbac.listNodes"),
        (["--set", "prePuller.enabled=yes"], "prePuller.enabled"),
        (["--set", "prePuller.extraImages={Not An Image}"], "prePuller.extraImages.0"),
        (["--set", "prePuller.pause.image=https://example.org/pause"], "prePuller.pause.image"),
        (["--set", "prePuller.bogus=1"], "Additional property bogus is not allowed"),
        (["--set", "prePuller.priorityClassName=Low_Priority"], "prePuller.priorityClassName"),
    ],
)
def test_schema_refuses_bad_values(helm_bin, args, message):
    for command in (["lint", "--strict", CHART], ["template", "x", CHART]):
        result = run_helm(helm_bin, *command, *args, check=False)
        assert result.returncode != 0, (command, args)
        assert message in result.stdout + result.stderr, (command, result.stdout + result.stderr)


def test_release_name_that_is_no_hub_name_is_refused(helm_bin):
    result = run_helm(helm_bin, "template", "a-very-long-release-name-x", CHART, check=False)
    assert result.returncode != 0
    assert "set hub.name" in result.stderr
    run_helm(helm_bin, "template", "a-very-long-release-name-x", CHART, "--set", "hub.name=short")


# ---- against the fake API server (tests/fake_k8s.py) ---------------------------------------------------------------


@pytest.fixture
def fake(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from fake_k8s import running_fake
    finally:
        sys.path.remove(str(REPO / "tests"))
    with running_fake() as fake:
        fake.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
        yield fake


def test_lookup_keeps_generated_secrets(render, fake):
    """With a cluster (here the fake) the existing Secret's values are reused: no rotation on upgrade."""
    existing = {
        "proxy-token": "p" * 64,
        "cookie-secret": "cd" * 32,
        "ssh-front-token": "s" * 64,
        "ssh-host-ecdsa-key": "-----BEGIN EC PRIVATE KEY-----\nkept\n-----END EC PRIVATE KEY-----\n",
    }
    fake.create(
        "secrets",
        NAMESPACE,
        {
            "metadata": {"name": "mlhub-secret"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in existing.items()},
        },
    )
    checksums = set()
    for _ in range(2):
        docs = render("--dry-run=server", kubeconfig=fake.kubeconfig)
        assert secret_data(one(docs, "Secret", "-secret")) == existing
        checksums |= {pod_annotations(docs, c)["checksum/secret"] for c in ("hub", "proxy")}
    assert len(checksums) == 1  # an upgrade rolls no pod for the secrets' sake
    # a value set in the chart's values still wins over the stored one
    docs = render("--dry-run=server", "--set", "proxy.secretToken=" + "n" * 40, kubeconfig=fake.kubeconfig)
    assert secret_data(one(docs, "Secret", "-secret"))["proxy-token"] == "n" * 40
    # another release does not read this one's Secret
    other = secret_data(
        one(render("--dry-run=server", release="other", kubeconfig=fake.kubeconfig), "Secret", "-secret")
    )
    assert other["proxy-token"] != existing["proxy-token"]


def test_lookup_keeps_the_generated_certificate_until_the_names_change(render, fake):
    args = [
        "--dry-run=server",
        "--set",
        "hub.ssl.enabled=true",
        "--set",
        "hub.ssl.hostnames={hub.example.org}",
    ]
    first = one(render(*args, kubeconfig=fake.kubeconfig), "Secret", "-tls")
    fake.create("secrets", NAMESPACE, {k: first[k] for k in ("metadata", "type", "data")})
    again = one(render(*args, kubeconfig=fake.kubeconfig), "Secret", "-tls")
    assert again["data"] == first["data"]
    renamed = one(
        render("--dry-run=server", "--set", "hub.ssl.enabled=true", "--set", "hub.ssl.hostnames={ml.example.org}",
               kubeconfig=fake.kubeconfig),
        "Secret",
        "-tls",
    )  # fmt: skip
    assert renamed["data"]["tls.crt"] != first["data"]["tls.crt"]
    assert "ml.example.org" in certificate_names(secret_data(renamed)["tls.crt"])


def test_install_upgrade_uninstall(helm_bin, fake, tmp_path):
    common = ["--namespace", NAMESPACE, "--kubeconfig", fake.kubeconfig]
    installed = run_helm(
        helm_bin, "install", "mlhub", CHART, *common, "--wait", "--timeout", "120s", kubeconfig=fake.kubeconfig,
        check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "hub/signup" in installed.stdout  # NOTES.txt
    assert not fake.rejected
    names = {(d["kind"], d["metadata"]["name"]) for d in fake.list("deployments", NAMESPACE)}
    assert names == {("Deployment", "mlhub-hub"), ("Deployment", "mlhub-proxy")}
    for resource, name in (
        ("services", "mlhub-hub"),
        ("services", "mlhub-proxy-api"),
        ("services", "mlhub-proxy-public"),
        ("persistentvolumeclaims", "mlhub-hub-db"),
        ("roles", "mlhub-hub"),
        ("rolebindings", "mlhub-hub"),
        ("serviceaccounts", "mlhub-hub"),
        ("poddisruptionbudgets", "mlhub-hub"),
        ("networkpolicies", "mlhub-singleuser"),
        ("secrets", "mlhub-hub-user-config"),
        ("secrets", "mlhub-hub-values"),
    ):
        assert fake.get(resource, NAMESPACE, name), (resource, name)
    before = secret_data(fake.get("secrets", NAMESPACE, "mlhub-secret"))
    hub_before = fake.get("deployments", NAMESPACE, "mlhub-hub")["spec"]["template"]["metadata"][
        "annotations"
    ]

    user_config = tmp_path / "jupyterhub_user_config.py"
    user_config.write_text("c.MLHubKubernetesSpawner.max_cpu_limit = 2\n")
    upgraded = run_helm(
        helm_bin, "upgrade", "mlhub", CHART, *common, "--wait", "--timeout", "120s",
        "--set-file", f"userConfig={user_config}", kubeconfig=fake.kubeconfig,
    )  # fmt: skip
    assert upgraded.returncode == 0
    assert secret_data(fake.get("secrets", NAMESPACE, "mlhub-secret")) == before  # nothing rotated
    hub_after = fake.get("deployments", NAMESPACE, "mlhub-hub")["spec"]["template"]["metadata"]["annotations"]
    assert hub_after["checksum/user-config"] != hub_before["checksum/user-config"]
    assert hub_after["checksum/values"] == hub_before["checksum/values"]

    run_helm(helm_bin, "uninstall", "mlhub", *common, "--wait", kubeconfig=fake.kubeconfig)
    assert not fake.list("deployments", NAMESPACE)
    assert not fake.get("secrets", NAMESPACE, "mlhub-secret")
    assert not fake.list("networkpolicies", NAMESPACE)
    # the hub database outlives the release (helm.sh/resource-policy: keep)
    assert fake.get("persistentvolumeclaims", NAMESPACE, "mlhub-hub-db")


# ---- closed egress (issue 11, item 5) ---------------------------------------------------------------------------------

# addresses of cloud metadata and host services: AWS/GCP/Azure/Oracle/OpenStack IMDS, AWS ECS task metadata,
# Tencent, Alibaba, Azure WireServer, AWS IMDS over IPv6, and the IPv6 link-local range
METADATA_ADDRESSES = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.0.23",
    "100.100.100.200",
    "168.63.129.16",
    "fd00:ec2::254",
    "fd00:ec2::23",
    "fe80::1",
]
PRIVATE_ADDRESSES = ["10.1.2.3", "172.16.5.4", "192.168.1.10", "100.64.0.1", "fd12:3456::1"]
KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def workspace_policy(docs):
    return next(
        p
        for p in find(docs, "NetworkPolicy")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == "singleuser"
    )


def dns_rules(policy):
    """The egress rules that open port 53."""
    return [r for r in policy["spec"]["egress"] if any(p.get("port") == 53 for p in r.get("ports", []))]


def test_workspace_egress_is_closed_by_default(default_docs):
    """privateIPs defaults to closed; every metadata address is blocked; the internet (v4 and v6) stays open."""
    policy = workspace_policy(default_docs)
    for address in PRIVATE_ADDRESSES + METADATA_ADDRESSES:
        for port in (80, 443, 10250):
            assert not egress_reaches(policy, address, port), (address, port)
    assert egress_reaches(policy, "93.184.216.34", 443)
    assert egress_reaches(policy, "2606:2800:220:1:248:1893:25c8:1946", 443)
    assert hub_values(default_docs)["singleuser"]["networkPolicy"]["privateIPs"] is False


def test_private_ips_switch_keeps_metadata_blocked(render):
    policy = workspace_policy(render("--set", "singleuser.networkPolicy.privateIPs=true"))
    for address in ("10.1.2.3", "172.16.5.4", "192.168.1.10", "fd12:3456::1"):
        assert egress_reaches(policy, address, 443), address
    for address in METADATA_ADDRESSES:
        assert not egress_reaches(policy, address, 80), address


@pytest.mark.parametrize("which", ["default", "max"])
def test_dns_goes_to_the_cluster_resolver_only(request, which):
    """Port 53 is open to kube-dns/CoreDNS (kube-system) only: never to any address (no DNS tunnel to the LAN)."""
    docs = request.getfixturevalue(which + "_docs")
    for policy in find(docs, "NetworkPolicy"):
        component = policy["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "image-puller":  # no network at all, DNS included
            assert "Egress" in policy["spec"]["policyTypes"] and not policy["spec"].get("egress")
            continue
        # the hub (trusted) reaches every address but metadata: only its DNS rule is checked; workspaces reach
        # the internet on every port (public resolvers too), the proxy only the hub, workspaces and DNS
        addresses = {"hub": (), "singleuser": ("10.0.0.10", "169.254.169.254", "192.168.1.1")}
        for address in addresses.get(component, ("8.8.8.8", "10.0.0.10", "169.254.169.254", "192.168.1.1")):
            assert not egress_reaches(policy, address, 53), (component, address)
        (rule,) = dns_rules(policy)
        assert rule["to"][0] == KUBE_DNS
        assert rule["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    # the spawner's per-user policies get the same DNS peers
    assert hub_values(docs)["_chart"]["dnsPeers"][0] == KUBE_DNS


def test_dns_peers_are_configurable(render):
    """E.g. NodeLocal DNSCache (169.254.20.10) and OpenShift's resolver (openshift-dns, port 5353)."""
    docs = render(
        "--set-json",
        'networkPolicy.dns={"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},'
        ' "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default", "k8s-app": null}},'
        ' "cidrs": ["169.254.20.10/32"], "ports": [53, 5353]}',
    )
    policy = workspace_policy(docs)
    (rule,) = [r for r in policy["spec"]["egress"] if any(p.get("port") == 5353 for p in r.get("ports", []))]
    assert rule["to"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
        "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}},
    }
    assert egress_reaches(policy, "169.254.20.10", 53) and egress_reaches(policy, "169.254.20.10", 5353)
    assert not egress_reaches(policy, "169.254.20.10", 80)
    chart = hub_values(docs)["_chart"]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in chart["dnsPeers"]
    assert chart["dnsPorts"] == [53, 5353]
    sp = chart_values.apply_chart_values(Config(), hub_values(docs)).MLHubKubernetesSpawner
    assert sp.network_policy_dns_peers == chart["dnsPeers"] and sp.network_policy_dns_ports == [53, 5353]


# ---- GitOps: an existing Secret, checksum/secret (issue 13, item 5) ---------------------------------------------------


def test_checksum_secret_rolls_both_pods_when_a_secret_changes(render):
    """Both Deployments carry the hash of the chart's Secret: a new token rolls the hub and the proxy."""
    a = render("--set", "proxy.secretToken=" + "a" * 40)
    b = render("--set", "proxy.secretToken=" + "b" * 40)
    for docs in (a, b):
        assert (
            pod_annotations(docs, "hub")["checksum/secret"]
            == pod_annotations(docs, "proxy")["checksum/secret"]
        )
    assert pod_annotations(a, "hub")["checksum/secret"] != pod_annotations(b, "hub")["checksum/secret"]
    assert pod_annotations(a, "proxy")["checksum/secret"] != pod_annotations(b, "proxy")["checksum/secret"]


GITOPS = ["--set", "existingSecret=mlhub-gitops", "--set", "hub.ssl.enabled=true"]
GITOPS += ["--set", "hub.ssl.existingSecret=hub-cert"]


def test_existing_secret_makes_renders_reproducible(helm_bin, render, tmp_path):
    """Argo CD / Flux render with `helm template`: with existingSecret two renderings are byte-identical and
    every secret the pods read comes from the operator's Secrets, none from the chart."""
    user_config = tmp_path / "jupyterhub_user_config.py"
    user_config.write_text("c.JupyterHub.shutdown_on_logout = True\n")
    args = [
        "template",
        "mlhub",
        CHART,
        "--namespace",
        NAMESPACE,
        *GITOPS,
        "--set-file",
        f"userConfig={user_config}",
    ]
    first, second = run_helm(helm_bin, *args).stdout, run_helm(helm_bin, *args).stdout
    assert first == second
    # without it, every rendering draws new values, and the rendered Secret says so
    plain = ["template", "mlhub", CHART, "--namespace", NAMESPACE]
    assert run_helm(helm_bin, *plain).stdout != run_helm(helm_bin, *plain).stdout
    assert "For GitOps create the Secret yourself and set existingSecret" in run_helm(helm_bin, *plain).stdout
    assert "New random values" not in first

    docs = [d for d in yaml.safe_load_all(first) if d]
    assert not find(docs, "Secret", "-secret") and not find(docs, "Secret", "-tls")
    assert {d["metadata"]["name"] for d in find(docs, "Secret")} == {
        "mlhub-hub-values",
        "mlhub-hub-user-config",
    }
    hub, proxy = one(docs, "Deployment", "-hub"), one(docs, "Deployment", "-proxy")
    for deployment in (hub, proxy):
        for entry in env_of(deployment).values():
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "mlhub-gitops", entry
    hub_env = env_of(hub)
    for name, key in (
        ("CONFIGPROXY_AUTH_TOKEN", "proxy-token"),
        ("JPY_COOKIE_SECRET", "cookie-secret"),
        ("MLHUB_SSH_FRONT_TOKEN", "ssh-front-token"),
    ):
        assert hub_env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlhub-gitops", "key": key}
    # the admin password, if the Secret has one (else generated at the first start as without the chart)
    assert hub_env["MLHUB_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlhub-gitops",
        "key": "admin-password",
        "optional": True,
    }
    proxy_volumes = {v["name"]: v for v in proxy["spec"]["template"]["spec"]["volumes"]}
    assert proxy_volumes["ssh-host-keys"]["secret"]["secretName"] == "mlhub-gitops"
    assert proxy_volumes["tls"]["secret"]["secretName"] == "hub-cert"
    # renaming the Secret (e.g. mlhub-gitops-v2) is what rolls both pods
    renamed = render("--set", "existingSecret=mlhub-gitops-v2")
    for component in ("hub", "proxy"):
        assert (
            pod_annotations(renamed, component)["checksum/secret"]
            != pod_annotations(docs, component)["checksum/secret"]
        )
    for version in K8S_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_existing_secret_with_an_external_database(render):
    docs = render(
        "--set", "existingSecret=mlhub-gitops", "--set", "hub.db.type=postgres",
        "--set", "hub.db.url=postgresql://mlhub@db:5432/mlhub",
    )  # fmt: skip
    env = env_of(one(docs, "Deployment", "-hub"))
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlhub-gitops",
        "key": "db-password",
        "optional": True,
    }
    own = env_of(
        one(
            render("--set", "existingSecret=mlhub-gitops", "--set", "hub.existingAdminPasswordSecret=admin"),
            "Deployment",
            "-hub",
        )
    )
    assert own["MLHUB_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "admin",
        "key": "admin-password",
    }


@pytest.mark.parametrize(
    "value",
    [
        "proxy.secretToken=" + "t" * 40,
        "hub.cookieSecret=" + "ab" * 32,
        "hub.adminPassword=correct-horse-battery",
    ],
)
def test_existing_secret_refuses_secrets_in_the_values(helm_bin, value):
    """A value the chart would ignore is refused, naming where it belongs."""
    result = run_helm(
        helm_bin, "template", "x", CHART, "--set", "existingSecret=mlhub-gitops", "--set", value, check=False
    )
    assert result.returncode != 0
    assert "existingSecret is set" in result.stderr


def test_existing_secret_install_on_the_fake(helm_bin, fake):
    """Installed with existingSecret the release owns no Secret of generated values."""
    common = [
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        fake.kubeconfig,
        "--set",
        "existingSecret=mlhub-gitops",
    ]
    installed = run_helm(
        helm_bin, "install", "mlhub", CHART, *common, kubeconfig=fake.kubeconfig, check=False
    )
    assert installed.returncode == 0, installed.stderr
    assert not fake.rejected
    assert fake.get("secrets", NAMESPACE, "mlhub-secret") is None
    assert fake.get("secrets", NAMESPACE, "mlhub-hub-user-config") is not None


# ---- the cleanup service through the proxy (issue 13, item 4) --------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "max"])
def test_cleanup_service_is_reachable_through_the_hub_service(request, which):
    """The proxy pod routes /services/cleanup-service/ to http://<hub Service>:8002: the Service has the port, the
    hub pod names it and its cleanup service listens on the pod's addresses."""
    docs = request.getfixturevalue(f"{which}_docs")
    hub = one(docs, "Deployment", "-hub")
    service = one(docs, "Service", "-hub")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["cleanup"] == {"name": "cleanup", "port": 8002, "targetPort": "cleanup", "protocol": "TCP"}
    assert {"name": "cleanup", "containerPort": 8002, "protocol": "TCP"} in container(hub)["ports"]
    secrets = secret_data(one(docs, "Secret", "-secret"))
    settings = load_settings(pod_env_for_settings(hub, secrets))
    assert settings.hub_service_url == f"http://{service['metadata']['name']}:8081"
    assert settings.cleanup_port == 8002
    assert env_of(hub)["MLHUB_CLEANUP_LISTEN"]["value"] == "0.0.0.0"
    # the proxy pod uses the same Service URL
    proxy_env = env_of(one(docs, "Deployment", "-proxy"))
    assert proxy_env["MLHUB_HUB_SERVICE_URL"]["value"] == settings.hub_service_url


# ---- the SSH front's public port (issue 13, item 3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, port",
    [
        ([], "80"),
        (["--set", "hub.ssl.enabled=true"], "443"),
        (["--set", "hub.ssl.enabled=true", "--set", "proxy.service.sshPort=22"], "22"),
        (["--set", "proxy.service.port=8443"], "8443"),
        (["--set", "hub.sshPublicHost=ssh.example.org:2222", "--set", "proxy.service.sshPort=22"], "22"),
    ],
)
def test_generated_ssh_configs_jump_through_the_service_port(render, args, port):
    """Without hub.sshPublicHost the ssh configs take the request's host and the Service's SSH port (not 8080):
    proxy.service.sshPort, else the public port (443 with TLS, else 80)."""
    docs = render(*args)
    hub = one(docs, "Deployment", "-hub")
    env = env_of(hub)
    assert env["MLHUB_SSH_PUBLIC_PORT"]["value"] == port
    service_ports = {p["port"] for p in one(docs, "Service", "-proxy-public")["spec"]["ports"]}
    assert int(port) in service_ports
    # the hub reads it as the ssh-config's port for requests to https://hub.example.org (no port in Host)
    from mlhubspawner import sshkeys

    assert sshkeys.ssh_front_address("hub.example.org", public_port=sshkeys.parse_public_port(port)) == (
        "hub.example.org",
        int(port),
    )


# ---- network policy escape hatches, duplicate Service ports (issue 13, item 7) -----------------------------------------


def policy_of(docs, component):
    (policy,) = [
        p
        for p in find(docs, "NetworkPolicy")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return policy


def test_api_server_egress_escape_hatch(render, default_docs):
    """Cilium does not match the API server with 0.0.0.0/0: its addresses and ports can be named for the hub."""
    rule = {
        "to": [{"ipBlock": {"cidr": "172.20.0.1/32"}}, {"ipBlock": {"cidr": "fd00:10::1/128"}}],
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
    }
    assert rule not in policy_of(default_docs, "hub")["spec"]["egress"]
    docs = render("--set-json", 'networkPolicy.apiServer.cidrs=["172.20.0.1/32", "fd00:10::1/128"]')
    hub = policy_of(docs, "hub")
    assert rule in hub["spec"]["egress"]
    assert egress_reaches(hub, "fd00:10::1", 6443)
    for component in ("proxy", "singleuser"):  # nobody else gets it
        assert rule not in policy_of(docs, component)["spec"]["egress"]
    ports = render("--set-json", 'networkPolicy.apiServer={"cidrs": ["10.0.0.1/32"], "ports": [16443]}')
    assert {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 16443, "protocol": "TCP"}]} in (
        policy_of(ports, "hub")["spec"]["egress"]
    )


def test_extra_rules_per_component(render):
    """z2jh-style extra rules: appended to the policy of their component only, as given."""
    ldap = {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 636, "protocol": "TCP"}]}
    monitoring = {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"port": 8081, "protocol": "TCP"}],
    }
    args = []
    for key, rule in (
        ("networkPolicy.hub.extraEgress", ldap),
        ("networkPolicy.hub.extraIngress", monitoring),
        ("networkPolicy.proxy.extraEgress", ldap),
        ("networkPolicy.proxy.extraIngress", monitoring),
        ("singleuser.networkPolicy.extraIngress", monitoring),
    ):
        args += ["--set-json", f"{key}={json.dumps([rule])}"]
    docs = render(*args)
    for component in ("hub", "proxy"):
        spec = policy_of(docs, component)["spec"]
        assert spec["egress"][-1] == ldap and spec["ingress"][-1] == monitoring
    workspaces = policy_of(docs, "singleuser")["spec"]
    assert workspaces["ingress"][-1] == monitoring and ldap not in workspaces["egress"]
    assert egress_reaches(policy_of(docs, "proxy"), "10.1.2.3", 636)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_cloud_metadata_for_the_hub_only_when_asked(render, default_docs):
    """Workload Identity (GKE) and EKS Pod Identity need the metadata addresses: the hub's, on request only."""
    assert not egress_reaches(policy_of(default_docs, "hub"), "169.254.169.254", 80)
    docs = render("--set", "networkPolicy.hub.cloudMetadata=true")
    hub = policy_of(docs, "hub")
    for address in ("169.254.169.254", "169.254.170.23"):
        assert egress_reaches(hub, address, 80), address
    assert not egress_reaches(hub, "169.254.170.2", 80)  # ECS task credentials stay closed
    for component in ("proxy", "singleuser"):
        for address in METADATA_ADDRESSES + ["169.254.170.23"]:
            assert not egress_reaches(policy_of(docs, component), address, 80), (component, address)


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "proxy.service.sshPort=80"],
        ["--set", "hub.ssl.enabled=true", "--set", "proxy.service.sshPort=443"],
        ["--set", "proxy.service.port=8443", "--set", "proxy.service.sshPort=8443"],
    ],
    ids=["http", "https", "explicit"],
)
def test_ssh_port_equal_to_the_main_port_is_refused(helm_bin, args):
    """Two Service ports with one number would be refused by the API server at install, after a long wait.
    The schema refuses the default ports (lint too); an explicit proxy.service.port is compared by the template
    (install, upgrade, template: helm lint treats a template's `fail` as information only)."""
    commands = [["template", "x", CHART]] + (
        [] if "proxy.service.port=8443" in args else [["lint", "--strict", CHART]]
    )
    for command in commands:
        result = run_helm(helm_bin, *command, *args, check=False)
        assert result.returncode != 0, (command, args)
        assert "proxy.service.sshPort" in result.stdout + result.stderr
    run_helm(helm_bin, "template", "x", CHART, "--set", "proxy.service.sshPort=443")  # 80 + 443 is fine


# ---- image pre-puller (issue 13, item 11) -----------------------------------------------------------------------------


def puller_pod(docs):
    return one(docs, "DaemonSet", "-image-puller")["spec"]["template"]


def test_image_puller_pulls_every_workspace_image(render, default_docs):
    """One init container per workspace image (default, the form's, the extra ones), each exiting at once."""
    pod = puller_pod(default_docs)["spec"]
    assert [c["image"] for c in pod["initContainers"]] == ["mlhub-workspace:0.1.0"]
    # the waiting container uses the image pulled already: no other image on the node, nothing from elsewhere
    assert pod["containers"][0]["image"] == "mlhub-workspace:0.1.0"
    assert pod["containers"][0]["command"] == ["sleep", "infinity"]
    # GPU nodes pull too: the workspaces' GPU tolerations
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    docs = render(
        "--set", "singleuser.images={lab/a:1,lab/b:2}",
        "--set", "prePuller.extraImages={lab/b:2,registry.example.org/cuda:12}",
        "--set", "singleuser.nodeSelector.pool=gpu",
        "--set", "prePuller.tolerations[0].key=spot,prePuller.tolerations[0].operator=Exists",
        "--set", "prePuller.priorityClassName=low",
        "--set", "imagePullSecrets={regcred}",
    )  # fmt: skip
    pod = puller_pod(docs)["spec"]
    inits = pod["initContainers"]
    assert [c["image"] for c in inits] == [
        "mlhub-workspace:0.1.0",
        "lab/a:1",
        "lab/b:2",
        "registry.example.org/cuda:12",
    ]
    assert len({c["name"] for c in inits}) == len(inits)
    assert all(c["command"] == ["true"] for c in inits)
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "spot", "operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "low"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["automountServiceAccountToken"] is False


def test_image_puller_pause_image_is_a_value(render):
    docs = render("--set", "prePuller.pause.image=registry.example.org/pause:3.10")
    main = puller_pod(docs)["spec"]["containers"][0]
    assert main["image"] == "registry.example.org/pause:3.10"
    assert "command" not in main  # the pause image's own entrypoint
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(one(docs, "DaemonSet"), version, strict=True)


@pytest.mark.parametrize("args", [[], ["-f", VALUES_MAX], ["--set", "prePuller.pause.image=pause:3.10"]])
def test_image_puller_is_pod_security_restricted(render, args):
    import pod_security

    docs = render(*args)
    template = puller_pod(docs)
    assert pod_security.violations(template, "restricted") == []
    for c in template["spec"]["initContainers"] + template["spec"]["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    # no network: a policy selecting the pods with no rule
    policy = one(docs, "NetworkPolicy", "-image-puller")
    assert selects(policy["spec"]["podSelector"], template["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not policy["spec"].get("ingress") and not policy["spec"].get("egress")


def test_image_puller_rolls_when_an_image_changes(render, default_docs):
    before = puller_pod(default_docs)["metadata"]["annotations"]["checksum/images"]
    after = puller_pod(render("--set", "singleuser.image.tag=0.2.0"))
    assert after["metadata"]["annotations"]["checksum/images"] != before
    assert after["spec"]["initContainers"][0]["image"] == "mlhub-workspace:0.2.0"
    same = puller_pod(render("--set", "hub.debug=true"))["metadata"]["annotations"]["checksum/images"]
    assert same == before


def test_image_puller_can_be_turned_off(render):
    docs = render("--set", "prePuller.enabled=false")
    assert not find(docs, "DaemonSet")
    assert not find(docs, "NetworkPolicy", "-image-puller")
    assert find(docs, "Deployment", "-hub")


# ---- the generated certificate is renewed before it expires (issue 13, item 8b) ---------------------------------------

DAY = 86400


def patch_annotation(fake, name, key, value):
    """Merge-patch one annotation of a Secret through the fake's API, as `kubectl annotate` would."""
    body = json.dumps({"metadata": {"annotations": {key: value}}}).encode()
    request = urllib.request.Request(
        f"{fake.url}/api/v1/namespaces/{NAMESPACE}/secrets/{name}",
        data=body,
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json", "Authorization": "Bearer fake-token"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_generated_certificate_is_renewed_within_30_days_of_expiry(helm_bin, fake):
    common = ["--namespace", NAMESPACE, "--kubeconfig", fake.kubeconfig, "--set", "hub.ssl.enabled=true"]

    def tls():
        secret = fake.get("secrets", NAMESPACE, "mlhub-tls")
        cert = x509.load_pem_x509_certificate(secret_data(secret)["tls.crt"].encode())
        return secret, cert

    def upgrade():
        run_helm(helm_bin, "upgrade", "mlhub", CHART, *common, kubeconfig=fake.kubeconfig)

    run_helm(helm_bin, "install", "mlhub", CHART, *common, kubeconfig=fake.kubeconfig)
    secret, cert = tls()
    # the recorded expiry is the certificate's
    not_after = int(secret["metadata"]["annotations"]["mlhub/not-after"])
    assert abs(not_after - cert.not_valid_after_utc.timestamp()) < 120
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=800)
    proxy_before = fake.get("deployments", NAMESPACE, "mlhub-proxy")["spec"]["template"]

    # 200 days left: kept
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    patch_annotation(fake, "mlhub-tls", "mlhub/not-after", str(now + 200 * DAY))
    upgrade()
    kept, kept_cert = tls()
    assert kept_cert == cert
    assert kept["metadata"]["annotations"]["mlhub/not-after"] == str(now + 200 * DAY)

    # 10 days left: a new certificate for the same names, valid 825 days, recorded
    patch_annotation(fake, "mlhub-tls", "mlhub/not-after", str(now + 10 * DAY))
    upgrade()
    renewed, renewed_cert = tls()
    assert renewed_cert != cert and renewed_cert.serial_number != cert.serial_number
    assert certificate_names(secret_data(renewed)["tls.crt"]) == certificate_names(
        secret_data(secret)["tls.crt"]
    )
    assert renewed_cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=800
    )
    assert abs(int(renewed["metadata"]["annotations"]["mlhub/not-after"]) - now - 825 * DAY) < 120
    # the proxy is not restarted for it: it serves the new mounted pair after a reload (MLHUB_CERT_RELOAD_SECONDS)
    proxy_after = fake.get("deployments", NAMESPACE, "mlhub-proxy")["spec"]["template"]
    assert proxy_after["metadata"]["annotations"] == proxy_before["metadata"]["annotations"]
    tls_mounts = [m for m in proxy_after["spec"]["containers"][0]["volumeMounts"] if m["name"] == "tls"]
    assert tls_mounts and not any("subPath" in m for m in tls_mounts)  # the kubelet updates the files

    # a Secret of an older chart (no recorded expiry), created now: kept, its expiry estimated and recorded
    patch_annotation(fake, "mlhub-tls", "mlhub/not-after", None)
    assert "mlhub/not-after" not in tls()[0]["metadata"]["annotations"]
    upgrade()
    old_chart, old_chart_cert = tls()
    assert old_chart_cert == renewed_cert
    created = datetime.datetime.fromisoformat(old_chart["metadata"]["creationTimestamp"]).timestamp()
    assert int(old_chart["metadata"]["annotations"]["mlhub/not-after"]) == int(created) + 825 * DAY
    run_helm(helm_bin, "uninstall", "mlhub", "--namespace", NAMESPACE, "--kubeconfig", fake.kubeconfig,
             kubeconfig=fake.kubeconfig)  # fmt: skip


def test_image_puller_pods_are_admitted_under_restricted(helm_bin, fake):
    """Installed into a namespace enforcing Pod Security `restricted`: the fake's DaemonSet controller makes the
    pre-puller's pods and admission lets them in (as every pod of the chart: test_pod_security_admission.py)."""
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    fake.create("namespaces", None, {"metadata": {"name": "strict", "labels": labels}})
    run_helm(helm_bin, "install", "mlhub", CHART, "--namespace", "strict", "--kubeconfig", fake.kubeconfig,
             kubeconfig=fake.kubeconfig)  # fmt: skip

    def running_pullers():  # the fake's controllers and kubelet act just after the install returns
        pods = fake.list("pods", "strict", label_selector="app.kubernetes.io/component=image-puller")
        return pods if pods and all(p["status"].get("phase") == "Running" for p in pods) else None

    assert support.wait_for(running_pullers, timeout=30, interval=0.2)
    pods = running_pullers()
    audited = {a["name"] for a in fake.pod_security_audit if a["namespace"] == "strict"}
    assert not audited
    assert [c["image"] for c in pods[0]["spec"]["initContainers"]] == ["mlhub-workspace:0.1.0"]
