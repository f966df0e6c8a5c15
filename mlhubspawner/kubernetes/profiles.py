"""KubeSpawner's ``profile_list`` (z2jh ``singleuser.profileList``) in ML Hub's terms (pure).

A profile is the operator's: its ``kubespawner_override`` and the overrides of the
``profile_options`` choices are applied to one start only. What ML Hub's options already decide
(``image``, ``cpu_limit``, ``mem_limit``, GPUs as ``extra_resource_limits``) is not set on the
spawner but becomes a :class:`ProfileChoice`: the image is fixed, the limits are the start's default
and its ceiling (under the admin's own maximums), the GPUs go through the GPU policy. Everything
else is a setting of the spawner, applied on copies (never merged into a configured dict in place).

``user_options`` of a start with a profile, KubeSpawner's shape::

    {"profile": "<slug>", "<option>": "<choice>", "<option>--unlisted-choice": "<free text>", ...ML Hub's}
"""

import copy
import re
from dataclasses import dataclass, replace

from slugify import slugify

from ..options import OptionsError, format_size

PROFILE_KEY = "profile"
UNLISTED_SUFFIX = "--unlisted-choice"
FORM_PREFIX = "profile-option-"
UNLISTED_FORM_VALUE = "unlisted-choice"  # the form's "Other..." entry of a choice select
# overrides that are ML Hub's options, not settings: read into a ProfileChoice
OPTION_KEYS = ("image", "image_spec", "cpu_limit", "mem_limit")
# KubeSpawner's deprecated names of settings, and what ML Hub calls them
RENAMED_SETTINGS = {"image_spec": "image", "storage_pvc_ensure": "persistent_volumes"}


@dataclass(frozen=True)
class ProfileChoice:
    """What a chosen profile decides of ML Hub's options; ``None``/``""``: left to the user."""

    slug: str
    display_name: str
    image: str | None = None
    cpu_limit: float | None = None
    mem_limit: int | None = None
    gpus: str = ""
    gpu_type: str | None = None


def profile_entries(profile_list):
    """The profiles as a list (a dict of profiles by key is sorted by key, as KubeSpawner does)."""
    if isinstance(profile_list, dict):
        return [profile_list[key] for key in sorted(profile_list)]
    return list(profile_list or [])


def initialized_profiles(profile_list):
    """A copy with every slug (from ``display_name`` when missing), one default profile and one default
    choice per option with choices; ``unlisted_choice`` always a dict."""
    profiles = copy.deepcopy(profile_entries(profile_list))
    for profile in profiles:
        profile.setdefault("slug", slugify(str(profile.get("display_name", ""))))
        for option in (profile.get("profile_options") or {}).values():
            choices = option.get("choices") or {}
            if choices and not any(c.get("default") for c in choices.values()):
                choices[next(iter(choices))]["default"] = True
            unlisted = option.setdefault("unlisted_choice", {})
            unlisted.setdefault("enabled", False)
            if unlisted["enabled"]:
                unlisted.setdefault("display_name_in_choices", "Other...")
    if profiles and not any(p.get("default") for p in profiles):
        profiles[0]["default"] = True
    return profiles


def profile_list_errors(profile_list, is_setting, setting="profile_list"):
    """What is wrong with a ``profile_list`` (sentences naming the entry), empty when nothing.

    ``is_setting(name)`` says whether the spawner has a setting of that name: an override of anything
    else would be silently ignored by KubeSpawner, so it is an error here.
    """
    errors = []
    if not isinstance(profile_list, list | dict):
        return [f"{setting} must be a list or dict of profiles, got {type(profile_list).__name__}"]
    entries = profile_entries(profile_list)
    if any(not isinstance(p, dict) for p in entries):
        return [f"{setting}: every profile must be a dict"]
    profiles = initialized_profiles(entries)
    slugs = [p["slug"] for p in profiles]
    for index, profile in enumerate(profiles):
        where = f"{setting}[{index}]"
        if not isinstance(profile.get("display_name"), str) or not profile["display_name"].strip():
            errors.append(f"{where}: display_name is required")
        if not isinstance(profile["slug"], str) or not profile["slug"]:
            errors.append(f"{where}: slug must be a non-empty string")
        elif slugs.count(profile["slug"]) > 1:
            errors.append(f"{where}: slug {profile['slug']!r} is not unique")
        errors += _override_errors(
            profile.get("kubespawner_override", {}), f"{where}.kubespawner_override", is_setting
        )
        options = profile.get("profile_options") or {}
        if not isinstance(options, dict):
            errors.append(f"{where}.profile_options must be a dict")
            continue
        for name, option in options.items():
            errors += _option_errors(name, option, f"{where}.profile_options.{name}", is_setting)
    return errors


def _override_errors(override, where, is_setting):
    if not isinstance(override, dict):
        return [f"{where} must be a dict"]
    return [
        f"{where}: {key!r} is not a setting of this spawner"
        for key in override
        if not (key in OPTION_KEYS or key in RENAMED_SETTINGS or is_setting(key))
    ]


