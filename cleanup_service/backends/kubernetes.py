"""The Kubernetes backend: pods, PVCs, services and network policies carrying this hub's labels.

Only the hub's own namespace is read (:func:`detect_namespace`; never ``HUB_NAME``), and only
objects labelled ``mlhub.origin=<hub name>``. With KubeSpawner's ``enable_user_namespaces``
(``user_namespaces=True``: each user's workspaces in a namespace of their own) the objects are listed in
every namespace, and kept only in the hub's own and in namespaces labelled ``mlhub.origin=<hub name>`` (the
spawner labels the namespaces it creates): a namespace someone else made is never touched. Their names in
reports then carry the namespace (``pod/<namespace>/<name>``). They become the planner's resources:

=====================  ==================  ====================================================
Kubernetes object      planner kind        name in reports
=====================  ==================  ====================================================
Pod                    ``container``       ``pod/<name>`` (running unless Succeeded/Failed)
PersistentVolumeClaim  ``volume``          ``persistentvolumeclaim/<name>``
Service                ``network``         ``service/<name>``
NetworkPolicy          ``network``         ``networkpolicy/<name>``
=====================  ==================  ====================================================

Services and network policies are a workspace's networking: like a Docker network they go
with their user, without a grace period (a workspace's Service also goes with its pod, through
its owner reference). PVCs are data: the planner gives them a grace period, whose clock is kept
on the PVC itself as the annotation ``mlhub.orphaned_since`` (epoch seconds), set with a merge
patch and removed when the PVC has an owner again.

Label values must be valid label values, so the spawner escapes user and server names there and
keeps the raw names in the annotations ``mlhub.user`` and ``mlhub.server_name``; the resources
given to the planner carry the raw names. An object whose raw owner cannot be known (no
annotation, and a label value that may be escaped) is never listed, so never touched.

Removal goes by what was listed, never by name: every delete carries the preconditions
``uid=<listed uid>`` (:attr:`Resource.id`) and, except for pods (whose status the kubelet keeps
changing), ``resourceVersion=<listed version>``. An object deleted and created again under the same
name since the listing (a user deleted who signed up again) has another uid, and a user's
NetworkPolicy or PVC taken over again by their new workspace has another version: the API server
answers 409 Conflict, and the object is left alone (logged, not an error). A 404 is "already gone".
"""

import asyncio
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from mlhubspawner import naming

from ..planner import CONTAINER, NETWORK, VOLUME, Resource
from .base import Backend

ANNOTATION_ORPHANED_SINCE = "mlhub.orphaned_since"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_KUBECONFIG = "~/.kube/config"

POD, PVC, SERVICE, NETWORK_POLICY = "pod", "persistentvolumeclaim", "service", "networkpolicy"
PLANNER_KIND = {POD: CONTAINER, PVC: VOLUME, SERVICE: NETWORK, NETWORK_POLICY: NETWORK}
# the client method suffix of each kind (``list_namespaced_<suffix>``, ``read_…``, ``delete_…``)
_API_SUFFIX = {
    POD: "pod",
    PVC: "persistent_volume_claim",
    SERVICE: "service",
    NETWORK_POLICY: "network_policy",
}

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# a label value made of these characters is its own raw value under any escaping
_UNESCAPED = re.compile(r"^[a-z0-9]*$")
_STOPPED_PHASES = ("Succeeded", "Failed")


def _read_text(path):
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _kubeconfig_namespace(path):
    """The namespace of the current context of the kubeconfig at ``path`` (``:``-separated list), or ''."""
    if not any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p):
        return ""
    try:
        _, current = config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError):
        return ""  # a broken kubeconfig names no namespace
    return str(((current or {}).get("context") or {}).get("namespace") or "").strip()


