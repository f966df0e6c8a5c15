"""The operator's mounts (DockerSpawner's ``volumes``, ``read_only_volumes``, ``mounts``), checked (pure).

DockerSpawner renders the templates (``{username}``, ``{servername}``, ``{prefix}``...) with its own
``format_volume_name`` and escaping; the spawner calls those, and this module checks what comes out
before anything is created: absolute targets without ``..``, none over the workspace's own volume or
the paths ML Hub's workspace uses for the hub token, its sshd and its Python, no target twice, no
user-controlled ``{raw_username}`` that would walk out of its directory. A ValueError names the
setting (``where``) and what is wrong.
"""

import string

from docker.errors import InvalidArgument
from docker.types import Mount

# paths inside the workspace that ML Hub's image uses for itself: a mount on, under or over one of
# them would hand the server's hub token to a shared directory, or replace the sshd or Python it runs
RESERVED_PATHS = {
    "/run/mlhub-sshd": "the workspace sshd's run directory, which holds the server's hub API token",
    "/etc/ssh/mlhub": "the workspace sshd's configuration",
    "/workspace/.mlhub": "the workspace's SSH host keys",
    "/opt/mlhub": "the workspace's Python environment (jupyterhub-singleuser)",
    "/usr/local/lib/mlhub": "ML Hub's workspace scripts",
    "/usr/local/bin/start-workspace.sh": "the workspace's entry point",
    "/usr/local/bin/mlhub-authorized-keys": "the sshd's key check against the hub",
    "/usr/local/bin/mlhub-ssh-session": "the sshd's session wrapper",
}

MOUNT_TYPES = ("bind", "volume", "tmpfs")
# bind modes (comma-separated), as ``docker run -v src:dst:mode`` takes them
BIND_MODES = frozenset(
    "rw ro z Z nocopy shared rshared slave rslave private rprivate consistent cached delegated".split()
)
RAW_FIELDS = ("raw_username", "raw_servername")


def normalized_target(target, where):
    """``target`` as an absolute container path without a trailing ``/``; ValueError if it is not one."""
    if not isinstance(target, str) or not target:
        raise ValueError(f"{where}: the container path must be a string, got {target!r}")
    if not target.startswith("/"):
        raise ValueError(f"{where}: the container path {target!r} is relative; it must start with /")
    parts = [part for part in target.split("/") if part]
    if any(part in (".", "..") for part in parts) or "\0" in target:
        raise ValueError(f"{where}: the container path {target!r} contains . or .. (or a NUL)")
    if not parts:
        raise ValueError(f"{where}: a mount on / is not possible")
    return "/" + "/".join(parts)


def check_source(source, where):
    """A host path source must be absolute without ``..``; a volume name must be a plain name."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"{where}: the source must be a host path or a volume name, got {source!r}")
    parts = source.split("/")
    if "\0" in source or ".." in parts:
        raise ValueError(f"{where}: the source {source!r} contains .. (or a NUL)")
    if not source.startswith("/") and "/" in source:
        raise ValueError(
            f"{where}: the source {source!r} is neither a host path (starting with /) nor a volume name"
        )


def _inside(path, parent):
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_target(target, where, workspace_paths):
    """Refuse a target on the workspace's own volume path or on, under or over a reserved path."""
    path = normalized_target(target, where)
    for workspace in workspace_paths:
        if path == workspace:
            raise ValueError(
                f"{where}: {target} is where ML Hub mounts the workspace's own volume "
                f"(volume_path); mount beside or below it instead, e.g. {workspace}/shared"
            )
    for reserved, what in RESERVED_PATHS.items():
        if _inside(path, reserved) or _inside(reserved, path):
            raise ValueError(f"{where}: {target} would cover {reserved}, {what}; choose another path")
    return path


def raw_fields(template):
    """The ``raw_*`` fields a template string uses (``{raw_username}``, ``{raw_username!s}``...)."""
    if not isinstance(template, str):
        return set()
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:  # not a format string: DockerSpawner leaves such strings as they are
        return set()
    return {name.split(".")[0].split("[")[0] for name in fields} & set(RAW_FIELDS)