def _option_errors(name, option, where, is_setting):
    if not isinstance(option, dict):
        return [f"{where} must be a dict"]
    errors = []
    if UNLISTED_SUFFIX in str(name) or not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
        errors.append(f"{where}: option names are letters, digits, '.', '_' and '-'")
    choices = option.get("choices") or {}
    unlisted = option.get("unlisted_choice") or {}
    if not isinstance(choices, dict) or not isinstance(unlisted, dict):
        return [*errors, f"{where}: choices and unlisted_choice must be dicts"]
    if not choices and not unlisted.get("enabled"):
        errors.append(f"{where}: needs choices or an enabled unlisted_choice")
    for key, choice in choices.items():
        if not isinstance(choice, dict):
            errors.append(f"{where}.choices.{key} must be a dict")
            continue
        if key == UNLISTED_FORM_VALUE:
            errors.append(f"{where}.choices: {UNLISTED_FORM_VALUE!r} is reserved")
        errors += _override_errors(
            choice.get("kubespawner_override", {}), f"{where}.choices.{key}.kubespawner_override", is_setting
        )
    if unlisted.get("enabled"):
        errors += _override_errors(
            unlisted.get("kubespawner_override", {}),
            f"{where}.unlisted_choice.kubespawner_override",
            is_setting,
        )
        pattern = unlisted.get("validation_regex")
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                errors.append(f"{where}.unlisted_choice.validation_regex: {e}")
    return errors


def profile_option_keys(profile, user_options):
    """The keys of ``user_options`` that belong to ``profile`` (``profile``, its options, their unlisted choices)."""
    names = set(profile.get("profile_options") or {})
    return {
        key
        for key in user_options
        if key == PROFILE_KEY or key in names or key.removesuffix(UNLISTED_SUFFIX) in names
    }


def select_profile(profiles, user_options):
    """``(profile, overrides)``: the chosen (or default) profile of initialized ``profiles`` and its overrides
    in the order KubeSpawner applies them (the profile's, then each option's choice, ``{value}`` filled in).

    Raises :class:`OptionsError` (field ``profile``) for an unknown slug or an invalid choice.
    """
    slug = user_options.get(PROFILE_KEY)
    if slug in (None, ""):
        profile = next(p for p in profiles if p.get("default"))
    else:
        profile = next((p for p in profiles if isinstance(slug, str) and p["slug"] == slug), None)
        if profile is None:
            shown = slug if isinstance(slug, str) and len(slug) <= 80 else f"{str(slug)[:80]}…"
            offered = ", ".join(p["slug"] for p in profiles)
            raise OptionsError(PROFILE_KEY, f"no profile {shown!r} is offered to you (offered: {offered})")
    overrides = [profile.get("kubespawner_override") or {}]
    for name, option in (profile.get("profile_options") or {}).items():
        overrides.append(_option_override(profile, name, option, user_options))
    return profile, overrides


def _option_override(profile, name, option, user_options):
    label = f"option {name!r} of profile {profile['slug']!r}"
    unlisted = option.get("unlisted_choice") or {}
    typed = user_options.get(name + UNLISTED_SUFFIX)
    choice = user_options.get(name)
    choices = option.get("choices") or {}
    if typed not in (None, "") or (choice == UNLISTED_FORM_VALUE and unlisted.get("enabled")):
        if not unlisted.get("enabled"):
            raise OptionsError(PROFILE_KEY, f"{label} takes no free-form value")
        if not isinstance(typed, str) or not typed.strip():
            raise OptionsError(PROFILE_KEY, f"{label}: a value is required")
        typed = typed.strip()
        pattern = unlisted.get("validation_regex")
        if len(typed) > 1024 or (pattern and not re.match(pattern, typed)):
            message = unlisted.get("validation_message") or f"must match {pattern}"
            raise OptionsError(PROFILE_KEY, f"{label}: {typed[:80]!r}: {message}")
        return fill_value(unlisted.get("kubespawner_override") or {}, typed)
    if choice in (None, ""):
        if not choices:
            raise OptionsError(PROFILE_KEY, f"{label}: a value is required")
        choice = next(key for key, c in choices.items() if c.get("default"))
    if not isinstance(choice, str) or choice not in choices:
        raise OptionsError(
            PROFILE_KEY, f"{label}: {str(choice)[:80]!r} is not a choice ({', '.join(choices)})"
        )
    return choices[choice].get("kubespawner_override") or {}


def fill_value(override, value):
    """A copy of ``override`` with ``{value}`` in every string replaced by ``value`` (nothing else is formatted)."""
    if isinstance(override, str):
        return override.replace("{value}", value)
    if isinstance(override, dict):
        return {k: fill_value(v, value) for k, v in override.items()}
    if isinstance(override, list | tuple):
        return [fill_value(v, value) for v in override]
    return override


