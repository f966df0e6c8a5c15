"""DockerSpawner's settings on ``MLHubDockerSpawner``: which apply, which ML Hub replaces, which it refuses.

:data:`PARENT_SETTINGS` lists every configurable trait of ``DockerSpawner`` (its own and the
``Spawner`` ones it inherits). From it come the check at hub start (``MLHubDockerSpawner.config_errors``: a setting
that would be ignored stops the hub with a message naming it and what to use instead) and the
operator documentation (``python -m mlhubspawner.docker.parent_settings table``). A unit test fails
when DockerSpawner gains a setting the table does not list.
"""

import sys
from dataclasses import dataclass

from .. import images, naming
from . import mounts

APPLIED, POLICY, REPLACED, REFUSED = "applied", "policy", "replaced", "refused"
KIND_TEXT = {
    APPLIED: "applied",
    POLICY: "applied by the options policy",
    REPLACED: "replaced (refused when set)",
    REFUSED: "refused when set",
}


@dataclass(frozen=True)
class ParentSetting:
    """How ML Hub treats one DockerSpawner setting.

    ``kind``: :data:`APPLIED` (works as in DockerSpawner), :data:`POLICY` (applied through the options
    policy), :data:`REPLACED` (an ML Hub setting does this; setting it stops the hub) or :data:`REFUSED`.
    ``refuse``: for an applied setting, the values that stop the hub (e.g. ``use_internal_ip = False``).
    """

    kind: str
    note: str
    refuse: object = None  # value -> bool

    def refuses(self, value):
        if self.kind in (REPLACED, REFUSED):
            return True
        return self.refuse is not None and bool(self.refuse(value))


_JUPYTERHUB = "applied by JupyterHub, as for any spawner"
_ARGS = (
    "applied: passed to `jupyterhub-singleuser` with the spawner's args "
    "(images of the `mlhub` and `docker-stacks` conventions; `ml-workspace` images run their own command)"
)
_ENV = "applied: in the workspace's environment, as DockerSpawner sets it"
_INTERNAL_SSL = (
    "only used with `c.JupyterHub.internal_ssl`, which ML Hub's Docker spawner does not support "
    "(hub and workspace talk over the user's own network)"
)

