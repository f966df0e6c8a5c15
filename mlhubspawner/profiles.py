"""The admin's profiles (``c.MLHubSpawner.profiles``): named presets of the workspace options (pure).

A profile sets some options (image, CPUs, memory, GPUs, shm, env, lifetime; a node selector on Kubernetes)
and may be offered to some JupyterHub groups only. A start names it (``{"profile": "gpu-large"}``); what it
sets becomes the options' default and ceiling under the admin's policy: users may ask for less, never more,
and never another image. Its env is the start's env, the user's own variables added (reserved names refused
as always). What a profile leaves out is the user's choice within the policy, as without profiles.

``custom`` (:data:`CUSTOM`) is the form's own fields, offered beside the profiles unless the admin turns it off
(``allow_custom_options``). A start without ``profile`` gets the profile marked ``default`` (when the user may
use it), else the custom options, else the user's first profile.

Checked in two steps: :func:`parse_profiles` (each entry on its own: keys, types, sizes, slugs) when the
setting is loaded, :func:`policy_errors` (against the admin's policy and the backend) at hub start.
"""

import re
from dataclasses import dataclass, field, replace

from .options import (
    OptionsError,
    format_size,
    is_image_reference,
    is_reserved,
    parse_days_to_live,
    parse_env,
    parse_number,
    parse_options,
    parse_size,
)

PROFILE_KEY = "profile"
CUSTOM = "custom"
KEYS = (
    "slug",
    "name",
    "display_name",
    "description",
    "default",
    "groups",
    "image",
    "cpu_limit",
    "mem_limit",
    "gpus",
    "shm_size",
    "env",
    "node_selector",
    "days_to_live",
)
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"(?:{_LABEL_NAME})?")
MAX_TEXT = 1000


class ProfileError(ValueError):
    """What is wrong with the ``profiles`` setting: every problem, each naming the profile and the field."""

    def __init__(self, errors):
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class Profile:
    """One checked profile; ``None``: the profile leaves that option to the user (and the policy)."""

    slug: str
    name: str
    description: str = ""
    default: bool = False
    groups: frozenset | None = None  # None: everyone
    image: str | None = None
    cpu_limit: float | None = None
    mem_limit: int | None = None
    gpus: str | None = None  # "" (none), a count, or "all"
    shm_size: int | None = None
    env: dict = field(default_factory=dict)
    node_selector: dict = field(default_factory=dict)
    days_to_live: float | None = None

    def offered_to(self, groups):
        """Whether a user in JupyterHub ``groups`` (names) may use it."""
        return self.groups is None or bool(self.groups & set(groups))


def slug_of(name):
    """A slug made of a display name: ``GPU (large)`` → ``gpu-large``."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")[:63].strip("-")


def _size(value, key):
    """Bytes from a config value: an int is bytes (as traitlets sizes), a string a size such as ``4G``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise OptionsError(key, f"must be a positive size, got {value!r}")
        return value
    if not isinstance(value, str):
        raise OptionsError(key, f"expected a size such as 512M or 4G, got {value!r}")
    return parse_size(value, key)


def _gpus(value):
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise OptionsError("gpus", f"expected a number of GPUs or 'all', got {value!r}")
    count = int(str(value).strip())
    return str(count) if count else ""


def _labels(value):
    if not isinstance(value, dict):
        raise OptionsError("node_selector", f"expected a dict of label: value, got {value!r}")
    for key, label in value.items():
        if not isinstance(key, str) or len(key) > 317 or not _LABEL_KEY.fullmatch(key):
            raise OptionsError("node_selector", f"{key!r} is not a label name")
        if not isinstance(label, str) or not _LABEL_VALUE.fullmatch(label):
            raise OptionsError("node_selector", f"the value of {key} ({label!r}) is not a label value")
    return dict(value)


def _groups(value):
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(g, str) and g.strip() for g in value
    ):
        raise OptionsError("groups", f"expected a list of JupyterHub group names, got {value!r}")
    if not value:
        raise OptionsError(
            "groups", "an empty list offers the profile to nobody: leave groups out for everyone"
        )
    return frozenset(g.strip() for g in value)


def _text(value, key, required=False):
    if not isinstance(value, str) or (required and not value.strip()):
        raise OptionsError(key, f"expected {'a non-empty' if required else 'a'} string, got {value!r}")
    if len(value) > MAX_TEXT:
        raise OptionsError(key, f"at most {MAX_TEXT} characters")
    return value.strip()