def merged(base, update):
    """A new dict: ``base`` recursively updated by ``update``; a ``None`` value removes the key (KubeSpawner's rule)."""
    result = copy.deepcopy(dict(base))
    for key, value in update.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def describe(profile):
    """What the form shows of a profile besides its name and description: ``[(label, value)]``."""
    override = profile.get("kubespawner_override") or {}
    shown = []
    image = override.get("image", override.get("image_spec"))
    if isinstance(image, str):
        shown.append(("Image", image))
    if isinstance(override.get("cpu_limit"), int | float):
        shown.append(("CPUs", f"{override['cpu_limit']:g}"))
    mem = override.get("mem_limit")
    if isinstance(mem, int) and not isinstance(mem, bool):
        shown.append(("Memory", format_size(mem)))
    elif isinstance(mem, str):
        shown.append(("Memory", mem))
    for resource, count in (override.get("extra_resource_limits") or {}).items():
        shown.append((resource, str(count)))
    return shown


def constrained_policy(policy, choice):
    """The policy of a start with ``choice``: its image the only one, its limits the default and the ceiling.

    The admin's maximums (and the node's size) still hold: a profile's limit above them is lowered to them.
    """
    changes = {}
    if choice.image is not None:
        changes.update(default_image=choice.image, images=(choice.image,), allow_custom_image=False)
    if choice.cpu_limit is not None:
        cpu = choice.cpu_limit if policy.max_cpu is None else min(choice.cpu_limit, policy.max_cpu)
        changes.update(default_cpu=cpu, max_cpu=cpu)
    if choice.mem_limit is not None:
        mem = choice.mem_limit if policy.max_memory is None else min(choice.mem_limit, policy.max_memory)
        changes.update(default_memory=mem, max_memory=mem, min_memory=min(policy.min_memory, mem))
    return replace(policy, **changes) if changes else policy


def with_choice(raw, choice):
    """ML Hub's raw options with what ``choice`` fixes (image, GPUs); a different value asked for is refused."""
    fixed = {}
    if choice.image is not None:
        fixed["image"] = choice.image
    if choice.gpu_type is not None:
        fixed.update(gpus=choice.gpus, gpu_type=choice.gpu_type)
    for key, value in fixed.items():
        asked = raw.get(key)
        if (
            asked not in (None, "")
            and str(asked).strip() != value
            and not (key == "gpus" and _same_count(asked, value))
        ):
            raise OptionsError(key, f"profile {choice.slug!r} sets it to {value or 'none'!r}")
    return {**raw, **fixed}


def _same_count(asked, value):
    text = str(asked).strip().lower()
    return text in ("none", "0", "") and value == "" or text == value


def form_profile_options(form):
    """The profile fields of a submitted form (lists of strings) in the ``user_options`` shape.

    Only the chosen profile's ``profile-option-<slug>--<option>`` fields count; an option's free-form
    field only when its select says "Other..." (``unlisted-choice``).
    """

    def first(key):
        values = form.get(key) or [""]
        return values[0].strip() if isinstance(values[0], str) else ""

    slug = first(PROFILE_KEY)
    if not slug:
        return {}
    raw, prefix = {PROFILE_KEY: slug}, f"{FORM_PREFIX}{slug}--"
    for key in form:
        if key.startswith(prefix) and not key.endswith(UNLISTED_SUFFIX):
            name, value = key[len(prefix) :], first(key)
            if value == UNLISTED_FORM_VALUE:
                raw[name + UNLISTED_SUFFIX] = first(key + UNLISTED_SUFFIX)
            elif value:
                raw[name] = value
    return raw


def form_entries(profiles, raw):
    """The form's profiles (dicts for the template): the one of ``raw`` (else the default) selected, the
    option choices of ``raw`` preselected for it."""
    chosen = raw.get(PROFILE_KEY)
    if not any(p["slug"] == chosen for p in profiles):
        chosen = next((p["slug"] for p in profiles if p.get("default")), None)
    entries = []
    for profile in profiles:
        selected = profile["slug"] == chosen
        options = []
        for name, option in (profile.get("profile_options") or {}).items():
            form_name = f"{FORM_PREFIX}{profile['slug']}--{name}"
            typed = raw.get(name + UNLISTED_SUFFIX) if selected else None
            picked = raw.get(name) if selected else None
            choices = option.get("choices") or {}
            if picked not in choices:
                picked = next((k for k, c in choices.items() if c.get("default")), None)
            unlisted = option.get("unlisted_choice") or {}
            unlisted_selected = bool(unlisted.get("enabled") and (typed or not choices))
            options.append(
                {
                    "name": name,
                    "display_name": option.get("display_name") or name,
                    "form_name": form_name,
                    "choices": [
                        (key, c.get("display_name") or key, key == picked and not unlisted_selected)
                        for key, c in choices.items()
                    ],
                    "unlisted": unlisted.get("enabled", False),
                    "unlisted_label": unlisted.get("display_name_in_choices", "Other..."),
                    "unlisted_name": unlisted.get("display_name") or "Other",
                    "unlisted_selected": unlisted_selected,
                    "unlisted_value": typed if isinstance(typed, str) else "",
                    "unlisted_hint": unlisted.get("validation_message") or "",
                }
            )
        entries.append(
            {
                "slug": profile["slug"],
                "display_name": profile.get("display_name") or profile["slug"],
                "description": profile.get("description") or "",
                "selected": selected,
                "summary": describe(profile),
                "options": options,
            }
        )
    return entries
