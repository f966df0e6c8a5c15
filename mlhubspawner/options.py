"""Parse and validate workspace options against the admin's policy (pure).

The same options arrive from the HTML form (lists of strings) and from the REST API (a JSON
object, numbers as numbers or strings). Both are turned into one :class:`WorkspaceOptions`, or an
:class:`OptionsError` that names the offending field. Nothing here does I/O.
"""

import math
import re
from dataclasses import asdict, dataclass, field

GB = 1024**3
_UNITS = {"": GB, "b": 1, "k": 1024, "m": 1024**2, "g": GB, "t": 1024**4}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# a Docker image reference: [registry[:port]/]path[:tag][@digest]
_IMAGE_PATTERN = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0", ""}

REST_KEYS = (
    "image",
    "cpu_limit",
    "mem_limit",
    "gpus",
    "gpu_type",
    "shm_size",
    "env",
    "days_to_live",
    "is_mount_volume",
    "update",
    "profile",
)
MAX_ENV_VARS = 200
MAX_ENV_VALUE_LENGTH = 32 * 1024
# the hard ceiling of a workspace's lifetime, for everyone (admins included) and every policy: ten
# years keep every expiration a valid date and a finite JSON number
MAX_DAYS_TO_LIVE = 3650


class OptionsError(ValueError):
    """A user option that breaks the policy; ``field`` names it for the form and the API."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class WorkspaceOptions:
    """Validated options of one workspace start. Sizes are bytes, CPUs are cores."""

    image: str
    cpu_limit: float | None = None
    mem_limit: int | None = None
    shm_size: int | None = None
    env: dict = field(default_factory=dict)
    days_to_live: float | None = None
    mount_volume: bool = True
    gpus: str = ""
    gpu_type: str = ""
    update: bool = False
    # the admin's profile the options came from (mlhubspawner.profiles): its slug and name, and its node
    # selector (Kubernetes); empty: the user's own choice
    profile: str = ""
    profile_name: str = ""
    node_selector: dict = field(default_factory=dict)

    def to_dict(self):
        """A JSON-friendly copy (for state and the Info view)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def is_image_reference(image):
    """Whether ``image`` is a Docker image reference (``[registry[:port]/]path[:tag][@digest]``)."""
    return isinstance(image, str) and len(image) <= 255 and bool(_IMAGE_PATTERN.match(image))


