"""Pure builders of what the Kubernetes spawner sends: labels, annotations, resources, volumes,
environment, and the per-user NetworkPolicy.

Nothing here does I/O. Label values are always valid Kubernetes label values (the escaped forms
of :mod:`mlhubspawner.naming`, hashed when too long); the raw user and server names go into
annotations under the same keys. The pod, Service and PVC that KubeSpawner builds are adjusted
here on copies (``customize_*``), so KubeSpawner's own settings and hooks keep working.
"""

import copy
import hashlib
import ipaddress
import re

from kubernetes_asyncio.client import V1ServicePort, V1Toleration, V1Volume, V1VolumeMount
from kubespawner.utils import get_k8s_model

from .. import naming, spawner_base

# https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
LABEL_VALUE_PATTERN = re.compile(r"^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_LABEL_VALUE_LENGTH = 63

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on GPU nodes by GPU Feature Discovery
SHM_VOLUME = "mlhub-shm"
WORKSPACE_VOLUME = "mlhub-workspace"
METADATA_CIDR = "169.254.169.254/32"
# link-local (the metadata services of AWS, GCP, Azure, Oracle, OpenStack, ECS tasks, Tencent), Alibaba's
# metadata, Azure's WireServer, AWS's IPv6 metadata and EKS Pod Identity (IPv6); then the private ranges (the nodes, the LAN): the chart's
# defaults (privateIPs: false)
ALWAYS_BLOCKED_CIDRS = (
    "169.254.0.0/16",
    "100.100.100.200/32",
    "168.63.129.16/32",
    "fe80::/10",
    "fd00:ec2::254/128",
    "fd00:ec2::23/128",
)
PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
DEFAULT_BLOCKED_CIDRS = ALWAYS_BLOCKED_CIDRS + PRIVATE_CIDRS
# the cluster's resolver: kube-dns / CoreDNS pods in kube-system (kubeadm, EKS, GKE, AKS, k3s)
DEFAULT_DNS_PEERS = (
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    },
)

# the chart labels its hub and proxy pods so; the proxy pod also runs the SSH front
DEFAULT_INGRESS_PEERS = (
    {
        "podSelector": {
            "matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": ["hub", "proxy"]}
            ]
        }
    },
)
DEFAULT_HUB_PEERS = ({"podSelector": {"matchLabels": {"app.kubernetes.io/component": "hub"}}},)
DEFAULT_GPU_TOLERATIONS = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)


def is_valid_label_value(value):
    return (
        isinstance(value, str)
        and len(value) <= MAX_LABEL_VALUE_LENGTH
        and bool(LABEL_VALUE_PATTERN.match(value))
    )


def label_value(text):
    """A valid label value for ``text`` (a user or server name), different for different texts.

    The escaped form of :func:`mlhubspawner.naming.escape` (``[a-z0-9-]``) when it is a valid label
    value; otherwise (it starts with ``-`` or is longer than 63 characters) its prefix, ``_`` and a
    hash of ``text``. Escaped forms never contain ``_``, so the two kinds never meet.
    """
    value = naming.escape(text)
    if is_valid_label_value(value):
        return value
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    head = value.lstrip("-")[: MAX_LABEL_VALUE_LENGTH - len(digest) - 1].rstrip("-")
    return f"{head}_{digest}" if head else digest


def owner_labels(hub_name, username, server_name="", component=None, expiration=0, gpu_count=0):
    """The ``mlhub.*`` labels of one resource: naming's labels with label-safe values.

    ``mlhub.gpus`` holds the GPU *count*: on Kubernetes the device plugin, not ML Hub, picks them.
    """
    labels = naming.resource_labels(
        hub_name, username, server_name, component=component, expiration=expiration
    )
    labels[naming.LABEL_USER] = label_value(username)
    labels[naming.LABEL_SERVER_NAME] = label_value(server_name or "")
    if gpu_count:
        labels[naming.LABEL_GPUS] = str(int(gpu_count))
    return labels