def check_raw_values(templates, namespace, where):
    """Refuse ``{raw_username}``/``{raw_servername}`` in a path when the raw value could leave its directory.

    ``{username}`` is escaped (``a.b@c`` → ``a-2eb-40c``) and always safe; the raw name is used as it
    is, so a name with ``/`` or a name ``..`` would name another user's directory.
    """
    for template in templates:
        for field in raw_fields(template):
            value = str(namespace.get(field, ""))
            if "/" in value or "\\" in value or "\0" in value or value in (".", "..") or not value:
                raise ValueError(
                    f"{where}: {{{field}}} is {value!r} for this server, which cannot be used in a path "
                    f"(template {template!r}); use {{{field.removeprefix('raw_')}}}, which is escaped"
                )


def volume_templates(volumes):
    """Every template string of a ``volumes``-shaped dict (sources, targets)."""
    for source, target in volumes.items():
        yield source
        yield target.get("bind") if isinstance(target, dict) else target


def mount_templates(mounts):
    """Every source and target template of a ``mounts`` list (dicts or ``docker.types.Mount``)."""
    for mount in mounts:
        if isinstance(mount, dict):
            yield from (mount.get(key) for key in ("source", "target", "Source", "Target"))


def check_bind_mode(mode, where):
    if not isinstance(mode, str) or not set(mode.split(",")) <= BIND_MODES:
        raise ValueError(
            f"{where}: mode {mode!r} is not a bind mode such as rw, ro, z, Z (comma-separated options)"
        )


def make_mounts(mounts, fmt, where="DockerSpawner.mounts"):
    """``docker.types.Mount`` objects of the ``mounts`` setting, source and target rendered by ``fmt``.

    Entries are dicts with ``docker.types.Mount``'s arguments (``target``, ``source``, ``type``,
    ``read_only``...), as DockerSpawner takes them, or ``Mount`` objects.
    """
    made = []
    for index, mount in enumerate(mounts):
        at = f"{where}[{index}]"
        if isinstance(mount, Mount) or (isinstance(mount, dict) and "Target" in mount):
            made.append(_rendered_mount_object(mount, fmt, at))
            continue
        if not isinstance(mount, dict):
            raise ValueError(f"{at}: expected a dict of docker.types.Mount arguments, got {mount!r}")
        args = dict(mount)
        kind = args.get("type", "volume")
        if kind not in MOUNT_TYPES:
            raise ValueError(f"{at}: type {kind!r} is not one of {', '.join(MOUNT_TYPES)}")
        for key in ("source", "target"):
            if key not in args and not (key == "source" and kind == "tmpfs"):
                raise ValueError(f"{at}: {key!r} is missing")
        args["source"] = fmt(args["source"]) if args.get("source") is not None else None
        args["target"] = fmt(args["target"])
        try:
            made.append(Mount(**args))
        except (TypeError, InvalidArgument) as e:
            raise ValueError(f"{at}: {e}") from None
    return made


def _rendered_mount_object(mount, fmt, at):
    kind = mount.get("Type", "volume")
    if kind not in MOUNT_TYPES:
        raise ValueError(f"{at}: type {kind!r} is not one of {', '.join(MOUNT_TYPES)}")
    rendered = Mount.__new__(Mount)
    rendered.update(mount)
    rendered["Target"] = fmt(mount["Target"])
    if mount.get("Source") is not None:
        rendered["Source"] = fmt(mount["Source"])
    return rendered


def check_mounts(named, workspace_paths, own_volume=None):
    """Check every operator mount of one start; ``named`` is ``[(setting, binds dict, Mount list)]``.

    Returns nothing; raises ValueError naming the setting of the first mount that is refused.
    """
    seen = {}
    for where, binds, mounts in named:
        for source, spec in binds.items():
            at = f"{where}[{source!r}]"
            check_source(source, at)
            if own_volume and source == own_volume:
                raise ValueError(f"{at}: {source} is the workspace's own volume, which ML Hub mounts itself")
            check_bind_mode(spec.get("mode", "rw"), at)
            _unique(check_target(spec["bind"], at, workspace_paths), at, seen)
        for index, mount in enumerate(mounts):
            at = f"{where}[{index}]"
            if mount.get("Type") != "tmpfs":
                check_source(mount.get("Source"), at)
            if own_volume and mount.get("Source") == own_volume:
                raise ValueError(
                    f"{at}: {own_volume} is the workspace's own volume, which ML Hub mounts itself"
                )
            _unique(check_target(mount["Target"], at, workspace_paths), at, seen)


def _unique(path, at, seen):
    if path in seen:
        raise ValueError(f"{at}: {path} is already a mount target ({seen[path]})")
    seen[path] = at
