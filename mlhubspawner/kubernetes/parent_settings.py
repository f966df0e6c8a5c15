"""KubeSpawner's settings on ``MLHubKubernetesSpawner``: applied, replaced by ML Hub's own, or refused (pure).

:data:`KUBESPAWNER_SETTINGS` names every configurable trait of ``kubespawner.KubeSpawner`` (its own and
JupyterHub's ``Spawner``'s) and says what ML Hub does with it. :func:`value_errors` turns that into errors that
name the setting, at hub start (``MLHubKubernetesSpawner.config_errors``, the operator's config) and at each
start (after profiles and group overrides changed the settings). Nothing is silently ignored: a setting
whose value ML Hub would not use is refused.
"""

import posixpath
from dataclasses import dataclass

from . import objects

APPLIED, REPLACED, REFUSED = "applied", "replaced", "refused"

# where a volume mount would hide what the workspace needs: the service account token, the internal_ssl certs
SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SHM_PATH = "/dev/shm"
# keys of extra_container_config / extra_pod_config that would replace what ML Hub builds
REFUSED_CONTAINER_KEYS = ("name", "image", "resources", "env")
REFUSED_POD_KEYS = ("containers",)
# settings whose keys are labels or annotations: ML Hub's own (mlhub.*) are not the operator's
LABEL_SETTINGS = (
    "common_labels",
    "extra_labels",
    "extra_annotations",
    "storage_extra_labels",
    "storage_extra_annotations",
    "user_namespace_annotations",
)
DEFAULT_SECRET_MOUNT_PATH = "/etc/jupyterhub/ssl/"  # KubeSpawner.secret_mount_path's default


@dataclass(frozen=True)
class Handling:
    """What ML Hub does with one KubeSpawner setting: ``status`` (applied/replaced/refused) and how."""

    status: str
    how: str = ""


def _a(how=""):
    return Handling(APPLIED, how)


def _r(how):
    return Handling(REPLACED, how)


def _x(why):
    return Handling(REFUSED, why)