def _profile(entry):
    """A :class:`Profile` of one entry; raises OptionsError naming the field."""
    unknown = sorted(set(entry) - set(KEYS), key=str)
    if unknown:
        raise OptionsError(str(unknown[0]), f"unknown key (known: {', '.join(KEYS)})")
    if "name" in entry and "display_name" in entry:
        raise OptionsError("display_name", "give name or display_name, not both")
    name = _text(entry.get("name", entry.get("display_name")), "name", required=True)
    slug = entry.get("slug", slug_of(name))
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise OptionsError("slug", f"{slug!r} is not a slug (a-z, 0-9, '.', '_', '-'; at most 63)")
    if slug == CUSTOM:
        raise OptionsError("slug", f"{CUSTOM!r} is the form's own options: choose another slug")
    values = {"slug": slug, "name": name}
    if "description" in entry:
        values["description"] = _text(entry["description"], "description")
    if "default" in entry:
        if not isinstance(entry["default"], bool):
            raise OptionsError("default", f"expected true or false, got {entry['default']!r}")
        values["default"] = entry["default"]
    if "groups" in entry:
        values["groups"] = _groups(entry["groups"])
    if "image" in entry:
        image = entry["image"].strip() if isinstance(entry["image"], str) else entry["image"]
        if not is_image_reference(image):
            raise OptionsError("image", f"{entry['image']!r} is not an image reference")
        values["image"] = image
    if "cpu_limit" in entry:
        cpus = parse_number(entry["cpu_limit"], "cpu_limit")
        if cpus < 0.01:
            raise OptionsError("cpu_limit", f"must be at least 0.01 CPUs, got {cpus:g}")
        values["cpu_limit"] = cpus
    for key in ("mem_limit", "shm_size"):
        if key in entry:
            values[key] = _size(entry[key], key)
    if "gpus" in entry:
        values["gpus"] = _gpus(entry["gpus"])
    if "env" in entry:
        if not isinstance(entry["env"], dict):
            raise OptionsError("env", f"expected a dict of NAME: value, got {entry['env']!r}")
        values["env"] = parse_env(entry["env"], ())
    if "node_selector" in entry:
        values["node_selector"] = _labels(entry["node_selector"])
    if "days_to_live" in entry:
        values["days_to_live"] = parse_days_to_live(entry["days_to_live"])
    return Profile(**values)


def parse_profiles(value, setting="MLHubSpawner.profiles"):
    """The :class:`Profile` tuple of the setting's value (a list of dicts); raises :class:`ProfileError`
    listing every problem as ``<setting>[<index>] (<slug>): <field>: <message>``."""
    if not isinstance(value, list | tuple):
        raise ProfileError([f"{setting} must be a list of profiles (dicts), got {type(value).__name__}"])
    profiles, errors = [], []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            errors.append(f"{setting}[{index}] must be a dict, got {type(entry).__name__}")
            continue
        label = entry.get("slug") or entry.get("name") or entry.get("display_name") or ""
        where = f"{setting}[{index}] ({str(label)[:80]!r})"
        try:
            profiles.append(_profile(entry))
        except OptionsError as e:
            errors.append(f"{where}: {e.field}: {e.message}")
    slugs = [p.slug for p in profiles]
    for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
        errors.append(f"{setting}: slug {slug!r} is used by {slugs.count(slug)} profiles (slugs are unique)")
    defaults = [p.slug for p in profiles if p.default]
    if len(defaults) > 1:
        errors.append(f"{setting}: only one profile may be the default, got {', '.join(defaults)}")
    if errors:
        raise ProfileError(errors)
    return tuple(profiles)


def _over(value, limit, shown):
    return limit is not None and value is not None and value > limit + 1e-9 and shown


