"""The hub's reading of the helm chart's values (mlhubspawner/chart_values.py), and jupyterhub_config.py in k8s mode."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from mlhubspawner import chart_values as cv

REPO = Path(__file__).resolve().parents[2]
CHART_DEFAULTS = yaml.safe_load((REPO / "helm/mlhub/values.yaml").read_text())


def rendered(**overrides):
    """Values as the chart renders them for the hub: the defaults, overrides, and ``_chart``."""
    values = yaml.safe_load(yaml.safe_dump(CHART_DEFAULTS))
    values.pop("userConfig")
    for dotted, value in overrides.items():
        node = values
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    selector = {"app.kubernetes.io/name": "mlhub", "app.kubernetes.io/instance": "team"}
    values["_chart"] = {
        "name": "mlhub",
        "version": "0.1.0",
        "release": "team",
        "namespace": "ml",
        "hubName": "team",
        "names": {
            "fullname": "team-mlhub",
            "hub": "team-mlhub-hub",
            "proxyApi": "team-mlhub-proxy-api",
            "proxyPublic": "team-mlhub-proxy-public",
        },
        "ports": {"hub": 8081, "proxyApi": 8001, "proxyPublic": 80},
        "selectors": {
            "hub": {**selector, "app.kubernetes.io/component": "hub"},
            "proxy": {**selector, "app.kubernetes.io/component": "proxy"},
        },
        "blockedCIDRs": ["169.254.169.254/32"],
    }
    return values


def applied(values, **kwargs):
    c = Config()
    cv.apply_chart_values(c, values, **kwargs)
    return c


# ---- loading and dotted keys --------------------------------------------------------------------


def test_values_path_default_and_env():
    assert cv.values_path({}) == "/usr/local/etc/mlhub/values.yaml"
    assert cv.values_path({"MLHUB_CHART_VALUES": "/x/v.yaml"}) == "/x/v.yaml"


def test_load_missing_file_is_none(tmp_path):
    assert cv.load(tmp_path / "absent.yaml") is None


def test_load_reads_env_path(tmp_path, monkeypatch):
    path = tmp_path / "values.yaml"
    path.write_text("hub:\n  name: team\n")
    monkeypatch.setenv("MLHUB_CHART_VALUES", str(path))
    assert cv.load() == {"hub": {"name": "team"}}
    assert cv.get_value("hub.name") == "team"


def test_load_empty_file_is_empty_mapping(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text("")
    assert cv.load(path) == {}


@pytest.mark.parametrize("text, message", [("a: [1\n", "not valid YAML"), ("- 1\n- 2\n", "not a mapping")])
def test_load_refuses_bad_files(tmp_path, text, message):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises(cv.ChartValuesError, match=message):
        cv.load(path)


def test_get_value_dotted_keys_the_z2jh_way():
    values = {"singleuser": {"storage": {"capacity": "10Gi", "storageClass": None}, "image": "x"}}
    assert cv.get_value("singleuser.storage.capacity", "1Gi", values) == "10Gi"
    assert cv.get_value("singleuser.storage.missing", "1Gi", values) == "1Gi"
    assert cv.get_value("singleuser.storage.storageClass", "std", values) == "std"  # null = unset
    assert cv.get_value("singleuser.image.name", "d", values) == "d"  # through a non-mapping
    assert cv.get_value("nothing.at.all", values=values) is None
    assert cv.get_value("singleuser", values={}) is None


def test_get_value_reads_the_mounted_file_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MLHUB_CHART_VALUES", str(tmp_path / "absent.yaml"))
    assert cv.get_value("hub.name", "default") == "default"


# ---- hub, proxy and database ----------------------------------------------------------------------


def test_defaults_map_the_hub_and_the_split_proxy():
    c = applied(rendered())
    assert c.JupyterHub.spawner_class == "mlhub-kubernetes"
    assert c.JupyterHub.db_url == "sqlite:////data/jupyterhub.sqlite"
    assert c.JupyterHub.hub_bind_url == "http://0.0.0.0:8081"
    assert c.JupyterHub.hub_connect_url == "http://team-mlhub-hub:8081"
    assert c.ConfigurableHTTPProxy.api_url == "http://team-mlhub-proxy-api:8001"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.JupyterHub.last_activity_interval == 60
    assert c.JupyterHub.concurrent_spawn_limit == 64
    assert "log_level" not in c.JupyterHub


def test_db_types():
    assert applied(rendered(), data_dir="/srv/")["JupyterHub"]["db_url"] == "sqlite:////srv/jupyterhub.sqlite"
    assert applied(rendered(hub__db={"type": "sqlite-memory"})).JupyterHub.db_url == "sqlite://"
    url = "postgresql://mlhub@db:5432/mlhub"
    assert applied(rendered(hub__db={"type": "postgres", "url": url})).JupyterHub.db_url == url
    with pytest.raises(cv.ChartValuesError, match="hub.db.url is required"):
        applied(rendered(hub__db={"type": "mysql", "url": ""}))
    with pytest.raises(cv.ChartValuesError, match="hub.db.type='oracle'"):
        applied(rendered(hub__db={"type": "oracle"}))


def test_values_not_rendered_by_the_chart_are_refused():
    values = rendered()
    del values["_chart"]
    with pytest.raises(cv.ChartValuesError, match="_chart.names.hub"):
        applied(values)


def test_debug_and_config_passthrough():
    c = applied(
        rendered(
            hub__debug=True,
            hub__config={
                "JupyterHub": {"shutdown_on_logout": True, "concurrent_spawn_limit": 5},
                "MLHubKubernetesSpawner": {"start_timeout": 900},
            },
        )
    )
    assert c.JupyterHub.log_level == "DEBUG"
    assert c.JupyterHub.shutdown_on_logout is True
    # the passthrough comes last: it wins over the chart's own mapping
    assert c.JupyterHub.concurrent_spawn_limit == 5
    assert c.MLHubKubernetesSpawner.start_timeout == 900


def test_config_passthrough_refuses_lowercase_sections():
    with pytest.raises(cv.ChartValuesError, match="hub.config.jupyterhub"):
        applied(rendered(hub__config={"jupyterhub": {"x": 1}}))


# ---- the workspaces ------------------------------------------------------------------------------------


def test_default_spawner_settings():
    sp = applied(rendered()).MLHubKubernetesSpawner
    assert sp.hub_name == "team"
    assert sp.namespace == "ml"
    assert sp.image == "mlhub-workspace:0.1.0"
    assert sp.image_pull_policy == "IfNotPresent"
    assert (sp.default_cpu_limit, sp.max_cpu_limit) == (1, 4)
    assert (sp.default_mem_limit, sp.min_mem_limit, sp.max_mem_limit) == ("2G", "128M", "16G")
    assert sp.resource_request_ratio == 0.5
    assert sp.pod_security_level == "restricted"
    assert sp.persistent_volumes is True
    assert sp.storage_capacity == "10Gi"
    assert sp.storage_access_modes == ["ReadWriteOnce"]
    assert sp.volume_path == "/workspace"
    assert "storage_class" not in sp  # the cluster's default StorageClass
    assert sp.max_gpus == 0
    assert sp.gpu_resource_name == "nvidia.com/gpu"
    assert sp.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    unset_traits = ("node_cpus", "node_memory", "max_servers_per_user", "default_days_to_live", "environment")
    for unset in (*unset_traits, "gpu_resource_names"):  # the spawner's default: [gpu_resource_name]
        assert unset not in sp, unset
    assert sp.network_policy_enabled is True
    assert sp.network_policy_blocked_cidrs == ["169.254.169.254/32"]


def test_network_policy_peers_are_this_release_pods():
    sp = applied(rendered()).MLHubKubernetesSpawner
    hub = {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "mlhub", "app.kubernetes.io/instance": "team", "app.kubernetes.io/component": "hub"
    }}}  # fmt: skip
    assert sp.network_policy_hub_peers == [hub]
    assert sp.network_policy_ingress_from[0] == hub
    assert (
        sp.network_policy_ingress_from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "proxy"
    )


def test_every_singleuser_value_reaches_its_trait():
    values = rendered(
        imagePullSecrets=["regcred"],
        singleuser={
            "image": {"name": "registry.example.org:5000/ml/ws", "tag": "2.1", "pullPolicy": "Always"},
            "images": ["mltooling/ml-workspace:0.13.2"],
            "allowCustomImage": True,
            "startTimeout": 600,
            "httpTimeout": 60,
            "cpu": {"default": 2, "max": 8},
            "memory": {"default": "4G", "min": "512M", "max": "64G"},
            "requestRatio": 1,
            "podSecurityLevel": "baseline",
            "nodeCapacity": {"cpu": 32, "memory": "256G"},
            "shm": {"default": "1G", "max": "8G"},
            "gpu": {
                "max": 2,
                "resourceName": "amd.com/gpu",
                "resourceNames": ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb"],
                "nodeSelector": {"gpu": "yes"},
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
            },
            "lifetime": {"defaultDays": 7, "maxDays": 30},
            "perUser": {"maxServers": 3, "maxCpu": 16, "maxMemory": "128G", "maxGpus": 4},
            "storage": {
                "enabled": True,
                "capacity": "50Gi",
                "storageClass": "fast",
                "accessModes": ["ReadWriteOncePod"],
                "mountPath": "/home/jovyan",
            },
            "extraEnv": {"WANDB_MODE": "offline", "THREADS": 4, "DEBUG": True},
            "extraLabels": {"team": "vision"},
            "extraAnnotations": {"owner": "ml@example.org"},
            "nodeSelector": {"pool": "workspaces"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "networkPolicy": {"enabled": False},
        },
    )
    sp = applied(values).MLHubKubernetesSpawner
    assert sp.image == "registry.example.org:5000/ml/ws:2.1"
    assert sp.image_pull_policy == "Always"
    assert sp.image_pull_secrets == ["regcred"]
    assert sp.workspace_images == ["mltooling/ml-workspace:0.13.2"]
    assert sp.allow_custom_image is True
    assert (sp.start_timeout, sp.http_timeout) == (600, 60)
    assert (sp.default_cpu_limit, sp.max_cpu_limit, sp.resource_request_ratio) == (2, 8, 1)
    assert sp.pod_security_level == "baseline"
    assert (sp.default_mem_limit, sp.min_mem_limit, sp.max_mem_limit) == ("4G", "512M", "64G")
    assert (sp.node_cpus, sp.node_memory) == (32, "256G")
    assert (sp.default_shm_size, sp.max_shm_size) == ("1G", "8G")
    assert sp.max_gpus == 2
    assert sp.gpu_resource_name == "amd.com/gpu"
    assert sp.gpu_resource_names == ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb"]
    assert sp.gpu_node_selector == {"gpu": "yes"}
    assert sp.gpu_tolerations == [{"key": "gpu", "operator": "Exists"}]
    assert (sp.default_days_to_live, sp.max_days_to_live) == (7, 30)
    assert (sp.max_servers_per_user, sp.max_total_cpu_per_user) == (3, 16)
    assert (sp.max_total_mem_per_user, sp.max_gpus_per_user) == ("128G", 4)
    assert (sp.storage_capacity, sp.storage_class, sp.storage_access_modes) == (
        "50Gi",
        "fast",
        ["ReadWriteOncePod"],
    )
    assert sp.volume_path == "/home/jovyan"
    assert sp.environment == {"WANDB_MODE": "offline", "THREADS": "4", "DEBUG": "true"}
    assert sp.extra_labels == {"team": "vision"}
    assert sp.extra_annotations == {"owner": "ml@example.org"}
    assert sp.node_selector == {"pool": "workspaces"}
    assert sp.tolerations[0]["key"] == "dedicated"
    assert sp.network_policy_enabled is False


def test_storage_off_means_no_pvc():
    sp = applied(rendered(singleuser__storage={"enabled": False, "capacity": "5Gi"})).MLHubKubernetesSpawner
    assert sp.persistent_volumes is False
    assert "storage_capacity" not in sp


def test_image_without_tag():
    sp = applied(rendered(singleuser__image={"name": "ws", "tag": ""})).MLHubKubernetesSpawner
    assert sp.image == "ws"


def test_every_mapped_trait_exists_on_the_spawner():
    """A renamed trait of MLHubKubernetesSpawner must not silently drop a chart value."""
    from mlhubspawner.kubernetes import MLHubKubernetesSpawner

    values = rendered(
        imagePullSecrets=["regcred"],
        singleuser__extraEnv={"A": "1"},
        singleuser__extraLabels={"a": "b"},
        singleuser__extraAnnotations={"a": "b"},
        singleuser__nodeSelector={"a": "b"},
        singleuser__tolerations=[{"key": "a", "operator": "Exists"}],
        singleuser__nodeCapacity={"cpu": 4, "memory": "8G"},
        singleuser__lifetime={"defaultDays": 1, "maxDays": 2},
        singleuser__perUser={"maxServers": 1, "maxCpu": 1, "maxMemory": "1G", "maxGpus": 1},
        singleuser__storage={**CHART_DEFAULTS["singleuser"]["storage"], "storageClass": "x"},
    )
    mapped = set(applied(values).MLHubKubernetesSpawner)
    assert len(mapped) > 35
    assert mapped <= set(MLHubKubernetesSpawner.class_trait_names(config=True)), mapped - set(
        MLHubKubernetesSpawner.class_trait_names(config=True)
    )


def test_mapped_values_pass_the_spawner_validation():
    """The chart's values pass the traits' own validation (sizes, the ratio, the hub name)."""
    from mlhubspawner.kubernetes import MLHubKubernetesSpawner

    values = rendered(singleuser__nodeCapacity={"cpu": 16, "memory": "64G"})
    # a bare instance: setting a trait validates it without a hub or a cluster behind the spawner
    spawner = MLHubKubernetesSpawner.__new__(MLHubKubernetesSpawner)
    for name, value in applied(values).MLHubKubernetesSpawner.items():
        setattr(spawner, name, value)
    assert spawner.max_mem_limit == 16 * 1024**3
    assert spawner.node_memory == 64 * 1024**3
    with pytest.raises(ValueError, match="resource_request_ratio"):
        spawner.resource_request_ratio = 0


# ---- jupyterhub_config.py in EXECUTION_MODE=k8s ---------------------------------------------------------

LOAD_CONFIG = textwrap.dedent(
    """
    import json, sys
    from traitlets.config import Config, PyFileConfigLoader
    loader = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1])
    try:
        c = loader.load_config()
    except SystemExit as e:
        print(json.dumps({"exit": str(e)}))
        raise SystemExit(0)
    def get(section, key):
        return section[key] if key in section else None
    hub, chp, sp = c.JupyterHub, c.ConfigurableHTTPProxy, c.MLHubKubernetesSpawner
    services = {s["name"]: s for s in hub.services}
    print(json.dumps({
        "spawner_class": get(hub, "spawner_class"),
        "db_url": get(hub, "db_url"),
        "api_url": get(chp, "api_url"),
        "should_start": get(chp, "should_start"),
        "hub_connect_url": get(hub, "hub_connect_url"),
        "image": get(sp, "image"),
        "max_cpu_limit": get(sp, "max_cpu_limit"),
        "services": sorted(services),
        "ssh_front_token": services["ssh-front"]["api_token"],
        "cleanup_env": services["cleanup-service"]["environment"],
        "cleanup_url": services["cleanup-service"]["url"],
        "cleanup_command": services["cleanup-service"]["command"],
        "ssh_front": [
            [h[2]["public_host"], h[2]["public_port"]] for h in hub.extra_handlers if h[0].endswith("ssh-config")
        ][0],
    }))
    """
)


def load_hub_config(tmp_path, env, values=None, user_config=""):
    import json

    data = tmp_path / "data"
    user = tmp_path / "user_config.py"
    user.write_text(user_config)
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MLHUB_DATA_DIR": str(data),
        "MLHUB_USER_CONFIG": str(user),
        "MLHUB_CHART_VALUES": str(tmp_path / "values.yaml"),
        **env,
    }
    if values is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_CONFIG, str(REPO)],
        env=full_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_hub_config_in_k8s_mode_applies_the_chart_values_before_the_user_config(tmp_path):
    token = "a" * 40
    out = load_hub_config(
        tmp_path,
        {
            "EXECUTION_MODE": "k8s",
            "HUB_NAME": "team",
            "MLHUB_SSH_FRONT_TOKEN": token,
            "CLEANUP_MIN_AGE_SECONDS": "60",
        },
        values=rendered(),
        user_config="c.MLHubKubernetesSpawner.max_cpu_limit = 2\n",
    )
    assert out["spawner_class"] == "mlhub-kubernetes"
    assert out["db_url"] == f"sqlite:///{tmp_path}/data/jupyterhub.sqlite"
    assert out["api_url"] == "http://team-mlhub-proxy-api:8001"
    assert out["should_start"] is False
    assert out["hub_connect_url"] == "http://team-mlhub-hub:8081"
    assert out["image"] == "mlhub-workspace:0.1.0"
    assert out["max_cpu_limit"] == 2  # the user config is loaded last and wins
    assert {"cleanup-service", "ssh-front", "idle-culler"} <= set(out["services"])
    assert out["ssh_front_token"] == token  # the proxy pod's sshd has the same token
    assert out["cleanup_env"]["EXECUTION_MODE"] == "k8s"
    assert out["cleanup_env"]["CLEANUP_MIN_AGE_SECONDS"] == "60"


def test_cleanup_follows_the_spawner_into_users_namespaces(tmp_path):
    """With user namespaces on (the chart's value or the operator's own KubeSpawner config) the cleanup
    service looks there too; without, it stays in the hub's namespace (and needs no cluster-wide rights)."""
    flag = "--CleanupService.user_namespaces=True"
    out = load_hub_config(tmp_path, {"EXECUTION_MODE": "k8s"}, values=rendered())
    assert flag not in out["cleanup_command"]
    chart = load_hub_config(
        tmp_path, {"EXECUTION_MODE": "k8s"}, values=rendered(singleuser__userNamespaces__enabled=True)
    )
    assert chart["cleanup_command"][-1] == flag
    own = load_hub_config(
        tmp_path, {"EXECUTION_MODE": "k8s"}, user_config="c.KubeSpawner.enable_user_namespaces = True\n"
    )
    assert own["cleanup_command"][-1] == flag


