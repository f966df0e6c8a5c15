"""``MLHubDockerSpawner``: DockerSpawner with per-user networks, volumes, limits and a policy.

Thin orchestration only: options come validated from :mod:`mlhubspawner.spawner_base`, names and
labels from :mod:`mlhubspawner.naming`, create arguments from :mod:`.objects`, networks from
:mod:`.networks`. Every Docker call goes through DockerSpawner's ``docker()`` helper, on a thread
pool of ``docker_threads`` workers, so many users spawning at once are not serialized.
"""

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from docker.errors import APIError, ImageNotFound, NotFound
from dockerspawner import DockerSpawner
from requests.exceptions import RequestException
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Float, Int, List, Unicode, default, validate
from traitlets.utils.importstring import import_item

from .. import gpus, images, metrics, naming
from ..options import OptionsError
from ..settings import Settings
from ..spawner_base import STATE_KEY, MLHubSpawnerMixin, options_error, workspace_env
from . import egress, gpu_discovery, mounts, objects, parent_settings
from .networks import (
    NetworkAllocator,
    hub_is_attached,
    is_already_attached,
    network_gateway,
    validate_pool,
)

_HOST_CACHE_SECONDS = 60


class MLHubDockerSpawner(MLHubSpawnerMixin, DockerSpawner):
    """Spawn ML Hub workspaces as Docker containers, one network per user."""

    docker_threads = Int(
        16,
        min=1,
        help="""Worker threads for Docker API calls, shared by all spawners of this hub.

        DockerSpawner uses one thread, which serializes every user's container start and stop;
        ``benchmarks/spawn.py`` measures the effect on concurrent spawns.
        """,
    ).tag(config=True)

    subnet_pool = Unicode(
        "10.208.0.0/12",
        help="""Private address range the per-user networks' subnets are taken from.

        Must lie inside 10/8, 172.16/12 or 192.168/16 and must not collide with networks the
        host needs. Example: ``c.MLHubDockerSpawner.subnet_pool = "10.100.0.0/14"``.
        """,
    ).tag(config=True)

    subnet_prefix_length = Int(
        26,
        help="""Size of each user network's subnet (``26`` = 61 workspaces); between the pool's and /29.

        The default pool holds 16384 such networks, handed out lowest first (the first 1024
        users fit in 10.208.0.0/16).
        """,
    ).tag(config=True)

    volume_path = Unicode("/workspace", help="""Where the workspace's persistent volume is mounted.""").tag(
        config=True
    )

    connect_hub_via_gateway = Bool(
        False,
        help="""Let workspaces reach the hub API through their network's gateway.

        For a hub running on the Docker host itself (``make run``): the hub must listen on an
        address the gateway reaches (``c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"``).
        When the hub runs in a container on the user networks, leave this off and set
        ``hub_container`` instead.
        """,
    ).tag(config=True)

    hub_container = Unicode(
        "",
        help="""Id or name of the container the hub runs in (the hub image sets it), or empty.

        Every user network the spawner creates gets this container attached, with the hub's name
        as network alias, so workspaces reach the hub API as ``http://<hub_name>:<port>``.
        Defaults to the ``MLHUB_HUB_CONTAINER`` environment variable.
        """,
    ).tag(config=True)

    @default("hub_container")
    def _default_hub_container(self):
        return os.environ.get("MLHUB_HUB_CONTAINER", "")

    egress_firewall = Bool(
        True,
        help="""Close workspaces' egress on the Docker host (nftables table ``inet mlhub-<hub>``).

        Workspaces then reach the internet, the hub API and DNS, but not the host's other
        services, link-local addresses (cloud metadata: 169.254.0.0/16) nor, unless
        ``egress_allow_private``, private ranges. Loaded by a short-lived helper container
        (host network, NET_ADMIN) before the first workspace starts; if it cannot be loaded,
        workspaces do not start. Turn off only on engines where it cannot work (a rootless or
        remote engine, a host without nftables), and firewall the workspaces otherwise.
        """,
    ).tag(config=True)

    egress_allow_private = Bool(
        False,
        help="""Let workspaces reach private addresses (10/8, 172.16/12, 192.168/16, 100.64/10): the LAN.

        The host's own addresses and link-local addresses stay closed; Docker still isolates
        users' networks from each other.
        """,
    ).tag(config=True)

    egress_dns_servers = List(
        Unicode(),
        help="""Nameservers (IPv4) workspaces' DNS may reach on port 53, besides the host's own.

        The host's nameservers (``/etc/resolv.conf`` and systemd-resolved's upstream list) are
        added automatically; list here the engine's ``--dns`` servers if the daemon sets any.
        """,
    ).tag(config=True)

    egress_helper_image = Unicode(
        "",
        help="""Image of the helper container that loads the egress rules (it needs ``nft``; never pulled).

        Empty: ``$MLHUB_HUB_IMAGE``, else the hub container's own image, else ``mlhub:<version>``.
        """,
    ).tag(config=True)

    @validate("egress_dns_servers")
    def _validate_egress_dns_servers(self, proposal):
        try:
            return egress.validate_dns_servers(proposal.value)
        except ValueError as e:
            raise ValueError(f"MLHubDockerSpawner.egress_dns_servers: {e}") from None

    pids_limit = Int(
        4096,
        min=0,
        help="""Most processes and threads one workspace may run at once (0 = unlimited).

        Docker's default is unlimited: one workspace's fork bomb would exhaust the host's process
        table for everyone. 4096 leaves room for data loaders and BLAS thread pools; raise it with
        ``c.MLHubDockerSpawner.pids_limit = 16384``.
        """,
    ).tag(config=True)

    no_new_privileges = Bool(
        True,
        help="""Start workspaces with ``no-new-privileges``: setuid binaries (``sudo``, ``su``) gain nothing.

        Turn off only for images whose users must become root through ``sudo``.
        """,
    ).tag(config=True)

    cap_drop = List(
        Unicode(),
        ["NET_RAW"],
        help="""Capabilities removed from Docker's default set in every workspace.

        ``NET_RAW`` (the default) refuses raw and packet sockets: no forged packets or ARP spoofing
        on the user network (``ping`` needs it). ``[]`` keeps Docker's default set.
        """,
    ).tag(config=True)

    @validate("cap_drop")
    def _validate_cap_drop(self, proposal):
        for name in proposal.value:
            if not name.replace("_", "").isalnum() or not name.isupper():
                raise ValueError(
                    f"MLHubDockerSpawner.cap_drop: {name!r} is not a capability name such as NET_RAW"
                )
        return proposal.value

    ready_poll_interval = Float(
        0.05,
        help="""Seconds between checks that a started workspace accepts connections.

        The hub's own check backs off exponentially and notices a ready server seconds late;
        the spawner returns as soon as the port answers.
        """,
    ).tag(config=True)

    @validate("subnet_prefix_length")
    def _validate_prefix(self, proposal):
        validate_pool(self.subnet_pool, proposal.value)
        return proposal.value

    @validate("subnet_pool")
    def _validate_subnet_pool(self, proposal):
        validate_pool(proposal.value, self.subnet_prefix_length)
        return proposal.value

    @default("port")
    def _default_port(self):
        return 8080

    # ML Hub's waits as defaults, so that an operator's c.Spawner/c.DockerSpawner values still win
    @default("http_timeout")
    def _default_http_timeout(self):
        return 120

    @default("start_timeout")
    def _default_start_timeout(self):
        return 300

    @default("image")
    def _default_image(self):
        # MLHUB_WORKSPACE_IMAGE as a default, so that an operator's c.DockerSpawner.image still wins
        return os.environ.get("MLHUB_WORKSPACE_IMAGE", "").strip() or Settings.workspace_image

    @default("network_name")
    def _default_network_name(self):
        return naming.network_name(self.hub_name, self.user.name)

    @default("object_name")
    def _object_name_default(self):
        if self.user is None:  # a spawner made for hub-wide work (GPU discovery at start)
            return ""
        return naming.workspace_name(self.hub_name, self.user.name, self.name)

    gpu_ids = List(
        Unicode(),
        help="""GPUs workspaces may use, instead of asking the engine: indices (``0,1``) or UUIDs (``GPU-…``).

        Defaults to ``$GPU_IDS``. Empty (the default) means: discover them through the engine with a
        short probe container (``docker run --gpus all <image> nvidia-smi``), which works for a hub in
        a container and for a remote engine on any host with NVIDIA's container toolkit. Set it only
        to hand out a subset, or where the probe cannot work.
        """,
    ).tag(config=True)

    gpu_driver = Unicode(
        "nvidia", help="""The device driver named in GPU DeviceRequests (``docker run --gpus``)."""
    ).tag(config=True)

    gpu_probe_image = Unicode(
        "",
        help="""Image of the GPU discovery probe (any glibc image; never pulled).

        Empty: the hub container's own image, else ``$MLHUB_HUB_IMAGE``, else the default workspace
        image, whichever the engine already has.
        """,
    ).tag(config=True)

    @default("gpu_ids")
    def _default_gpu_ids(self):
        return [part for part in os.environ.get("GPU_IDS", "").replace(" ", "").split(",") if part]

    @validate("gpu_ids")
    def _validate_gpu_ids(self, proposal):
        try:
            gpus.inventory_from_ids(proposal.value)
        except ValueError as e:
            raise ValueError(f"MLHubDockerSpawner.gpu_ids (GPU_IDS): {e}") from None
        return proposal.value

    allocated_gpus = List(
        Unicode(), help="GPU UUIDs (or configured ids) of the last start (persisted in state)."
    )

    volume_name = Unicode(help="Name of the workspace's volume (persisted in state).")

    @default("volume_name")
    def _default_volume_name(self):
        return naming.volume_name(self.hub_name, self.user.name, self.name)

    @default("client_kwargs")
    def _default_client_kwargs(self):
        return {"max_pool_size": max(10, self.docker_threads)}

    # ---- shared per-process machinery -----------------------------------------------------

    _executors = {}
    _allocators = {}
    _host = None  # (timestamp, cpus, memory)
    _gpu_lock = asyncio.Lock()
    _gpu_discoveries = {}  # (engine URL, driver) -> gpu_discovery.Discovery

    @property
    def executor(self):
        executor = MLHubDockerSpawner._executors.get(self.docker_threads)
        if executor is None:
            executor = ThreadPoolExecutor(self.docker_threads, thread_name_prefix="mlhub-docker")
            MLHubDockerSpawner._executors[self.docker_threads] = executor
        return executor

    @property
    def allocator(self):
        key = (self.subnet_pool, self.subnet_prefix_length)
        allocator = MLHubDockerSpawner._allocators.get(key)
        if allocator is None:
            allocator = NetworkAllocator(self.docker, *key, log=self.log)
            MLHubDockerSpawner._allocators[key] = allocator
        return allocator

    async def host_resources(self):
        cached = MLHubDockerSpawner._host
        if cached is None or time.monotonic() - cached[0] > _HOST_CACHE_SECONDS:
            info = await self.docker("info")
            cached = (time.monotonic(), float(info["NCPU"]), int(info["MemTotal"]))
            MLHubDockerSpawner._host = cached
        return cached[1], cached[2]

    # ---- GPUs ---------------------------------------------------------------------------

    @property
    def gpu_discovery(self):
        """The GPU discovery (cache) of this spawner's engine, shared by the process."""
        key = (self.client.base_url, self.gpu_driver)
        return MLHubDockerSpawner._gpu_discoveries.setdefault(key, gpu_discovery.Discovery())

    async def gpu_inventory(self, refresh=False):
        if self.gpu_ids:
            return gpus.inventory_from_ids(self.gpu_ids)
        return (await self.gpu_discovery.get(self, refresh=refresh)).gpus

    async def gpu_holders(self, exclude_self=True):
        """``{gpu id: ["user" or "user/server", ...]}`` from the labels of this hub's live containers."""
        live = await self.docker(
            "containers",
            all=True,
            filters={"label": [f"{naming.LABEL_ORIGIN}={self.hub_name}", naming.LABEL_GPUS]},
        )
        holders = [
            (_holder(c["Labels"]), c["Labels"].get(naming.LABEL_GPUS))
            for c in live
            if c["State"] in ("running", "created", "restarting", "paused")
            and not (exclude_self and c["Names"][0].lstrip("/") == self.object_name)
        ]
        return gpus.gpus_in_use(holders, await self.gpu_inventory())

    async def gpu_status(self):
        status = gpus.status(await self.gpu_inventory(), await self.gpu_holders(exclude_self=False))
        metrics.observe_gpus(self.hub_name, status)
        return status

    def held_gpus(self):
        """What this workspace's GPUs are, as users see them (from the cached inventory; no I/O)."""
        if self.gpu_ids:
            inventory = gpus.inventory_from_ids(self.gpu_ids)
        else:
            result = self.gpu_discovery.result
            inventory = result.gpus if result is not None else []
        return [(gpus.resolve(ref, inventory) or gpus.GPU("", ref)).describe() for ref in self.allocated_gpus]

    async def gpu_overview(self, refresh=False):
        """For the admin page: each GPU with its holders, and how the inventory was found."""
        await self.gpu_inventory(refresh=refresh)
        status = await self.gpu_status()
        if self.gpu_ids:
            source = f"configured: c.MLHubDockerSpawner.gpu_ids / GPU_IDS = {','.join(self.gpu_ids)}"
            return {"gpus": status, "source": source, "probed_at": None, "ok": True}
        result = self.gpu_discovery.result
        return {"gpus": status, "source": result.message, "probed_at": result.probed_at, "ok": result.ok}

    async def _refresh_gpu_metrics(self):
        """After a GPU workspace started or stopped: the metrics see it (never fails the start or stop)."""
        try:
            await self.gpu_status()
        except (APIError, RequestException) as e:
            self.log.warning("GPU metrics not refreshed: %s", e)

    @classmethod
    async def discover_gpus_at_start(cls, config):
        """Probe the engine's GPUs once at hub start (the log says what it found), without a user."""
        spawner = cls(config=config)
        try:
            if not spawner.gpu_ids:
                await spawner.gpu_inventory(refresh=True)
            await spawner.gpu_status()
        except (APIError, RequestException, OSError) as e:
            spawner.log.warning("GPU discovery at hub start failed: %s", e)

    async def _allocate_gpus(self, request):
        """Concrete GPU ids for this start (call it holding ``_gpu_lock``)."""
        if not request:
            return []
        policy = await self.current_policy()
        try:
            return gpus.allocate(
                request,
                await self.gpu_inventory(),
                await self.gpu_holders(),
                sharing=policy.gpu_sharing,
                prefer=self.allocated_gpus,
            )
        except OptionsError as e:
            raise options_error(e) from None

    # ---- DockerSpawner's container settings (mlhubspawner/docker/parent_settings.py) ------

    @classmethod
    def config_section_errors(cls, config):
        """The shared section checks, and the DockerSpawner settings ML Hub would ignore (named as configured)."""
        return [*super().config_section_errors(config), *parent_settings.refused_settings(config, cls)]

    def config_errors(self):
        """The shared checks at hub start, and the values of DockerSpawner's settings ML Hub refuses (mount
        targets, ``extra_*`` keys; templates rendered for the check's user, each start checks its own)."""
        return [*super().config_errors(), *parent_settings.check_values(self)]

    def template_namespace(self):
        """DockerSpawner's template namespace; ``{imagename}`` is this start's image, as in DockerSpawner."""
        namespace = super().template_namespace()
        options = self.workspace_options
        if options is not None and options.image:
            namespace["imagename"] = options.image.replace("/", "-").replace(":", "-")
        return namespace

    def parent_mount_specs(self):
        """``[(setting, binds, mounts)]`` of ``volumes``, ``read_only_volumes`` and ``mounts``.

        Rendered by DockerSpawner's own ``format_volume_name`` (its templates and escaping); a
        ValueError names the setting whose template cannot be rendered.
        """
        namespace = self.template_namespace()
        specs = []
        for name, value in (("volumes", self.volumes), ("read_only_volumes", self.read_only_volumes)):
            where = f"DockerSpawner.{name}"
            mounts.check_raw_values(mounts.volume_templates(value), namespace, where)
            try:
                binds = self._volumes_to_binds(value, {}, mode="ro" if name.startswith("read") else "rw")
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
                raise ValueError(f"{where}: {_template_error(e, namespace)}") from None
            specs.append((where, binds, []))
        mounts.check_raw_values(mounts.mount_templates(self.mounts), namespace, "DockerSpawner.mounts")
        try:
            made = mounts.make_mounts(self.mounts, lambda template: self.format_volume_name(template, self))
        except (KeyError, IndexError, AttributeError) as e:
            raise ValueError(f"DockerSpawner.mounts: {_template_error(e, namespace)}") from None
        specs.append(("DockerSpawner.mounts", {}, made))
        return specs

    async def _parent_spec(self, volume_path, volume):
        """What DockerSpawner's settings add to this start's container, checked before anything is created.

        Returns ``(binds, mounts, extra_create, extra_host)``; a refused value is a 500 naming the setting.
        """
        try:
            specs = self.parent_mount_specs()
            mounts.check_mounts(specs, [volume_path], own_volume=volume)
            extra_create = self._render_templates(await self._evaluated(self.extra_create_kwargs) or {})
            extra_host = self._render_templates(await self._evaluated(self.extra_host_config) or {})
            refused = parent_settings.refused_extra_keys(extra_create, extra_host)
            if refused:
                raise ValueError(refused[0])
        except ValueError as e:
            message = f"The hub's configuration refuses this workspace: {e}"
            self.log.error("%s: %s", self._log_name, message)
            error = web.HTTPError(500, "%s", message)
            error.jupyterhub_message = message
            raise error from None
        binds = {}
        for _, spec_binds, _ in specs:
            binds.update(spec_binds)  # read-only after read-write, as DockerSpawner's volume_binds
        return binds, [m for _, _, made in specs for m in made], extra_create, extra_host

    async def _evaluated(self, value):
        value = self._eval_if_callable(value)
        if asyncio.iscoroutine(value):
            value = await value
        return value

    # ---- state: names are kept, so a change of naming scheme never orphans a workspace ----

    def get_state(self):
        state = super().get_state()
        state[STATE_KEY]["gpus"] = list(self.allocated_gpus)
        state[STATE_KEY]["names"] = {
            "container": self.object_name,
            "network": self.network_name,
            "volume": self.volume_name,
        }
        return state

    def load_state(self, state):
        super().load_state(state)
        self.allocated_gpus = (state.get(STATE_KEY) or {}).get("gpus") or []
        names = (state.get(STATE_KEY) or {}).get("names") or {}
        for key, trait in (
            ("container", "object_name"),
            ("network", "network_name"),
            ("volume", "volume_name"),
        ):
            if names.get(key):
                setattr(self, trait, names[key])

    # ---- environment ----------------------------------------------------------------------

    def workspace_env(self, options, gateway, gpu_ids=(), run=None):
        """The env of one start: the user's vars, then ours (which the user cannot override)."""
        # "void": an image that says NVIDIA_VISIBLE_DEVICES=all gets no GPU it was not given
        visible = ",".join(gpu_ids) if gpu_ids else "void"
        env = workspace_env(self.get_env(), options, self.object_name, visible, run, options.mount_volume)
        # the hub's own URL (loopback) as a workspace reaches it: its network's gateway, or by name
        hub_host = gateway if self.connect_hub_via_gateway else self.hub_name if self.hub_container else None
        if hub_host and not self.hub_connect_url:  # an operator's hub_connect_url is used as given
            for key in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL"):
                if env.get(key):
                    env[key] = _with_host(env[key], hub_host)
        return env

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self):
        self._progress_reset()
        self.restore_image_traits()  # the configured port, not the last image's
        options = await self.validated_options()
        run = self.image_run(options)
        self.apply_image_traits({"port": run.port})  # JUPYTERHUB_SERVICE_URL and the route name it
        owner_labels = dict(hub_name=self.hub_name, username=self.user.name, server_name=self.name)
        volume = self.volume_name if options.mount_volume else None
        # the operator's mounts and extra settings, refused before anything is created
        parent = await self._parent_spec(run.volume_path, volume)
        self.emit_progress(10, f"Checking image {options.image}")
        image = await self._ensure_image(options.image, refresh=options.update)
        network_existed = await self._adopt_user_network()
        # network and volume are independent: prepare them side by side
        self.emit_progress(
            25, f"Preparing network {self.network_name}" + (f" and volume {volume}" if volume else "")
        )
        network, new_volume = prepared = await asyncio.gather(
            self.allocator.ensure(
                self.network_name,
                naming.resource_labels(**owner_labels, component=naming.COMPONENT_NETWORK),
            ),
            self._ensure_volume(volume, owner_labels),
            return_exceptions=True,
        )
        failed = [result for result in prepared if isinstance(result, BaseException)]
        if failed:  # e.g. a foreign network or volume under our name: nothing half-created
            if new_volume is True:
                await self.docker("remove_volume", volume, force=True)
            if not network_existed and not isinstance(network, BaseException):
                await self._remove_new_network(network)
            raise failed[0]

        try:
            await self._attach_hub(network)
            await self._check_links()
            await egress.ensure_egress(self, network)
            expiration = self.plan_lifetime(options)
            self.emit_progress(55, "Creating the workspace container")
            # picking GPUs and creating the container that holds them is one step, one spawn at a time
            async with MLHubDockerSpawner._gpu_lock if options.gpus else contextlib.nullcontext():
                gpu_ids = await self._allocate_gpus(options.gpus)
                labels = naming.resource_labels(
                    **owner_labels, component=naming.COMPONENT_WORKSPACE, expiration=expiration, gpus=gpu_ids
                )
                create_kwargs, host_config = self._container_spec(
                    options, labels, volume, network_gateway(network), image, gpu_ids, run, parent
                )
                wanted_hash = objects.config_hash(create_kwargs, host_config)
                create_kwargs["labels"][naming.LABEL_CONFIG_HASH] = wanted_hash
                await self._create_or_reuse(create_kwargs, host_config, wanted_hash, options)
        except Exception:
            # a workspace that never started leaves no volume (nor a network of its own) behind
            if new_volume:
                await self.docker("remove_volume", volume, force=True)
            if not network_existed:
                await self._remove_new_network(network)
            raise
        if self.post_start_cmd:  # as DockerSpawner: after every start, output in the log
            self.emit_progress(80, "Running the post-start command")
            await self.post_start_exec()
        self.allocated_gpus = gpu_ids
        if gpu_ids:
            await self._refresh_gpu_metrics()
        ip, port = await self.get_ip_and_port()
        self.emit_progress(85, "Waiting for the workspace to answer")
        await self._wait_until_listening(ip, port)
        if run.convention == images.ML_WORKSPACE:
            # its nginx listens before Jupyter behind it answers (502 meanwhile)
            await self._wait_until_answering(ip, port, self.server.base_url if self.server else "/")
        return ip, port

    async def _adopt_user_network(self):
        """Keep a user's workspaces on one network when its name changed (an earlier naming scheme).

        If no network has our name, the user's one labelled network of this hub is used instead.
        Returns whether the user's network exists already (False: this start creates it).
        """
        try:
            await self.docker("inspect_network", self.network_name)
            return True
        except NotFound:
            pass
        owner = {naming.LABEL_USER: self.user.name, naming.LABEL_COMPONENT: naming.COMPONENT_NETWORK}
        found = await self.docker("networks", filters=naming.origin_filter(self.hub_name, **owner))
        if len(found) == 1:
            self.log.info(
                "Using %s's network %s (named by an earlier scheme)", self.user.name, found[0]["Name"]
            )
            self.network_name = found[0]["Name"]
            return True
        return False

    async def _check_links(self):
        """Refuse ``links`` to containers that are not on the user's network (they would not resolve)."""
        if not self.links:
            return
        attrs = await self.docker("inspect_network", self.network_name)
        members = attrs.get("Containers") or {}
        names = {info.get("Name") for info in members.values()}
        for target in self.links:
            if target not in names and not any(cid.startswith(target) for cid in members):
                message = (
                    f"The hub's configuration refuses this workspace: DockerSpawner.links: container "
                    f"{target!r} is not on {self.network_name}, this user's network; a workspace reaches "
                    "only containers on its user's network (the hub container, hub_container, is on every one)"
                )
                self.log.error("%s: %s", self._log_name, message)
                error = web.HTTPError(500, "%s", message)
                error.jupyterhub_message = message
                raise error

    async def _remove_new_network(self, network):
        """Remove the network this failed start created, unless another workspace joined it meanwhile."""
        try:
            attrs = await self.docker("inspect_network", network["Id"])
            others = [c for c in (attrs.get("Containers") or {}) if not self._is_hub_container(c)]
            if others:
                return
            if self.hub_container:
                with contextlib.suppress(APIError):
                    await self.docker("disconnect_container_from_network", self.hub_container, network["Id"])
            await self.docker("remove_network", network["Id"])
            self.allocator.forget(attrs)
            self.log.info("Removed network %s: the start that created it failed", attrs["Name"])
        except APIError as e:
            self.log.warning("Could not remove network %s after a failed start: %s", network.get("Name"), e)

    def _is_hub_container(self, container_id):
        return bool(self.hub_container) and (
            container_id.startswith(self.hub_container) or self.hub_container.startswith(container_id[:12])
        )

    async def _attach_hub(self, network):
        """Put the hub container on the user's network (alias: the hub's name), once."""
        if not self.hub_container or hub_is_attached(network, self.hub_container):
            return
        try:
            await self.docker(
                "connect_container_to_network", self.hub_container, network["Id"], aliases=[self.hub_name]
            )
        except APIError as e:
            if not is_already_attached(e):
                raise
        self.log.info("Attached the hub container to network %s", network["Name"])

    async def _create_or_reuse(self, create_kwargs, host_config, wanted_hash, options):
        """Start the existing container if nothing changed, else (re)create it; then start it."""
        existing = await self._inspect_container()
        reused = existing is not None and self._reusable(existing, wanted_hash, options)
        if reused:
            self._reuse_token(existing)
        else:
            if existing is not None:
                await self.docker("remove_container", self.object_id, v=True, force=True)
            await self._create(create_kwargs, host_config)
        self.emit_progress(70, "Starting the workspace")
        try:
            await self.start_object()
        except APIError as e:
            if not reused:
                raise
            # e.g. its network was removed and recreated meanwhile: a fresh container will do
            self.log.warning("Could not restart %s (%s); recreating it", self.object_name, e)
            await self._create(create_kwargs, host_config)
            await self.start_object()

    async def _ensure_volume(self, volume, owner_labels):
        """Create the workspace's volume if missing; returns True if it was created now."""
        if volume is None:
            return False
        try:
            existing = await self.docker("inspect_volume", volume)
        except NotFound:
            labels = naming.resource_labels(**owner_labels, component=naming.COMPONENT_VOLUME)
            # the engine hands back an existing volume of that name as is: check whose it is
            created = await self.docker(
                "create_volume", **objects.make_volume_kwargs(name=volume, labels=labels)
            )
            self._check_owner("volume", volume, created.get("Labels"))
            return True
        self._check_owner("volume", volume, existing.get("Labels"))
        return False

    def _check_owner(self, kind, name, labels, server=True):
        """Refuse a resource whose owner labels are not this workspace's (or user's, ``server=False``)."""
        found = naming.owner_of(labels)
        try:
            naming.check_owner(
                kind, name, found, self.hub_name, self.user.name, self.name if server else None
            )
        except naming.ForeignResourceError:
            self.log.error("Refused %s %s for %s: it is labelled %s", kind, name, self._log_name, found)
            raise

    def _container_spec(self, options, labels, volume, gateway, image, gpu_ids, run, parent):
        """``(create_kwargs, host_config)`` of this start; ``parent``: what :meth:`_parent_spec` returned."""
        binds, parent_mounts, extra_create, extra_host = parent
        create_kwargs = objects.make_container_kwargs(
            name=self.object_name,
            image=options.image,
            env=self.workspace_env(options, gateway, gpu_ids, run),
            labels=labels,
            port=run.port,
            command=list(run.cmd if run.cmd is not None else image["Config"].get("Cmd") or [])
            + (self.get_args() if run.use_args else []),
            links=self.links,
            network=self.network_name,
            extra=extra_create,
        )
        host_config = objects.make_host_config(
            network=self.network_name,
            cpu_limit=options.cpu_limit,
            mem_limit=options.mem_limit,
            shm_size=options.shm_size,
            volume=volume,
            volume_path=run.volume_path,
            binds=binds,
            mounts=parent_mounts,
            gpus=gpu_ids,
            gpu_driver=self.gpu_driver,
            pids_limit=self.pids_limit,
            no_new_privileges=self.no_new_privileges,
            cap_drop=self.cap_drop,
            extra=extra_host,
        )
        return create_kwargs, host_config

    async def _ensure_image(self, image, refresh=False):
        """Make sure ``image`` is present (pulling per ``pull_policy``); returns its inspection.

        On an update, a newer image is pulled first when the policy allows pulling.
        """
        if refresh and self.pull_policy not in ("never", "skip"):
            repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
            try:
                await self.docker("pull", repo, tag)
            except APIError as e:
                self.log.warning("Could not pull %s for an update (%s); using the local image", image, e)
        try:
            return await self.docker("inspect_image", image)
        except NotFound:
            pass
        try:
            if self.pull_policy in ("never", "skip"):
                raise ImageNotFound(f"pull_policy is {self.pull_policy}")
            await self.pull_image(image)
            return await self.docker("inspect_image", image)
        except APIError as e:
            reason = "is not on the Docker engine" if isinstance(e, NotFound) else "could not be pulled"
            raise web.HTTPError(
                400, "%s", f"Invalid image: {image} {reason} ({e.explanation or e})"
            ) from None

    async def _inspect_container(self):
        """The workspace's container, or None (without DockerSpawner's log line for a new one)."""
        try:
            container = await self.docker("inspect_container", self.object_name)
        except NotFound:
            self.object_id = ""
            return None
        self._check_owner("container", self.object_name, container["Config"].get("Labels"))
        self.object_id = container["Id"]
        return container

    async def get_object(self):
        """The workspace's container as DockerSpawner finds it by name, unless it is someone else's."""
        container = await super().get_object()
        if container is None:
            return None
        try:
            self._check_owner("container", self.object_name, container["Config"].get("Labels"))
        except naming.ForeignResourceError:
            self.object_id = ""  # poll() sees no container; stop() and remove never reach it
            return None
        return container

    async def stop_object(self):
        if self.object_id:
            await super().stop_object()
            if self.allocated_gpus:
                await self._refresh_gpu_metrics()

    async def remove_object(self):
        if self.object_id:
            await super().remove_object()

    def _reusable(self, container, wanted_hash, options):
        """Reuse an existing container only if nothing about it would change."""
        labels = container["Config"].get("Labels") or {}
        if options.update:
            return False
        if labels.get(naming.LABEL_CONFIG_HASH) != wanted_hash:
            self.log.info("Recreating %s: its settings changed", self.object_name)
            return False
        return labels.get(naming.LABEL_EXPIRATION) == str(int(self.expiration))

    def _reuse_token(self, container):
        for line in container["Config"].get("Env") or []:
            if line.startswith("JUPYTERHUB_API_TOKEN="):
                self.api_token = line.split("=", 1)[1]
                break

    async def _create(self, create_kwargs, host_config):
        kwargs = dict(create_kwargs)
        kwargs["host_config"] = self.client.create_host_config(**host_config)
        try:
            obj = await self.docker("create_container", **kwargs)
        except APIError as e:
            if e.status_code == 409:  # a container of that name appeared meanwhile: replace it if ours
                existing = await self._inspect_container()
                if existing is not None:
                    await self.docker("remove_container", existing["Id"], v=True, force=True)
                obj = await self.docker("create_container", **kwargs)
            else:
                # e.g. a bind mount whose host directory is missing: say so, not "Internal Server Error"
                message = f"The Docker engine refused the workspace's container: {e.explanation or e}"
                error = web.HTTPError(500, "%s", message)
                error.jupyterhub_message = message
                raise error from None
        self.object_id = obj["Id"]
        self.log.info("Created %s (id: %s) from %s", self.object_name, self.object_id[:12], kwargs["image"])

    async def start_object(self):
        try:
            await super().start_object()
        except APIError as e:
            # a container that cannot start is not left behind half-created
            self.log.exception("Could not start %s; removing it", self.object_name)
            await self.remove_object()
            self.object_id = ""
            if "device driver" in str(e.explanation or e):
                message = f"The Docker engine refused the GPU request: {e.explanation or e}"
                error = web.HTTPError(500, "%s", message)
                error.jupyterhub_message = message
                raise error from None
            raise

    async def _wait_until_listening(self, ip, port):
        """Return as soon as the workspace accepts TCP connections (bounded by http_timeout).

        Polls every ``ready_poll_interval`` at first, then backs off to half a second, so that
        many pending spawns do not take CPU from the workspaces they wait for.
        """
        start = time.monotonic()
        deadline = start + self.http_timeout
        next_state_check = start + 2
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
            except (TimeoutError, OSError):
                pass
            else:
                writer.close()
                return
            now = time.monotonic()
            if now >= next_state_check:
                next_state_check = now + 2
                status = await self.poll()
                if status is not None:
                    logs = await self.docker("logs", self.object_id, tail=20)
                    raise RuntimeError(
                        f"Workspace {self.object_name} exited ({status}): "
                        f"{logs.decode(errors='replace')[-2000:]}"
                    )
            elapsed = now - start
            await asyncio.sleep(self.ready_poll_interval if elapsed < 5 else min(0.5, elapsed / 20))
        raise TimeoutError(f"{self.object_name} did not accept connections within {self.http_timeout}s")

    async def _wait_until_answering(self, ip, port, prefix):
        """Return once ``http://ip:port<prefix>api`` answers without a 5xx (bounded by http_timeout)."""
        client = AsyncHTTPClient()
        url = f"http://{ip}:{port}{prefix}api"
        deadline = time.monotonic() + self.http_timeout
        while time.monotonic() < deadline:
            try:
                response = await client.fetch(
                    url, raise_error=False, follow_redirects=False, request_timeout=5
                )
            except (OSError, HTTPClientError):  # not listening yet, or timed out
                response = None
            if response is not None and response.code < 500:
                return
            if await self.poll() is not None:
                logs = await self.docker("logs", self.object_id, tail=20)
                raise RuntimeError(
                    f"Workspace {self.object_name} exited: {logs.decode(errors='replace')[-2000:]}"
                )
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"{self.object_name}'s Jupyter did not answer at {url} within {self.http_timeout}s"
        )

    async def delete_forever(self):
        """A deleted server loses its container; its volume is left to the cleanup policy."""
        container = await self.get_object()  # never a container of someone else's
        if container is None:
            return
        try:
            await self.docker("remove_container", container["Id"], v=True, force=True)
        except NotFound:
            pass

    async def is_update_available(self):
        """True when the configured image now has another ID than the container's."""
        container = await self.get_object()
        if container is None or self.workspace_options is None:
            return False
        try:
            image = await self.docker("inspect_image", self.workspace_options.image)
        except NotFound:
            return False
        return image["Id"] != container["Image"]