PARENT_SETTINGS = {
    "allowed_images": ParentSetting(
        POLICY, "the images users may choose in the form and the REST API (with `workspace_images`)"
    ),
    "apply_user_options": ParentSetting(
        REPLACED,
        "ML Hub validates every start's options against its policy: use the profiles and the "
        "`max_*`/`default_*` settings",
    ),
    "args": ParentSetting(APPLIED, _ARGS),
    "auth_state_hook": ParentSetting(APPLIED, _JUPYTERHUB),
    "certs_volume_name": ParentSetting(REFUSED, _INTERNAL_SSL),
    "client_kwargs": ParentSetting(APPLIED, "applied to the Docker client (ML Hub adds `max_pool_size`)"),
    "cmd": ParentSetting(
        APPLIED,
        "applied to images of the `mlhub` convention; per image: `workspace_image_settings` `cmd`",
    ),
    "consecutive_failure_limit": ParentSetting(APPLIED, _JUPYTERHUB),
    "container_image": ParentSetting(REPLACED, "renamed by DockerSpawner: set `image`"),
    "container_ip": ParentSetting(REPLACED, "renamed by DockerSpawner to `host_ip` (refused, see there)"),
    "container_name_template": ParentSetting(
        REPLACED, "renamed by DockerSpawner to `name_template` (replaced, see there)"
    ),
    "container_port": ParentSetting(REPLACED, "renamed by DockerSpawner: set `port`"),
    "container_prefix": ParentSetting(REPLACED, "renamed by DockerSpawner: set `prefix`"),
    "cpu_guarantee": ParentSetting(APPLIED, f"{_ENV} (`CPU_GUARANTEE`); Docker reserves nothing"),
    "cpu_limit": ParentSetting(POLICY, "the default CPU limit of the options, within `max_cpu_limit`"),
    "debug": ParentSetting(APPLIED, _ARGS),
    "default_url": ParentSetting(APPLIED, _ARGS),
    "disable_user_config": ParentSetting(APPLIED, _ENV),
    "env_keep": ParentSetting(APPLIED, _ENV),
    "environment": ParentSetting(APPLIED, f"{_ENV}; users' own variables come first, ML Hub's last"),
    "escape": ParentSetting(
        APPLIED,
        "applied to `{username}`/`{servername}` in the templates of `volumes`, `mounts` and the "
        "`extra_*` settings; container, network and volume names come from `hub_name`",
    ),
    "extra_create_kwargs": ParentSetting(
        APPLIED,
        "applied, templates rendered; `environment` is merged; `name`, `host_config` and ML Hub's own "
        "labels (`mlhub.origin`, `mlhub.user`...) are refused",
    ),
    "extra_host_config": ParentSetting(
        APPLIED,
        "applied, templates rendered, merged over ML Hub's (limits, GPUs, hardening); `network_mode` "
        "is refused (per-user networks), `binds`/`mounts` too: use `volumes`/`mounts`",
    ),
    "format_volume_name": ParentSetting(APPLIED, "applied to `volumes`, `read_only_volumes` and `mounts`"),
    "group_overrides": ParentSetting(
        APPLIED, f"{_JUPYTERHUB}; mounts it sets are checked at each start like configured ones"
    ),
    "host_ip": ParentSetting(
        REFUSED,
        "ML Hub reaches workspaces on their user's network; no port is published on the host",
    ),
    "http_timeout": ParentSetting(
        APPLIED, "applied: how long a start waits for the workspace to answer (unset: 120 s)"
    ),
    "hub_connect_url": ParentSetting(
        APPLIED, "applied as given (ML Hub then does not point workspaces at the gateway or hub container)"
    ),
    "hub_ip_connect": ParentSetting(
        REPLACED, "ignored by DockerSpawner since JupyterHub 0.8: set `c.JupyterHub.hub_connect_url`"
    ),
    "image": ParentSetting(
        APPLIED,
        "the default workspace image; unset: `MLHUB_WORKSPACE_IMAGE`, else ML Hub's minimal workspace image",
    ),
    "image_whitelist": ParentSetting(REPLACED, "renamed by DockerSpawner: set `allowed_images`"),
    "ip": ParentSetting(APPLIED, "applied (`JUPYTERHUB_SERVICE_URL`)"),
    "links": ParentSetting(
        APPLIED,
        "applied as aliases on the user's network (where Docker resolves them); a start whose linked "
        "container is not on that network is refused, naming it (the hub container is on every one)",
    ),
    "mem_guarantee": ParentSetting(APPLIED, f"{_ENV} (`MEM_GUARANTEE`); Docker reserves nothing"),
    "mem_limit": ParentSetting(POLICY, "the default memory limit of the options, within `max_mem_limit`"),
    "mounts": ParentSetting(
        APPLIED,
        "applied beside the workspace's volume, templates rendered; types bind, volume, tmpfs; "
        "targets checked (see below)",
    ),
    "move_certs_image": ParentSetting(REFUSED, _INTERNAL_SSL),
    "name_template": ParentSetting(
        REPLACED, "ML Hub names containers `<hub_name>-ws-<user>[--<server>]`: set `hub_name`"
    ),
    "network_name": ParentSetting(
        REPLACED,
        "every user gets their own network (`subnet_pool`, `subnet_prefix_length`); the hub container "
        "joins it (`hub_container`)",
    ),
    "notebook_dir": ParentSetting(APPLIED, _ARGS),
    "oauth_client_allowed_scopes": ParentSetting(APPLIED, _JUPYTERHUB),
    "oauth_roles": ParentSetting(APPLIED, _JUPYTERHUB),
    "options_form": ParentSetting(
        REPLACED, "ML Hub's options form: profiles, `workspace_images` and the policy's limits"
    ),
    "options_from_form": ParentSetting(
        REPLACED, "ML Hub's options form: profiles, `workspace_images` and the policy's limits"
    ),
    "poll_interval": ParentSetting(APPLIED, _JUPYTERHUB),
    "poll_jitter": ParentSetting(APPLIED, _JUPYTERHUB),
    "port": ParentSetting(
        APPLIED, "applied to images of the `mlhub` and `docker-stacks` conventions; per image: `port`"
    ),
    "post_start_cmd": ParentSetting(
        APPLIED, "applied: run in the container after each start (output in the hub's log)"
    ),
    "post_stop_hook": ParentSetting(APPLIED, _JUPYTERHUB),
    "pre_spawn_hook": ParentSetting(APPLIED, _JUPYTERHUB),
    "prefix": ParentSetting(APPLIED, "applied to `{prefix}` in templates; container names use `hub_name`"),
    "progress_ready_hook": ParentSetting(APPLIED, _JUPYTERHUB),
    "pull_policy": ParentSetting(APPLIED, "applied (an Update pulls unless `never` or `skip`)"),
    "read_only_volumes": ParentSetting(
        APPLIED, "applied read-only beside the workspace's volume, templates rendered, targets checked"
    ),
    "remove": ParentSetting(
        APPLIED, "applied: the container is removed at stop (the workspace's volume stays)"
    ),
    "remove_containers": ParentSetting(REPLACED, "renamed by DockerSpawner: set `remove`"),
    "server_token_scopes": ParentSetting(APPLIED, _JUPYTERHUB),
    "ssl_alt_names": ParentSetting(REFUSED, _INTERNAL_SSL),
    "ssl_alt_names_include_local": ParentSetting(REFUSED, _INTERNAL_SSL),
    "start_timeout": ParentSetting(APPLIED, f"{_JUPYTERHUB} (unset: 300 s)"),
    "tls": ParentSetting(REPLACED, "ignored by DockerSpawner: set `tls_config`"),
    "tls_assert_hostname": ParentSetting(REPLACED, "ignored by DockerSpawner: set `tls_config`"),
    "tls_ca": ParentSetting(REPLACED, "ignored by DockerSpawner: set `tls_config`"),
    "tls_cert": ParentSetting(REPLACED, "ignored by DockerSpawner: set `tls_config`"),
    "tls_config": ParentSetting(APPLIED, "applied to the Docker client"),
    "tls_key": ParentSetting(REPLACED, "ignored by DockerSpawner: set `tls_config`"),
    "tls_verify": ParentSetting(REPLACED, "ignored by DockerSpawner: set `tls_config`"),
    "use_docker_client_env": ParentSetting(
        REFUSED, "ignored by DockerSpawner: `DOCKER_HOST` and the other `DOCKER_*` variables always apply"
    ),
    "use_internal_hostname": ParentSetting(
        APPLIED, "applied (the hub must resolve container names: the hub container, `hub_container`)"
    ),
    "use_internal_ip": ParentSetting(
        APPLIED,
        "always on: workspaces are reached on their user's network; `False` is refused",
        refuse=lambda value: value is False,
    ),
    "volumes": ParentSetting(
        APPLIED, "applied beside the workspace's volume, templates rendered, targets checked (see below)"
    ),
}

