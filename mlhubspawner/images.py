"""How ML Hub runs a workspace image: the image's convention and the admin's per-image settings (pure).

An image follows one of three conventions; the admin says which, per image name or pattern, in
``workspace_image_settings`` (:class:`~mlhubspawner.policy.WorkspacePolicy`). Nothing in the image
itself (no label) decides it: what an image is started with stays the admin's choice.

``mlhub``
    ML Hub's workspace image and images built like it: the spawner's command (by default the image's
    CMD, ``jupyterhub-singleuser``) and args, on the spawner's port (``JUPYTERHUB_SERVICE_URL``), the
    volume at the spawner's ``volume_path`` (``/workspace``), the image's non-root user.
``ml-workspace``
    ``mltooling/ml-workspace`` and images built like it: the image's own entrypoint runs Jupyter and its
    tools behind its own nginx on port 8080 (``WORKSPACE_PORT``), under ``WORKSPACE_BASE_URL`` (the
    server's prefix), as root. It gets what the original ML Hub set for it: ``AUTHENTICATE_VIA_JUPYTER``
    (every tool URL is checked against the user's Jupyter login: the hub's proxy does not protect paths
    Jupyter does not serve) and ``SHUTDOWN_INACTIVE_KERNELS``. No command or args are passed. The volume is
    at ``/workspace``.
``docker-stacks``
    The Jupyter Docker Stacks (``jupyter/*``, ``quay.io/jupyter/*``) and images built like them: the image's
    CMD (``start-notebook`` hands over to ``start-singleuser`` when started by a hub) as jovyan (1000:100),
    the port from ``JUPYTERHUB_SERVICE_URL``, the volume at ``/home/jovyan/work`` and Jupyter rooted there
    (``JUPYTERHUB_ROOT_DIR``), so what users see in Jupyter is what persists.
"""

import fnmatch
import re
from dataclasses import dataclass, field

MLHUB, ML_WORKSPACE, DOCKER_STACKS = "mlhub", "ml-workspace", "docker-stacks"
CONVENTIONS = (MLHUB, ML_WORKSPACE, DOCKER_STACKS)

ML_WORKSPACE_PORT = 8080
DOCKER_STACKS_WORK_DIR = "/home/jovyan/work"
# set by ML Hub for an ml-workspace image; neither users nor the per-image env may change them
ML_WORKSPACE_FIXED_ENV = ("AUTHENTICATE_VIA_JUPYTER", "WORKSPACE_BASE_URL", "WORKSPACE_PORT")
# the original's defaults for ml-workspace images (a per-image env may change them)
ML_WORKSPACE_DEFAULT_ENV = {"SHUTDOWN_INACTIVE_KERNELS": "true"}

# the well-known images of each convention; an image still has to be offered (or custom images allowed)
DEFAULT_IMAGE_SETTINGS = {
    "mltooling/ml-workspace*": {"convention": ML_WORKSPACE},
    "jupyter/*": {"convention": DOCKER_STACKS},
    "quay.io/jupyter/*": {"convention": DOCKER_STACKS},
}

SETTING_KEYS = ("convention", "env", "cmd", "port", "volume_path", "run_as_root")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOCKER_HUB_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/")


@dataclass(frozen=True)
class ImageSettings:
    """The admin's settings of one image (or pattern); ``None``: the convention's default."""

    convention: str = MLHUB
    env: dict = field(default_factory=dict)
    cmd: tuple | None = None
    port: int | None = None
    volume_path: str | None = None
    run_as_root: bool | None = None


@dataclass(frozen=True)
class ImageRun:
    """How one start runs its image.

    ``cmd`` None: the image's own CMD. ``use_args``: the spawner's ``args`` follow the command.
    ``run_as_root``: the image needs root (Kubernetes: uid 0, which Pod Security ``restricted`` refuses).
    """

    convention: str
    cmd: tuple | None
    use_args: bool
    port: int
    volume_path: str
    run_as_root: bool
    env: dict


