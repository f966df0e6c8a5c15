"""An in-process fake Kubernetes API server: a CONTRACT TEST DOUBLE, not a cluster.

What it proves: that a client (unmodified KubeSpawner + kubernetes_asyncio, ``helm`` v3 / client-go,
``kubectl``) makes the right REST calls, reacts correctly to watch events, and that every object it sends
is valid against the real Kubernetes OpenAPI schemas (``kubernetes_validate``, strict: unknown fields are
refused with 422 Invalid and recorded in ``FakeKubernetes.rejected``).

What it does NOT prove: nothing runs. There are no containers, images, networks, volumes, DNS or
admission webhooks (Pod Security admission aside, see below); RBAC only when a test asks for it (``enforce_role``: one Role, e.g. the chart's, bound
to every caller, and optionally one ClusterRole's rules, which alone grant cluster-scoped resources such as
nodes; anything they do not grant is 403 Forbidden with a real server's message). A "fake kubelet" marks pods Running (with a pod IP from 10.244.0.0/16, Ready
conditions and Events) after ``pod_start_seconds``; fake controllers make Deployments/ReplicaSets/
StatefulSets/DaemonSets/Jobs report themselves ready, bind PVCs and give Services a clusterIP. It is not an
end-to-end test of pods: a workspace image that crashes on a real cluster is "Running" here.
``tests/fake_kubelet.py`` (opt-in, ``FakeKubelet(fake, docker).start()``) runs the pods on the Docker
engine instead, through the ``kubelet`` hook, ``update_pod_status`` and ``record_event``.

Speaks (HTTP, no TLS, any or no bearer token is accepted) on ``http://127.0.0.1:<free port>``:

- discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``, ``/apis/<group>/<version>``
  in the legacy format. Aggregated discovery (``Accept: ...;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``)
  is answered in the legacy format with ``Content-Type: application/json``, so clients fall back.
  ``/openapi/v3`` serves skeleton documents (no schemas, only PATCH operations that accept the
  ``fieldValidation`` parameter) so that helm/kubectl choose server-side field validation, which the fake
  does; ``/openapi/v2`` (protobuf only in client-go) answers 404. A client that needs real schemas (kubectl
  explain, client-side ``kubectl apply`` of unknown kinds) does not work; for helm 3.18 none is needed, and
  ``helm install --disable-openapi-validation`` skips the lookup altogether.
- resources: see ``RESOURCE_TYPES`` (core/v1 pods, services, endpoints, PVCs, PVs, secrets, configmaps,
  events, namespaces, serviceaccounts, nodes, resourcequotas, limitranges; apps/v1; networking.k8s.io/v1;
  rbac.authorization.k8s.io/v1; policy/v1; batch/v1; storage.k8s.io/v1; scheduling.k8s.io/v1;
  coordination.k8s.io/v1). Subresources: ``status`` (get/put/patch) and ``pods/log`` (a fixed text).
- verbs: get; list (namespaced and all-namespaces; ``labelSelector`` with =, ==, !=, in, notin, exists, !key;
  ``fieldSelector`` with =, ==, != on any dotted path such as metadata.name, status.phase,
  involvedObject.kind; ``limit``/``continue`` are ignored: the whole list is returned); watch (``?watch=1``,
  also the legacy ``/watch/`` paths, with ``resourceVersion``, ``timeoutSeconds``, ``allowWatchBookmarks``,
  ``sendInitialEvents``; replays the changes after the given resourceVersion from an in-memory history;
  a resourceVersion older than that history gets a 410 Expired ERROR event); create (``generateName``,
  defaults); replace (PUT, optimistic concurrency on ``metadata.resourceVersion``); patch (merge-patch,
  json-patch, strategic-merge-patch with the usual merge keys and ``$patch``/``$setElementOrder``/
  ``$retainKeys``/``$deleteFromPrimitiveList`` directives, and apply-patch+yaml approximated as
  create-or-strategic-merge); delete (grace period for pods, finalizers, propagationPolicy with
  owner-reference garbage collection done synchronously, and ``preconditions``: a ``uid`` or
  ``resourceVersion`` other than the object's is 409 Conflict "Precondition failed", nothing deleted);
  deletecollection. ``dryRun=All`` validates and answers without storing.
- errors are ``Status`` objects (NotFound 404, AlreadyExists/Conflict 409, Invalid 422, BadRequest 400,
  Expired 410).

- request bodies are JSON; protobuf (what client-go's typed clientset sends, e.g. helm's release Secrets)
  is decoded for Secret, ConfigMap and DeleteOptions only (others: 415). Responses are always JSON.

Nodes: ``fake-node`` (no GPUs) exists from the start; ``add_node`` adds more (allocatable such as
``{"nvidia.com/gpu": "4"}``, labels, not Ready, cordoned), and ``GET /api/v1/nodes`` lists them all.

Fake kubelet and controllers (asyncio tasks on the server's loop): a new pod is scheduled at once (event
Scheduled) to the first Ready, uncordoned node (by name) whose labels match its ``nodeSelector`` and whose
allocatable extended resources (``nvidia.com/gpu``...) cover its containers' limits (other pods' use and taints
are not counted), else to ``fake-node``: nothing is ever left Pending, and after ``pod_start_seconds`` becomes Running and Ready with
``podIP``/``hostIP``/``containerStatuses`` (events Pulled/Created/Started) or, if ``fail_pods(pod)`` returns
a reason, Failed (container terminated with exit code 1, Warning event). ``pod_exit(pod)`` may return an
exit code to end a running pod ``pod_start_seconds`` later (default: helm test hooks exit 0). A gracefully
deleted pod keeps a deletionTimestamp for ``pod_stop_seconds`` (0.1 s), then goes. Deployments create
ReplicaSets (pod-template-hash) which create pods; StatefulSets (with their volumeClaimTemplates) and
DaemonSets create pods; all report ready replicas = spec.replicas at once; Jobs complete after
``pod_start_seconds`` (no pods). PVCs are Bound at creation, Services get a clusterIP (10.96.0.0/12) and
LoadBalancers an ingress IP. Deleting an object deletes (or, with Orphan, releases) the objects whose
``ownerReferences`` point at its uid, at once and recursively; deleting a namespace deletes its contents.

Pod Security admission (rules in ``tests/pod_security.py``: the Pod Security Standards ``baseline`` and
``restricted`` at version ``latest``): a namespace's ``pod-security.kubernetes.io/enforce|warn|audit`` labels
(``-version`` labels only name the version in messages), else the fake-wide defaults
``FakeKubernetes(pod_security="restricted")`` (the enforce level; a dict {mode: level} for several modes, as an
AdmissionConfiguration's ``defaults``; the attribute may be changed at any time; default ``privileged``, no
checks). A pod violating the enforce level is 403 Forbidden (``pods "x" is forbidden: violates PodSecurity
"restricted:latest": ...``), recorded in ``pod_security_audit``; Deployments, ReplicaSets, StatefulSets,
DaemonSets, Jobs and CronJobs whose pod template violates the enforce or warn level are stored, answered with
a ``Warning: 299 - "would violate PodSecurity ..."`` header and recorded in ``pod_security_warnings``; their
controllers' pods are refused (event FailedCreate on the owner, ready counts stay at the pods made, a
Deployment shows ReplicaFailure). warn: Warning headers for pods too; audit: ``pod_security_audit`` only. A
namespace label with an unknown level is 422 Invalid. Checked at create, and at update when a workload's pod
template changes (pod updates are not checked). Not modelled: exemptions, the older versions' rules, the
warnings a real server gives when a namespace's labels are tightened over existing pods.

Differences from a real kube-apiserver worth knowing:
- stricter: every created/replaced/patched object is validated strictly even without
  ``?fieldValidation=Strict`` (a real server's default, Warn, drops unknown fields with a warning), and a
  schema error is 422 Invalid (a real server says 400 BadRequest for unknown fields under Strict);
  kubernetes_validate reports the first error only and does not check enums or immutable fields.
- list items carry ``kind``/``apiVersion``; the cluster starts with the namespaces default, kube-system,
  kube-public, kube-node-lease and the node ``fake-node``, but no ``kubernetes`` Service and no ``default``
  ServiceAccounts.

Not supported: TLS, authn/authz (everything is allowed), ``limit`` paging, server-side apply field
ownership (apply = strategic merge), admission other than Pod Security (quotas, limit ranges, webhooks),
NetworkPolicy enforcement (policies are stored and validated, no traffic exists to filter), CRDs,
exec/attach/port-forward, Table output (kubectl prints plain lists), real OpenAPI schemas.

Use::

    from fake_k8s import FakeKubernetes, running_fake

    with running_fake() as fake:            # or FakeKubernetes().start() ... fake.stop()
        fake.write_kubeconfig(path)          # for helm/kubectl/kubernetes_asyncio
        fake.list("pods", "default", label_selector="component=singleuser-server")
        fake.fail_pods = lambda pod: "ImagePullBackOff" if "bad" in pod["metadata"]["name"] else None

KubeSpawner: kubernetes_asyncio reads KUBECONFIG once, at import, and KubeSpawner loads a kubeconfig before
it applies ``k8s_api_host``: call ``use_kubeconfig(write_kubeconfig_file(path, fake.url))`` (any server
address will do) before the first spawner is made, give each spawner ``k8s_api_host=fake.url``, and end with
``await KubeSpawner._stop_all_reflectors()``. KubeSpawner caches one API client per event loop: use one fake
per loop (e.g. a module-scoped fake with ``loop_scope="module"``) or ``await reset_kubespawner_clients()``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import contextvars
import copy
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import random
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web

import pod_security

log = logging.getLogger("fake_k8s")

NODE_NAME = "fake-node"
NODE_IP = "172.18.0.2"
POD_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
LB_CIDR = ipaddress.IPv4Network("172.18.255.0/24")
HISTORY = 20000  # watch events kept for resourceVersion replay
WATCH_MAX_SECONDS = 3600  # server-side cap on one watch request
BOOKMARK_SECONDS = 5.0  # idle interval between BOOKMARK events when allowWatchBookmarks
MAX_CONTROLLER_PODS = 100  # a fake controller never creates more pods than this for one owner
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# the Warning headers of the request being handled (None outside a request: controllers, tests' calls)
_REQUEST_WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("warnings", default=None)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a status subresource (spec and status are updated separately)
    generation: bool = False  # metadata.generation counts spec changes

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _rt(group, version, plural, kind, namespaced=True, short=(), status=False, generation=False):
    return ResourceType(group, version, plural, kind, namespaced, tuple(short), status, generation)


RESOURCE_TYPES: list[ResourceType] = [
    _rt("", "v1", "pods", "Pod", short=("po",), status=True),
    _rt("", "v1", "services", "Service", short=("svc",), status=True),
    _rt("", "v1", "endpoints", "Endpoints", short=("ep",)),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), status=True),
    _rt("", "v1", "secrets", "Secret"),
    _rt("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _rt("", "v1", "events", "Event", short=("ev",)),
    _rt("", "v1", "namespaces", "Namespace", False, ("ns",), status=True),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _rt("", "v1", "nodes", "Node", False, ("no",), status=True),
    _rt("", "v1", "resourcequotas", "ResourceQuota", short=("quota",), status=True),
    _rt("", "v1", "limitranges", "LimitRange", short=("limits",)),
    _rt("apps", "v1", "deployments", "Deployment", short=("deploy",), status=True, generation=True),
    _rt("apps", "v1", "replicasets", "ReplicaSet", short=("rs",), status=True, generation=True),
    _rt("apps", "v1", "statefulsets", "StatefulSet", short=("sts",), status=True, generation=True),
    _rt("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), status=True, generation=True),
    _rt("apps", "v1", "controllerrevisions", "ControllerRevision"),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",), generation=True),
    _rt("networking.k8s.io", "v1", "ingresses", "Ingress", short=("ing",), status=True, generation=True),
    _rt("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _rt(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short=("pdb",),
        status=True,
        generation=True,
    ),
    _rt("batch", "v1", "jobs", "Job", status=True, generation=True),
    _rt("batch", "v1", "cronjobs", "CronJob", short=("cj",), status=True, generation=True),
    _rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    _rt("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    _rt("coordination.k8s.io", "v1", "leases", "Lease"),
]
_BY_GVP = {(r.group, r.version, r.plural): r for r in RESOURCE_TYPES}
_BY_NAME: dict[str, ResourceType] = {}
for _r in RESOURCE_TYPES:
    for _n in (_r.plural, _r.singular, _r.kind, *_r.short_names):
        _BY_NAME.setdefault(_n.lower(), _r)
# ReturnDeletedObject in the real registry: these answer DELETE with the object, the others with a Status
_DELETE_RETURNS_OBJECT = {"pods", "services", "persistentvolumeclaims", "persistentvolumes", "namespaces"}


def resource_type(resource: str) -> ResourceType:
    """The ResourceType for a plural ("pods"), singular ("pod"), kind ("Pod") or short name ("po")."""
    try:
        return _BY_NAME[resource.lower()]
    except KeyError:
        raise KeyError(
            f"unknown resource {resource!r}; known: {sorted(r.plural for r in RESOURCE_TYPES)}"
        ) from None


class ApiError(Exception):
    """A Kubernetes API error; ``status()`` is the Status object the server answers with."""

    REASONS = {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
    }

    def __init__(self, code, message, reason=None, rtype=None, name=None, causes=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "InternalError")
        self.rtype = rtype
        self.name = name
        self.causes = causes

    def status(self) -> dict:
        details = {}
        if self.name:
            details["name"] = self.name
        if self.rtype is not None:
            details["kind"] = self.rtype.plural
            if self.rtype.group:
                details["group"] = self.rtype.group
        if self.causes:
            details["causes"] = self.causes
        out = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            out["details"] = details
        return out


def _not_found(rtype, name):
    return ApiError(404, f'{rtype.plural} "{name}" not found', rtype=rtype, name=name)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _later(seconds: float) -> str:
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_suffix(n=5) -> str:
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=n))


def _meta(obj) -> dict:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


# ---------------------------------------------------------------------------------------------------------
# selectors

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_TERM = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*")
_EQ_TERM = re.compile(rf"\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*")
_EXISTS_TERM = re.compile(rf"\s*(!?)\s*({_KEY})\s*")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | dict | None) -> list[tuple[str, str, frozenset]]:
    """Parse a label selector string (or a {key: value} dict) into (key, op, values) requirements."""
    if not text:
        return []
    if isinstance(text, dict):
        return [(k, "=", frozenset([str(v)])) for k, v in text.items()]
    reqs = []
    for term in _split_selector(text):
        if m := _SET_TERM.fullmatch(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
        elif m := _EQ_TERM.fullmatch(term):
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS_TERM.fullmatch(term):
            reqs.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
        else:
            raise ApiError(400, f"unable to parse requirement: {term!r} in label selector {text!r}")
    return reqs


def labels_match(reqs, labels: dict | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        if op == "=" and not (present and labels[key] in values):
            return False
        if op == "!=" and present and labels[key] in values:
            return False
        if op == "in" and not (present and labels[key] in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    if not text:
        return []
    reqs = []
    for term in text.split(","):
        if not term.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*", term)
        if not m:
            raise ApiError(400, f"invalid field selector term {term!r}")
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def _field_value(obj, path: str) -> str:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return ""
        cur = cur[part]
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def fields_match(reqs, obj) -> bool:
    for path, op, value in reqs:
        actual = _field_value(obj, path)
        if (actual == value) != (op == "="):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------
# patches


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
}


def _list_merge_key(field_name, items) -> str | None:
    if field_name == "ports":
        dicts = [i for i in items if isinstance(i, dict)]
        if dicts and all("containerPort" in i for i in dicts if "$patch" not in i):
            return "containerPort"
        return "port"
    return _MERGE_KEYS.get(field_name)


def _strip_directives(value):
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return value


def strategic_merge_patch(target, patch):
    """Strategic merge patch: recursive merge; lists of objects with a known merge key (containers by name,
    volumeMounts by mountPath, ...) are merged by that key, other lists are replaced. Understands the
    ``$patch: replace|delete``, ``$retainKeys``, ``$setElementOrder/<f>`` and ``$deleteFromPrimitiveList/<f>``
    directives."""
    if not isinstance(patch, dict):
        return _strip_directives(copy.deepcopy(patch))
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key)
        else:
            result[key] = value
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in value]
        elif key.startswith("$setElementOrder/"):
            name = key.split("/", 1)[1]
            cur = result.get(name)
            if isinstance(cur, list):
                result[name] = _reorder(cur, value, _list_merge_key(name, cur))
    if isinstance(patch.get("$retainKeys"), list):
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _reorder(items, order, merge_key):
    def ident(item):
        return (
            item.get(merge_key) if merge_key and isinstance(item, dict) else json.dumps(item, sort_keys=True)
        )

    wanted = [ident(o) for o in order]
    ranked = sorted(
        enumerate(items),
        key=lambda pair: (wanted.index(ident(pair[1])) if ident(pair[1]) in wanted else len(wanted), pair[0]),
    )
    return [item for _, item in ranked]


def _merge_list(current, patch_list, field_name):
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch_list):
        return _strip_directives(patch_list)
    key = _list_merge_key(field_name, patch_list)
    if (
        not key
        or not isinstance(current, list)
        or not all(isinstance(i, dict) and (key in i or "$patch" in i) for i in patch_list)
    ):
        return _strip_directives(copy.deepcopy(patch_list))
    result = copy.deepcopy(current)
    for item in patch_list:
        idx = next(
            (n for n, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item.get(key)), None
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
        elif idx is None:
            result.append(_strip_directives(item))
        else:
            result[idx] = strategic_merge_patch(result[idx], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, test, move, copy)."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations")

    def parent_of(tokens):
        cur = doc
        for t in tokens[:-1]:
            if isinstance(cur, list):
                cur = cur[int(t)]
            elif isinstance(cur, dict):
                cur = cur[t]
            else:
                raise KeyError(t)
        return cur

    def get(tokens):
        cur = doc
        for t in tokens:
            cur = cur[int(t)] if isinstance(cur, list) else cur[t]
        return cur

    def add(tokens, value):
        nonlocal doc
        if not tokens:
            doc = value
            return
        parent, last = parent_of(tokens), tokens[-1]
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            else:
                parent.insert(int(last), value)
        else:
            parent[last] = value

    def remove(tokens):
        parent, last = parent_of(tokens), tokens[-1]
        if isinstance(parent, list):
            return parent.pop(int(last))
        return parent.pop(last)

    for op in ops:
        try:
            kind, tokens = op["op"], _pointer(op["path"])
            if kind == "add":
                add(tokens, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(tokens)
            elif kind == "replace":
                get(tokens)  # must exist
                if tokens:
                    remove(tokens)
                add(tokens, copy.deepcopy(op["value"]))
            elif kind == "test":
                if get(tokens) != op["value"]:
                    raise ApiError(422, f"json patch test failed at {op['path']}")
            elif kind in ("move", "copy"):
                source = _pointer(op["from"])
                value = copy.deepcopy(get(source))
                if kind == "move":
                    remove(source)
                add(tokens, value)
            else:
                raise ApiError(400, f"unknown json patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, f"json patch {op!r} cannot be applied: {e!r}") from None
    return doc


# ---------------------------------------------------------------------------------------------------------
# protobuf request bodies
#
# client-go's typed clientset sends built-in types as protobuf (helm stores its releases in Secrets through
# it). Responses are JSON (clients accept it); request bodies of these few types are decoded here:
# Secret, ConfigMap, DeleteOptions. Any other protobuf body gets 415 Unsupported Media Type.

_PB_MAGIC = b"k8s\x00"
_PB_OWNER_REF = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_PB_OBJECT_META = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    4: ("selfLink", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map_ss"),
    12: ("annotations", "map_ss"),
    13: ("ownerReferences", ("list", _PB_OWNER_REF)),
    14: ("finalizers", ("list", "string")),
    17: ("managedFields", "skip"),
}
_PB_TYPES = {
    "Secret": {
        1: ("metadata", _PB_OBJECT_META),
        2: ("data", "map_sb"),
        3: ("type", "string"),
        4: ("stringData", "map_ss"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", _PB_OBJECT_META),
        2: ("data", "map_ss"),
        3: ("binaryData", "map_sb"),
        4: ("immutable", "bool"),
    },
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int"),
        2: ("preconditions", {1: ("uid", "string"), 2: ("resourceVersion", "string")}),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "string"),
        5: ("dryRun", ("list", "string")),
    },
}


def _pb_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if i >= len(data):
            break
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i
    raise ValueError("truncated or overlong varint")


def _pb_fields(data: bytes):
    i = 0
    while i < len(data):
        key, i = _pb_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _pb_varint(data, i)
        elif wire == 2:
            length, i = _pb_varint(data, i)
            value, i = data[i : i + length], i + length
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _pb_scalar(kind, value):
    if kind == "string":
        return value.decode()
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "int":
        return value - (1 << 64) if value >= 1 << 63 else value
    if kind == "bool":
        return bool(value)
    if kind == "time":
        fields = dict(_pb_fields(value))
        if not fields.get(1):
            return None
        return datetime.datetime.fromtimestamp(fields[1], datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(kind, dict):
        return _pb_message(value, kind)
    raise ValueError(f"unknown protobuf field kind {kind!r}")


def _pb_message(data: bytes, schema: dict) -> dict:
    out: dict = {}
    for number, value in _pb_fields(data):
        if number not in schema:
            raise ValueError(f"protobuf field {number} is not known to the fake")
        name, kind = schema[number]
        if kind == "skip":
            continue
        if kind in ("map_ss", "map_sb"):
            entry = dict(_pb_fields(value))
            out.setdefault(name, {})[entry.get(1, b"").decode()] = _pb_scalar(
                "string" if kind == "map_ss" else "bytes", entry.get(2, b"")
            )
        elif isinstance(kind, tuple):
            out.setdefault(name, []).append(_pb_scalar(kind[1], value))
        else:
            out[name] = _pb_scalar(kind, value)
    # proto2 encodes empty non-pointer fields that JSON would omit
    return {k: v for k, v in out.items() if v not in ("", None) and not (k == "generation" and v == 0)}


def decode_protobuf(data: bytes) -> dict:
    """Decode a Kubernetes protobuf body (``k8s\\0`` + runtime.Unknown) of a type in _PB_TYPES."""
    if not data.startswith(_PB_MAGIC):
        raise ApiError(415, "protobuf body without the k8s envelope")
    try:
        envelope = dict(_pb_fields(data[len(_PB_MAGIC) :]))
        type_meta = {n: v.decode() for n, v in _pb_fields(envelope.get(1, b""))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        if kind not in _PB_TYPES:
            raise ApiError(
                415, f"the fake decodes protobuf only for {sorted(_PB_TYPES)}, not {kind!r}: send JSON"
            )
        obj = _pb_message(envelope.get(2, b""), _PB_TYPES[kind])
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"cannot decode the protobuf body: {e}") from None
    if kind != "DeleteOptions":
        obj = {"apiVersion": api_version, "kind": kind, **obj}
    return obj


# ---------------------------------------------------------------------------------------------------------
# kubeconfig


def write_kubeconfig_file(path, server: str, namespace: str = "default") -> str:
    """Write a kubeconfig for ``server`` with a dummy token (JSON is valid YAML); returns the path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
        ],
        "current-context": "fake",
        "preferences": {},
    }
    path = os.fspath(path)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    os.chmod(path, 0o600)
    return path


