"""Pure builders of what ML Hub asks the Docker engine to create.

They take explicit values and return plain dicts (keyword arguments for docker-py's
``APIClient``), so they are tested by comparing dicts, without an engine.
"""

import hashlib
import json

from ..naming import LABEL_CONFIG_HASH, LABEL_EXPIRATION

# values that change on every start without changing the workspace itself
_VOLATILE_ENV = ("JUPYTERHUB_API_TOKEN=", "JPY_API_TOKEN=")


def make_host_config(
    *,
    network,
    cpu_limit=None,
    mem_limit=None,
    shm_size=None,
    volume=None,
    volume_path="/workspace",
    binds=None,
    mounts=(),
    gpus=(),
    gpu_driver="nvidia",
    pids_limit=None,
    no_new_privileges=False,
    cap_drop=(),
    extra=None,
):
    """Keyword arguments for ``APIClient.create_host_config`` of one workspace.

    ``pids_limit`` caps its processes and threads (``None`` or 0: unlimited, the engine's default),
    ``no_new_privileges`` stops setuid binaries from gaining privileges, ``cap_drop`` removes
    capabilities from Docker's default set (e.g. ``NET_RAW``: no raw sockets).

    ``binds`` (``{source: {"bind": path, "mode": ...}}``) and ``mounts`` (``docker.types.Mount``) are
    DockerSpawner's ``volumes``/``read_only_volumes`` and ``mounts``, rendered and checked
    (:mod:`.mounts`); they go beside the workspace's own volume. Left out when empty, so the config
    hash of a workspace without them stays what it was.
    """
    host_config = {"network_mode": network, "restart_policy": {"Name": "no"}}
    if pids_limit:
        host_config["pids_limit"] = int(pids_limit)
    if no_new_privileges:
        host_config["security_opt"] = ["no-new-privileges"]
    if cap_drop:
        host_config["cap_drop"] = list(cap_drop)
    if cpu_limit is not None:
        host_config["nano_cpus"] = int(round(cpu_limit * 1e9))
    if mem_limit is not None:
        host_config["mem_limit"] = int(mem_limit)
    if shm_size is not None:
        host_config["shm_size"] = int(shm_size)
    all_binds = {volume: {"bind": volume_path, "mode": "rw"}} if volume else {}
    for source, spec in (binds or {}).items():
        if source == volume:
            raise ValueError(f"{source} is the workspace's own volume, which ML Hub mounts itself")
        all_binds[source] = dict(spec)
    if all_binds:
        host_config["binds"] = all_binds
    if mounts:
        host_config["mounts"] = [dict(mount) for mount in mounts]
    if gpus:
        # explicit ids (never a count): allocation decides which GPUs, the engine must not
        request = {"Driver": gpu_driver, "Capabilities": [["gpu"]], "DeviceIDs": list(gpus)}
        host_config["device_requests"] = [request]
    return deep_merge(host_config, extra or {})


def make_container_kwargs(
    *, name, image, env, labels, port, command=None, links=None, network=None, extra=None
):
    """Keyword arguments for ``APIClient.create_container`` (without ``host_config``).

    ``links`` (DockerSpawner's, ``{container: alias}``) go in ``network``'s endpoint: on a user-defined
    network Docker resolves the alias only there (``HostConfig.Links`` works on the default bridge
    only). ``extra`` (``extra_create_kwargs``) is merged in; its ``environment`` (a dict or ``NAME=value``
    list) is merged into ``env``, its values winning, as in DockerSpawner.
    """
    extra = dict(extra or {})
    env = {**env, **_env_dict(extra.pop("environment", None) or {})}
    kwargs = {
        "name": name,
        "image": image,
        "environment": [f"{k}={v}" for k, v in sorted(env.items())],
        "labels": dict(labels),
        "ports": [port],
        "hostname": name[:63],
    }
    if command:
        kwargs["command"] = list(command)
    if links:
        links = sorted(f"{target}:{alias}" for target, alias in links.items())
        kwargs["networking_config"] = {"EndpointsConfig": {network: {"Links": links}}}
    return deep_merge(kwargs, extra)


def _env_dict(environment):
    """A ``{name: value}`` of docker-py's environment forms (a dict or a ``NAME=value`` list)."""
    if isinstance(environment, dict):
        return {str(k): str(v) for k, v in environment.items()}
    return dict(entry.split("=", 1) if "=" in entry else (entry, "") for entry in environment)


def make_volume_kwargs(*, name, labels):
    """Keyword arguments for ``APIClient.create_volume``."""
    return {"name": name, "driver": "local", "labels": dict(labels)}


def config_hash(create_kwargs, host_config):
    """A digest of a workspace's settings, blind to per-start tokens and the expiry label.

    Equal digests mean an existing container can be started again as it is.
    """
    kwargs = dict(create_kwargs)
    kwargs["environment"] = [e for e in kwargs.get("environment", []) if not e.startswith(_VOLATILE_ENV)]
    kwargs["labels"] = {
        k: v for k, v in kwargs.get("labels", {}).items() if k not in (LABEL_EXPIRATION, LABEL_CONFIG_HASH)
    }
    blob = json.dumps([kwargs, host_config], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def deep_merge(base, extra):
    """A new dict: ``extra`` merged into ``base`` recursively (``extra`` wins)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
