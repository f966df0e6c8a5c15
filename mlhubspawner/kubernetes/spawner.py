"""``MLHubKubernetesSpawner``: KubeSpawner with ML Hub's options, policy, names and labels.

Thin orchestration only. Options come validated from :mod:`mlhubspawner.spawner_base` (the
same policy and quotas as Docker), names from :mod:`mlhubspawner.naming`, and the adjustments
to KubeSpawner's pod, PVC and Service plus the per-user NetworkPolicy from the pure builders in
:mod:`.objects`. KubeSpawner is extended through its public methods and traits only:
``start`` (a plain method setting ``_start_future``, as KubeSpawner's), ``get_pod_manifest``,
``get_pvc_manifest``, ``get_service_manifest``, ``get_env``, ``storage_pvc_ensure``,
``services_enabled``, ``pod_name_template``, ``pvc_name_template``.

KubeSpawner's ``profile_list`` is ML Hub's (:mod:`.profiles`): offered in the options form and
taken from ``user_options["profile"]``; the chosen profile's overrides hold for one start only.

One start: validate the options (a 400 naming the field, before anything is created) → the
user's NetworkPolicy (created once, kept current) → KubeSpawner's start: the PVC (unless
``is_mount_volume`` is off), the pod, a Service with the notebook port and port 22.
"""

import asyncio
import copy
import time
from dataclasses import dataclass, replace

import aiohttp
from jupyterhub.utils import exponential_backoff, maybe_future
from kubernetes_asyncio.client import ApiException, NetworkingV1Api
from kubespawner import KubeSpawner
from tornado import web
from traitlets import (
    Bool,
    Callable,
    Dict,
    Enum,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    Union,
    default,
    validate,
)

from .. import images, metrics, naming
from ..options import (
    OptionsError,
    WorkspaceOptions,
    form_to_options,
    gpu_count,
    is_extended_resource,
    parse_options,
    parse_size,
)
from ..spawner_base import MLHubSpawnerMixin, options_error
from . import gpus, legacy, objects, parent_settings, profiles


@dataclass(frozen=True)
class WorkspaceStart:
    """What one start decided: the validated options, the GPUs (count, resource, product) and the expiry."""

    options: WorkspaceOptions
    gpu_count: int = 0
    expiration: float = 0
    volume: bool = False  # a PVC is created and mounted
    gpu_resource: str = objects.GPU_RESOURCE
    gpu_product: str = ""  # with GPUs: the node selector nvidia.com/gpu.product=<product>
    run: images.ImageRun | None = None  # how the image is run (its convention)


