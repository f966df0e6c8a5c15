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


def render_options_form(policy, last=None, server_name="", gpus_free=None):
    """HTML of the options form for ``policy``, prefilled from ``last`` (WorkspaceOptions or None)."""

    def size(value):
        return format_size(value) if value else ""

    last_image = last.image if last else policy.default_image
    return (
        _environment()
        .get_template("options_form.html")
        .render(
            policy=policy,
            server_name=server_name,
            images=policy.images,
            selected_image=last_image,
            custom_selected=last_image not in policy.images,
            cpu=(last.cpu_limit if last and last.cpu_limit else policy.default_cpu) or "",
            mem=size(last.mem_limit if last else policy.default_memory),
            shm=size(last.shm_size if last else policy.default_shm_size),
            days=(last.days_to_live if last and last.days_to_live else policy.default_days_to_live) or "",
            env="\n".join(f"{k}={v}" for k, v in (last.env if last else {}).items()),
            mount_volume=last.mount_volume if last else True,
            gpus=last.gpus if last else "",
            max_memory=size(policy.max_memory),
            max_shm=size(policy.max_shm_size),
            gpus_free=gpus_free,
        )
    )