_background = set()


def discover_gpus_at_hub_start(config):
    """From ``jupyterhub_config.py``, last: if the spawner is ours (Docker), probe the GPUs in the background.

    The settings were checked before (``check_spawner_config``, :meth:`MLHubDockerSpawner.config_errors`).
    """
    spawner_class = config.JupyterHub.get("spawner_class", "")
    if spawner_class == "mlhub-docker":
        spawner_class = MLHubDockerSpawner
    elif isinstance(spawner_class, str) and "." in spawner_class:
        try:
            spawner_class = import_item(spawner_class)
        except (ImportError, AttributeError):
            return None  # JupyterHub says so itself
    if not (isinstance(spawner_class, type) and issubclass(spawner_class, MLHubDockerSpawner)):
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the config loaded outside the hub (e.g. a tool reading it)
        return None
    task = loop.create_task(spawner_class.discover_gpus_at_start(config))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def _template_error(error, namespace):
    """What is wrong with a template DockerSpawner could not render."""
    if isinstance(error, KeyError):
        return f"unknown placeholder {{{error.args[0]}}}; known: {', '.join(sorted(namespace))}"
    return f"cannot be rendered ({type(error).__name__}: {error})"


def _holder(labels):
    """``user`` or ``user/server`` of a workspace container's labels."""
    user, server = labels.get(naming.LABEL_USER, "?"), labels.get(naming.LABEL_SERVER_NAME, "")
    return f"{user}/{server}" if server else user


def _with_host(url, host):
    """``url`` with its host replaced by ``host`` (port, path and query kept)."""
    parts = urlsplit(url)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
