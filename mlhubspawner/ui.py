"""ML Hub's pages: the workspaces model behind the home and admin pages, and the tornado handlers.

The pages extend JupyterHub's own templates (``mlhubspawner/templates``, first in ``template_paths``).
User data reaches the browser only through Jinja's autoescaping (text, ``data-`` attributes) and one
``<script type="application/json" id="mlhub-data">`` block rendered with ``|tojson``; ``static/mlhub.js``
reads it and writes text with ``textContent``.

Routes (under ``/hub/``): ``mlhub/ssh-keys`` (own keys; admins ``?user=<name>``), ``mlhub/admin``
(every workspace of every user, admins only), ``mlhub/static/...`` (our CSS, JS and logo).
"""

import fnmatch
import math
import os
import time
from datetime import UTC, datetime
from urllib.parse import quote

from jupyterhub.handlers import BaseHandler
from tornado import web

from .gpus_api import gpu_overview, hub_gpu_source
from .sshkeys_api import key_model, user_created

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES_DIR = os.path.join(HERE, "templates")
STATIC_DIR = os.path.join(HERE, "static")
LOGO_FILE = os.path.join(STATIC_DIR, "logo.svg")


# --- the pure model --------------------------------------------------------------------------------
# The browser tools a workspace serves through jupyter-server-proxy (resources/workspace/ml/tools): name → title.
TOOLS = {"vscode": "VS Code", "desktop": "Desktop", "tensorboard": "TensorBoard"}
# Which images serve them, by repository name (the image reference without registry, path, tag or digest;
# patterns allowed): ML Hub's own ml and gpu flavors, wherever they are pushed.
DEFAULT_TOOL_IMAGES = {"mlhub-workspace-ml": tuple(TOOLS), "mlhub-workspace-gpu": tuple(TOOLS)}


def image_repository_name(image):
    """``registry:5000/team/mlhub-workspace-ml:0.1.0@sha256:…`` → ``mlhub-workspace-ml``."""
    name = str(image or "").partition("@")[0].rpartition("/")[2]
    return name.partition(":")[0]


def image_tools(image, tool_images=None):
    """The tools ``image`` serves (names of :data:`TOOLS`, in its order): the first pattern of
    ``tool_images`` (default :data:`DEFAULT_TOOL_IMAGES`) that matches its repository name."""
    name = image_repository_name(image)
    if not name:
        return []
    for pattern, tools in (DEFAULT_TOOL_IMAGES if tool_images is None else tool_images).items():
        if fnmatch.fnmatchcase(name, pattern):
            return [tool for tool in TOOLS if tool in set(tools)]
    return []


def tool_links(server_url, tools):
    """Links to the tools under a workspace's URL (``/user/<name>/<server>/``): ``vscode/`` etc."""
    return [{"name": tool, "title": TOOLS[tool], "url": f"{server_url}{tool}/"} for tool in tools]


def format_bytes(value):
    """``4294967296`` → ``4G``; ``None`` → ``""``."""
    if not value:
        return ""
    if _timestamp(value) is None:  # not a number (e.g. a raw "4G" from the REST body)
        return str(value)
    for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= size:
            return f"{value / size:.4g}{unit}"
    return f"{value}B"


