"""The workspace options form: a packaged Jinja template rendered with explicit values."""

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from .options import format_size

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _environment():
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )


def form_values(policy, last=None):
    """The form's field values (strings) from the last options, else the policy's defaults."""

    def size(value):
        return format_size(value) if value else ""

    cpu = last.cpu_limit if last else policy.default_cpu
    return {
        "image": last.image if last else policy.default_image,
        "cpu_limit": f"{cpu:g}" if cpu else "",
        "mem_limit": size(last.mem_limit if last else policy.default_memory),
        "shm_size": size(last.shm_size if last else policy.default_shm_size),
        "days_to_live": f"{last.days_to_live:g}" if last and last.days_to_live else "",
        "env": "\n".join(f"{k}={v}" for k, v in (last.env if last else {}).items()),
        "is_mount_volume": last.mount_volume if last else True,
        "gpus": last.gpus if last else "",
        "gpu_type": last.gpu_type if last else "",
    }


def submitted_values(raw):
    """Field values from submitted (refused) options, to show them again next to the error."""
    values = {
        key: str(raw.get(key) or "")
        for key in ("image", "cpu_limit", "mem_limit", "shm_size", "days_to_live", "gpus", "gpu_type")
    }
    values["env"] = raw.get("env") if isinstance(raw.get("env"), str) else ""
    values["profile"] = str(raw.get("profile") or "")
    values["is_mount_volume"] = bool(raw.get("is_mount_volume"))
    return values


def gpu_type_choices(policy):
    """``[(value, label)]`` of the form's GPU type select: ``""`` (the default resource, any model) first.

    The first resource by its own name is left out (it is ``""``). Empty without types (Docker).
    """
    choices = []
    first = policy.gpu_type("")
    for gpu_type in policy.gpu_types or ():
        if gpu_type.name == "":
            choices.append(("", f"{gpu_type.resource} (any model)"))
        elif not (gpu_type.resource == first.resource and not gpu_type.product):
            model = gpu_type.product or "any model"
            choices.append((gpu_type.name, f"{gpu_type.resource} · {model}"))
    return choices


def render_options_form(policy, values, error=None, gpus=(), profiles=()):
    """HTML of the options form; ``error`` is an OptionsError shown next to its field.

    ``profiles`` (the spawner's ``form_profiles()``): the operator's profiles, offered first as radio
    buttons named ``profile`` (none: no profile field). Entries of the admin's ``profiles`` have a ``custom``
    key: the form's own fields are then the custom options (the entry with ``custom`` true), shown only while
    it is chosen, and left out when the custom options are not allowed.

    ``gpus`` (the spawner's ``gpu_status()``), listed under the GPU field: one dict per GPU (``id``,
    ``index``, ``uuid``, ``name``, ``memory_mb``, ``free``) or per pool (``"kind": "pool"``, ``type``,
    ``resource``, ``product``, ``memory_mb``, ``total``, ``free``, ``per_node``).
    """
    return (
        _environment()
        .get_template("options_form.html")
        .render(
            policy=policy,
            images=policy.images,
            image_names=dict(policy.image_names),
            values=values,
            custom_selected=values["image"] not in policy.images,
            max_memory=format_size(policy.max_memory) if policy.max_memory else "",
            error_field=error.field if error else None,
            error_message=error.message if error else None,
            gpus=[g for g in gpus if g.get("kind") != "pool"],
            gpu_pools=[g for g in gpus if g.get("kind") == "pool"],
            gpu_types=gpu_type_choices(policy),
            kubernetes=policy.gpu_types is not None,
            profiles=list(profiles),
            # the admin's profiles (mlhubspawner.profiles) have a "custom" entry when the custom options are allowed
            admin_profiles=any("custom" in p for p in profiles),
            show_custom_fields=not any("custom" in p for p in profiles)
            or any(p.get("custom") for p in profiles),
            custom_chosen=any(p.get("custom") and p.get("selected") for p in profiles),
        )
    )