# where ML Hub's own classes keep their settings; a parent section's value they override is refused
_PARENT_SECTIONS = ("Spawner", "DockerSpawner")
_OWN_LABELS = {value for key, value in vars(naming).items() if key.startswith("LABEL_")}
_REFUSED_CREATE_KEYS = {
    "name": "ML Hub names the container (`hub_name`)",
    "host_config": "ML Hub builds the host config: use `extra_host_config`",
}
_REFUSED_HOST_KEYS = {
    "network_mode": "every user gets their own network (`subnet_pool`)",
    "binds": "use `volumes` / `read_only_volumes`",
    "mounts": "use `mounts`",
}


def refused_extra_keys(extra_create, extra_host):
    """Messages for the keys of ``extra_create_kwargs``/``extra_host_config`` ML Hub refuses (pure)."""
    errors = []
    for key, why in _REFUSED_CREATE_KEYS.items():
        if key in extra_create:
            errors.append(f"DockerSpawner.extra_create_kwargs[{key!r}] is refused: {_plain(why)}")
    labels = extra_create.get("labels") or {}
    for label in labels if isinstance(labels, dict) else ():
        if label in _OWN_LABELS:
            errors.append(
                f"DockerSpawner.extra_create_kwargs['labels'][{label!r}] is refused: "
                "ML Hub's own labels say whose a container is"
            )
    for key, why in _REFUSED_HOST_KEYS.items():
        if key in extra_host:
            errors.append(f"DockerSpawner.extra_host_config[{key!r}] is refused: {_plain(why)}")
    return errors


def _sections_setting(config, sections, name):
    """``[(section, value)]`` of the config sections that set ``name``."""
    found = []
    for section in sections:
        if config._has_section(section) and name in config[section]:
            found.append((section, config[section][name]))
    return found