def owner_annotations(username, server_name="", expiration=0):
    """The raw names (and expiry), which label values cannot always carry."""
    return {
        naming.LABEL_USER: username,
        naming.LABEL_SERVER_NAME: server_name or "",
        naming.LABEL_EXPIRATION: str(int(expiration or 0)),
    }


def user_selector(hub_name, username):
    """``matchLabels`` selecting every workspace pod of one user of one hub."""
    return {
        naming.LABEL_ORIGIN: hub_name,
        naming.LABEL_USER: label_value(username),
        naming.LABEL_COMPONENT: naming.COMPONENT_WORKSPACE,
    }


def cpu_quantity(cores):
    """Cores as a Kubernetes quantity in millicores (at least ``1m``)."""
    return f"{max(1, round(cores * 1000))}m"


def resource_requirements(
    *,
    cpu_limit=None,
    mem_limit=None,
    gpu_count=0,
    request_ratio=1.0,
    gpu_resource=GPU_RESOURCE,
    cpu_request=None,
    mem_request=None,
):
    """``{"limits": ..., "requests": ...}`` of the workspace container.

    Requests are ``cpu_request``/``mem_request`` when given (KubeSpawner's ``cpu_guarantee`` and
    ``mem_guarantee``, e.g. a profile's), at most the limit; else ``request_ratio`` times the limits
    (so the scheduler reserves something). GPUs are limits only (Kubernetes sets an extended
    resource's request to its limit).
    """
    if not 0 < request_ratio <= 1:
        raise ValueError(f"request_ratio must be in (0, 1], got {request_ratio}")
    limits, requests = {}, {}
    if cpu_limit is not None:
        limits["cpu"] = cpu_quantity(cpu_limit)
        requests["cpu"] = cpu_quantity(min(cpu_request or cpu_limit * request_ratio, cpu_limit))
    elif cpu_request:
        requests["cpu"] = cpu_quantity(cpu_request)
    if mem_limit is not None:
        limits["memory"] = str(int(mem_limit))
        requests["memory"] = str(max(1, int(min(mem_request or mem_limit * request_ratio, mem_limit))))
    elif mem_request:
        requests["memory"] = str(int(mem_request))
    if gpu_count:
        limits[gpu_resource] = str(int(gpu_count))
    return {"limits": limits, "requests": requests}


def gpu_node_selector(base, product=""):
    """The node selector of a workspace with GPUs: ``base`` (the admin's) plus, for one GPU product,
    GPU Feature Discovery's ``nvidia.com/gpu.product=<product>``."""
    if product and not is_valid_label_value(product):
        raise ValueError(f"GPU product {product!r} is not a valid label value")
    return {**(base or {}), **({GPU_PRODUCT_LABEL: product} if product else {})}


def workspace_volumes(*, pvc_name=None, volume_path="/workspace", shm_size=None):
    """``(volumes, volume_mounts)`` as API dicts: the workspace's PVC and a memory-backed ``/dev/shm``."""
    volumes, mounts = [], []
    if pvc_name:
        volumes.append({"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": pvc_name}})
        mounts.append({"name": WORKSPACE_VOLUME, "mountPath": volume_path})
    if shm_size:
        # unlike Docker's shm_size, a memory-backed emptyDir counts against the memory limit
        volumes.append(
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": str(int(shm_size))}}
        )
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return volumes, mounts


def workspace_env(base, options, *, ssh_host, gpu_count=0, run=None, volume_mounted=True):
    """The shared workspace env; with GPUs the device plugin sets ``NVIDIA_VISIBLE_DEVICES``.

    ``run`` (an :class:`~mlhubspawner.images.ImageRun`) adds its image convention's env.
    """
    return spawner_base.workspace_env(
        base, options, ssh_host, None if gpu_count else "void", run, volume_mounted
    )