KUBESPAWNER_SETTINGS = {
    # ---- JupyterHub's Spawner --------------------------------------------------------------
    "apply_user_options": _a(
        "ML Hub's default validates the options; a custom one runs, the policy still checks"
    ),
    "args": _a("dropped for images whose convention runs their own command (workspace_image_settings)"),
    "auth_state_hook": _a(),
    "cmd": _a("per image: workspace_image_settings' cmd"),
    "consecutive_failure_limit": _a(),
    "cpu_guarantee": _a("the CPU request (at most the limit); else resource_request_ratio × the limit"),
    "cpu_limit": _r(
        "the default of the workspace option cpu_limit (instead of default_cpu_limit), within max_cpu_limit; "
        "each start's limit is the option's"
    ),
    "debug": _a(),
    "default_url": _a(),
    "disable_user_config": _a(),
    "env_keep": _a(),
    "environment": _a("ML Hub's reserved variables (reserved_env_names) win"),
    "group_overrides": _a("checked like the configuration at each start"),
    "http_timeout": _a(),
    "hub_connect_url": _a(),
    "ip": _a(),
    "mem_guarantee": _a("the memory request (at most the limit); else resource_request_ratio × the limit"),
    "mem_limit": _r(
        "the default of the workspace option mem_limit (instead of default_mem_limit), within "
        "min_mem_limit..max_mem_limit; each start's limit is the option's"
    ),
    "notebook_dir": _a(),
    "oauth_client_allowed_scopes": _a(),
    "oauth_roles": _a(),
    "options_form": _a("replaces ML Hub's form; what it submits is validated as ML Hub's options"),
    "options_from_form": _a("replaces ML Hub's; the options are validated by the policy at start"),
    "poll_interval": _a(),
    "poll_jitter": _a(),
    "port": _a("ML Hub's default 8080; per image: workspace_image_settings' port"),
    "post_stop_hook": _a(),
    "pre_spawn_hook": _a(),
    "progress_ready_hook": _a(),
    "server_token_scopes": _a(),
    "ssl_alt_names": _a(),
    "ssl_alt_names_include_local": _a(),
    "start_timeout": _a(),
    # ---- KubeSpawner ----------------------------------------------------------------------
    "additional_profile_form_template_paths": _x("ML Hub's options form shows the profiles (profile_list)"),
    "after_pod_created_hook": _a(),
    "allow_privilege_escalation": _a("True only with pod_security_level = 'baseline'"),
    "automount_service_account_token": _a(),
    "common_labels": _a("mlhub.* keys are refused: ML Hub's labels"),
    "component_label": _a(),
    "container_security_context": _a("completed, and checked, by pod_security_level"),
    "delete_grace_period": _a(),
    "delete_pvc": _a("ML Hub's default False: the cleanup service removes volumes after their grace period"),
    "delete_stopped_pods": _a(),
    "dns_name_template": _a("also the SSH front's target"),
    "enable_user_namespaces": _a("the user's NetworkPolicy lives in the user's namespace"),
    "events_enabled": _a(),
    "extra_annotations": _a("mlhub.* keys are refused: ML Hub's owner annotations"),
    "extra_container_config": _a(
        "keys name, image, resources and env are refused: ML Hub's options set them"
    ),
    "extra_containers": _a("hardened by pod_security_level like the workspace container"),
    "extra_labels": _a("mlhub.* keys are refused: ML Hub's labels"),
    "extra_pod_config": _a("key containers is refused; the rest is checked by pod_security_level"),
    "extra_resource_guarantees": _a("cpu, memory and GPU resources are refused: ML Hub's options set them"),
    "extra_resource_limits": _a(
        "cpu, memory and GPU resources are refused: max_gpus and the options set them"
    ),
    "fs_gid": _a("ML Hub's default 100"),
    "get_pod_url": _a(),
    "gid": _a("ML Hub's default 100"),
    "handle_legacy_names": _r(
        "ML Hub's migration switch (default False): adopt the user's PVC and stop the user's pod of a stock "
        "KubeSpawner deployment (their names and labels checked)"
    ),
    "hub_connect_ip": _a("deprecated by KubeSpawner: JupyterHub.hub_connect_ip"),
    "hub_connect_port": _a("deprecated by KubeSpawner: JupyterHub.hub_connect_url"),
    "image": _r("the default of the workspace option image (workspace_images, profiles)"),
    "image_pull_policy": _a("Always when the user asks for an update"),
    "image_pull_secrets": _a(),
    "init_containers": _a("hardened by pod_security_level"),
    "k8s_api_host": _a(),
    "k8s_api_request_retry_timeout": _a(),
    "k8s_api_request_timeout": _a(),
    "k8s_api_ssl_ca_cert": _a(),
    "k8s_api_threadpool_workers": _a("no effect since KubeSpawner 3 (as there)"),
    "k8s_api_verify_ssl": _a(),
    "lifecycle_hooks": _a(),
    "modify_pod_hook": _a(
        "runs after ML Hub's changes and Pod Security checks: what it changes is the operator's"
    ),
    "namespace": _a(),
    "node_affinity_preferred": _a(),
    "node_affinity_required": _a(),
    "node_selector": _a("merged with gpu_node_selector for workspaces with GPUs"),
    "pod_affinity_preferred": _a(),
    "pod_affinity_required": _a(),
    "pod_anti_affinity_preferred": _a(),
    "pod_anti_affinity_required": _a(),
    "pod_connect_ip": _a("the hub's URL of the workspace; SSH goes to the Service (dns_name_template)"),
    "pod_name_template": _a("ML Hub's default: mlhub-style names (hub name, user, server)"),
    "pod_security_context": _a("completed, and checked, by pod_security_level"),
    "priority_class_name": _a(),
    "privileged": _a("refused at start by either pod_security_level"),
    "profile_form_template": _x("ML Hub's options form shows the profiles (profile_list)"),
    "profile_list": _a("offered in ML Hub's form; overrides hold for one start"),
    "pvc_name_template": _a("ML Hub's default: mlhub-style names (hub name, user, server)"),
    "remember_pvc_name": _a(),
    "scheduler_name": _a(),
    "secret_mount_path": _a("no volume mount may cover it"),
    "secret_name_template": _a(),
    "service_account": _a(),
    "services_enabled": _a("must stay True (ML Hub's default): the SSH front reaches workspaces through it"),
    "slow_spawn_message": _a(),
    "slow_spawn_message_frequency": _a(),
    "slow_spawn_message_threshold": _a(),
    "slug_scheme": _a("for templates that use {username}, {servername}..."),
    "storage_access_modes": _a(),
    "storage_capacity": _a("ML Hub's default 10Gi"),
    "storage_class": _a(),
    "storage_extra_annotations": _a("mlhub.* keys are refused"),
    "storage_extra_labels": _a("mlhub.* keys are refused"),
    "storage_pvc_ensure": _a(
        "the default of persistent_volumes, which decides at each start with is_mount_volume"
    ),
    "storage_selector": _a(),
    "supplemental_gids": _a(),
    "tolerations": _a("gpu_tolerations are added for workspaces with GPUs"),
    "uid": _a("ML Hub's default 1000; 0 only with pod_security_level = 'baseline'"),
    "user_namespace_annotations": _a("mlhub.* keys are refused"),
    "user_namespace_labels": _a("the hub's mlhub.origin label is always added"),
    "user_namespace_template": _a(),
    "volume_mounts": _a(
        "merged with ML Hub's; none may cover volume_path, /dev/shm, the service account token or secret_mount_path"
    ),
    "volumes": _a("merged with ML Hub's (mlhub-workspace, mlhub-shm: names refused)"),
    "working_dir": _a(),
}