def policy_errors(profiles, policy, setting="MLHubSpawner.profiles", names=None, node_selector=True):
    """What in ``profiles`` the admin's ``policy`` (a :class:`~mlhubspawner.policy.Policy` without the
    host's caps) refuses, as sentences naming the profile, the field and the setting.

    ``names`` maps the policy's fields to the settings that set them (``max_cpu``:
    ``"MLHubDockerSpawner.max_cpu_limit"``); ``node_selector``: whether the backend has nodes.
    """
    names = {
        "images": "workspace_images",
        "max_cpu": "max_cpu_limit",
        "min_memory": "min_mem_limit",
        "max_memory": "max_mem_limit",
        "max_shm_size": "max_shm_size",
        "max_gpus": "max_gpus",
        "allow_all_gpus": "allow_all_gpus",
        "max_days_to_live": "max_days_to_live",
        "reserved_env_names": "reserved_env_names",
        **(names or {}),
    }
    errors = []
    for index, p in enumerate(profiles):
        where = f"{setting}[{index}] ({p.slug!r})"
        if (
            p.image
            and p.image not in (policy.default_image, *policy.images)
            and not policy.allow_custom_image
        ):
            errors.append(
                f"{where}: image: {p.image} is not an offered image: add it to {names['images']}, "
                "or allow custom images"
            )
        if _over(p.cpu_limit, policy.max_cpu, True):
            errors.append(
                f"{where}: cpu_limit: {p.cpu_limit:g} is above {names['max_cpu']} = {policy.max_cpu:g}"
            )
        if p.mem_limit is not None and p.mem_limit < policy.min_memory:
            errors.append(
                f"{where}: mem_limit: {format_size(p.mem_limit)} is below "
                f"{names['min_memory']} = {format_size(policy.min_memory)}"
            )
        for key, value, limit in (
            ("mem_limit", p.mem_limit, "max_memory"),
            ("shm_size", p.shm_size, "max_shm_size"),
        ):
            if _over(value, getattr(policy, limit), True):
                errors.append(
                    f"{where}: {key}: {format_size(value)} is above "
                    f"{names[limit]} = {format_size(getattr(policy, limit))}"
                )
        if p.gpus == "all" and not policy.allow_all_gpus:
            errors.append(f"{where}: gpus: 'all' needs {names['allow_all_gpus']} = True")
        elif p.gpus and p.gpus != "all" and policy.max_gpus is not None and int(p.gpus) > policy.max_gpus:
            errors.append(f"{where}: gpus: {p.gpus} is above {names['max_gpus']} = {policy.max_gpus}")
        if _over(p.days_to_live, policy.max_days_to_live, True):
            errors.append(
                f"{where}: days_to_live: {p.days_to_live:g} is above "
                f"{names['max_days_to_live']} = {policy.max_days_to_live:g}"
            )
        for name in sorted(n for n in p.env if is_reserved(n, policy.reserved_env_names)):
            errors.append(f"{where}: env: {name} is reserved ({names['reserved_env_names']}): ML Hub sets it")
        if p.node_selector and not node_selector:
            errors.append(
                f"{where}: node_selector: only Kubernetes has nodes to select (this is the Docker backend)"
            )
    return errors


def offered(profiles, groups):
    """The profiles a user in JupyterHub ``groups`` may use, in the admin's order."""
    return tuple(p for p in profiles if p.offered_to(groups))


def chosen(profiles, raw, allow_custom):
    """The profile of raw options among the user's ``profiles`` (``offered()``), or None for the custom options.

    No ``profile``: the one marked default, else custom (when allowed), else the first. A slug the user may
    not use is refused exactly as one that does not exist (an :class:`OptionsError` on ``profile``).
    """
    slug = raw.get(PROFILE_KEY)
    if slug in (None, ""):
        default = next((p for p in profiles if p.default), None)
        if default is not None or allow_custom:
            return default
        if not profiles:
            raise OptionsError(PROFILE_KEY, "no profile is offered to you")
        return profiles[0]
    if slug == CUSTOM:
        if not allow_custom:
            listed = ", ".join(p.slug for p in profiles) or "none"
            raise OptionsError(
                PROFILE_KEY, f"choose a profile, custom options are not allowed (offered: {listed})"
            )
        return None
    profile = next((p for p in profiles if isinstance(slug, str) and p.slug == slug), None)
    if profile is None:
        shown = slug if isinstance(slug, str) else repr(slug)
        raise OptionsError(PROFILE_KEY, f"unknown profile {shown[:80]!r}")
    return profile


def _lowest(value, limit):
    return value if limit is None else min(value, limit)


def constrained_policy(policy, profile):
    """The policy of a start with ``profile``: what it sets is the only image, the default and the ceiling
    (never above the admin's maximums nor the host's size)."""
    changes = {}
    if profile.image is not None:
        changes.update(
            default_image=profile.image,
            images=(profile.image,),
            image_names=tuple(pair for pair in policy.image_names if pair[0] == profile.image),
            allow_custom_image=False,
        )
    if profile.cpu_limit is not None:
        cpus = _lowest(profile.cpu_limit, policy.max_cpu)
        changes.update(default_cpu=cpus, max_cpu=cpus)
    if profile.mem_limit is not None:
        memory = _lowest(profile.mem_limit, policy.max_memory)
        changes.update(default_memory=memory, max_memory=memory, min_memory=min(policy.min_memory, memory))
    if profile.shm_size is not None:
        shm = _lowest(profile.shm_size, policy.max_shm_size)
        changes.update(default_shm_size=shm, max_shm_size=shm)
    if profile.days_to_live is not None:
        days = _lowest(profile.days_to_live, policy.max_days_to_live)
        changes.update(default_days_to_live=days, max_days_to_live=days)
    if profile.gpus is not None and profile.gpus != "all":
        changes.update(max_gpus=min(policy.max_gpus, int(profile.gpus or 0)), allow_all_gpus=False)
    return replace(policy, **changes) if changes else policy