def _with_metadata(obj, labels, annotations):
    obj.metadata.labels = {**(obj.metadata.labels or {}), **labels}
    obj.metadata.annotations = {**(obj.metadata.annotations or {}), **annotations}


def _notebook_container(pod):
    for container in pod.spec.containers:
        if container.name == "notebook":
            return container
    raise ValueError(f"pod {pod.metadata.name} has no 'notebook' container")


def customize_pod(
    pod,
    *,
    image,
    labels,
    annotations,
    resources,
    volumes=(),
    volume_mounts=(),
    node_selector=None,
    tolerations=(),
    image_pull_policy=None,
):
    """A copy of KubeSpawner's pod (a ``V1Pod``) with one workspace's settings.

    ``resources`` keys replace KubeSpawner's for the same resource; its other limits/requests
    (``extra_resource_limits``...) stay. Volumes, node selector and tolerations are added.
    """
    pod = copy.deepcopy(pod)
    _with_metadata(pod, labels, annotations)
    container = _notebook_container(pod)
    container.image = image
    if image_pull_policy:
        container.image_pull_policy = image_pull_policy
    container.resources.limits = {**(container.resources.limits or {}), **resources.get("limits", {})}
    container.resources.requests = {**(container.resources.requests or {}), **resources.get("requests", {})}
    pod.spec.volumes = list(pod.spec.volumes or []) + [get_k8s_model(V1Volume, v) for v in volumes]
    container.volume_mounts = list(container.volume_mounts or []) + [
        get_k8s_model(V1VolumeMount, m) for m in volume_mounts
    ]
    if node_selector:
        pod.spec.node_selector = {**(pod.spec.node_selector or {}), **node_selector}
    if tolerations:
        pod.spec.tolerations = list(pod.spec.tolerations or []) + [
            get_k8s_model(V1Toleration, t) for t in tolerations
        ]
    return pod


def customize_service(service, *, labels, annotations, selector, ssh_port):
    """A copy of KubeSpawner's Service with the owner's labels, a narrower selector and the SSH port."""
    service = copy.deepcopy(service)
    _with_metadata(service, labels, annotations)
    service.spec.selector = {**(service.spec.selector or {}), **selector}
    ports = [p for p in service.spec.ports or [] if p.name != "ssh"]
    ports.append(V1ServicePort(name="ssh", port=ssh_port, target_port=ssh_port, protocol="TCP"))
    service.spec.ports = ports
    return service


def customize_pvc(pvc, *, labels, annotations):
    """A copy of KubeSpawner's PVC with the owner's labels and annotations."""
    pvc = copy.deepcopy(pvc)
    _with_metadata(pvc, labels, annotations)
    return pvc