def detect_namespace(environ=None, service_account_file=None):
    """The hub's own namespace, which is where its workspaces live.

    In order: ``$POD_NAMESPACE`` (the downward API), the service account's namespace file (any
    pod), the namespace of the kubeconfig's current context (``$KUBECONFIG``, else
    ``~/.kube/config``), else ``default``. ``HUB_NAME`` is never a namespace.
    """
    environ = os.environ if environ is None else environ
    if service_account_file is None:
        service_account_file = SERVICE_ACCOUNT_NAMESPACE
    namespace = (
        environ.get("POD_NAMESPACE", "").strip()
        or _read_text(service_account_file)
        or _kubeconfig_namespace(environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG)
        or "default"
    )
    return validate_namespace(namespace)


def validate_namespace(namespace):
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(f"{namespace!r} is not a valid Kubernetes namespace (a DNS label, e.g. 'mlhub')")
    return namespace


def _owner(meta):
    """``(user, server)`` raw names of an object, or None when they cannot be known for sure."""
    labels, annotations = meta.labels or {}, meta.annotations or {}
    user = annotations.get(naming.LABEL_USER)
    if user is None:
        user = labels.get(naming.LABEL_USER) or ""
        if not _UNESCAPED.match(user):
            return None
    server = annotations.get(naming.LABEL_SERVER_NAME)
    if server is None:
        server = labels.get(naming.LABEL_SERVER_NAME) or ""
        if not _UNESCAPED.match(server):
            return None
    if not user:
        return None
    return user, server


def _epoch(timestamp):
    if timestamp is None:  # the API server always sets it; if not, the object counts as new
        return time.time()
    return timestamp.timestamp()


def _orphaned_since(annotations, log, name):
    value = annotations.get(ANNOTATION_ORPHANED_SINCE)
    if value is None:
        return None
    try:
        since = float(value)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):  # "nan" or "inf" would keep the PVC forever
        log.warning(
            "%s has an unreadable %s=%r; its grace period starts again",
            name,
            ANNOTATION_ORPHANED_SINCE,
            value,
        )
        return None
    return since


@dataclass(frozen=True)
class ListedObject(Resource):
    """A resource as listed: ``id`` is its uid, ``resource_version`` its version at the listing."""

    resource_version: str = ""
    namespace: str = ""


class KubernetesError(RuntimeError):
    """A Kubernetes API call failed (short message: status, reason, the server's message)."""


def _short(e):
    message = ""
    try:
        message = json.loads(e.body or "{}").get("message", "")
    except (ValueError, TypeError, AttributeError):
        message = str(e.body or "")[:200]
    return f"HTTP {e.status} {e.reason or ''}: {message}".strip().rstrip(":")