def use_kubeconfig(path) -> None:
    """Point KUBECONFIG at ``path``, also for an already imported kubernetes_asyncio (which reads the
    variable once, at import time)."""
    os.environ["KUBECONFIG"] = os.fspath(path)
    module = sys.modules.get("kubernetes_asyncio.config.kube_config")
    if module is not None:
        module.KUBE_CONFIG_DEFAULT_LOCATION = os.fspath(path)


# ---------------------------------------------------------------------------------------------------------
# the server


@dataclass(eq=False)
class _Change:
    rv: int
    plural: str
    type: str
    obj: dict
    old: dict | None = None


@dataclass(eq=False)
class _Watcher:
    plural: str
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    extra: dict = field(default_factory=dict)


def _default_pod_exit(pod: dict) -> int | None:
    """helm test pods terminate with exit code 0 (so ``helm test`` passes); other pods run forever."""
    hook = (_meta(pod).get("annotations") or {}).get("helm.sh/hook", "")
    return 0 if "test" in hook else None


class FakeKubernetes:
    """The fake API server. Thread-safe: the public methods may be called from any thread while clients
    talk to it over HTTP. See the module docstring for what it does and does not do."""

    def __init__(self, version="1.33.0", validate=True, pod_start_seconds=0.2, pod_security="privileged"):
        self.version = version.lstrip("v")
        # Pod Security admission: the cluster-wide defaults (AdmissionConfiguration ``defaults``) for the
        # namespaces without a pod-security.kubernetes.io/<mode> label; a level names the enforce mode's,
        # a dict {mode: level} any of enforce/warn/audit. Warnings and audit findings are recorded here.
        self.pod_security = pod_security
        self.pod_security_warnings: list[dict] = []
        self.pod_security_audit: list[dict] = []
        self.validate = validate
        self.pod_start_seconds = pod_start_seconds
        self.pod_stop_seconds = 0.1  # how long a gracefully deleted pod stays (with deletionTimestamp)
        self.requests: list[tuple[str, str]] = []
        self.rejected: list[dict] = []
        # RBAC: None = everything allowed; else the rules of the one Role bound to every caller, in
        # ``role_namespace`` (see enforce_role); refused requests are recorded in ``forbidden``
        self.role_rules: list[dict] | None = None
        self.cluster_role_rules: list[dict] = []
        self.role_namespace = ""
        self.role_subject = "system:serviceaccount:default:default"
        self.forbidden: list[str] = []
        self.fail_pods: Callable[[dict], str | None] = lambda pod: None
        self.pod_exit: Callable[[dict], int | None] = _default_pod_exit
        # opt-in real kubelet (tests/fake_kubelet.py): called (on the server loop, must not block) with each
        # newly scheduled pod; True means it runs the pod and reports its status (see update_pod_status)
        self.kubelet: Callable[[dict], bool] | None = None
        self.url = ""
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], dict]] = {r.plural: {} for r in RESOURCE_TYPES}
        self._rv = 0
        self._history: collections.deque[_Change] = collections.deque(maxlen=HISTORY)
        self._watchers: set[_Watcher] = set()
        self._pending: list[tuple] = []
        self._terminating: set[str] = set()  # uids of pods in their grace period
        self._tasks: set[asyncio.Task] = set()
        self._pod_ips = 0
        self._nodes = 0
        self._service_ips = 0
        self._lb_ips = 0
        self._node_ports = 30000
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        for ns in DEFAULT_NAMESPACES:
            self._create(resource_type("namespaces"), None, {"metadata": {"name": ns}}, validate=False)
        node = self._node_manifest()
        status = node.pop("status")
        node = self._create(resource_type("nodes"), None, node, validate=False)
        self._update(
            resource_type("nodes"), None, NODE_NAME, {**node, "status": status}, "status", validate=False
        )

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        if self._thread is not None:
            return self
        self._stopping = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        started = threading.Event()
        errors: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(sock, loop))
            except (OSError, RuntimeError) as e:  # reported to start()'s caller below
                errors.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-k8s-{port}", daemon=True)
        self._thread.start()
        if not started.wait(15) or errors:
            raise RuntimeError(f"fake kube-apiserver did not start: {errors}")
        return self

    async def _serve(self, sock, loop):
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        with self._lock:
            self._loop = loop
            pending, self._pending = self._pending, []
        for args in pending:
            self._react(*args)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, thread = self._loop, self._thread
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(TimeoutError):
            future.result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None

    async def _shutdown(self):
        self._stopping = True
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            w.queue.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
        with self._lock:
            self._loop = None

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_kubeconfig(self, path, namespace="default") -> str:
        if not self.url:
            raise RuntimeError("start() the fake before writing a kubeconfig for it")
        return write_kubeconfig_file(path, self.url, namespace)

    # ---- public store API (tests) -------------------------------------------------------------------------

    def list(self, resource, namespace=None, label_selector=None) -> list[dict]:
        rtype = resource_type(resource)
        items, _ = self._list(rtype, namespace, parse_label_selector(label_selector), [])
        return copy.deepcopy(items)

    def get(self, resource, namespace, name) -> dict | None:
        rtype = resource_type(resource)
        with self._lock:
            return copy.deepcopy(self._objects[rtype.plural].get(self._key(rtype, namespace, name)))

    def create(self, resource, namespace, obj) -> dict:
        """Create like a POST would (defaults, validation, watch events, controllers); raises ApiError."""
        rtype = resource_type(resource)
        return copy.deepcopy(self._create(rtype, namespace if rtype.namespaced else None, copy.deepcopy(obj)))

    def delete(self, resource, namespace, name) -> None:
        """Delete at once (no grace period, no finalizers) with background garbage collection of dependents;
        nothing happens when it does not exist."""
        rtype = resource_type(resource)
        with self._lock, contextlib.suppress(ApiError):
            self._delete(rtype, namespace if rtype.namespaced else None, name, grace=0, force=True)

    # ---- store internals ------------------------------------------------------------------------------------

    def _key(self, rtype, namespace, name):
        return ((namespace or "") if rtype.namespaced else "", name)

    def _commit(self, rtype: ResourceType, etype: str, obj: dict, old: dict | None = None) -> dict:
        """Record a change (new resourceVersion, history, watchers, controllers). Stored dicts are never
        mutated afterwards: every change replaces them."""
        with self._lock:
            self._rv += 1
            _meta(obj)["resourceVersion"] = str(self._rv)
            meta = obj["metadata"]
            key = self._key(rtype, meta.get("namespace"), meta["name"])
            if etype == "DELETED":
                self._objects[rtype.plural].pop(key, None)
            else:
                self._objects[rtype.plural][key] = obj
            change = _Change(self._rv, rtype.plural, etype, obj, old)
            self._history.append(change)
            for w in self._watchers:
                if w.plural == rtype.plural:
                    w.loop.call_soon_threadsafe(w.queue.put_nowait, change)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._react, rtype, etype, obj, old)
            else:
                self._pending.append((rtype, etype, obj, old))
            return obj

    def _list(self, rtype, namespace, label_reqs, field_reqs):
        with self._lock:
            items = [
                o
                for (ns, _), o in self._objects[rtype.plural].items()
                if (not namespace or not rtype.namespaced or ns == namespace)
                and labels_match(label_reqs, _meta(o).get("labels"))
                and fields_match(field_reqs, o)
            ]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return items, str(self._rv)

    def _get(self, rtype, namespace, name) -> dict:
        with self._lock:
            obj = self._objects[rtype.plural].get(self._key(rtype, namespace, name))
        if obj is None:
            raise _not_found(rtype, name)
        return obj

    def _check_validity(self, rtype, obj, context: dict):
        if not self.validate:
            return
        import kubernetes_validate

        try:
            kubernetes_validate.validate(obj, self.version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            name = _meta(obj).get("name") or _meta(obj).get("generateName", "")
            message = f'{rtype.kind} "{name}" is invalid: {where or "<root>"}: {e.message}'
            self.rejected.append({**context, "object": copy.deepcopy(obj), "error": message})
            raise ApiError(
                422,
                message,
                rtype=rtype,
                name=name,
                causes=[{"reason": "FieldValueInvalid", "message": e.message, "field": where}],
            ) from None

    def _fill_type(self, rtype, obj, namespace, action):
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request was not a JSON object")
        if obj.get("kind") not in (None, "", rtype.kind) or obj.get("apiVersion") not in (
            None,
            "",
            rtype.api_version,
        ):
            raise ApiError(
                400,
                f"the API version in the data ({obj.get('apiVersion')}) and kind ({obj.get('kind')}) do not match "
                f"the expected {rtype.api_version} {rtype.kind}",
            )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = _meta(obj)
        if rtype.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            if not namespace and not meta.get("namespace"):
                raise ApiError(400, f"a namespace is needed to {action} {rtype.plural}")
            meta["namespace"] = namespace or meta["namespace"]
        else:
            meta.pop("namespace", None)

    def _create(self, rtype, namespace, obj, dry_run=False, validate=True, context=None) -> dict:
        self._fill_type(rtype, obj, namespace, "create")
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        if validate:
            self._check_validity(rtype, obj, context or {"method": "create", "resource": rtype.plural})
        with self._lock:
            if rtype.namespaced and ("", meta["namespace"]) not in self._objects["namespaces"]:
                raise ApiError(
                    404,
                    f'namespaces "{meta["namespace"]}" not found',
                    rtype=resource_type("namespaces"),
                    name=meta["namespace"],
                )
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise ApiError(422, "name or generateName is required", rtype=rtype)
                for _ in range(20):
                    meta["name"] = meta["generateName"] + _random_suffix()
                    if (
                        self._key(rtype, meta.get("namespace"), meta["name"])
                        not in self._objects[rtype.plural]
                    ):
                        break
            if self._key(rtype, meta.get("namespace"), meta["name"]) in self._objects[rtype.plural]:
                raise ApiError(
                    409,
                    f'{rtype.plural} "{meta["name"]}" already exists',
                    reason="AlreadyExists",
                    rtype=rtype,
                    name=meta["name"],
                )
            self._admit_pod_security(rtype, obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
                meta.pop(k, None)
            if rtype.generation:
                meta["generation"] = 1
            if rtype.status:
                obj.pop("status", None)
            self._defaults(rtype, obj)
            if dry_run:
                meta["resourceVersion"] = str(self._rv)
                return obj
            return self._commit(rtype, "ADDED", obj)

    def _update(
        self, rtype, namespace, name, body, subresource=None, dry_run=False, context=None, validate=True
    ):
        self._fill_type(rtype, body, namespace, "update")
        meta = body["metadata"]
        if meta.get("name") not in (None, name):
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        meta["name"] = name
        if validate:
            self._check_validity(rtype, body, context or {"method": "update", "resource": rtype.plural})
        with self._lock:
            old = self._get(rtype, namespace, name)
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    rtype=rtype,
                    name=name,
                )
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = body.get("status") or {}
            else:
                new = body
                new_meta = new["metadata"]
                for k in (
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ):
                    if k in old["metadata"]:
                        new_meta[k] = old["metadata"][k]
                    else:
                        new_meta.pop(k, None)
                if rtype.status:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                self._carry_over(rtype, old, new)
                if rtype.plural == "namespaces" or pod_security.pod_template(
                    new
                ) != pod_security.pod_template(old):
                    self._admit_pod_security(rtype, new)
                if rtype.generation and self._spec_of(new) != self._spec_of(old):
                    new_meta["generation"] = old["metadata"].get("generation", 1) + 1
            return self._store_update(rtype, old, new, dry_run)

    def _store_update(self, rtype, old, new, dry_run):
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old or dry_run:
            return new if dry_run else old
        meta = new["metadata"]
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and meta["uid"] not in self._terminating
        ):
            self._commit(rtype, "MODIFIED", new, old)
            return self._remove(rtype, new, "Background")
        return self._commit(rtype, "MODIFIED", new, old)

    @staticmethod
    def _spec_of(obj):
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    def _patch(self, rtype, namespace, name, patch_type, body, subresource=None, dry_run=False, context=None):
        with self._lock:
            try:
                old = self._get(rtype, namespace, name)
            except ApiError:
                if patch_type != "application/apply-patch+yaml" or subresource:
                    raise
                return self._create(rtype, namespace, body, dry_run=dry_run, context=context)
            if patch_type == "application/json-patch+json":
                new = json_patch(old, body)
            elif patch_type == "application/merge-patch+json":
                new = merge_patch(old, body)
            elif patch_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                if not isinstance(body, dict):
                    raise ApiError(400, "a strategic merge patch must be a JSON object")
                new = strategic_merge_patch(old, body)
            else:
                raise ApiError(415, f"unsupported patch type {patch_type!r}")
            if not isinstance(new, dict):
                raise ApiError(422, "the patch did not produce an object")
            # the resourceVersion in a patch is a precondition; otherwise the patch applies to the current one
            if not ((body if isinstance(body, dict) else {}).get("metadata") or {}).get("resourceVersion"):
                _meta(new)["resourceVersion"] = old["metadata"]["resourceVersion"]
            if rtype.status and subresource != "status" and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            return self._update(rtype, namespace, name, new, subresource, dry_run, context)

    def _delete(self, rtype, namespace, name, grace=None, propagation=None, preconditions=None, force=False):
        """Returns (object, deleted_now)."""
        with self._lock:
            obj = self._get(rtype, namespace, name)
            meta = obj["metadata"]
            self._check_preconditions(rtype, namespace, name, meta, preconditions or {})
            if rtype.plural == "namespaces":
                self._delete_namespace_contents(name)
            if meta.get("finalizers") and not force and rtype.plural != "namespaces":
                if meta.get("deletionTimestamp"):
                    return obj, False
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rtype, "MODIFIED", new, obj), False
            if rtype.plural == "pods" and not force:
                if grace is None:
                    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                started = bool((obj.get("spec") or {}).get("nodeName"))
                if grace and grace > 0 and started:
                    if meta.get("deletionTimestamp"):
                        return obj, False
                    new = copy.deepcopy(obj)
                    new["metadata"]["deletionTimestamp"] = _later(grace)
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                    self._terminating.add(meta["uid"])
                    new = self._commit(rtype, "MODIFIED", new, obj)
                    self._schedule(
                        self._finish_pod_later,
                        rtype,
                        namespace,
                        name,
                        meta["uid"],
                        min(grace, self.pod_stop_seconds),
                        propagation,
                    )
                    return new, False
            return self._remove(rtype, obj, propagation), True

    @staticmethod
    def _check_preconditions(rtype, namespace, name, meta, preconditions):
        """DeleteOptions.preconditions: a uid or resourceVersion other than the object's is 409 Conflict,
        with the real server's message (other keys are ignored, as a real server drops unknown fields)."""
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = preconditions.get(key)
            if wanted is None or wanted == meta.get(key, ""):
                continue
            qualified = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
            path = "/".join(p for p in ("/registry", rtype.group, rtype.plural, namespace, name) if p)
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {qualified} "{name}": StorageError: invalid object, Code: 4, '
                f"Key: {path}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: {label} in "
                f"precondition: {wanted}, {label} in object meta: {meta.get(key, '')}",
                rtype=rtype,
                name=name,
            )

    def _remove(self, rtype, obj, propagation):
        with self._lock:
            self._terminating.discard(obj["metadata"]["uid"])
            gone = self._commit(rtype, "DELETED", copy.deepcopy(obj), obj)
            self._collect_garbage(obj["metadata"]["uid"], propagation or "Background")
            return gone

    def _collect_garbage(self, owner_uid, propagation, depth=0):
        if depth > 20:
            return
        with self._lock:
            for plural, objects in self._objects.items():
                rtype = resource_type(plural)
                for key, dependent in list(objects.items()):
                    if objects.get(key) is not dependent:
                        continue  # changed or removed meanwhile (recursion)
                    refs = _meta(dependent).get("ownerReferences") or []
                    if not any(r.get("uid") == owner_uid for r in refs):
                        continue
                    others = [r for r in refs if r.get("uid") != owner_uid and self._uid_exists(r.get("uid"))]
                    if propagation == "Orphan" or others:
                        new = copy.deepcopy(dependent)
                        new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
                        if not new["metadata"]["ownerReferences"]:
                            del new["metadata"]["ownerReferences"]
                        self._commit(rtype, "MODIFIED", new, dependent)
                    else:
                        self._terminating.discard(dependent["metadata"]["uid"])
                        self._commit(rtype, "DELETED", copy.deepcopy(dependent), dependent)
                        self._collect_garbage(dependent["metadata"]["uid"], propagation, depth + 1)

    def _uid_exists(self, uid) -> bool:
        return any(
            o["metadata"].get("uid") == uid for objects in self._objects.values() for o in objects.values()
        )

    def _delete_namespace_contents(self, namespace):
        with self._lock:
            for rtype in RESOURCE_TYPES:
                if not rtype.namespaced:
                    continue
                for (ns, _), obj in list(self._objects[rtype.plural].items()):
                    if ns == namespace and (ns, obj["metadata"]["name"]) in self._objects[rtype.plural]:
                        self._remove(rtype, obj, "Background")

    # ---- Pod Security admission ------------------------------------------------------------------------

    def _namespace_policy(self, namespace) -> dict:
        """{mode: (level, version)} of a namespace: its pod-security.kubernetes.io labels, else the defaults."""
        ns = self._objects["namespaces"].get(("", namespace)) or {}
        defaults = (
            self.pod_security if isinstance(self.pod_security, dict) else {"enforce": self.pod_security}
        )
        policy, _ = pod_security.namespace_policy(_meta(ns).get("labels"), defaults)
        return policy

    def _admit_pod_security(self, rtype, obj):
        """The PodSecurity admission plugin: a pod violating its namespace's enforce level is 403 Forbidden;
        warn-level violations (and, for workloads, enforce-level ones: their pods are what gets refused)
        become Warning headers and ``pod_security_warnings``; audit-level ones ``pod_security_audit``."""
        if rtype.plural == "namespaces":
            _, errors = pod_security.namespace_policy(_meta(obj).get("labels"))
            if errors:
                name = _meta(obj).get("name", "")
                raise ApiError(
                    422,
                    f'{rtype.kind} "{name}" is invalid: {"; ".join(errors)}',
                    rtype=rtype,
                    name=name,
                )
            return
        if rtype.plural == "pods":
            subject = obj
        else:
            subject = pod_security.pod_template({**obj, "kind": rtype.kind})
            if subject is None:
                return
        meta = _meta(obj)
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        policy = self._namespace_policy(namespace)
        record = {"kind": rtype.kind, "namespace": namespace, "name": name}
        warned = set()
        for mode in ("enforce", "warn", "audit"):
            level, version = policy[mode]
            if level == "privileged":
                continue
            found = pod_security.violations(subject, level)
            if not found:
                continue
            if mode == "audit":
                self.pod_security_audit.append({**record, "level": level, "violations": found})
                continue
            if mode == "enforce" and rtype.plural == "pods":
                self.pod_security_audit.append({**record, "level": level, "violations": found})
                raise ApiError(
                    403, pod_security.forbidden_message(name, level, version, found), rtype=rtype, name=name
                )
            warning = pod_security.warning_message(level, version, found)
            if warning in warned:
                continue
            warned.add(warning)
            self.pod_security_warnings.append({**record, "level": level, "message": warning})
            request_warnings = _REQUEST_WARNINGS.get()
            if request_warnings is not None:
                request_warnings.append(warning)

    # ---- defaults ----------------------------------------------------------------------------------------

    def _defaults(self, rtype, obj):
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
        plural = rtype.plural
        if plural == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("securityContext", {})
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("priority", 0)
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                image = c.get("image", "")
                tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
                default_policy = "IfNotPresent" if tagged and not image.endswith(":latest") else "Always"
                c.setdefault("imagePullPolicy", default_policy)
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
            obj["status"] = {"phase": "Pending", "qosClass": self._qos(spec)}
        elif plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec["type"] != "ExternalName":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = self._next_service_ip()
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                if spec["clusterIP"] != "None":
                    spec.setdefault("ipFamilies", ["IPv4"])
                    spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                if spec["type"] != "ExternalName" and spec.get("clusterIP") != "None":
                    port.setdefault("targetPort", port.get("port"))
                if spec["type"] in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                    self._node_ports += 1
                    port["nodePort"] = self._node_ports
            if spec["type"] in ("NodePort", "LoadBalancer"):
                spec.setdefault("externalTrafficPolicy", "Cluster")
            status = {"loadBalancer": {}}
            if spec["type"] == "LoadBalancer":
                self._lb_ips += 1
                status["loadBalancer"] = {
                    "ingress": [{"ip": str(LB_CIDR[10 + self._lb_ips % 240]), "ipMode": "VIP"}]
                }
            obj["status"] = status
        elif plural == "persistentvolumeclaims":
            spec = obj.setdefault("spec", {})
            spec.setdefault("volumeMode", "Filesystem")
            if spec.get("storageClassName") is None:
                spec["storageClassName"] = "standard"
            spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
            requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            obj["status"] = {
                "phase": "Bound",
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "capacity": {"storage": requested},
            }
        elif plural == "persistentvolumes":
            obj["status"] = {"phase": "Available"}
        elif plural == "namespaces":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif plural == "secrets":
            obj.setdefault("type", "Opaque")
            self._secret_string_data(obj)
        elif plural == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
            obj["status"] = {}
        elif plural == "statefulsets":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            obj["status"] = {"replicas": 0, "availableReplicas": 0}
        elif plural in ("replicasets", "daemonsets", "jobs", "cronjobs", "poddisruptionbudgets", "ingresses"):
            if plural == "replicasets" and spec is not None:
                spec.setdefault("replicas", 1)
            if plural == "jobs" and spec is not None:
                spec.setdefault("completions", 1)
                spec.setdefault("parallelism", 1)
                spec.setdefault("backoffLimit", 6)
            # statuses must be schema-valid from the start: a patch result is validated with its status
            obj["status"] = {
                "replicasets": {"replicas": 0},
                "daemonsets": {
                    "currentNumberScheduled": 0,
                    "numberMisscheduled": 0,
                    "desiredNumberScheduled": 0,
                    "numberReady": 0,
                },
                "poddisruptionbudgets": {
                    "disruptionsAllowed": 0,
                    "currentHealthy": 0,
                    "desiredHealthy": 0,
                    "expectedPods": 0,
                },
                "ingresses": {"loadBalancer": {}},
            }.get(plural, {})
        elif rtype.status:
            obj.setdefault("status", {})

    def _carry_over(self, rtype, old, new):
        """Fields a PUT may omit that the server keeps (allocated or immutable)."""
        old_spec, new_spec = old.get("spec") or {}, new.get("spec")
        if rtype.plural == "services" and isinstance(new_spec, dict):
            for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if k in old_spec and not new_spec.get(k):
                    new_spec[k] = copy.deepcopy(old_spec[k])
        elif rtype.plural == "persistentvolumeclaims" and isinstance(new_spec, dict):
            for k in ("volumeName", "storageClassName", "volumeMode"):
                if k in old_spec and not new_spec.get(k):
                    new_spec[k] = old_spec[k]
        elif rtype.plural == "pods" and isinstance(new_spec, dict) and "nodeName" in old_spec:
            new_spec.setdefault("nodeName", old_spec["nodeName"])
        elif rtype.plural == "secrets":
            self._secret_string_data(new)

    @staticmethod
    def _secret_string_data(obj):
        string_data = obj.pop("stringData", None)
        if string_data:
            data = obj.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    @staticmethod
    def _qos(spec) -> str:
        resources = [c.get("resources") or {} for c in spec.get("containers") or []]
        if not any(r.get("limits") or r.get("requests") for r in resources):
            return "BestEffort"
        for r in resources:
            limits, requests = r.get("limits") or {}, r.get("requests") or {}
            for k in ("cpu", "memory"):
                if not limits.get(k) or requests.get(k, limits[k]) != limits[k]:
                    return "Burstable"
        return "Guaranteed"

    def _next_service_ip(self) -> str:
        self._service_ips += 1
        return str(SERVICE_CIDR[10 + self._service_ips % 1_000_000])

    def _next_pod_ip(self) -> str:
        self._pod_ips += 1
        return str(POD_CIDR[2 + self._pod_ips % 65000])

    def add_node(self, name, *, allocatable=None, labels=None, ready=True, unschedulable=False) -> dict:
        """Add a node: ``allocatable`` (and capacity) beyond the CPU, memory and pods of ``fake-node``,
        e.g. ``{"nvidia.com/gpu": "4"}``; ``labels`` (e.g. ``nvidia.com/gpu.product``); its Ready
        condition; ``unschedulable`` (cordoned). Returns the stored node."""
        self._nodes += 1
        node = self._node_manifest(name, f"172.18.1.{self._nodes % 250 + 1}", ready)
        node["metadata"]["labels"].update(labels or {})
        for key in ("capacity", "allocatable"):
            node["status"][key].update({k: str(v) for k, v in (allocatable or {}).items()})
        if unschedulable:
            node["spec"]["unschedulable"] = True
        status = node.pop("status")
        stored = self.create("nodes", None, node)
        rtype = resource_type("nodes")
        with self._lock:  # as a kubelet does: the status through its subresource
            return copy.deepcopy(self._update(rtype, None, name, {**stored, "status": status}, "status"))

    def _node_for(self, pod) -> str:
        """The fake scheduler's choice: the first Ready, uncordoned node matching the pod's nodeSelector
        and extended resource limits; ``fake-node`` when none does."""
        wanted = pod["spec"].get("nodeSelector") or {}
        # extended resources (nvidia.com/gpu, ...) that the pod's containers limit
        extended = collections.Counter()
        for c in pod["spec"].get("containers") or []:
            for key, value in ((c.get("resources") or {}).get("limits") or {}).items():
                if "/" in key:
                    extended[key] += _whole(value)
        with self._lock:
            nodes = sorted(self._objects["nodes"].values(), key=lambda n: n["metadata"]["name"])
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in node.get("status", {}).get("conditions") or []
            )
            allocatable = node.get("status", {}).get("allocatable") or {}
            if (
                ready
                and not node["spec"].get("unschedulable")
                and all(labels.get(k) == v for k, v in wanted.items())
                and all(_whole(allocatable.get(k)) >= n for k, n in extended.items())
            ):
                return node["metadata"]["name"]
        return NODE_NAME

    def _node_manifest(self, name=NODE_NAME, ip=NODE_IP, ready=True):
        resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {"podCIDR": str(POD_CIDR)},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": ip},
                    {"type": "Hostname", "address": name},
                ],
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "Unknown",
                        "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                        "message": "fake kubelet is posting ready status"
                        if ready
                        else "Kubelet stopped posting node status.",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": f"v{self.version}",
                    "kubeProxyVersion": f"v{self.version}",
                    "containerRuntimeVersion": "containerd://fake",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "osImage": "fake",
                    "kernelVersion": "fake",
                    "machineID": "fake",
                    "systemUUID": "fake",
                    "bootID": "fake",
                },
            },
        }

    # ---- controllers and kubelet (run on the server's event loop) -------------------------------------------

    def _schedule(self, fn, *args):
        """Run fn(*args) on the server loop (a coroutine function becomes a tracked task)."""
        loop = self._loop
        if loop is None:
            return

        def run():
            if self._stopping:
                return
            if asyncio.iscoroutinefunction(fn):
                task = loop.create_task(fn(*args))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                fn(*args)

        loop.call_soon_threadsafe(run)

    def _react(self, rtype, etype, obj, old):
        if self._stopping:
            return
        try:
            plural = rtype.plural
            if plural == "pods":
                if etype == "ADDED":
                    self._schedule(
                        self._kubelet,
                        obj["metadata"]["namespace"],
                        obj["metadata"]["name"],
                        obj["metadata"]["uid"],
                    )
                elif etype == "DELETED":
                    self._reconcile_owner_of(obj)
            elif (
                plural in ("deployments", "replicasets", "statefulsets", "daemonsets") and etype != "DELETED"
            ):
                getattr(self, f"_reconcile_{plural}")(obj["metadata"]["namespace"], obj["metadata"]["name"])
            elif plural == "jobs" and etype == "ADDED":
                self._schedule(
                    self._complete_job,
                    obj["metadata"]["namespace"],
                    obj["metadata"]["name"],
                    obj["metadata"]["uid"],
                )
        except ApiError as e:
            log.debug("fake controller for %s: %s", rtype.plural, e.message)

    def _mutate(self, rtype, namespace, name, uid, fn) -> dict | None:
        """Apply fn to a copy of the object (if it is still the same one) and store it."""
        with self._lock:
            obj = self._objects[rtype.plural].get(self._key(rtype, namespace, name))
            if obj is None or (uid and obj["metadata"]["uid"] != uid):
                return None
            new = copy.deepcopy(obj)
            if fn(new) is False or new == obj:
                return obj
            return self._commit(rtype, "MODIFIED", new, obj)

    def update_pod_status(self, namespace, name, uid, fn) -> dict | None:
        """For an external kubelet: apply fn to a copy of the pod (if it is still the one with ``uid``) and
        store it as a status update does; returns the stored pod, None if it is gone."""
        return self._mutate(resource_type("pods"), namespace, name, uid, fn)

    def record_event(self, obj, reason, message, etype="Normal") -> None:
        """For an external kubelet: an Event about ``obj`` from the kubelet."""
        self._event(obj, reason, message, etype=etype)

    def _event(self, obj, reason, message, etype="Normal", component="kubelet"):
        meta = obj["metadata"]
        now = _now()
        event = {
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta.get("namespace") or "default",
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": meta["name"],
                "namespace": meta.get("namespace") or "default",
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": etype,
            "source": {"component": component, "host": NODE_NAME},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME,
        }
        with contextlib.suppress(ApiError):
            self._create(resource_type("events"), event["metadata"]["namespace"], event, validate=False)

    async def _kubelet(self, namespace, name, uid):
        pods = resource_type("pods")
        now = _now()

        def schedule(pod):
            pod["spec"].setdefault("nodeName", self._node_for(pod))
            pod["status"]["conditions"] = [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            ]

        pod = self._mutate(pods, namespace, name, uid, schedule)
        if pod is None:
            return
        self._event(
            pod,
            "Scheduled",
            f"Successfully assigned {namespace}/{name} to {pod['spec']['nodeName']}",
            component="default-scheduler",
        )
        if self.kubelet is not None and self.kubelet(copy.deepcopy(pod)):
            return
        await asyncio.sleep(self.pod_start_seconds)
        pod = self._mutate(pods, namespace, name, uid, lambda p: None)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        try:
            reason = self.fail_pods(copy.deepcopy(pod))
        except Exception as e:  # a test's hook went wrong: fail the pod visibly rather than hang
            log.exception("fail_pods raised for pod %s/%s", namespace, name)
            reason = f"fail_pods raised {e!r}"
        if reason:
            self._mutate(pods, namespace, name, uid, lambda p: self._set_failed(p, reason))
            self._event(pod, "Failed", f"Error: {reason}", etype="Warning")
            return
        for c in pod["spec"].get("containers") or []:
            self._event(pod, "Pulled", f'Container image "{c.get("image")}" already present on machine')
            self._event(pod, "Created", f"Created container: {c['name']}")
            self._event(pod, "Started", f"Started container {c['name']}")
        ip = self._next_pod_ip()
        pod = self._mutate(pods, namespace, name, uid, lambda p: self._set_running(p, ip))
        if pod is None or pod["status"].get("phase") != "Running":
            return
        try:
            code = self.pod_exit(copy.deepcopy(pod))
        except Exception:  # a test's hook went wrong: keep the pod running, say so in the log
            log.exception("pod_exit raised for pod %s/%s", namespace, name)
            code = None
        if code is None:
            return
        await asyncio.sleep(self.pod_start_seconds)
        self._mutate(pods, namespace, name, uid, lambda p: self._set_terminated(p, code))

    @staticmethod
    def _container_status(c, state, ready):
        digest = hashlib.sha256(str(c.get("image")).encode()).hexdigest()
        return {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": f"{c.get('image', '')}@sha256:{digest}",
            "containerID": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }

    @staticmethod
    def _conditions(ready: bool, now: str):
        value = "True" if ready else "False"
        return [
            {"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now}
            for t, s in (
                ("PodReadyToStartContainers", "True"),
                ("Initialized", "True"),
                ("Ready", value),
                ("ContainersReady", value),
                ("PodScheduled", "True"),
            )
        ]

    def _set_running(self, pod, ip):
        if pod["metadata"].get("deletionTimestamp"):
            return False
        now = _now()
        status = pod["status"]
        status.update(
            phase="Running",
            hostIP=NODE_IP,
            hostIPs=[{"ip": NODE_IP}],
            podIP=ip,
            podIPs=[{"ip": ip}],
            startTime=status.get("startTime") or now,
            conditions=self._conditions(True, now),
            containerStatuses=[
                self._container_status(c, {"running": {"startedAt": now}}, True)
                for c in pod["spec"]["containers"]
            ],
        )
        init = pod["spec"].get("initContainers") or []
        if init:
            done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
            status["initContainerStatuses"] = [self._container_status(c, done, True) for c in init]

    def _set_failed(self, pod, reason):
        now = _now()
        state = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "message": reason,
                "startedAt": now,
                "finishedAt": now,
            }
        }
        pod["status"].update(
            phase="Failed",
            reason="Error",
            message=reason,
            hostIP=NODE_IP,
            hostIPs=[{"ip": NODE_IP}],
            startTime=pod["status"].get("startTime") or now,
            conditions=self._conditions(False, now),
            containerStatuses=[self._container_status(c, state, False) for c in pod["spec"]["containers"]],
        )

    def _set_terminated(self, pod, code):
        if pod["metadata"].get("deletionTimestamp"):
            return False
        now = _now()
        started = pod["status"].get("startTime") or now
        reason = "Completed" if code == 0 else "Error"
        state = {"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now}}
        pod["status"].update(
            phase="Succeeded" if code == 0 else "Failed",
            conditions=self._conditions(False, now),
            containerStatuses=[self._container_status(c, state, False) for c in pod["spec"]["containers"]],
        )

    async def _finish_pod_later(self, rtype, namespace, name, uid, delay, propagation):
        await asyncio.sleep(delay)
        with self._lock:
            obj = self._objects[rtype.plural].get(self._key(rtype, namespace, name))
            self._terminating.discard(uid)
            if obj is None or obj["metadata"]["uid"] != uid or obj["metadata"].get("finalizers"):
                return
            self._remove(rtype, obj, propagation)

    async def _complete_job(self, namespace, name, uid):
        await asyncio.sleep(self.pod_start_seconds)
        start = _now()

        def complete(job):
            now = _now()
            completions = (job.get("spec") or {}).get("completions", 1)
            job["status"] = {
                "startTime": start,
                "completionTime": now,
                "succeeded": completions,
                "active": 0,
                "ready": 0,
                "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
                    for t in ("SuccessCriteriaMet", "Complete")
                ],
            }

        self._mutate(resource_type("jobs"), namespace, name, uid, complete)

    @staticmethod
    def _controlled_by(obj, owner_uid) -> bool:
        return any(
            r.get("uid") == owner_uid and r.get("controller")
            for r in obj["metadata"].get("ownerReferences") or []
        )

    @staticmethod
    def _owner_ref(owner, rtype):
        return {
            "apiVersion": rtype.api_version,
            "kind": rtype.kind,
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _reconcile_owner_of(self, pod):
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") in ("ReplicaSet", "StatefulSet", "DaemonSet"):
                plural = ref["kind"].lower() + "s"
                owner = self._objects[plural].get((pod["metadata"]["namespace"], ref.get("name")))
                if owner is not None and owner["metadata"]["uid"] == ref.get("uid"):
                    getattr(self, f"_reconcile_{plural}")(pod["metadata"]["namespace"], ref["name"])

    def _ensure_pods(self, owner, owner_rtype, count, names: Callable[[int], str] | None = None) -> int:
        """Create or delete pods controlled by owner until there are count of them; returns the count."""
        namespace, uid = owner["metadata"]["namespace"], owner["metadata"]["uid"]
        pods = resource_type("pods")
        count = min(count, MAX_CONTROLLER_PODS)
        with self._lock:
            mine = [
                p
                for (ns, _), p in self._objects["pods"].items()
                if ns == namespace
                and self._controlled_by(p, uid)
                and not p["metadata"].get("deletionTimestamp")
            ]
            mine.sort(key=lambda p: p["metadata"]["name"])
            for extra in mine[count:]:
                self._remove(pods, extra, "Background")
            existing = {p["metadata"]["name"] for p in mine[:count]}
            template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
            for i in range(count):
                if len(existing) >= count:
                    break
                name = names(i) if names else f"{owner['metadata']['name']}-{_random_suffix()}"
                if name in existing:
                    continue
                meta = copy.deepcopy(template.get("metadata") or {})
                meta.update(
                    name=name, namespace=namespace, ownerReferences=[self._owner_ref(owner, owner_rtype)]
                )
                meta.pop("creationTimestamp", None)
                pod = {"metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}
                try:
                    self._create(pods, namespace, pod, context={"method": "controller", "resource": "pods"})
                except ApiError as e:
                    log.warning(
                        "fake %s controller could not create pod %s: %s", owner_rtype.kind, name, e.message
                    )
                    # as the real controllers report it (e.g. a pod refused by Pod Security admission)
                    self._event(
                        owner,
                        "FailedCreate",
                        f"Error creating: {e.message}",
                        etype="Warning",
                        component=f"{owner_rtype.singular}-controller",
                    )
                    break
                existing.add(name)
            return len(existing)

    @staticmethod
    def _template_hash(template) -> str:
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        return "".join(
            "bcdfghjklmnpqrstvwxz2456789"[int(digest[i : i + 2], 16) % 27] for i in range(0, 20, 2)
        )

    def _reconcile_deployments(self, namespace, name):
        deployments, replicasets = resource_type("deployments"), resource_type("replicasets")
        with self._lock:
            dep = self._objects["deployments"].get((namespace, name))
            if dep is None or dep["metadata"].get("deletionTimestamp"):
                return
            spec = dep.get("spec") or {}
            replicas = spec.get("replicas", 1)
            template = spec.get("template") or {}
            pod_hash = self._template_hash(template)
            rs_name = f"{name}-{pod_hash}"
            uid = dep["metadata"]["uid"]
            owned = [
                rs
                for (ns, _), rs in self._objects["replicasets"].items()
                if ns == namespace and self._controlled_by(rs, uid)
            ]
            revision = 1 + max(
                (
                    int(
                        (rs["metadata"].get("annotations") or {}).get(
                            "deployment.kubernetes.io/revision", "0"
                        )
                    )
                    for rs in owned
                ),
                default=0,
            )
            current = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
            for rs in owned:
                if rs is not current and (rs.get("spec") or {}).get("replicas"):
                    self._mutate(
                        replicasets,
                        namespace,
                        rs["metadata"]["name"],
                        rs["metadata"]["uid"],
                        _set_replicas(0),
                    )
            if current is None:
                rs_template = copy.deepcopy(template)
                labels = rs_template.setdefault("metadata", {}).setdefault("labels", {})
                labels["pod-template-hash"] = pod_hash
                selector = copy.deepcopy(spec.get("selector") or {})
                selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
                rs = {
                    "metadata": {
                        "name": rs_name,
                        "namespace": namespace,
                        "labels": dict(labels),
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": str(replicas),
                            "deployment.kubernetes.io/max-replicas": str(replicas + 1),
                            "deployment.kubernetes.io/revision": str(revision),
                        },
                        "ownerReferences": [self._owner_ref(dep, deployments)],
                    },
                    "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
                }
                try:
                    self._create(
                        replicasets,
                        namespace,
                        rs,
                        context={"method": "controller", "resource": "replicasets"},
                    )
                except ApiError as e:
                    log.warning("fake deployment controller: %s", e.message)
                    return
                self._event(
                    dep,
                    "ScalingReplicaSet",
                    f"Scaled up replica set {rs_name} from 0 to {replicas}",
                    component="deployment-controller",
                )
            elif (current.get("spec") or {}).get("replicas") != replicas:
                self._mutate(
                    replicasets, namespace, rs_name, current["metadata"]["uid"], _set_replicas(replicas)
                )

            def status(d):
                now = _now()
                generation = d["metadata"].get("generation", 1)
                if (d.get("status") or {}).get("observedGeneration") == generation and d["status"].get(
                    "replicas"
                ) == replicas:
                    return False
                d["status"] = {
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                            "message": "Deployment has minimum availability.",
                            "lastUpdateTime": now,
                            "lastTransitionTime": now,
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                            "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
                            "lastUpdateTime": now,
                            "lastTransitionTime": now,
                        },
                    ],
                }

            self._mutate(deployments, namespace, name, uid, status)

    def _reconcile_replicasets(self, namespace, name):
        rtype = resource_type("replicasets")
        with self._lock:
            rs = self._objects["replicasets"].get((namespace, name))
            if rs is None or rs["metadata"].get("deletionTimestamp"):
                return
            replicas = (rs.get("spec") or {}).get("replicas", 1)
            made = self._ensure_pods(rs, rtype, replicas)
            generation = rs["metadata"].get("generation", 1)
            status = {
                "replicas": made,
                "fullyLabeledReplicas": made,
                "readyReplicas": made,
                "availableReplicas": made,
                "observedGeneration": generation,
            }
            self._mutate(rtype, namespace, name, rs["metadata"]["uid"], _set_status(status))
            if made < min(replicas, MAX_CONTROLLER_PODS):
                self._report_replica_failure(rs, made)

    def _report_replica_failure(self, rs, made):
        """A Deployment whose ReplicaSet could not create its pods (e.g. refused by Pod Security admission)
        reports the ready ones only and a ReplicaFailure condition, as a real one does."""
        ref = next(
            (r for r in rs["metadata"].get("ownerReferences") or [] if r.get("kind") == "Deployment"), None
        )
        if ref is None:
            return
        failed = next(
            (
                e
                for e in reversed(self.list("events", rs["metadata"]["namespace"]))
                if e["involvedObject"].get("uid") == rs["metadata"]["uid"] and e["reason"] == "FailedCreate"
            ),
            None,
        )

        def fn(dep):
            status = dep.setdefault("status", {})
            wanted = (dep.get("spec") or {}).get("replicas", 1)
            status.update(readyReplicas=made, availableReplicas=made, unavailableReplicas=wanted - made)
            if not made:
                status.pop("readyReplicas")
                status.pop("availableReplicas")
            now = _now()
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
            for c in conditions:
                if c.get("type") == "Available":
                    c.update(status="False", reason="MinimumReplicasUnavailable")
                    c["message"] = "Deployment does not have minimum availability."
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": failed["message"][len("Error creating: ") :] if failed else "",
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                }
            )
            status["conditions"] = conditions

        self._mutate(
            resource_type("deployments"), rs["metadata"]["namespace"], ref.get("name"), ref.get("uid"), fn
        )

    def _reconcile_statefulsets(self, namespace, name):
        rtype = resource_type("statefulsets")
        with self._lock:
            sts = self._objects["statefulsets"].get((namespace, name))
            if sts is None or sts["metadata"].get("deletionTimestamp"):
                return
            spec = sts.get("spec") or {}
            replicas = spec.get("replicas", 1)
            for i in range(min(replicas, MAX_CONTROLLER_PODS)):
                for claim in spec.get("volumeClaimTemplates") or []:
                    pvc = copy.deepcopy(claim)
                    pvc.pop("status", None)
                    pvc_meta = _meta(pvc)
                    pvc_meta.update(name=f"{pvc_meta.get('name')}-{name}-{i}", namespace=namespace)
                    pvc_meta.pop("creationTimestamp", None)
                    pvc.pop("apiVersion", None)
                    pvc.pop("kind", None)
                    if (namespace, pvc_meta["name"]) not in self._objects["persistentvolumeclaims"]:
                        with contextlib.suppress(ApiError):
                            self._create(
                                resource_type("persistentvolumeclaims"), namespace, pvc, validate=False
                            )
            made = self._ensure_pods(sts, rtype, replicas, names=lambda i: f"{name}-{i}")
            revision = f"{name}-{self._template_hash(spec.get('template') or {})}"
            status = {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": made,
                "readyReplicas": made,
                "currentReplicas": made,
                "updatedReplicas": made,
                "availableReplicas": made,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            }
            self._mutate(rtype, namespace, name, sts["metadata"]["uid"], _set_status(status))

    def _reconcile_daemonsets(self, namespace, name):
        rtype = resource_type("daemonsets")
        with self._lock:
            ds = self._objects["daemonsets"].get((namespace, name))
            if ds is None or ds["metadata"].get("deletionTimestamp"):
                return
            made = self._ensure_pods(ds, rtype, 1)
            status = {
                "observedGeneration": ds["metadata"].get("generation", 1),
                "currentNumberScheduled": made,
                "desiredNumberScheduled": 1,
                "numberAvailable": made,
                "numberMisscheduled": 0,
                "numberReady": made,
                "updatedNumberScheduled": made,
            }
            self._mutate(rtype, namespace, name, ds["metadata"]["uid"], _set_status(status))

    # ---- HTTP --------------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request, handler):
        self.requests.append((request.method, request.path_qs))
        warnings: list[str] = []
        token = _REQUEST_WARNINGS.set(warnings)
        try:
            response = await handler(request)
        except ApiError as e:
            response = web.json_response(e.status(), status=e.code)
        finally:
            _REQUEST_WARNINGS.reset(token)
        for warning in warnings:  # as the real server: 299 warn-code, "-" agent, the quoted text
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            response.headers.add("Warning", f'299 - "{escaped}"')
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.path.strip("/")
        segments = [s for s in path.split("/") if s]
        if path == "/version":
            major, minor = self.version.split(".")[:2]
            return web.json_response(
                {
                    "major": major,
                    "minor": minor,
                    "gitVersion": f"v{self.version}",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.24.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path == "/openapi/v3":
            return web.json_response({"paths": self._openapi_v3_index()})
        if path.startswith("/openapi/v3/"):
            document = self._openapi_v3(path[len("/openapi/v3/") :])
            if document is None:
                raise ApiError(404, "the server could not find the requested resource")
            return web.json_response(document)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url[7:]}
                    ],
                }
            )
        if path == "/apis":
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
        if segments[:1] == ["apis"] and len(segments) == 2:
            group = next((g for g in self._groups() if g["name"] == segments[1]), None)
            if group is None:
                raise ApiError(404, "the server could not find the requested resource")
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
        if (segments[:1] == ["api"] and len(segments) == 2) or (
            segments[:1] == ["apis"] and len(segments) == 3
        ):
            group, version = ("", segments[1]) if segments[0] == "api" else (segments[1], segments[2])
            resources = self._resource_list(group, version)
            if not resources:
                raise ApiError(404, "the server could not find the requested resource")
            return web.json_response(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": resources,
                }
            )
        if segments[:1] == ["api"] and len(segments) > 2:
            return await self._resource_request(request, "", segments[1], segments[2:])
        if segments[:1] == ["apis"] and len(segments) > 3:
            return await self._resource_request(request, segments[1], segments[2], segments[3:])
        raise ApiError(404, "the server could not find the requested resource")

    @staticmethod
    def _gv_paths():
        """{"api/v1": ("", "v1"), "apis/apps/v1": ("apps", "v1"), ...}"""
        out = {}
        for r in RESOURCE_TYPES:
            out[f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"] = (r.group, r.version)
        return out

    def _openapi_v3_index(self):
        index = {}
        for gv_path in self._gv_paths():
            digest = hashlib.sha256(f"{self.version}/{gv_path}".encode()).hexdigest()[:32].upper()
            index[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
        return index

    def _openapi_v3(self, gv_path):
        """A skeleton OpenAPI v3 document per group-version: no schemas, only the PATCH operations with the
        ``fieldValidation`` query parameter. That is what client-go's QueryParamVerifierV3 (helm, kubectl)
        looks for to use server-side field validation, which this fake does with kubernetes_validate."""
        gv = self._gv_paths().get(gv_path.strip("/"))
        if gv is None:
            return None
        paths = {}
        for r in RESOURCE_TYPES:
            if (r.group, r.version) != gv:
                continue
            prefix = f"/{gv_path}/namespaces/{{namespace}}" if r.namespaced else f"/{gv_path}"
            paths[f"{prefix}/{r.plural}/{{name}}"] = {
                "patch": {
                    "operationId": f"patch{r.kind}",
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {
                        "group": r.group,
                        "version": r.version,
                        "kind": r.kind,
                    },
                    "parameters": [
                        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                        for name in ("dryRun", "fieldManager", "fieldValidation", "force")
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (fake)", "version": f"v{self.version}"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    def _groups(self):
        groups = []
        for gv in dict.fromkeys((r.group, r.version) for r in RESOURCE_TYPES if r.group):
            version = {"groupVersion": f"{gv[0]}/{gv[1]}", "version": gv[1]}
            groups.append({"name": gv[0], "versions": [version], "preferredVersion": version})
        return groups

    def _resource_list(self, group, version):
        out = []
        for r in RESOURCE_TYPES:
            if (r.group, r.version) != (group, version):
                continue
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            entry = {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            }
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            out.append(entry)
            if r.status:
                out.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if r.plural == "pods":
                out.append(
                    {
                        "name": "pods/log",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "Pod",
                        "verbs": ["get"],
                    }
                )
        return out

    def enforce_role(self, rules, namespace, subject, cluster_rules=()):
        """Authorize every resource request like RBAC with one Role (``rules``, as in a Role manifest)
        bound to every caller in ``namespace``, and a ClusterRole (``cluster_rules``) bound by a
        ClusterRoleBinding (every namespace and the cluster scope): anything else is 403 Forbidden with
        the real message."""
        self.role_rules, self.role_namespace, self.role_subject = list(rules), namespace, subject
        self.cluster_role_rules = list(cluster_rules)

    def _authorize(self, method, watch, rtype, namespace, name, sub):
        if self.role_rules is None:
            return
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
        if method == "GET":
            verb = "get" if name else "watch" if watch else "list"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        resource = f"{rtype.plural}/{sub}" if sub else rtype.plural

        def grants(rules):
            return any(
                rtype.group in rule.get("apiGroups", ())
                and resource in rule.get("resources", ())
                and verb in rule.get("verbs", ())
                and (not rule.get("resourceNames") or name in rule["resourceNames"])
                for rule in rules
            )

        # a Role grants only in its namespace; a ClusterRole everywhere, cluster-scoped resources included
        granted = (
            namespace is not None and namespace == self.role_namespace and grants(self.role_rules)
        ) or grants(self.cluster_role_rules)
        if granted:
            return
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = (
            (f'{rtype.plural} "{name}" is forbidden' if name else f"{rtype.plural} is forbidden")
            + f': User "{self.role_subject}" cannot {verb} resource "{resource}" in API group '
            + f'"{rtype.group}" {where}'
        )
        self.forbidden.append(message)
        raise ApiError(403, message, rtype=rtype, name=name)

    async def _resource_request(self, request, group, version, rest):
        watch = request.query.get("watch", "").lower() in ("1", "true")
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "the server could not find the requested resource")
        rtype = _BY_GVP.get((group, version, rest[0]))
        if rtype is None or len(rest) > 3 or (namespace and not rtype.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub == "finalize":
            sub = None
        if sub not in (None, "status", "log") or (sub == "log" and rtype.plural != "pods"):
            raise ApiError(404, "the server could not find the requested resource")
        if name and rtype.namespaced and not namespace:
            raise ApiError(404, "the server could not find the requested resource")
        self._authorize(request.method, watch, rtype, namespace, name, sub)
        q = request.query
        dry_run = q.get("dryRun") == "All"
        context = {
            "method": request.method,
            "path": request.path_qs,
            "resource": rtype.plural,
            "namespace": namespace,
            "name": name,
        }
        method = request.method
        if method == "GET" and name is None:
            label_reqs = parse_label_selector(q.get("labelSelector"))
            field_reqs = parse_field_selector(q.get("fieldSelector"))
            if watch:
                return await self._watch(request, rtype, namespace, label_reqs, field_reqs)
            items, rv = self._list(rtype, namespace, label_reqs, field_reqs)
            return web.json_response(
                {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }
            )
        if method == "GET":
            obj = self._get(rtype, namespace, name)
            if sub == "log":
                return web.Response(
                    text=f"fake log of pod {namespace}/{name}: nothing runs in the fake kube-apiserver\n"
                )
            return web.json_response(obj)
        if method == "POST" and name is None:
            body = await self._body(request)
            obj = self._create(rtype, namespace, body, dry_run=dry_run, context=context)
            return web.json_response(obj, status=201)
        if method == "PUT" and name and sub != "log":
            body = await self._body(request)
            return web.json_response(self._update(rtype, namespace, name, body, sub, dry_run, context))
        if method == "PATCH" and name and sub != "log":
            ctype = request.content_type
            raw = await request.read()
            try:
                if ctype == "application/apply-patch+yaml":
                    import yaml

                    body = yaml.safe_load(raw)
                else:
                    body = json.loads(raw)
            except ValueError as e:
                raise ApiError(400, f"cannot parse the patch: {e}") from None
            if ctype == "application/apply-patch+yaml" and isinstance(body, dict):
                self._fill_type(rtype, body, namespace, "apply")
                if self.validate:
                    self._check_validity(rtype, body, context)
            return web.json_response(self._patch(rtype, namespace, name, ctype, body, sub, dry_run, context))
        if method == "DELETE" and sub is None:
            raw = await request.read()
            try:
                if raw.strip() and request.content_type == "application/vnd.kubernetes.protobuf":
                    options = decode_protobuf(raw)
                else:
                    options = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise ApiError(400, "cannot parse DeleteOptions") from None
            options = options if isinstance(options, dict) else {}
            grace = q.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            try:
                grace = int(grace) if grace is not None else None
            except ValueError:
                raise ApiError(400, f"invalid gracePeriodSeconds {grace!r}") from None
            propagation = q.get("propagationPolicy", options.get("propagationPolicy"))
            if q.get("orphanDependents", str(options.get("orphanDependents", ""))).lower() == "true":
                propagation = "Orphan"
            if dry_run or "All" in (options.get("dryRun") or []):
                return web.json_response(self._get(rtype, namespace, name))
            if name is None:
                items, _ = self._list(
                    rtype,
                    namespace,
                    parse_label_selector(q.get("labelSelector")),
                    parse_field_selector(q.get("fieldSelector")),
                )
                with self._lock:
                    for item in items:
                        with contextlib.suppress(ApiError):
                            self._delete(
                                rtype,
                                item["metadata"].get("namespace"),
                                item["metadata"]["name"],
                                grace,
                                propagation,
                            )
                return web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
                )
            obj, _ = self._delete(rtype, namespace, name, grace, propagation, options.get("preconditions"))
            if rtype.plural in _DELETE_RETURNS_OBJECT:
                return web.json_response(obj)
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "kind": rtype.plural,
                        "uid": obj["metadata"]["uid"],
                        **({"group": rtype.group} if rtype.group else {}),
                    },
                }
            )
        raise ApiError(405, f"{method} is not supported on {request.path}")

    async def _body(self, request) -> dict:
        if request.content_type == "application/vnd.kubernetes.protobuf":
            return decode_protobuf(await request.read())
        if request.content_type not in ("application/json", "", "application/octet-stream", "text/plain"):
            raise ApiError(415, f"the fake kube-apiserver only speaks JSON, not {request.content_type}")
        try:
            body = json.loads(await request.read())
        except ValueError as e:
            raise ApiError(400, f"cannot parse the body as JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    async def _watch(self, request, rtype, namespace, label_reqs, field_reqs):
        q = request.query
        rv = q.get("resourceVersion", "")
        try:
            timeout = min(float(q.get("timeoutSeconds") or 1800), WATCH_MAX_SECONDS)
        except ValueError:
            raise ApiError(400, f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from None
        bookmarks = q.get("allowWatchBookmarks", "").lower() in ("1", "true")
        send_initial = q.get("sendInitialEvents", "").lower() == "true"
        loop = asyncio.get_running_loop()
        watcher = _Watcher(rtype.plural, asyncio.Queue(), loop)

        def visible(change: _Change):
            """The event type this watcher sees for the change, or None."""
            if change.plural != rtype.plural:
                return None
            obj = change.obj
            if namespace and rtype.namespaced and obj["metadata"].get("namespace") != namespace:
                return None
            now_in = labels_match(label_reqs, obj["metadata"].get("labels")) and fields_match(field_reqs, obj)
            if change.type != "MODIFIED" or change.old is None:
                return change.type if now_in else None
            was_in = labels_match(label_reqs, change.old["metadata"].get("labels")) and fields_match(
                field_reqs, change.old
            )
            if now_in and was_in:
                return "MODIFIED"
            if now_in:
                return "ADDED"
            return "DELETED" if was_in else None

        gone = None
        with self._lock:
            self._watchers.add(watcher)
            snapshot = self._rv
            if send_initial or rv in ("", "0"):
                items, _ = self._list(rtype, namespace, label_reqs, field_reqs)
                backlog = [
                    ("ADDED", o) for o in sorted(items, key=lambda o: int(o["metadata"]["resourceVersion"]))
                ]
            else:
                try:
                    since = int(rv)
                except ValueError:
                    self._watchers.discard(watcher)
                    raise ApiError(400, f"invalid resourceVersion {rv!r}") from None
                oldest = self._history[0].rv if self._history else snapshot + 1
                if since < oldest - 1 and since < snapshot:
                    gone = f"too old resource version: {since} ({oldest - 1})"
                    backlog = []
                else:
                    backlog = [(t, c.obj) for c in self._history if c.rv > since and (t := visible(c))]
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)

            async def send(etype, obj):
                await response.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

            if gone:
                error = ApiError(410, gone, reason="Expired").status()
                await send("ERROR", error)
                return response
            for etype, obj in backlog:
                await send(etype, obj)
            if send_initial:
                await send(
                    "BOOKMARK",
                    {
                        "kind": rtype.kind,
                        "apiVersion": rtype.api_version,
                        "metadata": {
                            "resourceVersion": str(snapshot),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
            deadline = loop.time() + timeout
            while not self._stopping:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), min(remaining, BOOKMARK_SECONDS))
                except TimeoutError:
                    if bookmarks and loop.time() < deadline:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": rtype.kind,
                                "apiVersion": rtype.api_version,
                                "metadata": {"resourceVersion": str(self._rv)},
                            },
                        )
                    continue
                if change is None:
                    break
                if change.rv <= snapshot:
                    continue
                etype = visible(change)
                if etype:
                    await send(etype, change.obj)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except (ConnectionError, RuntimeError) as e:
            log.debug("watch on %s ended: %r", rtype.plural, e)
        finally:
            with self._lock:
                self._watchers.discard(watcher)
        return response


def _whole(quantity) -> int:
    """An extended resource's quantity (a whole number) as an int; 0 when it is none."""
    return int(quantity) if str(quantity).isdigit() else 0


def _set_replicas(n):
    def fn(obj):
        obj.setdefault("spec", {})["replicas"] = n

    return fn


def _set_status(status):
    def fn(obj):
        obj["status"] = status

    return fn


async def reset_kubespawner_clients() -> None:
    """Forget KubeSpawner's cached API clients and configuration.

    KubeSpawner keeps one kubernetes_asyncio client per event loop (configured with the first
    ``k8s_api_host`` it saw) and caches its configuration per host. Call this, after
    ``await KubeSpawner._stop_all_reflectors()``, before pointing KubeSpawner at another fake from the same
    event loop (pytest-asyncio with a session-scoped loop)."""
    from kubespawner import clients

    cached = list(clients._client_cache.values())
    clients._client_cache.clear()
    clients.load_config.cache_clear()
    for client in cached:
        await client.api_client.close()


@contextlib.contextmanager
def running_fake(**kw) -> Iterator[FakeKubernetes]:
    """A started FakeKubernetes (arguments as for its constructor), stopped at exit."""
    fake = FakeKubernetes(**kw).start()
    try:
        yield fake
    finally:
        fake.stop()