def is_cidr(text):
    """Whether ``text`` is an IPv4 or IPv6 network in CIDR notation (host bits allowed)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except (TypeError, ValueError):
        return False
    return "/" in str(text)


def make_network_policy(
    *,
    name,
    hub_name,
    username,
    ingress_from=DEFAULT_INGRESS_PEERS,
    hub_peers=DEFAULT_HUB_PEERS,
    hub_ports=(8081,),
    blocked_cidrs=DEFAULT_BLOCKED_CIDRS,
    dns_peers=DEFAULT_DNS_PEERS,
    dns_ports=(53,),
):
    """The NetworkPolicy of one user's workspace pods (a dict of the API's JSON).

    Ingress: from the same user's workspaces and from ``ingress_from`` peers (hub, proxy and SSH
    front). Egress: DNS to ``dns_peers`` only (the cluster's resolver; never port 53 to any
    address), the same user's workspaces, the hub (``hub_peers`` on ``hub_ports``, all ports if
    empty), and any IPv4/IPv6 address outside ``blocked_cidrs`` (metadata, private ranges).
    Another user's pods stay unreachable through their own policy's ingress rules.
    """
    same_user = {"podSelector": {"matchLabels": user_selector(hub_name, username)}}
    hub_rule = {"to": copy.deepcopy(list(hub_peers))}
    if hub_ports:
        hub_rule["ports"] = [{"protocol": "TCP", "port": int(p)} for p in hub_ports]
    internet = []
    for everything in ("0.0.0.0/0", "::/0"):
        family = ipaddress.ip_network(everything).version
        excepted = [c for c in blocked_cidrs if ipaddress.ip_network(c, strict=False).version == family]
        internet.append({"ipBlock": {"cidr": everything, **({"except": excepted} if excepted else {})}})
    dns_rule = {"ports": [{"protocol": proto, "port": int(p)} for p in dns_ports for proto in ("UDP", "TCP")]}
    if dns_peers:
        dns_rule = {"to": copy.deepcopy(list(dns_peers)), **dns_rule}
    egress = [dns_rule, {"to": [same_user]}, {"to": internet}]
    if hub_peers:
        egress.insert(2, hub_rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "labels": owner_labels(hub_name, username, component=naming.COMPONENT_NETWORK),
            "annotations": owner_annotations(username),
        },
        "spec": {
            "podSelector": {"matchLabels": user_selector(hub_name, username)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [same_user, *copy.deepcopy(list(ingress_from))]}],
            "egress": egress,
        },
    }


# ---- Pod Security: the workspace pod's security contexts ---------------------------------------

POD_SECURITY_LEVELS = ("restricted", "baseline")
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"
# the volume types Pod Security "restricted" allows (baseline: any but hostPath)
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# capabilities "baseline" allows to be added (the container runtimes' default set); "restricted": NET_BIND_SERVICE
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def _api_value(value):
    """An API value (a client model, list or dict of them) as the API's JSON (camelCase keys), copied."""
    if hasattr(value, "attribute_map") and hasattr(value, "openapi_types"):
        return {
            value.attribute_map[attr]: _api_value(getattr(value, attr))
            for attr in value.openapi_types
            if getattr(value, attr) is not None
        }
    if isinstance(value, dict):
        return {k: _api_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_api_value(v) for v in value]
    return copy.deepcopy(value)


def _all_containers(pod):
    return list(pod.spec.init_containers or []) + list(pod.spec.containers or [])


def lowest_bound_port(ports):
    """The lowest of the ports the workspace binds, if it is a privileged one (< 1024), else None."""
    low = min((int(p) for p in ports if p), default=None)
    return low if low is not None and low < 1024 else None


def secure_pod(pod, *, level="restricted", fs_group_change_policy="OnRootMismatch", low_port=None):
    """A copy of KubeSpawner's pod with the security contexts of Pod Security ``level``.

    KubeSpawner has set ``fsGroup``/``supplementalGroups`` on the pod and ``runAsUser``/``runAsGroup``
    on the notebook container (its ``fs_gid``, ``gid``, ``uid``...). Added here, where not set already:
    the pod's ``runAsUser``/``runAsGroup`` (the notebook's, so init containers run as the same user),
    ``fsGroupChangePolicy`` (with an ``fsGroup``), seccomp ``RuntimeDefault``, and with ``low_port``
    the sysctl ``net.ipv4.ip_unprivileged_port_start=<low_port>`` so a non-root sshd can bind port 22
    (a safe sysctl, allowed by both levels). ``restricted`` also sets ``runAsNonRoot`` on the pod and,
    on every container (init containers too), ``allowPrivilegeEscalation: false`` and dropping ALL
    capabilities. ``baseline`` leaves privilege escalation to KubeSpawner's ``allow_privilege_escalation``
    and the capabilities to the container runtime's default set.
    """
    if level not in POD_SECURITY_LEVELS:
        raise ValueError(f"Pod Security level must be one of {POD_SECURITY_LEVELS}, got {level!r}")
    pod = copy.deepcopy(pod)
    psc = _api_value(pod.spec.security_context) or {}
    notebook = _api_value(_notebook_container(pod).security_context) or {}
    for key in ("runAsUser", "runAsGroup"):
        if key in notebook:
            psc.setdefault(key, notebook[key])
    if "fsGroup" in psc and fs_group_change_policy:
        psc.setdefault("fsGroupChangePolicy", fs_group_change_policy)
    psc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    if low_port is not None:
        sysctls = [s for s in psc.get("sysctls") or [] if s.get("name") != UNPRIVILEGED_PORT_SYSCTL]
        configured = [s for s in psc.get("sysctls") or [] if s.get("name") == UNPRIVILEGED_PORT_SYSCTL]
        if configured:  # the admin's value, unless it leaves the port privileged
            value = min(int(configured[0]["value"]), int(low_port))
        else:
            value = int(low_port)
        psc["sysctls"] = [*sysctls, {"name": UNPRIVILEGED_PORT_SYSCTL, "value": str(value)}]
    if level == "restricted":
        psc.setdefault("runAsNonRoot", True)
    pod.spec.security_context = psc
    for container in _all_containers(pod):
        csc = _api_value(container.security_context) or {}
        if level == "restricted":
            csc.setdefault("allowPrivilegeEscalation", False)
            csc.setdefault("runAsNonRoot", True)
            capabilities = csc.setdefault("capabilities", {})
            drop = list(capabilities.get("drop") or [])
            if "ALL" not in drop:
                capabilities["drop"] = ["ALL", *drop]
        container.security_context = csc or None
    return pod