class KubernetesBackend(Backend):
    """This hub's pods, PVCs, services and network policies in its own namespace.

    ``namespace``: default :func:`detect_namespace`. ``user_namespaces``: also the hub's namespaces of
    users (labelled ``mlhub.origin=<hub>``; needs cluster-wide list rights). ``api_host``: talk to this API
    server URL without credentials (tests, ``kubectl proxy``); otherwise the in-cluster service account when
    ``$KUBERNETES_SERVICE_HOST`` is set, else the kubeconfig (``$KUBECONFIG``). ``state_path`` is
    accepted for the common constructor and unused: the marks live on the PVCs.
    """

    def __init__(
        self,
        hub_name,
        log,
        state_path=None,
        namespace=None,
        api_host=None,
        request_timeout=60,
        page_size=500,
        user_namespaces=False,
    ):
        super().__init__(hub_name, log)
        self.namespace = validate_namespace(namespace) if namespace else detect_namespace()
        self.user_namespaces = user_namespaces
        self.api_host = api_host
        self.request_timeout = request_timeout
        self.page_size = page_size
        self._api_client = None
        self._lock = asyncio.Lock()
        self.log.info(
            "Kubernetes cleanup backend: namespace %s%s, hub %s",
            self.namespace,
            " and the hub's user namespaces" if user_namespaces else "",
            hub_name,
        )

    async def _client(self):
        async with self._lock:
            if self._api_client is None:
                configuration = client.Configuration()
                if self.api_host:
                    configuration.host = self.api_host
                elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config(client_configuration=configuration)
                else:
                    await config.load_kube_config(
                        config_file=os.environ.get("KUBECONFIG") or os.path.expanduser(DEFAULT_KUBECONFIG),
                        client_configuration=configuration,
                        persist_config=False,
                    )
                self._api_client = client.ApiClient(configuration)
            return self._api_client

    async def _apis(self):
        api_client = await self._client()
        return client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)

    async def _method(self, verb, kind, everywhere=False):
        """The client method that does ``verb`` (list, read, delete) to one ``kind`` in a namespace
        (``everywhere``: the list in all namespaces)."""
        core, networking = await self._apis()
        api = networking if kind == NETWORK_POLICY else core
        if everywhere:
            return getattr(api, f"list_{_API_SUFFIX[kind]}_for_all_namespaces")
        return getattr(api, f"{verb}_namespaced_{_API_SUFFIX[kind]}")

    async def _call(self, what, method, *args, **kwargs):
        try:
            return await asyncio.wait_for(method(*args, **kwargs), self.request_timeout)
        except ApiException as e:
            raise KubernetesError(f"{what}: {_short(e)}") from e
        except TimeoutError as e:
            raise KubernetesError(f"{what}: no answer within {self.request_timeout} s") from e

    async def _list(self, kind, method, everywhere=False):
        """Every object of one kind with this hub's origin label, page by page (``everywhere``: ``method``
        lists all namespaces)."""
        selector = f"{naming.LABEL_ORIGIN}={self.hub_name}"
        where = "all namespaces" if everywhere else self.namespace
        args = () if everywhere else (self.namespace,)
        items, token = [], None
        for _ in range(100000):  # bounded: one page per iteration
            kwargs = {"label_selector": selector, "limit": self.page_size}
            if token:
                kwargs["_continue"] = token
            page = await self._call(f"listing {kind}s in {where}", method, *args, **kwargs)
            items.extend(page.items or [])
            token = page.metadata._continue if page.metadata else None
            if not token:
                break
        return items

    async def _namespaces(self):
        """The namespaces whose objects are this hub's to clean: its own, and (``user_namespaces``) those
        labelled with its origin."""
        if not self.user_namespaces:
            return {self.namespace}
        core, _ = await self._apis()
        selector = f"{naming.LABEL_ORIGIN}={self.hub_name}"
        listed = await self._call("listing namespaces", core.list_namespace, label_selector=selector)
        return {self.namespace, *(ns.metadata.name for ns in listed.items or [])}

    async def list_resources(self):
        kinds = (POD, PVC, SERVICE, NETWORK_POLICY)
        everywhere = self.user_namespaces
        methods = [await self._method("list", kind, everywhere) for kind in kinds]
        namespaces, *listed = await asyncio.gather(
            self._namespaces(),
            *(self._list(kind, method, everywhere) for kind, method in zip(kinds, methods, strict=True)),
        )
        resources, skipped = [], []
        for kind, objects in zip(kinds, listed, strict=True):
            for obj in objects:
                if (obj.metadata.namespace or self.namespace) not in namespaces:
                    skipped.append(f"{kind}/{obj.metadata.namespace}/{obj.metadata.name}")
                    continue
                resource = self._resource(kind, obj)
                if resource is None:
                    skipped.append(f"{kind}/{obj.metadata.name}")
                    continue
                resources.append(resource)
        if skipped:
            self.log.warning(
                "Left alone (in a namespace not this hub's, or no %s annotation and the label may be "
                "escaped): %s",
                naming.LABEL_USER,
                ", ".join(sorted(skipped)[:20]) + (" …" if len(skipped) > 20 else ""),
            )
        return resources

    def _resource(self, kind, obj):
        meta = obj.metadata
        labels = dict(meta.labels or {})
        if labels.get(naming.LABEL_ORIGIN) != self.hub_name:
            return None  # the selector already says so; never trust one check alone
        owner = _owner(meta)
        if owner is None:
            return None
        annotations = meta.annotations or {}
        labels[naming.LABEL_USER], labels[naming.LABEL_SERVER_NAME] = owner
        if naming.LABEL_EXPIRATION in annotations:
            labels[naming.LABEL_EXPIRATION] = annotations[naming.LABEL_EXPIRATION]
        if not meta.uid:
            return None  # the API server always sets it; without it nothing can be removed safely
        namespace = meta.namespace or self.namespace
        name = f"{kind}/{meta.name}" if namespace == self.namespace else f"{kind}/{namespace}/{meta.name}"
        listed = {"id": meta.uid, "resource_version": meta.resource_version or "", "namespace": namespace}
        created = _epoch(meta.creation_timestamp)
        if kind == POD:
            phase = (obj.status.phase if obj.status else None) or "Pending"
            running = phase not in _STOPPED_PHASES
            return ListedObject(CONTAINER, name, labels, created, running=running, **listed)
        if kind == PVC:
            since = _orphaned_since(annotations, self.log, name)
            return ListedObject(VOLUME, name, labels, created, orphaned_since=since, **listed)
        return ListedObject(PLANNER_KIND[kind], name, labels, created, **listed)

    def _where(self, resource):
        """``(kind, name, namespace)`` of a listed resource (its name is ``kind/[namespace/]name``)."""
        kind, _, name = resource.name.partition("/")
        return kind, name.rpartition("/")[2], getattr(resource, "namespace", "") or self.namespace

    async def remove(self, resource):
        kind, name, namespace = self._where(resource)
        if kind not in _API_SUFFIX or PLANNER_KIND[kind] != resource.kind:
            raise ValueError(f"not a resource of the Kubernetes backend: {resource.kind} {resource.name}")
        if not resource.id:
            raise ValueError(f"{resource.name} was listed without its uid: not removed by name")
        version = getattr(resource, "resource_version", "") if kind != POD else ""
        body = client.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=client.V1Preconditions(uid=resource.id, resource_version=version or None),
        )
        delete = await self._method("delete", kind)
        try:
            await self._call(f"deleting {resource.name}", delete, name, namespace, body=body)
        except KubernetesError as e:
            status = getattr(e.__cause__, "status", None)
            if status == 404:
                self.log.debug("%s is already gone", resource.name)
            elif status == 409:
                await self._left_alone(resource, kind, name, namespace, version, e)
            else:
                raise
        else:
            self.log.info("Deleted %s (uid %s) in %s", resource.name, resource.id, namespace)

    async def _left_alone(self, resource, kind, name, namespace, version, error):
        """Log why a delete answered 409 (a precondition failed); raise ``error`` if none did."""
        read = await self._method("read", kind)
        try:
            current = (await self._call(f"reading {resource.name}", read, name, namespace)).metadata
        except KubernetesError as e:
            if getattr(e.__cause__, "status", None) == 404:
                self.log.debug("%s is already gone", resource.name)
                return
            if "Precondition failed" not in str(error):
                raise error from e
            # e.g. no 'get' permission: the server's own message says which precondition failed
            self.log.info("%s is not the object listed (%s); left alone", resource.name, error)
            return
        if current.uid != resource.id:
            self.log.info(
                "%s was re-created since the listing (uid %s, listed %s); left alone",
                resource.name,
                current.uid,
                resource.id,
            )
        elif version and current.resource_version != version:
            self.log.info(
                "%s changed since the listing (resourceVersion %s, listed %s); left alone",
                resource.name,
                current.resource_version,
                version,
            )
        else:
            raise error  # a conflict that no precondition explains

    async def mark_orphaned(self, resource, since):
        kind, name, namespace = self._where(resource)
        if kind != PVC:
            raise ValueError(f"only PVCs are marked orphaned, not {resource.name}")
        value = None if since is None else f"{float(since):.3f}"
        patch = {"metadata": {"annotations": {ANNOTATION_ORPHANED_SINCE: value}}}
        core, _ = await self._apis()
        try:
            await self._call(
                f"{'marking' if value else 'unmarking'} {resource.name}",
                core.patch_namespaced_persistent_volume_claim,
                name,
                namespace,
                patch,
                _content_type="application/merge-patch+json",
            )
        except KubernetesError as e:
            if getattr(e.__cause__, "status", None) != 404:
                raise
            self.log.debug("%s is already gone", resource.name)

    async def close(self):
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