def test_hub_config_in_k8s_mode_without_the_values_file(tmp_path):
    out = load_hub_config(tmp_path, {"EXECUTION_MODE": "k8s"})
    assert out["spawner_class"] == "mlhub-kubernetes"
    assert out["image"] is None


def test_hub_config_in_k8s_mode_stops_on_unusable_values(tmp_path):
    out = load_hub_config(tmp_path, {"EXECUTION_MODE": "k8s"}, values=rendered(hub__db={"type": "postgres"}))
    assert out["exit"].startswith("ML Hub cannot start: hub.db.type=postgres: hub.db.url is required")


def test_hub_config_in_docker_mode_ignores_chart_values(tmp_path):
    out = load_hub_config(tmp_path, {"EXECUTION_MODE": "docker"}, values=rendered())
    assert out["spawner_class"] == "mlhub-docker"
    assert out["api_url"] == "http://127.0.0.1:8001"
    assert out["image"] is None


def test_hub_config_in_k8s_mode_routes_the_cleanup_service_through_the_hub_service(tmp_path):
    """The proxy runs in its own pod: /services/cleanup-service/ must go to the hub's Service, not loopback
    (else 503), and the service must listen on the pod's addresses (the chart's env of the hub pod)."""
    out = load_hub_config(
        tmp_path,
        {
            "EXECUTION_MODE": "k8s",
            "HUB_NAME": "team",
            "MLHUB_HUB_SERVICE_URL": "http://team-mlhub-hub:8081",
            "MLHUB_CLEANUP_LISTEN": "0.0.0.0",
        },
        values=rendered(),
    )
    assert out["cleanup_url"] == "http://team-mlhub-hub:8002"
    assert out["cleanup_env"]["MLHUB_CLEANUP_LISTEN"] == "0.0.0.0"
    # one container (make run): loopback, as before
    docker = load_hub_config(tmp_path, {"EXECUTION_MODE": "docker"})
    assert docker["cleanup_url"] == "http://127.0.0.1:8002"
    assert docker["cleanup_env"].get("MLHUB_CLEANUP_LISTEN", "127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize(
    "hub_url, port, expected",
    [
        ("http://team-mlhub-hub:8081", 8002, "http://team-mlhub-hub:8002"),
        ("http://team-mlhub-hub.ml.svc:8081/", 9002, "http://team-mlhub-hub.ml.svc:9002"),
        ("http://[fd00::1]:8081", 8002, "http://[fd00::1]:8002"),
    ],
)
def test_service_url_beside_the_hub(hub_url, port, expected):
    assert cv.service_url_beside_hub(hub_url, port) == expected


