"""What every ML Hub spawner shares, whatever the backend: options, policy, lifetime, state.

A backend spawner inherits :class:`MLHubSpawnerMixin` before its JupyterHub base class and
implements :meth:`host_resources`. The flow: form or REST body → :meth:`options_from_form`
(form only) → :meth:`apply_user_options` (validate against the policy and quotas) → the backend's
``start()``, which reads :attr:`workspace_options` and builds its objects with pure functions.
"""

import asyncio
import math
import os
import time

from tornado import web
from traitlets import Any, Bool, Integer, Unicode, default, validate

from . import images, naming
from .form import form_values, render_options_form, submitted_values
from .options import (
    MAX_DAYS_TO_LIVE,
    OptionsError,
    WorkspaceOptions,
    check_quota,
    form_to_options,
    parse_days_to_live,
    parse_options,
)
from .policy import WorkspacePolicy, gpu_limits

STATE_KEY = "mlhub"


def plan_expiration(now, days_to_live, created_at=None, previous_expiration=0):
    """Lifetime of a workspace: ``(created_at, expiration)``, expiration 0 = never.

    The lifetime counts from the workspace's creation, so restarts and option changes do not
    extend it; once it has passed, the next start begins a new lifetime.
    """
    if not created_at or (previous_expiration and previous_expiration <= now):
        created_at = now
    expiration = created_at + days_to_live * 86400 if days_to_live else 0
    return created_at, expiration


def _real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sane_lifetime(created_at, expiration, now):
    """``(created_at, expiration)`` from stored state, whatever was stored (pure).

    A creation time that is no number or lies in the future becomes 0 (unknown: the next start sets
    it). An expiration that is no finite number, negative or beyond the ceiling (``MAX_DAYS_TO_LIVE``
    after the creation) becomes that ceiling: stored lifetimes only ever shrink, and every
    expiration is a valid date and a finite JSON number. 0 stays "never".
    """
    if not _real(created_at) or created_at < 0 or created_at > now + 86400:
        created_at = 0.0
    ceiling = (created_at or now) + MAX_DAYS_TO_LIVE * 86400
    if expiration == 0 and _real(expiration):
        return created_at, 0.0
    if not _real(expiration) or not 0 < expiration <= ceiling:
        return created_at, float(ceiling)
    return created_at, expiration


def sane_days_to_live(value):
    """A stored ``days_to_live``: kept when valid, ``None`` when missing, else the ceiling."""
    if value is None:
        return None
    try:
        return parse_days_to_live(value)
    except OptionsError:
        return float(MAX_DAYS_TO_LIVE)


def stored_options(data):
    """:class:`WorkspaceOptions` from stored state, or None when they are unusable (pure)."""
    if not isinstance(data, dict):
        return None
    try:
        options = WorkspaceOptions.from_dict(data)
    except TypeError:
        return None
    numbers_ok = all(
        value is None or (_real(value) and value > 0)
        for value in (options.cpu_limit, options.mem_limit, options.shm_size)
    )
    if not (
        numbers_ok
        and isinstance(options.image, str)
        and isinstance(options.env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in options.env.items())
        and isinstance(options.gpus, str)
        and isinstance(options.gpu_type, str)
        and isinstance(options.mount_volume, bool)
    ):
        return None
    return WorkspaceOptions.from_dict(
        {**options.to_dict(), "days_to_live": sane_days_to_live(options.days_to_live)}
    )


def workspace_env(base, options, ssh_host, visible_gpus, run=None, volume_mounted=True):
    """The env of one start (pure): the user's vars, then ``base`` (JupyterHub's), then the image's
    convention's (``run``, an :class:`~mlhubspawner.images.ImageRun`), then ML Hub's.

    ``visible_gpus`` is the value of ``NVIDIA_VISIBLE_DEVICES``: the GPU ids, ``"void"`` (no GPU, even
    for an image that says ``all``), or None to leave it to the runtime (Kubernetes' device plugin).
    """
    env = dict(options.env)
    env.update(base)
    if run is not None:
        prefix = base.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
        env.update(images.image_env(run, service_prefix=prefix, volume_mounted=volume_mounted, base=base))
    env["JUPYTER_IMAGE_SPEC"] = env["JUPYTER_IMAGE"] = options.image
    env["SSH_JUMPHOST_TARGET"] = ssh_host
    if visible_gpus is None:
        env.pop("NVIDIA_VISIBLE_DEVICES", None)
    else:
        env["NVIDIA_VISIBLE_DEVICES"] = visible_gpus
    if options.cpu_limit is not None:
        env["CPU_LIMIT"] = f"{options.cpu_limit:g}"
        # never more threads than the quota (1.5 CPUs: 1), as the workspace's own start computes them
        env["MAX_NUM_THREADS"] = str(max(1, int(options.cpu_limit)))
    if options.mem_limit is not None:
        env["MEM_LIMIT"] = str(options.mem_limit)
    return env