def parse_size(value, field_name, bare_unit=GB):
    """Parse ``2``, ``1.5``, ``512M``, ``4G``, ``4GiB`` into bytes (a bare number is ``bare_unit``)."""
    if isinstance(value, bool):
        raise OptionsError(field_name, f"expected a size such as 512M or 4G, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), bare_unit
    elif isinstance(value, str):
        match = _SIZE_PATTERN.match(value)
        if not match:
            raise OptionsError(field_name, f"expected a size such as 512M or 4G, got {value!r}")
        number = float(match.group(1))
        unit = _UNITS[match.group(2).lower()] if match.group(2) else bare_unit
    else:
        raise OptionsError(field_name, f"expected a size such as 512M or 4G, got {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise OptionsError(field_name, f"must be a positive size, got {value!r}")
    return int(number * unit)


def format_size(size):
    """Bytes as a short human string (``512M``, ``1.5G``)."""
    for suffix, unit in (("T", 1024**4), ("G", GB), ("M", 1024**2), ("K", 1024)):
        if size >= unit:
            return f"{size / unit:g}{suffix}"
    return f"{size}B"


def parse_number(value, field_name):
    """A finite float from a JSON number or a numeric string (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise OptionsError(field_name, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise OptionsError(field_name, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise OptionsError(field_name, f"expected a finite number, got {value!r}")
    return number


def parse_days_to_live(value, limit=None):
    """A lifetime in days (``0 < days <= limit``, never above :data:`MAX_DAYS_TO_LIVE`).

    ``limit`` is the policy's maximum (``None``: only the hard ceiling applies).
    """
    days = parse_number(value, "days_to_live")
    if days <= 0:
        raise OptionsError("days_to_live", f"must be a positive number of days, got {days:g}")
    if days > MAX_DAYS_TO_LIVE:
        raise OptionsError("days_to_live", f"at most {MAX_DAYS_TO_LIVE} days (the hub's ceiling)")
    if limit is not None and days > limit:
        raise OptionsError("days_to_live", f"at most {limit:g} days")
    return days


def parse_bool(value, field_name):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OptionsError(field_name, f"expected true or false, got {value!r}")


def parse_env(value, reserved):
    """Env vars from a JSON object or ``NAME=VALUE`` lines; reserved names are refused.

    ``reserved`` holds exact names and prefixes ending in ``*`` (``JUPYTERHUB_*``).
    """
    if isinstance(value, str):
        pairs = []
        for number, line in enumerate(value.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "=" not in line:
                raise OptionsError("env", f"line {number} is not NAME=VALUE: {line.strip()!r}")
            name, _, val = line.partition("=")
            pairs.append((name.strip(), val.strip()))
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise OptionsError("env", "expected an object of NAME: VALUE or NAME=VALUE lines")
    if len(pairs) > MAX_ENV_VARS:
        raise OptionsError("env", f"at most {MAX_ENV_VARS} variables are allowed")
    env = {}
    for name, val in pairs:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise OptionsError("env", f"{name!r} is not a valid variable name")
        if is_reserved(name, reserved):
            raise OptionsError("env", f"{name} is reserved and set by ML Hub")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise OptionsError("env", f"the value of {name} must be a string")
        val = str(val)
        if "\0" in val or len(val) > MAX_ENV_VALUE_LENGTH:
            raise OptionsError("env", f"the value of {name} is not allowed (NUL or too long)")
        env[name] = val
    return env


def is_reserved(name, reserved):
    for entry in reserved:
        if entry.endswith("*") and name.startswith(entry[:-1]) or name == entry:
            return True
    return False


_GPU_UUID = r"gpu-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
_GPU_IDS = re.compile(rf"(?:\d+|{_GPU_UUID})(?:,(?:\d+|{_GPU_UUID}))*")


def parse_gpus(value, policy):
    """``none``/empty, a count (``2``), ids (``0,2``, ``device=1`` — Docker's ``--gpus`` form — or UUIDs
    ``GPU-…`` as ``nvidia-smi -L`` prints them), or ``all`` if the policy allows.

    Ids come back as ``device=<ids>``, UUIDs spelled ``GPU-<lowercase hex>``.
    """
    text = "" if value is None else re.sub(r"\s*,\s*", ",", str(value).strip().lower())
    if isinstance(value, bool):
        raise OptionsError("gpus", f"expected none, a count or GPU ids, got {value!r}")
    if text in ("", "none", "0"):
        return ""
    if policy.max_gpus <= 0:
        raise OptionsError("gpus", "GPUs are not available on this hub")
    if text == "all":
        if not policy.allow_all_gpus:
            raise OptionsError("gpus", "requesting all GPUs is not allowed")
        return "all"
    ids_text = text.removeprefix("device=")
    if re.fullmatch(r"\d+", text):
        count = int(text)
    elif _GPU_IDS.fullmatch(ids_text) and (
        "," in ids_text or text.startswith("device=") or not ids_text.isdigit()
    ):
        ids = [i.replace("gpu-", "GPU-") for i in ids_text.split(",")]
        if len(set(ids)) != len(ids):
            raise OptionsError("gpus", f"GPU ids repeat: {value!r}")
        count = len(ids)
        text = "device=" + ",".join(ids)
    else:
        raise OptionsError("gpus", f"expected none, a count or GPU ids like 0,2 or GPU-<uuid>, got {value!r}")
    if count > policy.max_gpus:
        raise OptionsError("gpus", f"at most {policy.max_gpus} GPUs are allowed")
    return text


# an extended resource (Kubernetes): <DNS subdomain>/<name>, outside the kubernetes.io domain
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_EXTENDED_RESOURCE = re.compile(rf"({_DNS_SUBDOMAIN})/{_NAME}")
# a GPU type: <resource>[:<product>], the product a label value (GPU Feature Discovery's nvidia.com/gpu.product)
_GPU_TYPE = re.compile(rf"{_DNS_SUBDOMAIN}/{_NAME}(?::{_NAME})?")
MAX_GPU_TYPE_LENGTH = 253 + 1 + 63 + 1 + 63


def is_extended_resource(name):
    """Whether ``name`` is a Kubernetes extended resource name such as ``nvidia.com/mig-1g.5gb``.

    ``cpu``, ``memory``, ``kubernetes.io/...`` and ``requests.*`` are not (native or quota names).
    """
    if not isinstance(name, str) or len(name) > 253 + 1 + 63:
        return False
    match = _EXTENDED_RESOURCE.fullmatch(name)
    if not match or len(match.group(1)) > 253 or name.startswith("requests."):
        return False
    domain = match.group(1)
    return domain != "kubernetes.io" and not domain.endswith(".kubernetes.io")


def gpu_type_name(resource, product=""):
    """The ``gpu_type`` value of GPUs of ``resource``, of one ``product`` if given: ``<resource>:<product>``."""
    return f"{resource}:{product}" if product else resource


def parse_gpu_type(value, count, policy):
    """The ``gpu_type`` option: ``""`` (the default type) or the name of a type the policy offers.

    ``count`` is the number of GPUs asked for: it must fit on one node of that type. Without GPUs the
    type is checked, then dropped (``""``). A backend without types (Docker) refuses any other value.
    """
    if value is None or isinstance(value, str) and not value.strip():
        name = ""
    elif isinstance(value, str):
        name = value.strip()
    else:
        raise OptionsError("gpu_type", f"expected the name of a GPU type, got {value!r}")
    if name and policy.gpu_types is None:
        raise OptionsError("gpu_type", "GPU types can only be chosen on Kubernetes")
    if policy.gpu_types is None:
        return ""
    gpu_type = policy.gpu_type(name)
    if gpu_type is None:
        shown = name if len(name) <= 80 else name[:80] + "…"
        if len(name) > MAX_GPU_TYPE_LENGTH or not _GPU_TYPE.fullmatch(name):
            raise OptionsError(
                "gpu_type", f"{shown!r} is not a GPU type (<resource> or <resource>:<product>)"
            )
        offered = ", ".join(t.name for t in policy.gpu_types if t.name) or "none"
        raise OptionsError("gpu_type", f"{shown!r} is not offered on this hub (offered: {offered})")
    if count and gpu_type.max_count is not None and count > gpu_type.max_count:
        what = gpu_type.name or gpu_type.resource
        raise OptionsError(
            "gpus", f"at most {gpu_type.max_count} GPUs of type {what} on one node (a workspace runs on one)"
        )
    return name if count else ""


def _given(raw, key):
    value = raw.get(key)
    return value is not None and not (isinstance(value, str) and not value.strip())


def parse_options(raw, policy):
    """Validate raw user options (REST JSON or converted form) into :class:`WorkspaceOptions`."""
    if not isinstance(raw, dict):
        raise OptionsError("options", "expected a JSON object")
    unknown = sorted(set(raw) - set(REST_KEYS))
    if unknown:
        raise OptionsError(unknown[0], f"unknown option (known: {', '.join(REST_KEYS)})")

    if _given(raw, "profile"):  # resolved before (mlhubspawner.profiles): here, no profile is offered
        shown = raw["profile"] if isinstance(raw["profile"], str) else repr(raw["profile"])
        raise OptionsError("profile", f"unknown profile {shown[:80]!r}")

    image = raw.get("image") if _given(raw, "image") else policy.default_image
    if not isinstance(image, str):
        raise OptionsError("image", f"expected an image name, got {image!r}")
    image = image.strip()
    offered = (policy.default_image, *policy.images)
    if image not in offered:
        # DockerSpawner's REST shape: a key of its allowed_images dict stands for the image
        image = dict(policy.image_aliases).get(image, image)
    if image not in offered and not policy.allow_custom_image:
        raise OptionsError("image", f"{image!r} is not one of the offered images")
    if not is_image_reference(image):
        raise OptionsError("image", f"{image!r} is not a valid image reference")

    cpu = policy.default_cpu
    if _given(raw, "cpu_limit"):
        cpu = parse_number(raw["cpu_limit"], "cpu_limit")
    if cpu is not None:
        if cpu < 0.01:
            raise OptionsError("cpu_limit", f"must be at least 0.01 CPUs, got {cpu:g}")
        if policy.max_cpu is not None and cpu > policy.max_cpu:
            raise OptionsError("cpu_limit", f"at most {policy.max_cpu:g} CPUs are allowed")

    mem = policy.default_memory
    if _given(raw, "mem_limit"):
        mem = parse_size(raw["mem_limit"], "mem_limit")
    if mem is not None:
        if mem < policy.min_memory:
            raise OptionsError("mem_limit", f"must be at least {format_size(policy.min_memory)}")
        if policy.max_memory is not None and mem > policy.max_memory:
            raise OptionsError("mem_limit", f"at most {format_size(policy.max_memory)} is allowed")

    shm = policy.default_shm_size
    if _given(raw, "shm_size"):
        shm = parse_size(raw["shm_size"], "shm_size")
    if shm is not None and policy.max_shm_size is not None and shm > policy.max_shm_size:
        raise OptionsError("shm_size", f"at most {format_size(policy.max_shm_size)} is allowed")

    days = policy.default_days_to_live
    if _given(raw, "days_to_live"):
        days = raw["days_to_live"]
    if days is None and policy.max_days_to_live is not None:
        days = policy.max_days_to_live
    if days is not None:
        days = parse_days_to_live(days, policy.max_days_to_live)

    env = parse_env(raw["env"], policy.reserved_env_names) if _given(raw, "env") else {}
    mount = parse_bool(raw["is_mount_volume"], "is_mount_volume") if _given(raw, "is_mount_volume") else True
    update = parse_bool(raw["update"], "update") if _given(raw, "update") else False
    gpus = parse_gpus(raw.get("gpus"), policy)
    gpu_type = parse_gpu_type(raw.get("gpu_type"), gpu_count(gpus, policy), policy)
    return WorkspaceOptions(
        image=image,
        cpu_limit=cpu,
        mem_limit=mem,
        shm_size=shm,
        env=env,
        days_to_live=days,
        mount_volume=mount,
        gpus=gpus,
        gpu_type=gpu_type,
        update=update,
    )


def form_to_options(form):
    """Turn form data (a dict of lists of strings) into the REST shape of the options."""

    def first(key):
        values = form.get(key) or [""]
        return values[0].strip() if isinstance(values[0], str) else values[0]

    options = {}
    custom = first("is_custom_image") == "on"
    image = first("custom_image") if custom else first("defined_image")
    if image:
        options["image"] = image
    for key in ("cpu_limit", "mem_limit", "gpus", "gpu_type", "shm_size", "days_to_live"):
        if first(key):
            options[key] = first(key)
    env = (form.get("env") or [""])[0]
    if env.strip():
        options["env"] = env
    options["is_mount_volume"] = first("is_mount_volume") == "on"
    return options


def gpu_count(gpus, policy):
    """How many GPUs a ``gpus`` option asks for."""
    if not gpus:
        return 0
    if gpus == "all":
        return policy.max_gpus
    return int(gpus) if gpus.isdigit() else len(gpus.removeprefix("device=").split(","))


def check_quota(requested, running, policy):
    """Refuse a start that would push the user over their quota.

    ``running`` holds the options of the user's other active workspaces. GPUs of every type count.
    """
    if policy.max_servers_per_user is not None and len(running) + 1 > policy.max_servers_per_user:
        raise OptionsError("quota", f"at most {policy.max_servers_per_user} running workspaces per user")
    if policy.max_gpus_per_user is not None:
        total = sum(gpu_count(o.gpus, policy) for o in [*running, requested])
        if total > policy.max_gpus_per_user:
            raise OptionsError(
                "gpus", f"quota exceeded: {total} GPUs in total, at most {policy.max_gpus_per_user} per user"
            )
    if policy.max_total_cpu_per_user is not None:
        fallback = policy.max_cpu or policy.host_cpus or 0
        total = sum((o.cpu_limit or fallback) for o in [*running, requested])
        if total > policy.max_total_cpu_per_user + 1e-9:
            raise OptionsError(
                "cpu_limit",
                f"quota exceeded: {total:g} CPUs in total, at most "
                f"{policy.max_total_cpu_per_user:g} per user",
            )
    if policy.max_total_memory_per_user is not None:
        fallback = policy.max_memory or policy.host_memory or 0
        total = sum((o.mem_limit or fallback) for o in [*running, requested])
        if total > policy.max_total_memory_per_user:
            raise OptionsError(
                "mem_limit",
                f"quota exceeded: {format_size(total)} in total, at most "
                f"{format_size(policy.max_total_memory_per_user)} per user",
            )