def test_hub_config_ssh_public_port_from_the_chart(tmp_path):
    """The chart's Service port (MLHUB_SSH_PUBLIC_PORT) reaches the ssh-config handlers; the host stays the
    request's unless MLHUB_SSH_PUBLIC_HOST names one (its port, else the public port)."""
    k8s = {"EXECUTION_MODE": "k8s", "HUB_NAME": "team"}
    out = load_hub_config(tmp_path, {**k8s, "MLHUB_SSH_PUBLIC_PORT": "443"}, values=rendered())
    assert out["ssh_front"] == [None, 443]
    named = {**k8s, "MLHUB_SSH_PUBLIC_PORT": "22", "MLHUB_SSH_PUBLIC_HOST": "hub.example.org"}
    assert load_hub_config(tmp_path, named)["ssh_front"] == [["hub.example.org", 22], 22]
    named["MLHUB_SSH_PUBLIC_HOST"] = "hub.example.org:2222"
    assert load_hub_config(tmp_path, named)["ssh_front"] == [["hub.example.org", 2222], 22]
    assert load_hub_config(tmp_path, {"EXECUTION_MODE": "docker"})["ssh_front"] == [None, None]
    bad = load_hub_config(tmp_path, {**k8s, "MLHUB_SSH_PUBLIC_PORT": "https"})
    assert bad["exit"].startswith("ML Hub cannot start: MLHUB_SSH_PUBLIC_PORT")