def pod_security_conflicts(pod, level="restricted"):
    """What in a (secured) pod Pod Security ``level`` refuses: settings of the admin that ML Hub does not override.

    A list of sentences naming the field (empty: the pod conforms as far as these settings go).
    """
    if level not in POD_SECURITY_LEVELS:
        raise ValueError(f"Pod Security level must be one of {POD_SECURITY_LEVELS}, got {level!r}")
    data = _api_value(pod)
    spec = data.get("spec") or {}
    psc = spec.get("securityContext") or {}
    found = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"spec.{key} is true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds or (level == "restricted" and not kinds <= RESTRICTED_VOLUME_TYPES):
            found.append(f"volume {volume.get('name')!r} is of type {', '.join(sorted(kinds))}")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append("spec.securityContext.seccompProfile is Unconfined")
    if level == "restricted" and (psc.get("runAsUser") == 0 or psc.get("runAsNonRoot") is False):
        found.append("the pod runs as root (uid 0 or runAsNonRoot false)")
    containers = [("initContainers", c) for c in spec.get("initContainers") or []] + [
        ("containers", c) for c in spec.get("containers") or []
    ]
    for kind, container in containers:
        where = f"spec.{kind}[{container.get('name')}]"
        csc = container.get("securityContext") or {}
        if csc.get("privileged"):
            found.append(f"{where} is privileged")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{where} uses hostPort {port['hostPort']}")
        added = set((csc.get("capabilities") or {}).get("add") or [])
        allowed = BASELINE_CAPABILITIES if level == "baseline" else {"NET_BIND_SERVICE"}
        if added - allowed:
            found.append(f"{where} adds capabilities {', '.join(sorted(added - allowed))}")
        if (csc.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where} seccompProfile is Unconfined")
        if level == "restricted":
            if csc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where} allows privilege escalation")
            if csc.get("runAsUser") == 0 or csc.get("runAsNonRoot") is False:
                found.append(f"{where} runs as root (uid 0 or runAsNonRoot false)")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                found.append(f"{where} does not drop ALL capabilities")
    return found


def peers_in_namespace(peers, namespace):
    """NetworkPolicy peers as a policy in another namespace must name them: those selecting pods only
    (no ``namespaceSelector``, no ``ipBlock``) get ``namespaceSelector`` ``kubernetes.io/metadata.name:
    <namespace>`` (a bare ``podSelector`` selects pods in the policy's own namespace)."""
    result = []
    for peer in peers:
        peer = copy.deepcopy(dict(peer))
        if "ipBlock" not in peer and "namespaceSelector" not in peer:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        result.append(peer)
    return result
