"""The helm chart's values, as the hub reads them (pure apart from reading one file).

The chart (``helm/mlhub``) renders its values into a Secret mounted in the hub pod at
``/usr/local/etc/mlhub/values.yaml`` (``$MLHUB_CHART_VALUES`` overrides the path): the user's values minus
``userConfig`` and the secrets the hub gets from env, plus ``_chart`` (release, namespace, hub name, the names
of the Services). ``jupyterhub_config.py`` calls :func:`apply_chart_values` in ``EXECUTION_MODE=k8s`` before
it loads the user config, which therefore still wins.

Deployment settings that ``mlhubspawner.settings`` already validates (``HUB_NAME``, ``CLEANUP_*``,
``MLHUB_IDLE_TIMEOUT_SECONDS``, ``MLHUB_SSH_PUBLIC_HOST``) reach the hub as env vars set by the chart, not
through this module.
"""

import os
from urllib.parse import urlsplit

import yaml

from . import images, profiles

DEFAULT_PATH = "/usr/local/etc/mlhub/values.yaml"
PATH_ENV = "MLHUB_CHART_VALUES"
SPAWNER = "MLHubKubernetesSpawner"
HUB_PORT = 8081
PROXY_API_PORT = 8001
DB_TYPES = ("sqlite-pvc", "sqlite-memory", "mysql", "postgres")

_MISSING = object()


class ChartValuesError(ValueError):
    """The values file is unreadable or holds a value the hub cannot use."""


def values_path(env=None):
    """Where the chart mounts its values: ``$MLHUB_CHART_VALUES``, else :data:`DEFAULT_PATH`."""
    env = os.environ if env is None else env
    return env.get(PATH_ENV) or DEFAULT_PATH


