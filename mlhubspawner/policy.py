"""The admin's policy for workspaces: images, limits, lifetime and per-user quotas.

:class:`WorkspacePolicy` holds the settings as traitlets; both spawners inherit it, so they are
configured as ``c.MLHubDockerSpawner.max_cpu = 4`` (or ``c.WorkspacePolicy.max_cpu`` for all
backends) and honour JupyterHub's group overrides. :meth:`WorkspacePolicy.policy` freezes them
into a :class:`Policy` value that the pure option parser checks against.
"""

from dataclasses import dataclass

from traitlets import Bool, Dict, Float, Int, List, Unicode, Union, validate
from traitlets.config import Configurable

from . import images
from .options import MAX_DAYS_TO_LIVE, OptionsError, is_image_reference, parse_size

# the shipped lifetime maximum: every workspace expires at most 90 days after its creation unless the
# admin sets another (``None``: users may also ask for "never"); admins may extend up to the ceiling
DEFAULT_MAX_DAYS_TO_LIVE = 90.0

DEFAULT_RESERVED_ENV = [
    "JUPYTERHUB_*",
    "JPY_*",
    "MLHUB_*",
    "MEM_LIMIT",
    "MEM_GUARANTEE",
    "CPU_LIMIT",
    "CPU_GUARANTEE",
    "MAX_NUM_THREADS",
    "SSH_JUMPHOST_TARGET",
    "NVIDIA_VISIBLE_DEVICES",
    "JUPYTER_IMAGE",
    "JUPYTER_IMAGE_SPEC",
    # what ML Hub sets for ml-workspace images (mlhubspawner.images): users never turn their auth off
    *images.ML_WORKSPACE_FIXED_ENV,
]


@dataclass(frozen=True)
class GPUType:
    """A kind of GPU a workspace may ask for by name (the ``gpu_type`` option; Kubernetes only).

    ``name`` is the option's value: ``""`` (the default), ``<resource>`` or ``<resource>:<product>``.
    ``max_count`` is the most one workspace can get (one node's allocatable); ``None``: unknown.
    """

    name: str
    resource: str
    product: str = ""
    max_count: int | None = None


class GPUTypes(tuple):
    """What ``gpu_inventory()`` returns on a backend whose GPUs are chosen by type (Kubernetes).

    A tuple of :class:`GPUType`; a plain list from ``gpu_inventory()`` holds GPUs of one engine instead.
    """


def _gpu_limit(configured, available):
    """GPUs one workspace may ask for: the admin's ``max_gpus`` (``None``: all) capped by what is there."""
    if configured is None:
        return available or 0
    return configured if available is None else min(configured, available)


def gpu_limits(inventory):
    """``(gpu_count, gpu_types)`` for :meth:`WorkspacePolicy.policy` from a backend's ``gpu_inventory()``.

    ``None`` (unknown): ``(None, None)``. GPUs of one engine (a list): their number, no types. :class:`GPUTypes`:
    the most one workspace can get of any type (``None`` when one is unknown), and the types.
    """
    if inventory is None:
        return None, None
    if isinstance(inventory, GPUTypes):
        counts = [t.max_count for t in inventory]
        return (None if None in counts else max(counts, default=0)), tuple(inventory)
    return len(inventory), None


@dataclass(frozen=True)
class Policy:
    """A frozen snapshot of the policy; sizes in bytes, CPUs in cores, ``None`` = no limit."""

    default_image: str
    images: tuple = ()
    image_names: tuple = ()  # (image, name shown in the form) pairs
    # (name, image) pairs the REST API also takes for the image (DockerSpawner's allowed_images keys)
    image_aliases: tuple = ()
    allow_custom_image: bool = False
    default_cpu: float | None = None
    max_cpu: float | None = None
    default_memory: int | None = None
    min_memory: int = 128 * 1024**2
    max_memory: int | None = None
    default_shm_size: int | None = 256 * 1024**2
    max_shm_size: int | None = None
    default_days_to_live: float | None = None
    max_days_to_live: float | None = None
    reserved_env_names: tuple = tuple(DEFAULT_RESERVED_ENV)
    max_gpus: int = 0
    allow_all_gpus: bool = False
    max_gpus_per_user: int | None = None
    gpu_sharing: bool = False
    max_servers_per_user: int | None = None
    max_total_cpu_per_user: float | None = None
    max_total_memory_per_user: int | None = None
    host_cpus: float | None = None
    host_memory: int | None = None
    # the GPU types workspaces may choose (GPUType, the default "" first); None: the backend has none (Docker)
    gpu_types: tuple | None = None

    def gpu_type(self, name):
        """The offered :class:`GPUType` called ``name``, or None."""
        return next((t for t in self.gpu_types or () if t.name == name), None)