def refused_settings(config, spawner_class):
    """Messages for the settings in ``config`` that ML Hub would ignore (pure over the Config)."""
    errors = []
    sections = spawner_class.section_names()
    ours = [s for s in sections if s not in (*_PARENT_SECTIONS, "Configurable", "LoggingConfigurable")]
    for name, setting in PARENT_SETTINGS.items():
        for section, value in _sections_setting(config, sections, name):
            if setting.refuses(value):
                what = {REFUSED: "is not supported", REPLACED: "is replaced in ML Hub"}.get(
                    setting.kind, f"= {value!r} is not supported"
                )
                errors.append(f"c.{section}.{name} {what} ({_plain(setting.note)}); remove it")
                break
    # a parent section's value that an ML Hub section overrides would be silently lost
    for name in spawner_class.class_traits(config=True):
        parents = _sections_setting(config, _PARENT_SECTIONS, name)
        mine = _sections_setting(config, ours, name)
        if not parents or not mine:
            continue
        winner_section, winner = mine[-1]
        for section, value in parents:
            if value != winner:
                errors.append(
                    f"c.{section}.{name} = {value!r} is overridden by c.{winner_section}.{name} = "
                    f"{winner!r} (ML Hub's own configuration sets it): set c.{winner_section}.{name} instead"
                )
    if config._has_section("JupyterHub") and config.JupyterHub.get("internal_ssl"):
        errors.append(f"c.JupyterHub.internal_ssl is not supported ({_plain(_INTERNAL_SSL)}); remove it")
    return errors


def _plain(note):
    return note.replace("`", "")


def workspace_paths(spawner):
    """Where workspaces' own volume may be mounted: ``volume_path`` and the offered images' paths."""
    paths = {spawner.volume_path.rstrip("/") or "/"}
    offered = spawner.offered_images(spawner.default_image())
    for image in offered:
        run = images.image_run(
            spawner.image_settings(image),
            spawner_cmd=spawner.cmd,
            spawner_port=spawner.port,
            spawner_volume_path=spawner.volume_path,
        )
        paths.add(run.volume_path)
    for value in (spawner.workspace_image_settings or {}).values():
        if isinstance(value, dict) and value.get("volume_path"):
            paths.add(str(value["volume_path"]).rstrip("/"))
    return sorted(paths)


def check_values(spawner):
    """Messages for configured values ML Hub refuses: mount targets, ``extra_*`` keys (a probe spawner).

    Templates are rendered for a user named ``user``; each start checks its own values again.
    """
    errors = []
    paths = workspace_paths(spawner)
    if getattr(spawner.format_volume_name, "__module__", "").startswith("dockerspawner"):
        # DockerSpawner's own naming strategies (a custom one is only called at each start)
        try:
            specs = spawner.parent_mount_specs()
        except ValueError as e:
            errors.append(str(e))
        else:
            for spec in specs:
                try:
                    mounts.check_mounts([spec], paths)
                except ValueError as e:
                    errors.append(str(e))
            if not errors:
                try:
                    mounts.check_mounts(specs, paths)  # the same target in two settings
                except ValueError as e:
                    errors.append(str(e))
    for name in ("extra_create_kwargs", "extra_host_config"):
        value = getattr(spawner, name)
        if not (isinstance(value, dict) or callable(value)):
            errors.append(f"DockerSpawner.{name} must be a dict or a callable, got {value!r}")
    create = spawner.extra_create_kwargs if isinstance(spawner.extra_create_kwargs, dict) else {}
    host = spawner.extra_host_config if isinstance(spawner.extra_host_config, dict) else {}
    errors += refused_extra_keys(create, host)
    return errors


def markdown_table():
    """The operator documentation's table: one row per DockerSpawner setting."""
    rows = ["| Setting | On ML Hub | How |", "|---|---|---|"]
    for name, setting in sorted(PARENT_SETTINGS.items()):
        rows.append(f"| `{name}` | {KIND_TEXT[setting.kind]} | {setting.note} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m mlhubspawner.docker.parent_settings table
    if sys.argv[1:] != ["table"]:
        sys.exit("usage: python -m mlhubspawner.docker.parent_settings table")
    print(markdown_table())