def load(path=None):
    """The chart's values as a dict, or ``None`` when the file does not exist (not deployed by the chart)."""
    path = values_path() if path is None else path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ChartValuesError(f"cannot read the chart values {path}: {e}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ChartValuesError(f"the chart values {path} are not valid YAML: {e}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ChartValuesError(f"the chart values {path} are not a mapping but a {type(values).__name__}")
    return values


def get_value(key, default=None, values=_MISSING):
    """The value at a dotted ``key`` (``"singleuser.storage.capacity"``), else ``default``.

    A missing key, a ``null`` value or a path through a non-mapping all give ``default``. Without ``values``,
    the mounted file is read (:func:`load`).
    """
    if values is _MISSING:
        values = load()
    value = values
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return default if value is None else value


def service_url_beside_hub(hub_service_url, port):
    """The URL of a hub service listening on ``port`` in the hub pod, reached through the hub's Service
    (``hub_service_url``, ``$MLHUB_HUB_SERVICE_URL``): what the proxy in its own pod routes to."""
    host = urlsplit(hub_service_url).hostname
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _image(name, tag):
    return f"{name}:{tag}" if tag else name


def db_url(values, data_dir="/data"):
    """JupyterHub's ``db_url`` for ``hub.db``: SQLite on the PVC by default."""
    db_type = get_value("hub.db.type", "sqlite-pvc", values)
    if db_type not in DB_TYPES:
        raise ChartValuesError(f"hub.db.type={db_type!r}: expected one of {', '.join(DB_TYPES)}")
    if db_type == "sqlite-pvc":
        return f"sqlite:///{data_dir.rstrip('/')}/jupyterhub.sqlite"
    if db_type == "sqlite-memory":
        return "sqlite://"
    url = get_value("hub.db.url", "", values)
    if not url:
        raise ChartValuesError(f"hub.db.type={db_type}: hub.db.url is required")
    return url


def _set(section, trait, value):
    """Set a trait unless the value is unset (``None``): the spawner's own default then applies."""
    if value is not None:
        section[trait] = value


def spawner_settings(values):
    """``{trait: value}`` for :data:`SPAWNER` from ``singleuser`` (and the release): what the chart decides."""
    chart = get_value("_chart", {}, values)
    su = get_value("singleuser", {}, values)

    def v(key, default=None):
        return get_value(key, default, su)

    traits = {}
    _set(traits, "hub_name", chart.get("hubName"))
    _set(traits, "namespace", chart.get("namespace"))
    name = v("image.name")
    if name:
        traits["image"] = _image(name, v("image.tag"))
    _set(traits, "image_pull_policy", v("image.pullPolicy"))
    pull_secrets = get_value("imagePullSecrets", [], values)
    if pull_secrets:
        traits["image_pull_secrets"] = list(pull_secrets)
    _set(traits, "workspace_images", v("images"))
    _set(traits, "allow_custom_image", v("allowCustomImage"))
    image_settings = v("imageSettings")
    if image_settings:
        traits["workspace_image_settings"] = image_settings_trait(image_settings)
    _set(traits, "start_timeout", v("startTimeout"))
    _set(traits, "http_timeout", v("httpTimeout"))
    # limits per workspace; requests = limits x ratio (never 0: a workspace always gets a guarantee)
    _set(traits, "default_cpu_limit", v("cpu.default"))
    _set(traits, "max_cpu_limit", v("cpu.max"))
    _set(traits, "default_mem_limit", v("memory.default"))
    _set(traits, "min_mem_limit", v("memory.min"))
    _set(traits, "max_mem_limit", v("memory.max"))
    _set(traits, "resource_request_ratio", v("requestRatio"))
    _set(traits, "pod_security_level", v("podSecurityLevel"))
    _set(traits, "node_cpus", v("nodeCapacity.cpu"))
    _set(traits, "node_memory", v("nodeCapacity.memory"))
    _set(traits, "default_shm_size", v("shm.default"))
    _set(traits, "max_shm_size", v("shm.max"))
    # GPUs: an extended resource limit, plus node selector / tolerations for the pods that request some
    _set(traits, "max_gpus", v("gpu.max"))
    _set(traits, "gpu_resource_name", v("gpu.resourceName"))
    # the resources users choose between (MIG slices...); empty: [gpu.resourceName]
    _set(traits, "gpu_resource_names", list(v("gpu.resourceNames", [])) or None)
    _set(traits, "gpu_node_selector", v("gpu.nodeSelector"))
    _set(traits, "gpu_tolerations", v("gpu.tolerations"))
    _set(traits, "default_days_to_live", v("lifetime.defaultDays"))
    _set(traits, "max_days_to_live", v("lifetime.maxDays"))
    # quotas per user
    _set(traits, "max_servers_per_user", v("perUser.maxServers"))
    _set(traits, "max_total_cpu_per_user", v("perUser.maxCpu"))
    _set(traits, "max_total_mem_per_user", v("perUser.maxMemory"))
    _set(traits, "max_gpus_per_user", v("perUser.maxGpus"))
    # each user's workspaces in their own namespace (the chart's ClusterRole lets the hub make them)
    if v("userNamespaces.enabled"):
        traits["enable_user_namespaces"] = True
        _set(traits, "user_namespace_template", v("userNamespaces.template"))
    # a PVC per workspace (the admin's switch; KubeSpawner's storage traits), mounted at volume_path
    storage = v("storage.enabled", True)
    traits["persistent_volumes"] = bool(storage)
    if storage:
        _set(traits, "storage_capacity", v("storage.capacity"))
        _set(traits, "storage_class", v("storage.storageClass") or None)
        _set(traits, "storage_access_modes", v("storage.accessModes"))
        _set(traits, "volume_path", v("storage.mountPath"))
    env = v("extraEnv")
    if env:
        traits["environment"] = {str(k): _env_value(val) for k, val in env.items()}
    _set(traits, "extra_labels", v("extraLabels") or None)
    _set(traits, "extra_annotations", v("extraAnnotations") or None)
    _set(traits, "node_selector", v("nodeSelector") or None)
    _set(traits, "tolerations", v("tolerations") or None)
    # z2jh's singleuser.profileList: KubeSpawner's profile_list, offered in the options form
    _set(traits, "profile_list", list(v("profileList") or []) or None)
    # adopt a stock KubeSpawner deployment's PVCs and pods (its legacy names)
    _set(traits, "handle_legacy_names", v("handleLegacyNames"))
    # per-user isolation (a user's workspaces reach each other, others' do not) is the spawner's policy;
    # its peers are this release's hub and proxy pods, and it blocks the ranges the chart's policy blocks
    _set(traits, "network_policy_enabled", v("networkPolicy.enabled"))
    selectors = chart.get("selectors") or {}
    if selectors.get("hub") and selectors.get("proxy"):
        hub = {"podSelector": {"matchLabels": dict(selectors["hub"])}}
        proxy = {"podSelector": {"matchLabels": dict(selectors["proxy"])}}
        traits["network_policy_ingress_from"] = [hub, proxy]
        traits["network_policy_hub_peers"] = [hub]
    _set(traits, "network_policy_blocked_cidrs", chart.get("blockedCIDRs"))
    # DNS only to the cluster's resolver (networkPolicy.dns), as in the chart's policies
    _set(traits, "network_policy_dns_peers", chart.get("dnsPeers"))
    _set(traits, "network_policy_dns_ports", chart.get("dnsPorts"))
    return traits


def image_settings_trait(table, defaults=images.DEFAULT_IMAGE_SETTINGS):
    """``singleuser.imageSettings`` as ``workspace_image_settings``: its entries first (patterns match in order),
    then ML Hub's defaults it does not replace. ChartValuesError names the wrong entry."""
    try:
        images.parse_image_settings(table, "singleuser.imageSettings")
    except ValueError as e:
        raise ChartValuesError(str(e)) from None
    merged = {str(key): dict(value) for key, value in table.items()}
    merged.update({key: value for key, value in defaults.items() if key not in merged})
    return merged


def profiles_trait(values):
    """``singleuser.profiles`` as ``MLHubSpawner.profiles`` (``None``: unset), checked entry by entry as the hub
    checks the setting; :class:`ChartValuesError` names ``singleuser.profiles[<index>]`` and the field. Refused
    beside ``singleuser.profileList`` (the chart's template refuses it too)."""
    table = get_value("singleuser.profiles", None, values)
    if not table:
        return None
    if get_value("singleuser.profileList", None, values):
        raise ChartValuesError(
            "singleuser.profiles and singleuser.profileList are both set: keep one (profiles is ML Hub's format, "
            "profileList KubeSpawner's)"
        )
    try:
        profiles.parse_profiles(table, "singleuser.profiles")
    except profiles.ProfileError as e:
        raise ChartValuesError(str(e)) from None
    return [dict(entry) for entry in table]


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_chart_values(c, values, data_dir="/data"):
    """Map the chart's values onto JupyterHub's config ``c`` (a traitlets ``Config``).

    The hub listens on every address of its pod; workspaces and the proxy reach it through the hub Service;
    the proxy runs in its own pod, which the hub reaches through the proxy-api Service and never starts.
    ``hub.config`` (``{Section: {trait: value}}``) is applied last, so it can override the rest.
    """
    chart = get_value("_chart", {}, values)
    names = chart.get("names") or {}
    ports = chart.get("ports") or {}
    for required in ("hub", "proxyApi"):
        if not names.get(required):
            raise ChartValuesError(
                f"_chart.names.{required} is missing: the values were not rendered by the chart"
            )

    c.JupyterHub.db_url = db_url(values, data_dir)
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{HUB_PORT}"
    c.JupyterHub.hub_connect_url = f"http://{names['hub']}:{ports.get('hub', HUB_PORT)}"
    c.ConfigurableHTTPProxy.api_url = f"http://{names['proxyApi']}:{ports.get('proxyApi', PROXY_API_PORT)}"
    c.ConfigurableHTTPProxy.should_start = False
    # a restarted proxy pod has no routes: the hub puts them back at its next activity check
    c.JupyterHub.last_activity_interval = 60
    _set(c.JupyterHub, "concurrent_spawn_limit", get_value("hub.concurrentSpawnLimit", None, values))
    if get_value("hub.debug", False, values):
        c.JupyterHub.log_level = "DEBUG"

    c.JupyterHub.spawner_class = "mlhub-kubernetes"
    section = c[SPAWNER]
    for trait, value in spawner_settings(values).items():
        section[trait] = value
    # on the shared class (docs/profiles.md): userConfig's c.MLHubSpawner.profiles still wins
    _set(c.MLHubSpawner, "profiles", profiles_trait(values))

    for name, settings in (get_value("hub.config", {}, values) or {}).items():
        if not name[:1].isupper() or not isinstance(settings, dict):
            raise ChartValuesError(
                f"hub.config.{name}: expected a configurable class name (e.g. JupyterHub) mapping to traits"
            )
        c[name].update(settings)
    return c