def _positive_or_none(value):
    return value if value is not None and value > 0 else None


def _at_most(value, limit):
    """``value`` lowered to ``limit``; ``None`` (unset) stays ``None``."""
    return value if value is None or limit is None else min(value, limit)


def _cap(limit, host):
    if host is None:
        return limit
    return host if limit is None else min(limit, host)


@dataclass(frozen=True)
class AllowedImages:
    """DockerSpawner's ``allowed_images`` as the policy reads it: the images (in order), their names in
    the form (``{image: name}``, a dict's keys) and whether any image is allowed (``"*"``)."""

    images: tuple = ()
    names: tuple = ()  # (image, name) pairs
    any_image: bool = False


def allowed_image_choices(value, setting="DockerSpawner.allowed_images"):
    """:class:`AllowedImages` of an ``allowed_images`` value (a dict name → image, a list, ``"*"``), or
    None when it lists nothing (empty or None: ML Hub's ``workspace_images`` apply). Raises ValueError naming
    ``setting`` for anything else."""
    if value is None or value == {} or value == []:
        return None
    if value == "*":
        return AllowedImages(any_image=True)
    if isinstance(value, list | tuple):
        value = {item: item for item in value}
    if not isinstance(value, dict):
        raise ValueError(f"{setting} must be a dict of name: image, a list of images or '*', got {value!r}")
    images, names = [], {}
    for name, image in value.items():
        if not isinstance(name, str) or not isinstance(image, str) or not is_image_reference(image.strip()):
            raise ValueError(f"{setting}: {name!r}: {image!r} is not an image reference")
        image = image.strip()
        if image in names and name != image and names[image] != image:
            raise ValueError(f"{setting}: {image} has two names, {names[image]!r} and {name!r}")
        images.append(image)
        if name != image:
            names[image] = name
    return AllowedImages(tuple(dict.fromkeys(images)), tuple(names.items()))


class _Size(Union):
    """A size trait: bytes as an int, or a string such as ``512M`` / ``4G``; ``None`` = unset."""

    def __init__(self, default_value=None, **kwargs):
        super().__init__([Int(), Unicode()], default_value=default_value, allow_none=True, **kwargs)

    def validate(self, obj, value):
        value = super().validate(obj, value)
        if isinstance(value, str):
            try:
                return parse_size(value, self.name)
            except OptionsError as e:
                raise ValueError(f"{type(obj).__name__}.{self.name}: {e.message}") from None
        return value