def parse_image_settings(table, where="workspace_image_settings"):
    """``{image or pattern: ImageSettings}`` of the admin's dict; a ValueError names what is wrong."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a dict of image name or pattern -> settings, got {table!r}")
    return {key: _parse_one(key, value, where) for key, value in table.items()}


def _parse_one(key, value, where):
    at = f"{where}[{key!r}]"
    if not isinstance(key, str) or not key.strip() or key != key.strip():
        raise ValueError(f"{where}: {key!r} is not an image name or pattern")
    if not isinstance(value, dict):
        raise ValueError(f"{at} must be a dict such as {{'convention': 'ml-workspace'}}, got {value!r}")
    unknown = sorted(set(value) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"{at}: unknown keys {unknown}; known: {list(SETTING_KEYS)}")
    convention = value.get("convention", MLHUB)
    if convention not in CONVENTIONS:
        raise ValueError(f"{at}: convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    env = value.get("env") or {}
    if not isinstance(env, dict):
        raise ValueError(f"{at}: env must be a dict of NAME -> value, got {env!r}")
    for name, text in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name) or not isinstance(text, str):
            raise ValueError(f"{at}: env {name!r}={text!r} is not a NAME -> string pair")
        if convention == ML_WORKSPACE and name in ML_WORKSPACE_FIXED_ENV:
            raise ValueError(
                f"{at}: env {name} is set by ML Hub for ml-workspace images, it cannot be changed"
            )
    cmd = value.get("cmd")
    if cmd is not None:
        if isinstance(cmd, str):
            cmd = [cmd]
        if not isinstance(cmd, list | tuple) or not cmd or not all(isinstance(c, str) and c for c in cmd):
            raise ValueError(
                f"{at}: cmd must be a non-empty list of strings (None: the image's CMD), got {cmd!r}"
            )
        cmd = tuple(cmd)
    port = value.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ValueError(f"{at}: port must be a TCP port number, got {port!r}")
    volume_path = value.get("volume_path")
    if volume_path is not None and (
        not isinstance(volume_path, str) or not volume_path.startswith("/") or volume_path.rstrip("/") == ""
    ):
        raise ValueError(f"{at}: volume_path must be an absolute path other than /, got {volume_path!r}")
    run_as_root = value.get("run_as_root")
    if run_as_root is not None and not isinstance(run_as_root, bool):
        raise ValueError(f"{at}: run_as_root must be true or false, got {run_as_root!r}")
    return ImageSettings(convention, dict(env), cmd, port, volume_path, run_as_root)


def _names(image):
    """``image`` and, for Docker Hub, its short form (``docker.io/jupyter/x`` is ``jupyter/x``)."""
    names = [image]
    for prefix in _DOCKER_HUB_PREFIXES:
        if image.startswith(prefix):
            names.append(image[len(prefix) :])
            break
    return names


def settings_for(image, table):
    """The settings of ``image``: an exact key first, else the first matching pattern (``*``, ``?``), else ``mlhub``."""
    names = _names(image)
    for name in names:
        if name in table:
            return table[name]
    for pattern, settings in table.items():
        if any(fnmatch.fnmatchcase(name, pattern) for name in names):
            return settings
    return ImageSettings()


def image_run(settings, *, spawner_cmd=None, spawner_port=8080, spawner_volume_path="/workspace"):
    """How to run an image of ``settings``, given the spawner's configured command, port and volume path."""
    convention = settings.convention
    if convention == ML_WORKSPACE:
        cmd, use_args = settings.cmd, False
        port = settings.port or ML_WORKSPACE_PORT
        volume_path = settings.volume_path or "/workspace"
        root = True if settings.run_as_root is None else settings.run_as_root
        env = {**ML_WORKSPACE_DEFAULT_ENV, **settings.env}
    elif convention == DOCKER_STACKS:
        cmd, use_args = settings.cmd, True
        port = settings.port or spawner_port
        volume_path = settings.volume_path or DOCKER_STACKS_WORK_DIR
        root, env = bool(settings.run_as_root), dict(settings.env)
    else:
        cmd = settings.cmd if settings.cmd is not None else (tuple(spawner_cmd) if spawner_cmd else None)
        use_args = True
        port = settings.port or spawner_port
        volume_path = settings.volume_path or spawner_volume_path
        root, env = bool(settings.run_as_root), dict(settings.env)
    return ImageRun(convention, cmd, use_args, port, volume_path.rstrip("/"), root, env)


def image_env(run, *, service_prefix="/", volume_mounted=True, base=None):
    """The env the convention of ``run`` adds (after JupyterHub's ``base``, before ML Hub's own)."""
    env = {}
    if run.convention == ML_WORKSPACE:
        env.update(run.env)
        env["AUTHENTICATE_VIA_JUPYTER"] = "true"
        env["WORKSPACE_BASE_URL"] = service_prefix.rstrip("/") or "/"
        env["WORKSPACE_PORT"] = str(run.port)
    elif run.convention == DOCKER_STACKS:
        if volume_mounted and not (base or {}).get("JUPYTERHUB_ROOT_DIR"):
            env["JUPYTERHUB_ROOT_DIR"] = run.volume_path
        env.update(run.env)
    else:
        env.update(run.env)
    return env