def options_error(error):
    """An HTTP 400 for an :class:`OptionsError`, naming the field for the API and the form."""
    text = f"Invalid {error.field}: {error.message}"
    http_error = web.HTTPError(400, "%s", text)
    http_error.jupyterhub_message = text  # shown on the spawn form
    http_error.field = error.field
    return http_error


class MLHubSpawnerMixin(WorkspacePolicy):
    """Options, policy, lifetime and state handling shared by the Docker and Kubernetes spawners."""

    hub_name = Unicode(
        help="""Name of this hub: prefix of every resource name and value of the ``mlhub.origin`` label.

        Several hubs can share one engine as long as their names differ.
        Defaults to the ``HUB_NAME`` environment variable, else ``mlhub``.
        """,
    ).tag(config=True)

    @default("hub_name")
    def _default_hub_name(self):
        return os.environ.get("HUB_NAME", "mlhub")

    @validate("hub_name")
    def _validate_hub_name(self, proposal):
        try:
            return naming.validate_hub_name(proposal.value)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}.hub_name: {e}") from None

    default_server_form = Bool(
        False,
        help="""Show the options form for the default server too.

        By default the default server starts at once with the admin's defaults (the last options
        used, if any); named servers always show the form.
        """,
    ).tag(config=True)

    ssh_port = Integer(
        22,
        help="""Port of the workspace's own sshd, which the hub's SSH front forwards to.

        Used in the ``permitopen`` targets of the front's authorized keys and in the ssh config
        the hub hands out (``/hub/api/mlhub/users/{user}/ssh-config``).
        """,
    ).tag(config=True)

    ssh_user = Unicode(
        "jovyan",
        help="Account users log in as on a workspace's sshd (the ``User`` of the ssh config the hub hands out).",
    ).tag(config=True)

    # validated options of the current (or last) start, and the raw options they came from
    workspace_options = Any(None, allow_none=True)
    _last_raw_options = None
    created_at = 0.0
    expiration = 0.0

    # ---- hooks a backend implements -------------------------------------------------------

    async def host_resources(self):
        """``(cpus, memory_bytes)`` of the engine/cluster where workspaces run, or ``(None, None)``."""
        return None, None

    async def gpu_status(self):
        """GPUs for the form, as dicts.

        One per GPU (Docker): ``id``, ``index``, ``uuid``, ``name``, ``memory_mb``, ``free``, ``holders``.
        One per pool (Kubernetes, ``"kind": "pool"``): ``type``, ``resource``, ``product``, ``memory_mb``,
        ``total``, ``free``, ``per_node`` (see ``mlhubspawner.kubernetes.gpus.pool_status``).
        """
        return []

    async def gpu_inventory(self):
        """The GPUs workspaces may use, or ``None`` if unknown.

        A list of ``mlhubspawner.gpus.GPU`` (one engine: a workspace may get them all), or a
        :class:`~mlhubspawner.policy.GPUTypes` (GPUs chosen by type, each with the most one workspace
        can get: one node's). :meth:`current_policy` caps ``max_gpus`` accordingly.
        """
        return None

    def default_image(self):
        return self.image

    async def form_profiles(self, raw):
        """Profiles the form offers (dicts for the template), the one of ``raw`` options selected; none here."""
        return []

    async def raw_options_from_form(self, form_data):
        """The raw (REST-shaped) options of a submitted form."""
        return form_to_options(form_data)

    async def parse_user_options(self, raw):
        """``(WorkspaceOptions, Policy)`` of raw options, validated against the current policy."""
        policy = await self.current_policy()
        return parse_options(raw, policy), policy

    def ssh_target(self):
        """``(host, port)`` of this workspace's sshd as the hub's SSH front reaches it."""
        return self.object_name, self.ssh_port

    # ---- policy and options ---------------------------------------------------------------

    async def current_policy(self):
        """The policy now: the admin's settings capped by the host and by the GPUs one workspace can get."""
        cpus, memory = await self.host_resources()
        gpu_count, gpu_types = gpu_limits(await self.gpu_inventory())
        return self.policy(
            self.default_image(), host_cpus=cpus, host_memory=memory, gpu_count=gpu_count, gpu_types=gpu_types
        )

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    async def _render_options_form(self, spawner=None):
        refused = getattr(self.user, "_mlhub_refused_form", None)
        if refused is not None and time.monotonic() - refused[3] < 10:
            # JupyterHub re-renders a refused form with the *default* server's form:
            # hand over to the spawner whose form was refused, with the error next to its field
            self.user._mlhub_refused_form = None
            spawner, raw, error, _ = refused
            policy = await spawner.current_policy()
            return render_options_form(
                policy,
                submitted_values(raw),
                error,
                await spawner.gpu_status(),
                profiles=await spawner.form_profiles(raw),
            )
        if not self.name and not self.default_server_form:
            return ""
        policy = await self.current_policy()
        gpus = await self.gpu_status() if policy.max_gpus else []
        values = form_values(policy, self.workspace_options)
        if not self._viewed_by_owner() and self.workspace_options is not None:
            # an admin opening someone's form sees the names of their env variables, not the values
            values["env"] = "".join(f"# {name}=(hidden)\n" for name in sorted(self.workspace_options.env))
        profiles = await self.form_profiles(self._last_raw_options or {})
        if profiles:  # empty: the chosen profile's limits (else the defaults), not the last profile's
            values.update(cpu_limit="", mem_limit="")
        return render_options_form(policy, values, gpus=gpus, profiles=profiles)

    def _viewed_by_owner(self):
        """Whether the request being served (JupyterHub's ``spawner.handler``) is the owner's."""
        try:
            viewer = self.handler.current_user if getattr(self, "handler", None) is not None else None
        except RuntimeError:  # a handler that has not authenticated (yet)
            viewer = None
        return viewer is None or viewer.name == self.user.name

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    async def _options_from_form(self, form_data):
        """Convert the form and validate it at once, so a bad form creates and stores nothing."""
        raw = await self.raw_options_from_form(form_data)
        try:
            await self.parse_user_options(raw)
        except OptionsError as e:
            self.user._mlhub_refused_form = (self, raw, e, time.monotonic())
            raise options_error(e) from None
        return raw

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return type(self)._apply_workspace_options

    async def _apply_workspace_options(self, user_options):
        """Validate ``user_options`` (form or REST) against the policy and the user's quota."""
        try:
            options, policy = await self.parse_user_options(user_options or {})
            check_quota(options, self._running_siblings(), policy)
        except OptionsError as e:
            self._restore_saved_options()
            raise options_error(e) from None
        self.workspace_options = options
        # "update" is a one-shot action (pull and recreate), never a default of later starts
        self._last_raw_options = {k: v for k, v in (user_options or {}).items() if k != "update"}

    def _restore_saved_options(self):
        """JupyterHub stored the refused options as the next defaults: put the last good ones back."""
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None and self.db is not None:
            orm_spawner.user_options = self._last_raw_options or {}
            self.db.commit()

    def _running_siblings(self):
        """Options of the user's other workspaces that are running or starting."""
        siblings = []
        for name, spawner in (getattr(self.user, "spawners", None) or {}).items():
            if name == self.name or spawner is self or not spawner.active:
                continue
            opts = getattr(spawner, "workspace_options", None)
            if opts is not None:
                siblings.append(opts)
        return siblings

    async def validated_options(self):
        """The options of this start, validated again (whatever ``apply_user_options`` is set to)."""
        await self._apply_workspace_options(self.user_options)
        if "update" in (self.user_options or {}):  # this start updates; the next ones do not
            self.user_options = dict(self._last_raw_options)
            self._restore_saved_options()
        return self.workspace_options

    def plan_lifetime(self, options, now=None):
        now = time.time() if now is None else now
        self.created_at, self.expiration = plan_expiration(
            now, options.days_to_live, self.created_at, self.expiration
        )
        return self.expiration

    # ---- the image's convention (mlhubspawner.images) -------------------------------------

    _image_trait_undo = None

    def image_run(self, options):
        """How this start runs ``options.image``: its convention and the admin's per-image settings.

        Read from the configured command, port and volume path: call :meth:`restore_image_traits` first.
        """
        return images.image_run(
            self.image_settings(options.image),
            spawner_cmd=self.cmd,
            spawner_port=self.port,
            spawner_volume_path=self.volume_path,
        )

    def apply_image_traits(self, values):
        """Set traits (``port``, ``cmd``...) for this start's image; :meth:`restore_image_traits` undoes them."""
        self.restore_image_traits()
        undo = {}
        for name, value in values.items():
            before = getattr(self, name)
            if before == value:
                continue
            setattr(self, name, value)
            undo[name] = (before, getattr(self, name))
        self._image_trait_undo = undo

    def restore_image_traits(self):
        """Put back the traits the last start's image changed (those nobody has changed since)."""
        undo, self._image_trait_undo = self._image_trait_undo or {}, None
        for name, (before, applied) in undo.items():
            if getattr(self, name) == applied:
                setattr(self, name, before)

    # ---- progress events ------------------------------------------------------------------

    def _progress_reset(self):
        self._progress_events = []

    def emit_progress(self, percent, message):
        if not hasattr(self, "_progress_events"):
            self._progress_reset()
        self._progress_events.append({"progress": percent, "message": message})

    async def progress(self):
        """Spawn progress for JupyterHub's progress bar (image, network, volume, container).

        JupyterHub stops iterating when the spawn ends; a new start begins a new list.
        """
        events, sent = None, 0
        while True:
            current = getattr(self, "_progress_events", [])
            if current is not events:
                events, sent = current, 0
            while sent < len(events):
                yield events[sent]
                sent += 1
            await asyncio.sleep(0.1)

    # ---- state ----------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        mlhub = {"created_at": self.created_at, "expiration": self.expiration}
        if self.workspace_options is not None:
            mlhub["options"] = self.workspace_options.to_dict()
            mlhub["user_options"] = self._last_raw_options or {}
        state[STATE_KEY] = mlhub
        return state

    def load_state(self, state):
        """Restore the lifetime and last options; a bad stored value is made safe, never trusted."""
        super().load_state(state)
        mlhub = state.get(STATE_KEY) or {}
        if not isinstance(mlhub, dict):
            mlhub = {}
        stored = (mlhub.get("created_at", 0.0), mlhub.get("expiration", 0.0))
        self.created_at, self.expiration = sane_lifetime(*stored, time.time())
        if (self.created_at, self.expiration) != stored:
            self.log.warning("%s: stored lifetime %r made safe", self._log_name, stored)
        if mlhub.get("options"):
            self.workspace_options = stored_options(mlhub["options"])
            if self.workspace_options is None:
                self.log.warning("%s: unusable stored options ignored", self._log_name)
            raw = mlhub.get("user_options")
            self._last_raw_options = self._sane_raw_options(raw if isinstance(raw, dict) else {})
        # JupyterHub starts a server without a body with its last user_options: keep them startable
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None and isinstance(orm_spawner.user_options, dict):
            raw = self._sane_raw_options(orm_spawner.user_options)
            if raw != orm_spawner.user_options:
                orm_spawner.user_options = self.user_options = raw

    @staticmethod
    def _sane_raw_options(raw):
        if raw.get("days_to_live") in (None, ""):
            return raw
        return {**raw, "days_to_live": sane_days_to_live(raw["days_to_live"])}

    def workspace_info(self, now=None):
        """Last options plus remaining lifetime, for the Info view and the admin."""
        now = time.time() if now is None else now
        info = self.workspace_options.to_dict() if self.workspace_options else {}
        info["expiration_timestamp_seconds"] = int(self.expiration)  # finite: see load_state
        if self.expiration:
            info["remaining_lifetime_seconds"] = max(0, int(self.expiration - now))
        return info
