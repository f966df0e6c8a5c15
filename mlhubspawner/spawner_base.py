"""What every ML Hub spawner shares, whatever the backend: options, policy, profiles, lifetime, state.

A backend spawner inherits :class:`MLHubSpawner` (through its former name :class:`MLHubSpawnerMixin`) before
its JupyterHub base class and implements :meth:`host_resources`; ``c.MLHubSpawner.<setting>`` configures
every backend. The flow: form or REST body → :meth:`options_from_form`
(form only) → :meth:`apply_user_options` (validate against the policy and quotas) → the backend's
``start()``, which reads :attr:`workspace_options` and builds its objects with pure functions.
"""

import asyncio
import math
import os
import sys
import time
from dataclasses import replace
from importlib.metadata import entry_points
from types import SimpleNamespace

from tornado import web
from traitlets import Any, Bool, Dict, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import Config, Configurable
from traitlets.utils.importstring import import_item

from . import images, naming, profiles
from .form import form_values, render_options_form, submitted_values
from .options import (
    MAX_DAYS_TO_LIVE,
    OptionsError,
    WorkspaceOptions,
    check_quota,
    form_to_options,
    format_size,
    parse_days_to_live,
)
from .policy import WorkspacePolicy, allowed_image_choices, gpu_limits

STATE_KEY = "mlhub"
# the user of the spawner that checks the configuration at hub start (config_errors)
CONFIG_CHECK_USER = "mlhub-config-check"


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
        and isinstance(options.profile, str)
        and isinstance(options.profile_name, str)
        and isinstance(options.node_selector, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in options.node_selector.items())
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