def refused_names():
    return sorted(name for name, handling in KUBESPAWNER_SETTINGS.items() if handling.status == REFUSED)


# the settings value_errors reads
CHECKED_SETTINGS = (
    "services_enabled",
    "profile_form_template",
    "additional_profile_form_template_paths",
    "secret_mount_path",
    "volume_mounts",
    "volumes",
    "extra_container_config",
    "extra_pod_config",
    "extra_resource_limits",
    "extra_resource_guarantees",
    *LABEL_SETTINGS,
)


def _entries(list_or_dict):
    """A KubeSpawner list-or-dict setting's entries (a dict's sorted by key, as KubeSpawner takes them)."""
    if isinstance(list_or_dict, dict):
        return [list_or_dict[k] for k in sorted(list_or_dict)]
    return list(list_or_dict or [])


def _field(entry, camel, snake):
    if isinstance(entry, dict):
        return entry.get(camel, entry.get(snake))
    return getattr(entry, snake, None)


def _covers(outer, inner):
    """Whether a mount at ``outer`` hides ``inner`` (the same path or an ancestor of it)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def mount_errors(mounts, *, workspace_paths, secret_paths, setting="volume_mounts"):
    """Mounts that hide ML Hub's: the workspace volume (``workspace_paths``) and ``/dev/shm`` (at or above
    them), the credentials (``secret_paths``: at, above or inside them)."""
    errors = []
    workspace = sorted({posixpath.normpath(p) for p in workspace_paths if p})
    secrets = sorted({posixpath.normpath(p) for p in secret_paths if p})
    for mount in _entries(mounts):
        path = _field(mount, "mountPath", "mount_path")
        if not isinstance(path, str) or not path:
            continue
        path, name = posixpath.normpath(path), _field(mount, "name", "name")
        for reserved in workspace:
            if _covers(path, reserved):
                errors.append(
                    f"{setting}: {name!r} at {path} covers the workspace volume at {reserved} "
                    "(mount it elsewhere, or move the workspace with volume_path)"
                )
        if _covers(path, SHM_PATH):
            errors.append(f"{setting}: {name!r} at {path} covers ML Hub's {SHM_PATH} (see default_shm_size)")
        for secret in secrets:
            if _covers(path, secret) or _covers(secret, path):
                errors.append(f"{setting}: {name!r} at {path} covers the credentials at {secret}")
    return errors


def volume_name_errors(volumes, setting="volumes"):
    reserved = (objects.WORKSPACE_VOLUME, objects.SHM_VOLUME)
    return [
        f"{setting}: the name {name!r} is ML Hub's own volume's"
        for name in (_field(v, "name", "name") for v in _entries(volumes))
        if name in reserved
    ]


def key_errors(setting, value, refused, why):
    """Keys of a dict setting that ML Hub refuses (``refused`` matches camelCase and snake_case alike)."""
    if not isinstance(value, dict):
        return []
    wanted = {k.replace("_", "").lower() for k in refused}
    found = sorted(str(k) for k in value if str(k).replace("_", "").lower() in wanted)
    return [f"{setting}: {k!r} is refused ({why})" for k in found]


def label_errors(setting, value):
    if not isinstance(value, dict):
        return []
    return [
        f"{setting}: {k!r} is refused (mlhub.* labels and annotations are ML Hub's own)"
        for k in sorted(str(k) for k in value)
        if k.startswith("mlhub.")
    ]


def value_errors(values, *, workspace_paths, gpu_resources):
    """What ML Hub refuses in the values of KubeSpawner settings (``values``: {setting: value}, those known).

    Sentences naming the setting; empty when nothing. Callables (KubeSpawner allows some) are not checked.
    """
    errors = []
    if values.get("services_enabled") is False:
        errors.append(
            "services_enabled: False is refused (the SSH front and the hub reach workspaces through their Service)"
        )
    for name in refused_names():
        if values.get(name):
            errors.append(f"{name}: refused ({KUBESPAWNER_SETTINGS[name].how})")
    secret_paths = (SERVICE_ACCOUNT_PATH, values.get("secret_mount_path") or DEFAULT_SECRET_MOUNT_PATH)
    errors += mount_errors(
        values.get("volume_mounts"), workspace_paths=workspace_paths, secret_paths=secret_paths
    )
    errors += volume_name_errors(values.get("volumes"))
    container = values.get("extra_container_config")
    errors += key_errors("extra_container_config", container, REFUSED_CONTAINER_KEYS, "ML Hub sets it")
    if isinstance(container, dict):
        errors += mount_errors(
            container.get("volumeMounts", container.get("volume_mounts")),
            workspace_paths=workspace_paths,
            secret_paths=secret_paths,
            setting="extra_container_config volumeMounts",
        )
    pod = values.get("extra_pod_config")
    errors += key_errors("extra_pod_config", pod, REFUSED_POD_KEYS, "ML Hub builds the workspace container")
    if isinstance(pod, dict):
        errors += volume_name_errors(pod.get("volumes"), "extra_pod_config volumes")
    resources = {"cpu", "memory", *gpu_resources}
    for name in ("extra_resource_limits", "extra_resource_guarantees"):
        if isinstance(values.get(name), dict):
            errors += [
                f"{name}: {k!r} is refused (the workspace options and max_gpus decide it)"
                for k in sorted(values[name])
                if k in resources
            ]
    for name in LABEL_SETTINGS:
        errors += label_errors(name, values.get(name))
    return errors


def settings_table():
    """The Markdown table of every KubeSpawner setting and what ML Hub does with it (for the docs)."""
    rows = ["| Setting | On ML Hub | How |", "| --- | --- | --- |"]
    for name in sorted(KUBESPAWNER_SETTINGS):
        handling = KUBESPAWNER_SETTINGS[name]
        rows.append(f"| `{name}` | {handling.status} | {handling.how.replace('|', '/')} |")
    return "\n".join(rows)