class WorkspacePolicy(Configurable):
    """Admin limits for workspace options; mixed into both ML Hub spawners."""

    workspace_images = List(
        Unicode(),
        help="""Images offered in the options form (the spawner's ``image`` is always offered first).

        DockerSpawner's ``allowed_images`` does the same (a dict's keys are then the names the form shows and
        the REST API also takes); set one of the two: both set stop the hub.

        Example::

            c.MLHubDockerSpawner.workspace_images = ["mltooling/ml-workspace:0.13.2"]
        """,
    ).tag(config=True)

    allow_custom_image = Bool(
        False,
        help="""Let users type any image name, not only one of ``workspace_images``.

        DockerSpawner's ``allowed_images = "*"`` turns it on; set to False explicitly beside that, the hub
        does not start.""",
    ).tag(config=True)

    image_display_names = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Names the options form shows for offered images, ``{image: name}`` (the image itself when
        absent), e.g. ``{"mlhub-workspace-ml:0.1.0": "ml"}``. ``MLHUB_WORKSPACE_IMAGES``'s ``name=image``
        entries set it. Users still choose, and the REST API still takes, the image. The keys of a DockerSpawner
        ``allowed_images`` dict name their images too; another name here for the same image stops the hub.""",
    ).tag(config=True)

    workspace_image_settings = Dict(
        default_value=images.DEFAULT_IMAGE_SETTINGS,
        help="""How images are run, by image name or pattern (``*`` and ``?``; an exact name wins, else the first
        pattern that matches; ``docker.io/`` prefixes are ignored). Images not listed follow ML Hub's own
        convention. An image must still be offered (``workspace_images``) or custom images allowed.

        Each value is a dict of:

        - ``convention``: ``"mlhub"`` (the default: ML Hub's workspace image), ``"ml-workspace"``
          (mltooling/ml-workspace-style: the image's own entrypoint serves Jupyter and its tools on
          port 8080 under ``WORKSPACE_BASE_URL``, as root; ML Hub sets ``AUTHENTICATE_VIA_JUPYTER``, which
          nobody can change, and ``SHUTDOWN_INACTIVE_KERNELS=true``) or ``"docker-stacks"`` (the Jupyter
          Docker Stacks: the image's ``start-notebook``/``start-singleuser`` as jovyan 1000:100, the volume
          at ``/home/jovyan/work`` and Jupyter rooted there);
        - ``env``: variables for this image (after ``c.Spawner.environment``; users cannot override them);
        - ``cmd``: the command (default: the image's CMD; ``mlhub``: the spawner's ``cmd``);
        - ``port``: the port the image serves on (default: ``ml-workspace`` 8080, else the spawner's ``port``);
        - ``volume_path``: where the workspace volume is mounted (default per convention);
        - ``run_as_root``: the image needs root (default: true for ``ml-workspace``). On Kubernetes the pod
          then runs as uid 0, which needs ``pod_security_level = "baseline"``; on Docker images run as
          their own ``USER`` anyway.

        The default knows ``mltooling/ml-workspace*`` (ml-workspace), ``jupyter/*`` and
        ``quay.io/jupyter/*`` (docker-stacks). Example::

            c.MLHubDockerSpawner.workspace_image_settings = {
                "registry.example.com/ml-workspace-gpu:*": {
                    "convention": "ml-workspace",
                    "env": {"SHUTDOWN_INACTIVE_KERNELS": "3600"},
                },
                "registry.example.com/scipy-notebook:*": {"convention": "docker-stacks"},
            }
        """,
    ).tag(config=True)

    @validate("workspace_image_settings")
    def _validate_workspace_image_settings(self, proposal):
        images.parse_image_settings(proposal.value, f"{type(self).__name__}.workspace_image_settings")
        return proposal.value

    def image_settings(self, image):
        """The admin's :class:`~mlhubspawner.images.ImageSettings` of ``image`` (ML Hub's convention if unlisted)."""
        return images.settings_for(image, images.parse_image_settings(self.workspace_image_settings))

    default_cpu_limit = Float(
        None,
        allow_none=True,
        help="""CPU limit (cores, fractions allowed) when the user gives none; ``None`` = unlimited.

        JupyterHub's ``c.Spawner.cpu_limit`` (or on DockerSpawner/KubeSpawner), when set, is this default
        instead: it must be within ``max_cpu_limit`` (else the hub does not start).""",
    ).tag(config=True)

    max_cpu_limit = Float(
        None,
        allow_none=True,
        help="""Largest CPU limit a user may request (also capped at the engine's CPU count).""",
    ).tag(config=True)

    default_mem_limit = _Size(
        help="""Memory limit when the user gives none (``"2G"``); ``None`` = unlimited.

        JupyterHub's ``c.Spawner.mem_limit`` (or on DockerSpawner/KubeSpawner), when set, is this default
        instead: it must be within ``min_mem_limit`` and ``max_mem_limit`` (else the hub does not start).""",
    ).tag(config=True)

    min_mem_limit = _Size(
        "128M", help="""Smallest memory limit a user may request (a workspace needs some)."""
    ).tag(config=True)

    max_mem_limit = _Size(
        help="""Largest memory limit a user may request (``"16G"``; also capped at the engine's memory).""",
    ).tag(config=True)

    default_shm_size = _Size(
        "256M", help="""Shared memory (``/dev/shm``) size when the user gives none."""
    ).tag(config=True)

    max_shm_size = _Size(help="""Largest shared-memory size a user may request.""").tag(config=True)

    default_days_to_live = Float(
        None,
        allow_none=True,
        help=f"""Lifetime in days when the user gives none (at most {MAX_DAYS_TO_LIVE}).

        ``None``: ``max_days_to_live`` when that is set, else never expires.
        """,
    ).tag(config=True)

    max_days_to_live = Float(
        DEFAULT_MAX_DAYS_TO_LIVE,
        allow_none=True,
        help=f"""Longest lifetime in days a user may request (default {DEFAULT_MAX_DAYS_TO_LIVE:g}).

        When set, every workspace expires: a start without ``days_to_live`` gets this many days.
        ``None`` lets users ask for "never expires". Admins may set a longer lifetime through the
        lifetime API; nobody goes beyond the hard ceiling of {MAX_DAYS_TO_LIVE} days.
        """,
    ).tag(config=True)

    reserved_env_names = List(
        Unicode(),
        DEFAULT_RESERVED_ENV,
        help="""Env var names users may not set (entries ending in ``*`` are prefixes).""",
    ).tag(config=True)

    max_gpus = Int(
        None,
        allow_none=True,
        min=0,
        help="""Most GPUs one workspace may request; 0 = no GPUs.

        ``None`` (the default): as many as the backend can give one workspace — every GPU the Docker
        engine has (found by the GPU probe), one node's worth on Kubernetes; none while that is unknown.
        """,
    ).tag(config=True)

    allow_all_gpus = Bool(False, help="""Allow ``gpus: all``.""").tag(config=True)

    max_gpus_per_user = Int(
        None, allow_none=True, help="""Most GPUs one user's running workspaces may hold in total."""
    ).tag(config=True)

    gpu_sharing = Bool(
        False,
        help="""Let several workspaces use the same GPU. Off: a GPU in use is never handed out again.""",
    ).tag(config=True)

    max_servers_per_user = Int(
        None,
        allow_none=True,
        help="""Most workspaces one user may run at once (default and named together).""",
    ).tag(config=True)

    max_total_cpu_per_user = Float(
        None,
        allow_none=True,
        help="""Most CPUs one user's running workspaces may have in total.""",
    ).tag(config=True)

    max_total_mem_per_user = _Size(
        help="""Most memory one user's running workspaces may have in total (``"32G"``).""",
    ).tag(config=True)

    @validate(
        "default_cpu_limit",
        "max_cpu_limit",
        "max_total_cpu_per_user",
        "default_days_to_live",
        "max_days_to_live",
    )
    def _validate_positive(self, proposal):
        value = proposal.value
        if value is not None and not value > 0:
            raise ValueError(f"{type(self).__name__}.{proposal.trait.name} must be > 0, got {value}")
        if (
            proposal.trait.name.endswith("days_to_live")
            and value is not None
            and not value <= MAX_DAYS_TO_LIVE
        ):
            raise ValueError(
                f"{type(self).__name__}.{proposal.trait.name} must be at most {MAX_DAYS_TO_LIVE} days, got {value}"
            )
        return value

    def offered_images(self, default_image, allowed=None):
        """The images of the form: the default first, then ``allowed`` (DockerSpawner's ``allowed_images``,
        see :func:`allowed_image_choices`) when it lists some, else ``workspace_images``; no repeats."""
        listed = list(allowed.images) if allowed is not None and allowed.images else self.workspace_images
        return tuple(dict.fromkeys([default_image, *listed]))

    def policy(
        self,
        default_image,
        host_cpus=None,
        host_memory=None,
        gpu_count=None,
        gpu_types=None,
        *,
        spawner_cpu_limit=None,
        spawner_mem_limit=None,
        allowed=None,
    ):
        """Freeze the current settings (after group overrides) into a :class:`Policy`.

        ``gpu_count`` caps ``max_gpus`` (the GPUs one workspace can get); ``gpu_types`` are the offered
        :class:`GPUType` (``None``: the backend has no types). See :func:`gpu_limits`.

        ``spawner_cpu_limit``/``spawner_mem_limit`` (JupyterHub's ``Spawner.cpu_limit``/``mem_limit``), when
        set, are the defaults instead of ``default_cpu_limit``/``default_mem_limit``. ``allowed``
        (:class:`AllowedImages`, from DockerSpawner's ``allowed_images``) lists the offered images and their
        names, or allows any image.
        """
        images = self.offered_images(default_image, allowed)
        names = dict(allowed.names) if allowed is not None else {}
        names.update({k: v for k, v in self.image_display_names.items() if v and k not in names})
        default_cpu = self.default_cpu_limit if spawner_cpu_limit is None else spawner_cpu_limit
        default_memory = self.default_mem_limit if spawner_mem_limit is None else spawner_mem_limit
        return Policy(
            default_image=default_image,
            images=images,
            image_names=tuple((image, names[image]) for image in images if names.get(image)),
            image_aliases=tuple((name, image) for image, name in allowed.names)
            if allowed is not None
            else (),
            allow_custom_image=self.allow_custom_image or (allowed is not None and allowed.any_image),
            # a default above the largest allowed value (e.g. on a small host) becomes that value
            default_cpu=_at_most(default_cpu, _cap(_positive_or_none(self.max_cpu_limit), host_cpus)),
            max_cpu=_cap(_positive_or_none(self.max_cpu_limit), host_cpus),
            default_memory=_at_most(default_memory, _cap(self.max_mem_limit, host_memory)),
            min_memory=self.min_mem_limit or 0,
            max_memory=_cap(self.max_mem_limit, host_memory),
            default_shm_size=self.default_shm_size,
            max_shm_size=self.max_shm_size,
            default_days_to_live=self.default_days_to_live,
            max_days_to_live=self.max_days_to_live,
            reserved_env_names=tuple(self.reserved_env_names),
            max_gpus=_gpu_limit(self.max_gpus, gpu_count),
            allow_all_gpus=self.allow_all_gpus,
            max_gpus_per_user=self.max_gpus_per_user,
            gpu_sharing=self.gpu_sharing,
            max_servers_per_user=self.max_servers_per_user,
            max_total_cpu_per_user=self.max_total_cpu_per_user,
            max_total_memory_per_user=self.max_total_mem_per_user,
            host_cpus=host_cpus,
            host_memory=host_memory,
            gpu_types=None if gpu_types is None else tuple(gpu_types),
        )