def _timestamp(value):
    """A finite epoch number, else None (stored state may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def env_names(env):
    """The variable names of an env option (a dict, or the form's ``NAME=VALUE`` lines), sorted."""
    if isinstance(env, dict):
        return sorted(str(name) for name in env)
    if isinstance(env, str):
        lines = (line.strip() for line in env.splitlines())
        return sorted({line.partition("=")[0].strip() for line in lines if line and not line.startswith("#")})
    return []


def format_remaining(expiration, now):
    """Remaining lifetime as text: ``never``, ``expired``, ``6 days 23 h``, ``5 h 10 min``, ``12 min``."""
    if not expiration:
        return "never"
    if _timestamp(expiration) is None:
        return "unknown"
    left = int(expiration - now)
    if left <= 0:
        return "expired"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} day{'s' if days != 1 else ''} {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{max(minutes, 1)} min"


def format_resources(options):
    """``2 CPUs · 4G memory · 1G shm`` from an options dict (missing values omitted)."""
    parts = []
    if options.get("cpu_limit"):
        cpus = options["cpu_limit"]
        text = f"{cpus:g}" if _timestamp(cpus) is not None else str(cpus)
        parts.append(f"{text} CPU{'s' if cpus != 1 else ''}")
    if options.get("mem_limit"):
        parts.append(f"{format_bytes(options['mem_limit'])} memory")
    if options.get("shm_size"):
        parts.append(f"{format_bytes(options['shm_size'])} shm")
    return " · ".join(parts) or "default"


def profile_label(options):
    """The name of the admin's profile a workspace started with (its slug when it has no name), else ``""``."""
    for key in ("profile_name", "profile"):
        value = options.get(key)
        if isinstance(value, str) and value.strip() and value != "custom":
            return value.strip()
    return ""


def format_time(timestamp):
    """A datetime (naive = UTC) or epoch seconds as ``2025-01-31 12:00 UTC``; empty when unknown."""
    if not timestamp:
        return ""
    if isinstance(timestamp, (int, float)):
        try:
            timestamp = datetime.fromtimestamp(timestamp, UTC)
        except (ValueError, OverflowError, OSError):  # out of the calendar's range (or NaN)
            return "unknown"
    elif timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def server_status(active, ready, pending):
    if pending:
        return "pending"
    if ready:
        return "running"
    if active:
        return "pending"
    return "stopped"


def workspace_row(
    *,
    user,
    server,
    status,
    options,
    expiration=0,
    created_at=0,
    last_activity=None,
    hub_url="/hub/",
    prefix="/",
    now=None,
    show_env_values=True,
    gpu_devices=(),
    tool_images=None,
):
    """One workspace as the pages show it: plain, JSON-friendly values (no markup).

    ``tools``: links to the browser tools its image serves (:func:`image_tools` with ``tool_images``); the
    pages show them while it runs.

    ``gpu_devices``: what the running workspace holds, e.g. ``["GPU 2: NVIDIA A100-SXM4-80GB, 80 GB"]``.

    ``options`` is the last start's options (``WorkspaceOptions.to_dict()`` or the raw
    ``user_options``), or None when the workspace never started. ``show_env_values`` is for the
    owner: anyone else (an admin) gets ``info.env_names``, the names without the values.
    """
    now = time.time() if now is None else now
    options = dict(options or {})
    expiration = _timestamp(expiration) or 0
    created_at = _timestamp(created_at) or 0
    u, s = quote(user, safe=""), quote(server, safe="")
    server_api = f"{hub_url}api/users/{u}/servers/{s}" if server else f"{hub_url}api/users/{u}/server"
    mlhub_api = f"{hub_url}api/mlhub/users/{u}/servers/{s}" if server else f"{hub_url}api/mlhub/users/{u}"
    gpus = options.get("gpus") or ""
    info = dict(options)
    if not show_env_values and "env" in info:
        info["env_names"] = env_names(info.pop("env"))
    info["expiration_timestamp_seconds"] = int(expiration or 0)
    if expiration:
        info["remaining_lifetime_seconds"] = max(0, int(expiration - now))
    url = f"{prefix}user/{u}/{s}/" if server else f"{prefix}user/{u}/"
    return {
        "user": user,
        "server": server,
        "label": server or "default",
        "named": bool(server),
        "status": status,
        "started": bool(options),
        "image": options.get("image") or "",
        "profile": profile_label(options),
        "resources": format_resources(options) if options else "",
        "gpus": (f"{gpus} × {options['gpu_type']}" if options.get("gpu_type") else str(gpus))
        if gpus
        else "none",
        "gpu_devices": list(gpu_devices),
        "lifetime": format_remaining(expiration, now) if options else "",
        "has_lifetime": bool(expiration),
        "expires": format_time(expiration) if expiration else "never",
        "created": format_time(created_at),
        "last_activity": format_time(last_activity),
        "url": url,
        "tools": tool_links(url, image_tools(options.get("image"), tool_images)) if options else [],
        "spawn_url": f"{hub_url}spawn/{u}/{s}" if server else f"{hub_url}spawn/{u}",
        "pending_url": f"{hub_url}spawn-pending/{u}/{s}" if server else f"{hub_url}spawn-pending/{u}",
        "server_api": server_api,
        "ssh_config_api": f"{mlhub_api}/ssh-config",
        "lifetime_api": f"{mlhub_api}/lifetime",
        "update_api": f"{mlhub_api}/update",
        "info": info,
    }


def _spawner_options(spawner):
    options = getattr(spawner, "workspace_options", None)
    if options is not None:
        return options.to_dict()
    orm_spawner = getattr(spawner, "orm_spawner", None)
    return dict(getattr(orm_spawner, "user_options", None) or {}) or None


def spawner_row(user, spawner, hub_url, prefix, now=None, viewer=None, tool_images=None):
    """The row of one JupyterHub spawner (reads its state; no I/O).

    ``viewer`` is the name of who looks at it: env values are shown to the owner only.
    """
    orm_spawner = spawner.orm_spawner
    return workspace_row(
        user=user.name,
        server=spawner.name,
        status=server_status(spawner.active, spawner.ready, spawner.pending),
        options=_spawner_options(spawner),
        expiration=getattr(spawner, "expiration", 0),
        created_at=getattr(spawner, "created_at", 0),
        last_activity=orm_spawner.last_activity if orm_spawner is not None else None,
        hub_url=hub_url,
        prefix=prefix,
        now=now,
        show_env_values=viewer is None or viewer == user.name,
        gpu_devices=spawner.held_gpus() if spawner.active and hasattr(spawner, "held_gpus") else (),
        tool_images=tool_images,
    )


def user_rows(user, hub_url, prefix, now=None, viewer=None, tool_images=None):
    """Every workspace of ``user`` (a ``jupyterhub.user.User``): the default one first, then by name.

    ``viewer``: who looks at them (None: the owner).
    """
    default = user.spawner  # creates the default server's record when missing
    names = sorted(name for name in user.orm_user.orm_spawners if name)
    spawners = [default] + [user.spawners[name] for name in names]
    rows = [spawner_row(user, spawner, hub_url, prefix, now, viewer, tool_images) for spawner in spawners]
    # JupyterHub records a named server as soon as its spawn page is opened: one that never started
    # (e.g. its form was refused) has nothing to show, and is not listed
    return [r for r in rows if not r["server"] or r["started"] or r["status"] != "stopped"]


class TemplateHelpers:
    """``mlhub_ui`` in every template (``JupyterHub.template_vars``; not callable, so passed as is).

    ``tool_images``: which images serve which browser tools (see :func:`image_tools`; None: ML Hub's flavors).
    """

    def __init__(self, tool_images=None):
        self.tool_images = tool_images

    def rows(self, user, hub_url, prefix):
        """The home page's rows: ``user`` is the one logged in, the owner (env values shown)."""
        if user is None:
            return []
        return user_rows(user, hub_url, prefix, viewer=user.name, tool_images=self.tool_images)


# --- handlers ----------------------------------------------------------------------------------------
class MLHubAdminHandler(BaseHandler):
    """``/hub/mlhub/admin``: every workspace of every user (admins only)."""

    @web.authenticated
    async def get(self):
        if not self.current_user.admin:
            raise web.HTTPError(403, "the ML Hub admin page is for admins")
        from jupyterhub import orm

        users = [self.users[orm_user] for orm_user in self.db.query(orm.User).order_by(orm.User.name)]
        rows = []
        for user in users:
            rows.extend(user_rows(user, self.hub.base_url, self.base_url, viewer=self.current_user.name))
        gpus = await gpu_overview(hub_gpu_source(self.settings, self.current_user))
        html = await self.render_template(
            "mlhub_admin.html",
            rows=rows,
            user_names=[user.name for user in users],
            gpus=gpus,
            gpus_probed=format_time(gpus["probed_at"]) if gpus["probed_at"] else "",
        )
        self.finish(html)


class MLHubSSHKeysHandler(BaseHandler):
    """``/hub/mlhub/ssh-keys[?user=<name>]``: list, add and delete SSH public keys (through the API)."""

    def initialize(self, store=None):
        self.store = store

    @web.authenticated
    async def get(self):
        current = self.current_user
        name = self.get_argument("user", current.name)
        if name != current.name:
            if not current.admin:
                raise web.HTTPError(403, "only admins manage other users' SSH keys")
            target = self.find_user(name)
            if target is None:
                raise web.HTTPError(404, f"no such user {name}")
        else:
            target = current
        keys = []
        if self.store is not None:
            await self.store.call("delete_user", target.name, keep_created=user_created(target))
            keys = [key_model(row) for row in await self.store.call("list", target.name)]
        html = await self.render_template(
            "mlhub_ssh_keys.html",
            target_user=target.name,
            keys=keys,
            keys_api=f"{self.hub.base_url}api/mlhub/users/{quote(target.name, safe='')}/ssh-keys",
        )
        self.finish(html)


def make_handlers(store=None):
    """Handlers for ``JupyterHub.extra_handlers`` (the hub prefixes them with ``/hub``)."""
    return [
        (r"/mlhub/admin/?", MLHubAdminHandler),
        (r"/mlhub/ssh-keys/?", MLHubSSHKeysHandler, {"store": store}),
        (r"/mlhub/static/(.*)", web.StaticFileHandler, {"path": STATIC_DIR}),
    ]