class MLHubKubernetesSpawner(MLHubSpawnerMixin, KubeSpawner):
    """Spawn ML Hub workspaces as pods, each with its PVC and Service, one NetworkPolicy per user.

    ``storage_pvc_ensure`` is set at each start from ``persistent_volumes`` and the user's
    ``is_mount_volume`` option (as a KubeSpawner profile override would set it), so a workspace
    without a volume gets no PVC.
    """

    volume_path = Unicode(
        "/workspace", help="""Where the workspace's PVC is mounted in the workspace container."""
    ).tag(config=True)

    persistent_volumes = Bool(
        help="""Give each workspace a PVC, mounted at ``volume_path``, unless its user turns ``is_mount_volume`` off.

        Defaults to ``storage_pvc_ensure`` as configured (on unless set otherwise). At each start ML
        Hub sets KubeSpawner's ``storage_pvc_ensure`` to this setting *and* the user's option, so a
        workspace without a volume gets no PVC: in group overrides, set this, not ``storage_pvc_ensure``.
        The PVC's size, class and access modes are KubeSpawner's ``storage_capacity`` (default
        ``10Gi``), ``storage_class`` and ``storage_access_modes``.
        """,
    ).tag(config=True)

    @default("persistent_volumes")
    def _default_persistent_volumes(self):
        # read before any start: start() sets storage_pvc_ensure only after reading this
        return self.storage_pvc_ensure

    node_cpus = Float(
        None,
        allow_none=True,
        help="""CPUs of the largest node workspaces run on; caps ``cpu_limit`` like the host's CPUs in Docker.

        ``None`` (the default): no cap beyond the policy's ``max_cpu_limit``. ML Hub reads the nodes
        for their GPUs only (``gpu_resource_names``). Example: ``c.MLHubKubernetesSpawner.node_cpus = 16``.
        """,
    ).tag(config=True)

    node_memory = Union(
        [Int(), Unicode()],
        default_value=None,
        allow_none=True,
        help="""Memory of the largest node workspaces run on (``"64G"`` or bytes); caps ``mem_limit``.

        ``None`` (the default): no cap beyond the policy's ``max_mem_limit``.
        """,
    ).tag(config=True)

    @validate("node_memory")
    def _validate_node_memory(self, proposal):
        value = proposal.value
        if isinstance(value, str):
            try:
                return parse_size(value, "node_memory")
            except OptionsError as e:
                raise ValueError(f"MLHubKubernetesSpawner.node_memory: {e.message}") from None
        return value

    resource_request_ratio = Float(
        0.5,
        help="""Requests as a fraction of the limits (0 < ratio ≤ 1) for CPU and memory.

        ``1`` gives workspaces with limits the Guaranteed QoS class (nothing overcommitted);
        smaller values pack more workspaces on a node and let them burst up to their limits.
        Never 0: the scheduler must reserve something. GPUs always request what they limit.
        """,
    ).tag(config=True)

    @validate("resource_request_ratio")
    def _validate_ratio(self, proposal):
        if not 0 < proposal.value <= 1:
            raise ValueError(
                f"MLHubKubernetesSpawner.resource_request_ratio must be in (0, 1], got {proposal.value}"
            )
        return proposal.value

    gpu_resource_name = Unicode(
        objects.GPU_RESOURCE,
        help="""Extended resource that GPUs are requested as (the device plugin's), e.g. ``nvidia.com/gpu``.

        The default of ``gpu_resource_names``; set that one to offer MIG slices too.
        """,
    ).tag(config=True)

    gpu_resource_names = List(
        Unicode(),
        help="""Extended resources users may request GPUs as; the first is the default (``gpu_type`` empty).

        Default: ``[gpu_resource_name]``. With MIG (the device plugin's mixed strategy), e.g.
        ``["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb"]``. The form shows, per
        resource and GPU product (node label ``nvidia.com/gpu.product``), what the schedulable nodes can
        give and how much of it this hub's workspaces hold: that needs ``list`` on ``nodes`` (the chart's
        ``rbac.listNodes``); without it, the types are the resource names and no sizes are known.
        """,
    ).tag(config=True)

    @default("gpu_resource_names")
    def _default_gpu_resource_names(self):
        return [self.gpu_resource_name]

    @validate("gpu_resource_name", "gpu_resource_names")
    def _validate_gpu_resources(self, proposal):
        names = [proposal.value] if isinstance(proposal.value, str) else list(proposal.value)
        if not names:
            raise ValueError(f"MLHubKubernetesSpawner.{proposal.trait.name}: at least one resource name")
        for name in names:
            if not is_extended_resource(name):
                raise ValueError(
                    f"MLHubKubernetesSpawner.{proposal.trait.name}: {name!r} is not an extended resource "
                    "<domain>/<name> such as nvidia.com/gpu or nvidia.com/mig-1g.5gb"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"MLHubKubernetesSpawner.{proposal.trait.name}: names repeat: {names}")
        return proposal.value

    gpu_nodes_cache_seconds = Float(
        30,
        help="""How long the list of nodes (the GPU pools of the form and the policy) is reused, in seconds.

        Shared by all spawners of the hub; a failed listing is retried after the same time.
        """,
    ).tag(config=True)

    gpu_node_selector = Dict(
        help="""Node selector added to workspaces with GPUs, e.g. ``{"nvidia.com/gpu.present": "true"}``.""",
    ).tag(config=True)

    gpu_tolerations = List(
        Dict(),
        list(objects.DEFAULT_GPU_TOLERATIONS),
        help="""Tolerations added to workspaces with GPUs (API field names).

        The default tolerates the common ``nvidia.com/gpu`` NoSchedule taint of GPU nodes.
        """,
    ).tag(config=True)

    network_policy_enabled = Bool(
        True,
        help="""Create a NetworkPolicy per user at start (kept in place; cleanup removes it with the user).

        It lets a user's workspaces reach each other, and only them, the hub and proxy pods in:
        other users' pods are blocked. Needs ``create`` and ``update`` on ``networkpolicies``
        in the hub's namespace, and a network plugin that enforces policies.
        """,
    ).tag(config=True)

    network_policy_ingress_from = List(
        Dict(),
        [dict(p) for p in objects.DEFAULT_INGRESS_PEERS],
        help="""Peers (NetworkPolicyPeer, API field names) besides the user's own pods that may reach a workspace.

        The default: the pods labelled ``app.kubernetes.io/component`` ``hub`` or ``proxy`` (the
        proxy pod runs the SSH front) in the hub's namespace, as the chart labels them.
        """,
    ).tag(config=True)

    network_policy_hub_peers = List(
        Dict(),
        [dict(p) for p in objects.DEFAULT_HUB_PEERS],
        help="""Peers (NetworkPolicyPeer) that workspaces may reach as "the hub", on ``network_policy_hub_ports``.""",
    ).tag(config=True)

    network_policy_hub_ports = List(
        Int(),
        [8081],
        help="""TCP ports of the hub pod that workspaces may reach (its API); empty = all ports.""",
    ).tag(config=True)

    network_policy_blocked_cidrs = List(
        Unicode(),
        list(objects.DEFAULT_BLOCKED_CIDRS),
        help="""IPv4/IPv6 ranges workspaces may not reach although the rest of the internet is allowed.

        The default (the chart's with ``privateIPs: false``) blocks link-local ranges and the other
        cloud metadata addresses (169.254/16, fe80::/10, 100.100.100.200, 168.63.129.16,
        fd00:ec2::254, fd00:ec2::23) and private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7: the
        nodes, the LAN). ``list(objects.ALWAYS_BLOCKED_CIDRS)`` opens the private ranges.
        """,
    ).tag(config=True)

    network_policy_dns_peers = List(
        Dict(),
        [dict(p) for p in objects.DEFAULT_DNS_PEERS],
        help="""Peers (NetworkPolicyPeer) workspaces may send DNS to: the cluster's resolver.

        Default: the ``k8s-app: kube-dns`` pods (kube-dns, CoreDNS) in ``kube-system``. Add
        ``{"ipBlock": {"cidr": "169.254.20.10/32"}}`` for NodeLocal DNSCache. Empty: port 53 to
        any address (a DNS server on the LAN or the nodes becomes reachable).
        """,
    ).tag(config=True)

    network_policy_dns_ports = List(
        Int(),
        [53],
        help="""The resolver's ports (UDP and TCP) in ``network_policy_dns_peers`` (OpenShift: 5353).""",
    ).tag(config=True)

    hub_namespace = Unicode(
        help="""The namespace the hub and proxy pods run in (the peers ``network_policy_ingress_from`` and
        ``network_policy_hub_peers`` select pods there).

        Default: the hub pod's own namespace (its service account's), as KubeSpawner's ``{hubnamespace}``.
        With KubeSpawner's ``enable_user_namespaces`` (each user's workspaces in their own namespace) the
        user's NetworkPolicy lives in the user's namespace, and its peers that select pods only get a
        ``namespaceSelector`` ``kubernetes.io/metadata.name: <hub_namespace>``.
        """,
    ).tag(config=True)

    @default("hub_namespace")
    def _default_hub_namespace(self):
        return self._namespace_default()

    @validate("network_policy_blocked_cidrs")
    def _validate_blocked_cidrs(self, proposal):
        for cidr in proposal.value:
            if not objects.is_cidr(cidr):
                raise ValueError(
                    f"MLHubKubernetesSpawner.network_policy_blocked_cidrs: {cidr!r} is not a CIDR "
                    "such as 10.0.0.0/8 or fc00::/7"
                )
        return proposal.value

    # ---- who the workspace runs as, and Pod Security --------------------------------------

    uid = Union(
        [Int(), Callable()],
        default_value=1000,
        allow_none=True,
        help="""User id the workspace runs as (KubeSpawner's ``uid``: ``runAsUser``), whatever the image's ``USER``.

        Default 1000 (the workspace image's user). A custom image whose ``USER`` is root or another
        uid still runs as this one, so it can write ``/workspace`` (see ``fs_gid``) and so users cannot
        get root by choosing an image. ``None``: the image's ``USER`` (with ``pod_security_level``
        ``restricted`` the pod is refused if that is root). 0 needs ``pod_security_level = "baseline"``.
        A callable ``(spawner) -> int`` as in KubeSpawner.
        """,
    ).tag(config=True)

    gid = Union(
        [Int(), Callable()],
        default_value=100,
        allow_none=True,
        help="""Primary group id the workspace runs as (KubeSpawner's ``gid``: ``runAsGroup``). Default 100 (users).""",
    ).tag(config=True)

    fs_gid = Union(
        [Int(), Callable()],
        default_value=100,
        allow_none=True,
        help="""Group that owns the workspace's volumes (KubeSpawner's ``fs_gid``: the pod's ``fsGroup``).

        Default 100. The kubelet makes a fresh volume (e.g. a block-storage CSI disk, root-owned 0755)
        group-owned by it and group-writable, and the workspace's processes get it as a supplemental
        group: so uid 1000 can write ``/workspace``. How often the kubelet does that is
        ``fs_group_change_policy``. ``None``: no ``fsGroup`` (the volume keeps its owner).
        """,
    ).tag(config=True)

    supplemental_gids = Union(
        [List(Int()), Callable()],
        default_value=[],
        help="""More groups the workspace's processes get (KubeSpawner's ``supplemental_gids``:
        ``supplementalGroups``), e.g. the group of a shared NFS volume. Default none.""",
    ).tag(config=True)

    fs_group_change_policy = Enum(
        ["OnRootMismatch", "Always"],
        "OnRootMismatch",
        help="""When the kubelet applies ``fs_gid`` to a volume's files (the pod's ``fsGroupChangePolicy``).

        ``OnRootMismatch`` (default): only when the volume's top directory is not already owned by
        ``fs_gid`` with its permissions, so a restart with a volume of millions of files is not slowed
        down by a recursive chown. ``Always``: at every mount.
        """,
    ).tag(config=True)

    pod_security_level = Enum(
        list(objects.POD_SECURITY_LEVELS),
        "restricted",
        help="""The Pod Security Standard workspace pods conform to: ``restricted`` (default) or ``baseline``.

        ``restricted``: ``runAsNonRoot``, seccomp ``RuntimeDefault``, and every container (init
        containers too) without privilege escalation and with all capabilities dropped; a namespace
        labelled ``pod-security.kubernetes.io/enforce: restricted`` admits them. ``baseline``: for
        images that need more (``sudo``, a root process): no ``runAsNonRoot`` and no dropped
        capabilities (the runtime's default set), privilege escalation as KubeSpawner's
        ``allow_privilege_escalation`` says (set it to True for ``sudo``, and ``uid`` to 0 for root);
        seccomp ``RuntimeDefault``, the uid/gid and the port sysctl stay. A setting of the admin that
        the level refuses (a hostPath volume, ``privileged``, uid 0 under ``restricted``...) fails the
        start with a message naming it, before anything is created.
        """,
    ).tag(config=True)

    # ---- KubeSpawner settings with ML Hub's defaults --------------------------------------

    handle_legacy_names = Bool(
        False,
        help="""Migrate from a stock KubeSpawner deployment: adopt the user's PVC and stop the user's pod of it.

        ML Hub's meaning of KubeSpawner's setting, off by default. On, a start first looks for the
        user's objects under KubeSpawner's names (the operator's ``pvc_name_template``/``pod_name_template``,
        then ``claim-{user_server}``/``jupyter-{user_server}`` and the older ``claim-{username}--{servername}``
        and ``claim-{username}-{servername}``, in the ``safe`` and ``escape`` slug schemes). A PVC found there,
        when ML Hub's own does not exist, is mounted instead of a new empty one and gets ML Hub's owner
        labels (the cleanup service then treats it as ML Hub's); a pod found there is deleted (the old
        hub's server, holding the volume). An object is the user's only when KubeSpawner's
        ``hub.jupyter.org/username`` annotation is the user's name (older objects: the label is the user's
        name escaped): another user whose name renders to the same object name gets a new PVC of their own.
        """,
    ).tag(config=True)

    @default("port")
    def _default_port(self):
        return 8080

    @default("services_enabled")
    def _default_services_enabled(self):
        return True

    @default("storage_pvc_ensure")
    def _default_storage_pvc_ensure(self):
        return True

    @default("storage_capacity")
    def _default_storage_capacity(self):
        return "10Gi"

    @default("delete_pvc")
    def _default_delete_pvc(self):
        return False  # a deleted server's volume follows the cleanup policy (grace period)

    @default("pod_name_template")
    def _default_pod_name_template(self):
        # a plain name (no braces): KubeSpawner's template expansion leaves it as it is
        return naming.workspace_name(self.hub_name, self.user.name, self.name)

    @default("pvc_name_template")
    def _default_pvc_name_template(self):
        return naming.volume_name(self.hub_name, self.user.name, self.name)

    # ---- profiles: KubeSpawner's profile_list, one start at a time --------------------------

    @validate("profile_list")
    def _validate_profile_list(self, proposal):
        value = proposal.value
        if callable(value):
            return value  # checked each time it is called
        errors = profiles.profile_list_errors(value, self._is_setting)
        if errors:
            raise ValueError("MLHubKubernetesSpawner.profile_list: " + "; ".join(errors))
        return value

    def _is_setting(self, name):
        return name in self.class_trait_names(config=True)

    # {setting: (value before the profile, value the profile set)} of the settings the profile changed
    _profile_undo = None

    async def _profiles(self):
        """The profiles offered to this spawner's user, initialized ([] without ``profile_list``)."""
        profile_list = self.profile_list
        if callable(profile_list):
            profile_list = await maybe_future(profile_list(self))
            errors = profiles.profile_list_errors(profile_list, self._is_setting)
            if errors:
                message = "MLHubKubernetesSpawner.profile_list (the callable's result): " + "; ".join(errors)
                self.log.error("%s, for %s", message, self._log_name)
                raise web.HTTPError(500, "%s", message)
        return profiles.initialized_profiles(profile_list or [])

    def _profile_error(self, profile, message):
        text = f"MLHubKubernetesSpawner.profile_list, profile {profile['slug']!r}: {message}"
        self.log.error(text)
        return web.HTTPError(500, "%s", text)

    async def _chosen_profile(self, raw):
        """``(choice, keys, settings)`` of raw options: the :class:`~.profiles.ProfileChoice` (None without
        profiles), the keys of ``raw`` that are the profile's, and the settings it changes (new values)."""
        offered = await self._profiles()
        if not offered:
            return None, set(), {}
        profile, overrides = profiles.select_profile(offered, raw)
        fields = {"slug": profile["slug"], "display_name": profile.get("display_name") or profile["slug"]}
        settings = {}
        for override in overrides:
            for key, value in override.items():
                if callable(value):
                    value = await maybe_future(value(self))
                key = profiles.RENAMED_SETTINGS.get(key, key)
                if key in ("image", "cpu_limit", "mem_limit"):
                    fields[key] = self._profile_value(profile, key, value)
                    continue
                if key == "extra_resource_limits" and isinstance(value, dict):
                    value = dict(value)
                    for resource in self.gpu_resource_names:
                        if value.get(resource) is not None:
                            fields["gpus"], fields["gpu_type"] = self._profile_gpus(
                                profile, resource, value.pop(resource)
                            )
                current = settings.get(key, getattr(self, key))
                if isinstance(value, dict) and isinstance(current, dict):
                    value = profiles.merged(current, value)
                settings[key] = copy.deepcopy(value)
        return profiles.ProfileChoice(**fields), profiles.profile_option_keys(profile, raw), settings

    def _profile_value(self, profile, key, value):
        """A profile's image (a string), CPU limit (cores) or memory limit (bytes), as KubeSpawner reads them."""
        if key == "image":
            if not isinstance(value, str) or not value.strip():
                raise self._profile_error(profile, f"image must be an image name, got {value!r}")
            return value.strip()
        try:
            number = self.traits()[key].validate(self, value)
        except (TraitError, ValueError) as e:
            raise self._profile_error(profile, f"{key}: {e}") from None
        if number is None or number <= 0:
            raise self._profile_error(profile, f"{key} must be positive, got {value!r}")
        return number

    def _profile_gpus(self, profile, resource, count):
        """``(gpus, gpu_type)`` options of a profile's ``extra_resource_limits`` of a GPU resource."""
        try:
            number = int(str(count))
        except ValueError:
            raise self._profile_error(
                profile, f"extra_resource_limits {resource}: {count!r} is no count"
            ) from None
        if number < 0:
            raise self._profile_error(profile, f"extra_resource_limits {resource}: {count!r} is no count")
        return (str(number) if number else ""), ("" if resource == self.gpu_resource_names[0] else resource)

    def _apply_profile_settings(self, settings):
        undo = {}
        for name, value in settings.items():
            before = getattr(self, name)
            setattr(self, name, value)
            undo[name] = (before, getattr(self, name))
        self._profile_undo = undo

    def _undo_profile(self):
        """Put back the settings the last profile changed (those nobody has changed since)."""
        undo, self._profile_undo = self._profile_undo or {}, None
        for name, (before, applied) in undo.items():
            if getattr(self, name) is applied:
                setattr(self, name, before)

    async def parse_user_options(self, raw):
        """The mixin's, with the chosen profile: its settings applied to this spawner (until the next
        start or the stop), its image fixed, its limits the defaults and the ceiling."""
        self._undo_profile()
        choice, keys, settings = await self._chosen_profile(raw)
        self._apply_profile_settings(settings)
        try:
            policy = await self.current_policy()
            if choice is None:  # the admin's profiles (c.MLHubSpawner.profiles), if any
                options, policy = self.parse_with_profile(raw, policy)
            else:
                policy = profiles.constrained_policy(policy, choice)
                rest = {k: v for k, v in raw.items() if k not in keys}
                options = parse_options(profiles.with_choice(rest, choice), policy)
                options = replace(options, profile=choice.slug, profile_name=choice.display_name)
            self._check_image_user(options)
            return options, policy
        except BaseException:
            self._undo_profile()
            raise

    async def _apply_workspace_options(self, user_options):
        try:
            await super()._apply_workspace_options(user_options)
        except BaseException:
            self._undo_profile()  # a refused start keeps nothing of the profile
            raise

    async def _options_from_form(self, form_data):
        try:
            return await super()._options_from_form(form_data)
        finally:
            self._undo_profile()  # only checked here: the start applies it

    async def raw_options_from_form(self, form_data):
        """ML Hub's fields plus the profile's; the fields a chosen profile sets (image, GPUs) are its own."""
        if self.profiles:  # the admin's own profiles (profile_list is then unset)
            return await super().raw_options_from_form(form_data)
        raw = form_to_options(form_data)
        chosen = profiles.form_profile_options(form_data)
        if chosen:
            try:
                choice, _, _ = await self._chosen_profile({**raw, **chosen})
            except OptionsError:
                choice = None  # refused with its message when the options are checked
            if choice is not None and choice.image is not None:
                raw.pop("image", None)
            if choice is not None and choice.gpu_type is not None:
                raw.pop("gpus", None), raw.pop("gpu_type", None)
        return {**raw, **chosen}

    async def form_profiles(self, raw):
        if self.profiles:  # the admin's own profiles (profile_list is then unset)
            return await super().form_profiles(raw)
        return profiles.form_entries(await self._profiles(), raw)

    async def load_user_options(self):
        """Nothing: the profile was applied with the options (``parse_user_options``). KubeSpawner's
        would apply it a second time, merging dicts in place, and refuse ML Hub's options."""

    # ---- the backend hooks of the mixin ---------------------------------------------------

    _start_plan = None

    async def host_resources(self):
        return self.node_cpus, self.node_memory

    # ---- GPUs: what the cluster's nodes can give (cached, shared by all spawners) ------------------

    # {API server: (monotonic expiry, NodeList dict or None)}; refusals logged once per server and status
    _gpu_node_cache = {}
    _gpu_node_warned = set()

    async def _gpu_nodes(self):
        """The cluster's NodeList (API dicts), or None when it cannot be read (no ClusterRole, an error)."""
        host = self.api.api_client.configuration.host
        cached = MLHubKubernetesSpawner._gpu_node_cache.get(host)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        try:
            found = await asyncio.wait_for(self.api.list_node(), self.k8s_api_request_timeout)
            nodes = self.api.api_client.sanitize_for_serialization(found)
        except (ApiException, TimeoutError, aiohttp.ClientError, OSError) as e:
            status = getattr(e, "status", None) or type(e).__name__
            if (host, status) not in MLHubKubernetesSpawner._gpu_node_warned:
                MLHubKubernetesSpawner._gpu_node_warned.add((host, status))
                self.log.warning(
                    "Cannot list the cluster's nodes (%s %s): the GPU pools are unknown, GPU types are the "
                    "configured resource names. Grant get/list on nodes (the chart's rbac.listNodes).",
                    status,
                    getattr(e, "reason", None) or e,
                )
            nodes = None
        MLHubKubernetesSpawner._gpu_node_cache[host] = (
            time.monotonic() + self.gpu_nodes_cache_seconds,
            nodes,
        )
        return nodes

    async def gpu_inventory(self):
        """The GPU types workspaces may ask for, sized by the schedulable nodes (``policy.GPUTypes``).

        Nodes are not read when this spawner offers no GPUs; when they cannot be read the types are the
        configured resource names, of unknown size (the policy's ``max_gpus`` alone applies).
        """
        names = self.gpu_resource_names
        nodes = await self._gpu_nodes() if self.max_gpus != 0 else None
        if nodes is None:
            return gpus.unknown_gpu_types(names)
        return gpus.gpu_types(gpus.gpu_pools(nodes, names), names)

    async def gpu_status(self):
        """The form's GPU pools (``gpus.pool_status``): sizes and what this hub's workspaces hold; [] if unknown."""
        nodes = await self._gpu_nodes() if self.max_gpus != 0 else None
        if nodes is None:
            return []
        names = self.gpu_resource_names
        selector = (
            f"{naming.LABEL_ORIGIN}={self.hub_name},{naming.LABEL_COMPONENT}={naming.COMPONENT_WORKSPACE}"
        )
        try:
            found = await asyncio.wait_for(
                self.api.list_namespaced_pod(self.namespace, label_selector=selector),
                self.k8s_api_request_timeout,
            )
            pods = self.api.api_client.sanitize_for_serialization(found).get("items") or []
        except (ApiException, TimeoutError, aiohttp.ClientError, OSError) as e:
            self.log.warning("Cannot list the workspace pods for the GPU pools: %s", e)
            pods = []
        pools = gpus.gpu_pools(nodes, names)
        metrics.observe_gpu_counts(self.hub_name, sum(p.total for p in pools), gpus.held_by_user(pods, names))
        return gpus.pool_status(pools, gpus.held_gpus(pods, names, gpus.node_products(nodes)))

    def ssh_target(self):
        """The workspace Service's cluster DNS name and its SSH port.

        The full name (``dns_name_template``) resolves from any namespace the SSH front runs in.
        """
        return self.dns_name, self.ssh_port

    @property
    def network_policy_name(self):
        return self._adopted_policy or naming.network_name(self.hub_name, self.user.name)

    _adopted_policy = None

    async def _adopt_network_policy(self):
        """Keep one NetworkPolicy per user when its name changed (an earlier naming scheme).

        If the user has exactly one policy of this hub (by label, owner annotation checked) under
        another name, it is the one kept up to date.
        """
        selector = objects.owner_labels(self.hub_name, self.user.name, component=naming.COMPONENT_NETWORK)
        del selector[naming.LABEL_SERVER_NAME], selector[naming.LABEL_EXPIRATION]
        api = NetworkingV1Api(self.api.api_client)
        found = await asyncio.wait_for(
            api.list_namespaced_network_policy(
                self.namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
            ),
            self.k8s_api_request_timeout,
        )
        owned = [
            p for p in found.items if (p.metadata.annotations or {}).get(naming.LABEL_USER) == self.user.name
        ]
        if len(owned) == 1 and owned[0].metadata.name != self.network_policy_name:
            self._adopted_policy = owned[0].metadata.name

    def _gpu_count(self, options, policy):
        if options.gpus.startswith("device="):
            raise options_error(
                OptionsError("gpus", "GPU ids cannot be chosen on Kubernetes; ask for a number of GPUs")
            )
        return gpu_count(options.gpus, policy)

    # ---- lifecycle ------------------------------------------------------------------------

    def _gpu_type(self, options, policy):
        """``(resource, product)`` of this start's GPUs: the offered type named by ``gpu_type``."""
        gpu_type = policy.gpu_type(options.gpu_type)
        if gpu_type is None:  # offered when the options were checked, gone since (the nodes changed)
            raise options_error(OptionsError("gpu_type", f"{options.gpu_type!r} is no longer offered"))
        return gpu_type.resource, gpu_type.product

    def start(self):
        """KubeSpawner's contract: a plain method that sets ``_start_future`` to this start and returns it.

        KubeSpawner's ``progress()`` follows ``_start_future`` until it is done: set here at once, a
        restart's progress follows the restart, not the previous start's finished future.
        """
        self._start_future = asyncio.ensure_future(self._start_workspace())
        return self._start_future

    async def _start_workspace(self):
        this_start = asyncio.current_task()
        self.restore_image_traits()  # the configured port, command and user, not the last image's
        options = await self.validated_options()
        policy = await self.current_policy()
        run = self.image_run(options)
        count = self._gpu_count(options, policy)
        resource, product = self._gpu_type(options, policy)
        volume = self.persistent_volumes and options.mount_volume
        self._check_parent_settings(run)
        if self.handle_legacy_names:
            await self._take_over_legacy_objects(volume)
        # KubeSpawner reuses a PVC, deletes a pod (409) and a Service of our names: ours only
        if self.network_policy_enabled:
            await self._adopt_network_policy()
        await self._check_existing_owners(volume)
        self._start_plan = WorkspaceStart(
            options,
            count,
            self.plan_lifetime(options),
            volume,
            gpu_resource=resource,
            gpu_product=product,
            run=run,
        )
        self._apply_image_run(run)
        # KubeSpawner creates the PVC when this is on: this start decides
        self.storage_pvc_ensure = volume
        await self.get_pod_manifest()  # settings that Pod Security refuses fail here, before anything exists
        if self.network_policy_enabled:
            if self.enable_user_namespaces:
                await (
                    self._ensure_namespace()
                )  # the policy lives in the user's namespace: it must exist first
            await self._ensure_network_policy()
        self._starting = True
        try:
            kubespawner_start = super().start()
            self._start_future = this_start  # progress() keeps following the whole start
            started = await kubespawner_start
        finally:
            self._starting = False
        if count:
            await self.gpu_status()  # the metrics see the GPUs taken
        return started

    def _check_image_user(self, options):
        """Refuse (``OptionsError`` on ``image``) an image that needs root when Pod Security ``restricted`` applies."""
        settings = self.image_settings(options.image)
        if self.pod_security_level == "restricted" and images.image_run(settings).run_as_root:
            raise OptionsError(
                "image",
                f"{options.image} runs as root ({settings.convention} convention), which Pod Security "
                "'restricted' refuses: an admin must set "
                'c.MLHubKubernetesSpawner.pod_security_level = "baseline" (and label the namespace '
                "pod-security.kubernetes.io/enforce=baseline), or run_as_root False for it in "
                "workspace_image_settings",
            )

    def _apply_image_run(self, run):
        """KubeSpawner's port, command and user for this start's image (undone at the next start or the stop)."""
        values = {"port": run.port, "cmd": list(run.cmd) if run.cmd else None}
        if not run.use_args:
            values["args"] = []
        if run.run_as_root:
            values.update(uid=0, gid=0)
        self.apply_image_traits(values)

    # ---- KubeSpawner's settings: applied or refused (parent_settings) ------------------------

    def _parent_setting_errors(self, workspace_paths):
        names = [n for n in parent_settings.CHECKED_SETTINGS if n in self.traits()]
        values = {n: getattr(self, n) for n in names if not callable(getattr(self, n))}
        return parent_settings.value_errors(
            values, workspace_paths=workspace_paths, gpu_resources=self.gpu_resource_names
        )

    def config_errors(self):
        """The shared checks at hub start, and the KubeSpawner settings ML Hub refuses (each named as configured)."""
        errors = super().config_errors()
        try:
            image_paths = [s.volume_path for s in self.image_settings_table().values() if s.volume_path]
        except ValueError:
            image_paths = []  # refused by its own check, naming it
        for error in self._parent_setting_errors([self.volume_path, *image_paths]):
            name = error.split(":")[0].split(" ")[0]
            errors.append(self.configured_as(name) + error[len(name) :])
        return errors

    def image_settings_table(self):
        """The admin's per-image settings, parsed (``workspace_image_settings``)."""
        return images.parse_image_settings(self.workspace_image_settings)

    def _check_parent_settings(self, run):
        """At each start, after profiles and group overrides: the settings' values as this start uses them."""
        errors = self._parent_setting_errors([run.volume_path if run else self.volume_path])
        if errors:
            message = "ML Hub refuses these KubeSpawner settings: " + "; ".join(errors)
            self.log.error("%s (start of %s)", message, self._log_name)
            raise web.HTTPError(500, "%s", message)

    # ---- handle_legacy_names: a stock KubeSpawner deployment's PVC and pod ----------------

    def _legacy_names(self, templates, configured):
        return legacy.candidate_names(
            lambda template, scheme: self._expand_user_properties(template, slug_scheme=scheme),
            templates,
            configured if "{" in configured else None,
        )

    def _is_legacy(self, metadata):
        return legacy.is_users_legacy_object(metadata.labels, metadata.annotations, self.user.name)

    async def _take_over_legacy_objects(self, volume):
        """Stop the user's stock KubeSpawner pods; adopt the user's stock KubeSpawner PVC (none of ML Hub's)."""
        for name in self._legacy_names(legacy.POD_TEMPLATES, self.pod_name_template):
            metadata = await self._read_metadata("pod", name)
            if metadata is not None and self._is_legacy(metadata):
                self.log.warning(
                    "Stopping KubeSpawner's pod %s/%s of %s", self.namespace, name, self._log_name
                )
                await self._delete_legacy_pod(name)
        # KubeSpawner's own legacy search (a state of KubeSpawner < 7) takes a PVC by its name only
        self._state_kubespawner_version = None
        if not volume:
            return
        ours = await self._read_metadata("persistent_volume_claim", self.pvc_name)
        if ours is not None and not self._is_legacy(ours):
            return  # ML Hub's (or someone else's: the owner check refuses it)
        names = [self.pvc_name, *self._legacy_names(legacy.PVC_TEMPLATES, self.pvc_name_template)]
        for name in dict.fromkeys(names):
            metadata = (
                ours if name == self.pvc_name else await self._read_metadata("persistent_volume_claim", name)
            )
            if metadata is None:
                continue
            if self._is_legacy(metadata):
                await self._adopt_pvc(name)
                return
            if name != self.pvc_name:
                self.log.warning(
                    "Not adopting PVC %s/%s for %s: it is not theirs (%s)",
                    self.namespace,
                    name,
                    self._log_name,
                    (metadata.annotations or {}).get(legacy.USERNAME_KEY, "no owner annotation"),
                )

    async def _adopt_pvc(self, name):
        """Mount ``name`` (the user's KubeSpawner PVC) from now on, labelled as ML Hub's."""
        labels, annotations = self._owner_metadata(naming.COMPONENT_VOLUME)
        await asyncio.wait_for(
            self.api.patch_namespaced_persistent_volume_claim(
                name, self.namespace, {"metadata": {"labels": labels, "annotations": annotations}}
            ),
            self.k8s_api_request_timeout,
        )
        self.log.warning("Adopted KubeSpawner's PVC %s/%s for %s", self.namespace, name, self._log_name)
        self.pvc_name = name

    async def _delete_legacy_pod(self, name):
        try:
            await asyncio.wait_for(
                self.api.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=self.delete_grace_period
                ),
                self.k8s_api_request_timeout,
            )
        except ApiException as e:
            if e.status != 404:
                raise

        async def gone():
            return await self._read_metadata("pod", name) is None

        await exponential_backoff(
            gone, f"KubeSpawner's pod {self.namespace}/{name} did not stop", timeout=self.start_timeout
        )

    # ---- owners: never reuse, replace or delete what is not this workspace's ---------------

    _starting = False

    async def _ensure_namespace(self):
        """KubeSpawner's, with the hub's origin label on the user's namespace whatever
        ``user_namespace_labels`` says: the cleanup service and the chart's policies find users' namespaces by
        it. A namespace that exists already keeps its labels (KubeSpawner leaves it as it is)."""
        if self.user_namespace_labels.get(naming.LABEL_ORIGIN) != self.hub_name:
            self.user_namespace_labels = {**self.user_namespace_labels, naming.LABEL_ORIGIN: self.hub_name}
        await super()._ensure_namespace()

    async def _read_metadata(self, kind, name):
        """The metadata of ``kind``/``name`` in our namespace, or None if there is none."""
        if kind == "network_policy":
            read = NetworkingV1Api(self.api.api_client).read_namespaced_network_policy
        else:
            read = getattr(self.api, f"read_namespaced_{kind}")
        try:
            obj = await asyncio.wait_for(read(name, self.namespace), self.k8s_api_request_timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj.metadata

    def _check_owner(self, kind, name, metadata, server=True):
        """Refuse an object whose ``mlhub.origin`` label and owner annotations are not ours."""
        found = naming.owner_of(metadata.labels or {}, metadata.annotations or {})
        try:
            naming.check_owner(
                kind, name, found, self.hub_name, self.user.name, self.name if server else None
            )
        except naming.ForeignResourceError:
            self.log.error(
                "Refused %s %s/%s for %s: it belongs to %s", kind, self.namespace, name, self._log_name, found
            )
            raise

    def _pvc_per_server(self):
        """Whether each server has its own PVC: not with a ``pvc_name_template`` without the server name
        (e.g. ``claim-{username}``, one home for all of a user's servers, as in KubeSpawner)."""
        template = self.pvc_name_template
        return "{" not in template or "servername" in template or "user_server" in template

    async def _check_existing_owners(self, volume):
        """Before anything is created: every existing object under our names must be ours."""
        wanted = [("pod", self.pod_name, True)]
        if self.services_enabled:
            wanted.append(("service", self.pod_name, True))
        if volume:
            wanted.append(("persistent_volume_claim", self.pvc_name, self._pvc_per_server()))
        if self.network_policy_enabled:
            wanted.append(("network_policy", self.network_policy_name, False))
        found = await asyncio.gather(*(self._read_metadata(kind, name) for kind, name, _ in wanted))
        for (kind, name, server), metadata in zip(wanted, found, strict=True):
            if metadata is not None:
                self._check_owner(kind.replace("_", " "), name, metadata, server)

    async def stop(self, now=False):
        """Delete the pod, unless the pod under our name is someone else's.

        KubeSpawner also calls this when creating the pod answers 409: then the start is refused.
        """
        metadata = await self._read_metadata("pod", self.pod_name)
        if metadata is not None:
            try:
                if not (self.handle_legacy_names and self._is_legacy(metadata)):
                    self._check_owner("pod", self.pod_name, metadata)
            except naming.ForeignResourceError:
                if self._starting:
                    raise
                return  # our workspace is gone; the pod of that name is left alone
        await super().stop(now)
        if not self._starting:
            self.restore_image_traits()  # applied after the profile: undone before it
            self._undo_profile()  # the next start begins from the configured settings
        if self._start_plan is not None and self._start_plan.gpu_count:
            await self.gpu_status()  # the metrics see the GPUs freed

    async def poll(self):
        """KubeSpawner's, but a running pod of our name that is someone else's is not our workspace."""
        status = await super().poll()
        pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") if status is None else None
        if pod is not None:
            metadata = pod.get("metadata") or {}
            found = naming.owner_of(metadata.get("labels"), metadata.get("annotations"))
            if found != (self.hub_name, self.user.name, self.name or ""):
                self.log.error(
                    "Pod %s is not %s's workspace: it belongs to %s", self.pod_name, self._log_name, found
                )
                return 1
        return status

    async def delete_forever(self):
        """KubeSpawner's (deletes the PVC only if ``delete_pvc``), never someone else's PVC."""
        if self.delete_pvc:
            metadata = await self._read_metadata("persistent_volume_claim", self.pvc_name)
            if metadata is not None:
                try:
                    self._check_owner(
                        "persistent volume claim", self.pvc_name, metadata, self._pvc_per_server()
                    )
                except naming.ForeignResourceError:
                    return
        await super().delete_forever()

    async def _ensure_network_policy(self):
        """Create the user's NetworkPolicy, or bring an existing one up to the current settings."""
        ingress_from, hub_peers = self.network_policy_ingress_from, self.network_policy_hub_peers
        if (
            self.namespace != self.hub_namespace
        ):  # a bare podSelector would select pods of the user's namespace
            ingress_from = objects.peers_in_namespace(ingress_from, self.hub_namespace)
            hub_peers = objects.peers_in_namespace(hub_peers, self.hub_namespace)
        body = objects.make_network_policy(
            name=self.network_policy_name,
            hub_name=self.hub_name,
            username=self.user.name,
            ingress_from=ingress_from,
            hub_peers=hub_peers,
            hub_ports=self.network_policy_hub_ports,
            blocked_cidrs=self.network_policy_blocked_cidrs,
            dns_peers=self.network_policy_dns_peers,
            dns_ports=self.network_policy_dns_ports,
        )
        api = NetworkingV1Api(self.api.api_client)
        timeout = self.k8s_api_request_timeout

        async def attempt():
            try:
                await asyncio.wait_for(api.create_namespaced_network_policy(self.namespace, body), timeout)
            except TimeoutError:
                return False
            except ApiException as e:
                if e.status != 409:
                    self.log.error(
                        "Could not create NetworkPolicy %s: %s %s",
                        body["metadata"]["name"],
                        e.status,
                        e.reason,
                    )
                    raise
                metadata = await self._read_metadata("network_policy", body["metadata"]["name"])
                if metadata is not None:  # replaced only if it is this user's
                    self._check_owner("network policy", body["metadata"]["name"], metadata, server=False)
                try:
                    await asyncio.wait_for(
                        api.replace_namespaced_network_policy(body["metadata"]["name"], self.namespace, body),
                        timeout,
                    )
                except TimeoutError:
                    return False
            return True

        await exponential_backoff(
            attempt,
            f"Could not create NetworkPolicy {self.namespace}/{body['metadata']['name']}",
            timeout=self.k8s_api_request_retry_timeout,
        )

    async def progress(self):
        """The pod's events (KubeSpawner's progress), not the mixin's Docker steps."""
        async for event in KubeSpawner.progress(self):
            yield event

    # ---- what KubeSpawner sends, adjusted -------------------------------------------------

    def _owner_metadata(self, component, expiration=0, gpus=0):
        labels = objects.owner_labels(self.hub_name, self.user.name, self.name, component, expiration, gpus)
        return labels, objects.owner_annotations(self.user.name, self.name, expiration)

    def get_env(self):
        env = super().get_env()
        plan = self._start_plan
        if plan is None:
            return env
        return objects.workspace_env(
            env,
            plan.options,
            ssh_host=self.ssh_target()[0],
            gpu_count=plan.gpu_count,
            run=plan.run,
            volume_mounted=plan.volume,
        )

    def _secure_pod(self, pod):
        """The pod with the security contexts of ``pod_security_level``; refused if the admin's settings conflict."""
        pod = objects.secure_pod(
            pod,
            level=self.pod_security_level,
            fs_group_change_policy=self.fs_group_change_policy,
            low_port=objects.lowest_bound_port([self.port, self.ssh_port]),
        )
        conflicts = objects.pod_security_conflicts(pod, self.pod_security_level)
        if conflicts:
            raise ValueError(
                f"The workspace pod of {self._log_name} does not conform to Pod Security "
                f"{self.pod_security_level!r} (MLHubKubernetesSpawner.pod_security_level): "
                + "; ".join(conflicts)
            )
        return pod

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        plan = self._start_plan
        if plan is None:
            return self._secure_pod(pod)
        options = plan.options
        labels, annotations = self._owner_metadata(
            naming.COMPONENT_WORKSPACE, plan.expiration, plan.gpu_count
        )
        volumes, mounts = objects.workspace_volumes(
            pvc_name=self.pvc_name if plan.volume else None,
            volume_path=plan.run.volume_path if plan.run else self.volume_path,
            shm_size=options.shm_size,
        )
        pod = objects.customize_pod(
            pod,
            image=options.image,
            labels=labels,
            annotations=annotations,
            resources=objects.resource_requirements(
                cpu_limit=options.cpu_limit,
                mem_limit=options.mem_limit,
                gpu_count=plan.gpu_count,
                request_ratio=self.resource_request_ratio,
                gpu_resource=plan.gpu_resource,
                cpu_request=self.cpu_guarantee,
                mem_request=self.mem_guarantee,
            ),
            volumes=volumes,
            volume_mounts=mounts,
            node_selector={  # the profile's (c.MLHubSpawner.profiles), then the GPU nodes'
                **options.node_selector,
                **(
                    objects.gpu_node_selector(self.gpu_node_selector, plan.gpu_product)
                    if plan.gpu_count
                    else {}
                ),
            },
            tolerations=self.gpu_tolerations if plan.gpu_count else (),
            image_pull_policy="Always" if options.update else None,
        )
        return self._secure_pod(pod)

    def get_pvc_manifest(self):
        labels, annotations = self._owner_metadata(naming.COMPONENT_VOLUME)
        return objects.customize_pvc(super().get_pvc_manifest(), labels=labels, annotations=annotations)

    def get_service_manifest(self, owner_reference, port):
        plan = self._start_plan
        labels, annotations = self._owner_metadata(naming.COMPONENT_WORKSPACE, plan.expiration if plan else 0)
        return objects.customize_service(
            super().get_service_manifest(owner_reference, port),
            labels=labels,
            annotations=annotations,
            # KubeSpawner's selector (user and server slugs) plus the hub: two hubs, one namespace
            selector={naming.LABEL_ORIGIN: self.hub_name},
            ssh_port=self.ssh_port,
        )