def profile_raw(raw, profile, policy):
    """The raw options of a start with ``profile``: its image, GPUs and env filled in, the user's overrides
    kept (a different image, more GPUs than it gives or a reserved env name: :class:`OptionsError`)."""
    raw = {k: v for k, v in raw.items() if k != PROFILE_KEY}
    if profile.image is not None:
        asked = raw.get("image")
        aliases = dict(policy.image_aliases)  # DockerSpawner's allowed_images keys
        if asked not in (None, "") and aliases.get(str(asked).strip(), str(asked).strip()) != profile.image:
            raise OptionsError(
                "image",
                f"profile {profile.slug!r} runs {profile.image}: choose the custom options for another image",
            )
        raw["image"] = profile.image
    if profile.gpus is not None:
        asked = raw.get("gpus")
        if asked in (None, "") or (isinstance(asked, str) and not asked.strip()):
            raw["gpus"] = profile.gpus
        elif profile.gpus != "all":
            _check_gpus(asked, profile)
    if profile.env:
        env = raw.get("env")
        user_env = parse_env(env, policy.reserved_env_names) if env not in (None, "") else {}
        raw["env"] = {**profile.env, **user_env}
    return raw


def _check_gpus(asked, profile):
    text = str(asked).strip().lower()
    limit = int(profile.gpus or 0)
    if text.isdigit() and int(text) > limit or text == "all":
        raise OptionsError("gpus", f"profile {profile.slug!r} gives at most {limit} GPUs")


def resolve(raw, policy, profiles, allow_custom=True):
    """``(WorkspaceOptions, Policy)`` of raw options (REST or form) with the ``profiles`` the user may use
    (:func:`offered`).

    The options name their profile (slug and name) and carry its node selector; without a profile (custom)
    they are :func:`~mlhubspawner.options.parse_options`'s.
    """
    if not isinstance(raw, dict):
        raise OptionsError("options", "expected a JSON object")
    profile = chosen(profiles, raw, allow_custom)
    if profile is None:
        return parse_options({k: v for k, v in raw.items() if k != PROFILE_KEY}, policy), policy
    policy = constrained_policy(policy, profile)
    options = parse_options(profile_raw(raw, profile, policy), policy)
    options = replace(
        options, profile=profile.slug, profile_name=profile.name, node_selector=dict(profile.node_selector)
    )
    return options, policy


def summary(profile):
    """What the form shows of a profile besides its name and description: ``[(label, value)]``."""
    shown = []
    if profile.image:
        shown.append(("Image", profile.image))
    if profile.cpu_limit is not None:
        shown.append(("CPUs", f"{profile.cpu_limit:g}"))
    if profile.mem_limit is not None:
        shown.append(("Memory", format_size(profile.mem_limit)))
    if profile.gpus:
        shown.append(("GPUs", profile.gpus))
    if profile.shm_size is not None:
        shown.append(("Shared memory", format_size(profile.shm_size)))
    if profile.days_to_live is not None:
        shown.append(("Lifetime", f"{profile.days_to_live:g} days"))
    if profile.env:
        shown.append(("Env", ", ".join(sorted(profile.env))))
    return shown


def form_entries(profiles, raw, allow_custom):
    """The form's choices (dicts for the template), the one ``raw`` options start with selected; the custom
    options last (``"custom": True``) when allowed."""
    try:
        selected = chosen(profiles, raw, allow_custom)
        selected_slug = CUSTOM if selected is None else selected.slug
    except OptionsError:
        selected_slug = None
    entries = [
        {
            "slug": p.slug,
            "display_name": p.name,
            "description": p.description,
            "selected": p.slug == selected_slug,
            "summary": summary(p),
            "options": [],
            "custom": False,
        }
        for p in profiles
    ]
    if allow_custom:
        entries.append(
            {
                "slug": CUSTOM,
                "display_name": "Custom",
                "description": "Choose the image and the limits yourself, within the hub's limits.",
                "selected": selected_slug == CUSTOM,
                "summary": [],
                "options": [],
                "custom": True,
            }
        )
    if entries and not any(e["selected"] for e in entries):
        entries[0]["selected"] = True
    return entries


def form_options(form, raw):
    """The raw options of a submitted form with profiles: a chosen profile takes none of the custom fields
    (they are hidden, but still sent) but the volume checkbox; custom takes them all."""
    values = form.get(PROFILE_KEY) or [""]
    slug = values[0].strip() if isinstance(values[0], str) else ""
    if not slug or slug == CUSTOM:
        return {**raw, PROFILE_KEY: CUSTOM} if slug else raw
    return {PROFILE_KEY: slug, "is_mount_volume": raw.get("is_mount_volume", True)}