class MLHubSpawner(WorkspacePolicy):
    """Options, policy, profiles, lifetime and state handling shared by the Docker and Kubernetes spawners."""

    profiles = List(
        Dict(),
        help="""The admin's profiles: named presets of the workspace options, offered first in the form and
        started by REST with ``{"profile": "<slug>"}``.

        Each profile is a dict of ``name`` (or ``display_name``; required), ``slug`` (default: from the
        name), ``description``, ``default`` (the profile of a start that names none), ``groups`` (JupyterHub
        group names that may use it; absent: everyone), and the options it sets: ``image``, ``cpu_limit``,
        ``mem_limit`` (``"16G"`` or bytes), ``gpus`` (a count or ``"all"``), ``shm_size``, ``env`` (a dict),
        ``days_to_live``, and on Kubernetes ``node_selector``. What a profile sets is the default and the
        ceiling of that option (users may ask for less, never more, never another image) under the admin's
        policy; what it leaves out stays the user's choice. Checked at hub start (each problem names the
        profile and the field). On Kubernetes, set this or KubeSpawner's ``profile_list``, not both.

        Example::

            c.MLHubSpawner.profiles = [
                {"name": "Small", "slug": "small", "cpu_limit": 1, "mem_limit": "2G", "default": True},
                {"name": "GPU large", "slug": "gpu-large", "image": "mlhub-workspace-gpu:0.1.0",
                 "cpu_limit": 8, "mem_limit": "32G", "gpus": 1, "shm_size": "8G",
                 "days_to_live": 14, "groups": ["gpu-users"]},
            ]
        """,
    ).tag(config=True)

    @validate("profiles")
    def _validate_profiles(self, proposal):
        try:
            profiles.parse_profiles(proposal.value)
        except profiles.ProfileError as e:
            raise ValueError(str(e)) from None
        return proposal.value

    allow_custom_options = Bool(
        True,
        help="""Offer the custom options (the form's own image, CPU, memory... fields, within the policy)
        beside the ``profiles``. Off: every start uses one of the profiles the user may use.""",
    ).tag(config=True)

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
        """Profiles the form offers (dicts for the template), the one of ``raw`` options selected.

        The admin's ``profiles`` this user may use, and "custom" when allowed; none without profiles.
        """
        offered = self.user_profiles()
        if not self.profiles:
            return []
        return profiles.form_entries(offered, raw, self.allow_custom_options)

    async def raw_options_from_form(self, form_data):
        """The raw (REST-shaped) options of a submitted form (with a profile: only the profile's)."""
        raw = form_to_options(form_data)
        return profiles.form_options(form_data, raw) if self.profiles else raw

    async def parse_user_options(self, raw):
        """``(WorkspaceOptions, Policy)`` of raw options, validated against the current policy."""
        policy = await self.current_policy()
        return self.parse_with_profile(raw, policy)

    def parse_with_profile(self, raw, policy):
        """``(WorkspaceOptions, Policy)`` of raw options and ``policy``, with the profile they name (if any)."""
        return profiles.resolve(
            raw,
            policy,
            self.user_profiles(),
            allow_custom=self.allow_custom_options or not self.profiles,
        )

    # ---- profiles and the parent classes' settings -------------------------------------------

    def workspace_profiles(self):
        """The admin's :class:`~mlhubspawner.profiles.Profile` tuple (checked when the setting was loaded)."""
        return profiles.parse_profiles(self.profiles)

    def user_groups(self):
        """Names of the JupyterHub groups of this spawner's user."""
        return {g.name for g in getattr(getattr(self, "user", None), "groups", None) or ()}

    def user_profiles(self):
        """The profiles this spawner's user may use (their JupyterHub groups decide)."""
        return profiles.offered(self.workspace_profiles(), self.user_groups()) if self.profiles else ()

    def config_section(self, trait):
        """The config section that sets ``trait`` for this class (the one that wins), or None."""
        found = None
        for section in self.section_names():
            if self.config._has_section(section) and trait in self.config[section]:
                found = section
        return found

    def _configured_callable(self, trait):
        section = self.config_section(trait)
        return section is not None and callable(self.config[section][trait])

    def configured_as(self, trait):
        """``Section.trait`` of the config that sets ``trait`` (else this class's name), for messages."""
        return f"{self.config_section(trait) or type(self).__name__}.{trait}"

    @classmethod
    def config_section_errors(cls, config):
        """What the config sections refuse whatever the trait values (pure over ``config``): also reported
        when a trait value cannot be loaded. Backends extend it; :meth:`config_errors` includes it."""
        return []

    def config_errors(self):
        """What this class's configuration refuses, as sentences naming the settings (checked at hub start,
        on a spawner without a user: :func:`config_errors`). Backends extend it (``super().config_errors()``)."""
        errors = [*self.config_section_errors(self.config), *self._limit_errors()]
        allowed, allowed_errors = self._allowed_images_errors()
        errors += allowed_errors
        profile_list = getattr(self, "profile_list", None)
        if self.profiles and profile_list:
            errors.append(
                f"{self.configured_as('profiles')} and {self.configured_as('profile_list')} are both set: "
                "keep one (profiles has groups, shm, env and lifetime; profile_list is KubeSpawner's format)"
            )
        if not self.allow_custom_options and not self.profiles and not profile_list:
            errors.append(
                f"{self.configured_as('allow_custom_options')} = False needs profiles to choose from"
            )
        try:
            parsed = self.workspace_profiles()
        except profiles.ProfileError as e:
            return [*errors, *e.errors]
        policy = self.policy(
            self.default_image(),
            spawner_cpu_limit=self.cpu_limit or None,
            spawner_mem_limit=self.mem_limit or None,
            allowed=allowed,
        )
        names = {
            key: self.configured_as(trait)
            for key, trait in (
                ("images", "allowed_images" if allowed is not None else "workspace_images"),
                ("max_cpu", "max_cpu_limit"),
                ("min_memory", "min_mem_limit"),
                ("max_memory", "max_mem_limit"),
                ("max_shm_size", "max_shm_size"),
                ("max_gpus", "max_gpus"),
                ("allow_all_gpus", "allow_all_gpus"),
                ("max_days_to_live", "max_days_to_live"),
                ("reserved_env_names", "reserved_env_names"),
            )
        }
        if callable(getattr(self, "allowed_images", None)):  # images decided per user: checked at each start
            policy = replace(policy, allow_custom_image=True)
        if self.max_gpus is None:  # as many as the engine has: known once probed
            policy = replace(policy, max_gpus=None)
        errors += profiles.policy_errors(
            parsed,
            policy,
            setting=self.configured_as("profiles"),
            names=names,
            node_selector="node_selector" in self.trait_names(),
        )
        return errors

    def _limit_errors(self):
        """``Spawner.cpu_limit``/``mem_limit`` are the options' defaults: within the admin's limits."""
        errors = []
        checks = (
            ("cpu_limit", self.cpu_limit, "max_cpu_limit", self.max_cpu_limit, 1, lambda v: f"{v:g}"),
            ("mem_limit", self.mem_limit, "max_mem_limit", self.max_mem_limit, 1, format_size),
            ("mem_limit", self.mem_limit, "min_mem_limit", self.min_mem_limit, -1, format_size),
        )
        for trait, value, limit_trait, limit, sign, shown in checks:
            if not value or not limit or (value - limit) * sign <= 0 or self._configured_callable(trait):
                continue  # unset (DockerSpawner's 0), within the limits, or decided per user at each start
            relation = "above" if sign > 0 else "below"
            errors.append(
                f"{self.configured_as(trait)} = {shown(value)} (the default of the {trait} option) is "
                f"{relation} {self.configured_as(limit_trait)} = {shown(limit)}"
            )
        return errors

    def _allowed_images_errors(self):
        """``(AllowedImages or None, errors)`` of DockerSpawner's ``allowed_images`` beside ML Hub's image settings."""
        value = getattr(self, "allowed_images", None)
        if value in (None, {}, []):
            return None, []
        setting = self.configured_as("allowed_images")
        errors = []
        if self.workspace_images and value != "*":  # "*" allows any image beside the offered ones
            errors.append(
                f"{setting} and {self.configured_as('workspace_images')} both list the offered images: keep one"
            )
        if callable(value):
            return None, errors
        try:
            allowed = allowed_image_choices(value, setting)
        except ValueError as e:
            return None, [*errors, str(e)]
        allow_custom = self.configured_as("allow_custom_image")
        if (
            allowed.any_image
            and not self.allow_custom_image
            and not allow_custom.startswith(type(self).__name__ + ".")
        ):
            errors.append(f"{setting} = '*' allows any image, {allow_custom} = False allows none: keep one")
        for image, name in allowed.names:
            other = self.image_display_names.get(image)
            if other and other != name:
                errors.append(
                    f"{setting} names {image} {name!r}, {self.configured_as('image_display_names')} "
                    f"names it {other!r}: keep one"
                )
        return allowed, errors

    def allowed_images_now(self):
        """DockerSpawner's ``allowed_images`` (a callable called for this spawner) as
        :class:`~mlhubspawner.policy.AllowedImages`, or None (unset, or a backend without it)."""
        value = getattr(self, "allowed_images", None)
        if callable(value):
            value = value(self)
        try:
            return allowed_image_choices(value)
        except ValueError as e:
            message = f"{e} (the value for {self._log_name})"
            self.log.error(message)
            raise web.HTTPError(500, "%s", message) from None

    def ssh_target(self):
        """``(host, port)`` of this workspace's sshd as the hub's SSH front reaches it."""
        return self.object_name, self.ssh_port

    # ---- policy and options ---------------------------------------------------------------

    async def current_policy(self):
        """The policy now: the admin's settings capped by the host and by the GPUs one workspace can get."""
        cpus, memory = await self.host_resources()
        gpu_count, gpu_types = gpu_limits(await self.gpu_inventory())
        for trait, limit_trait, shown in (
            ("cpu_limit", "max_cpu_limit", lambda v: f"{v:g}"),
            ("mem_limit", "max_mem_limit", format_size),
        ):  # a per-user callable's value (a fixed one above the maximum stops the hub)
            value, limit = getattr(self, trait) or None, getattr(self, limit_trait)
            if value is not None and limit and value > limit:
                self.log.warning(
                    "%s = %s for %s is above %s = %s: lowered to it",
                    self.configured_as(trait),
                    shown(value),
                    self.user.name,
                    self.configured_as(limit_trait),
                    shown(limit),
                )
        return self.policy(
            self.default_image(),
            host_cpus=cpus,
            host_memory=memory,
            gpu_count=gpu_count,
            gpu_types=gpu_types,
            spawner_cpu_limit=self.cpu_limit or None,  # DockerSpawner's unset is 0
            spawner_mem_limit=self.mem_limit or None,
            allowed=self.allowed_images_now(),
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
        entries = await self.form_profiles(self._last_raw_options or {})
        if self.profiles:  # the custom fields: the last custom options, else the defaults
            if self.workspace_options is not None and self.workspace_options.profile:
                values = {**form_values(policy), "is_mount_volume": values["is_mount_volume"]}
        elif entries:  # empty: the chosen profile's limits (else the defaults), not the last profile's
            values.update(cpu_limit="", mem_limit="")
        return render_options_form(policy, values, gpus=gpus, profiles=entries)

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


class MLHubSpawnerMixin(MLHubSpawner):
    """The former name of :class:`MLHubSpawner`, kept importable: the backends derive from it, so both
    ``c.MLHubSpawner`` and ``c.MLHubSpawnerMixin`` configure them."""


def spawner_class_of(config):
    """The class ``c.JupyterHub.spawner_class`` names (a class, an entry point such as ``mlhub-docker`` or
    a dotted name), or None when it cannot be loaded (JupyterHub says so itself)."""
    value = config.JupyterHub.get("spawner_class", "")
    if isinstance(value, type):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        if "." in value:
            return import_item(value)
        found = [ep for ep in entry_points(group="jupyterhub.spawners") if ep.name == value]
        return found[0].load() if found else None
    except (ImportError, AttributeError):
        return None


def _config_probe(spawner_class, config):
    """A spawner of ``spawner_class`` with ``config``'s traits and no real user (TraitError/ValueError
    when a value cannot be loaded)."""
    probe = spawner_class.__new__(spawner_class)
    # settings given as callables (DockerSpawner's cpu_limit, mem_limit...) are called with the spawner
    probe.user = SimpleNamespace(name=CONFIG_CHECK_USER, groups=[], escaped_name=CONFIG_CHECK_USER)
    Configurable.__init__(probe, config=config)
    return probe


def _unloadable_settings(spawner_class, config):
    """``{(section, trait): message}`` of the spawner's settings whose value cannot be loaded on its own."""
    found = {}
    for section in spawner_class.section_names():
        if not config._has_section(section):
            continue
        for trait, value in config[section].items():
            try:
                _config_probe(spawner_class, Config({section: {trait: value}}))
            except (TraitError, ValueError) as e:
                message = str(e)
                # traitlets names the trait, not the section that set it
                found[section, trait] = (
                    message if message.startswith(section) else f"c.{section}.{trait}: {message}"
                )
    return found


def _config_without(config, dropped):
    """A copy of ``config`` without the ``(section, trait)`` pairs in ``dropped``."""
    copy = Config()
    for section, values in config.items():
        if isinstance(values, Config):
            copy[section] = Config({k: v for k, v in values.items() if (section, k) not in dropped})
        else:
            copy[section] = values
    return copy


def config_errors(spawner_class, config):
    """Every problem of ``config`` for ``spawner_class`` (an :class:`MLHubSpawner`), as sentences naming the
    settings: its traits loaded as for a spawner, then :meth:`MLHubSpawner.config_errors` (no user needed).

    A value that cannot be loaded is reported, and the other settings are checked without it."""
    try:
        return _config_probe(spawner_class, config).config_errors()
    except (TraitError, ValueError) as e:
        first = str(e)
    unloadable = _unloadable_settings(spawner_class, config)
    try:
        probe = _config_probe(spawner_class, _config_without(config, unloadable))
    except (TraitError, ValueError):  # values that only fail together: the first one found
        return [*spawner_class.config_section_errors(config), first]
    errors = [*unloadable.values(), *probe.config_errors()]
    return list(dict.fromkeys(errors))  # in order, once each


def check_spawner_config(config):
    """From ``jupyterhub_config.py``, after the operator's config: the hub exits naming every setting it
    refuses (an ML Hub spawner only; another spawner class is left to JupyterHub)."""
    spawner_class = spawner_class_of(config)
    if not (isinstance(spawner_class, type) and issubclass(spawner_class, MLHubSpawner)):
        return
    errors = config_errors(spawner_class, config)
    if errors:
        sys.exit("ML Hub cannot start: " + "; ".join(errors))
