"""The chart with ``hub.baseUrl=/ml/`` on the fake API server with the fake kubelet: the hub pod answers its probes'
path, the proxy pod routes /ml/ to it (and nothing at the old /hub/ paths), the cleanup service answers under
/ml/services/, a user's workspace is reached through /ml/user/<name>/ and over SSH with the hub's generated config
through the proxy pod (whose key lookup asks the hub under /ml/), and another user's key cannot jump to it."""

import os
import subprocess

from test_chart_on_kubelet import (
    CHART_NS,
    CHART_VALUES,
    admin_logs_in,
    http_get,
    hub_logs,
    running_pod,
    user_workspace_over_ssh,
    wait_for,
)

from support import REPO, helm_binary

BASE = "/ml/"


def test_helm_install_under_a_base_url(cluster, tmp_path):
    fake, kubelet = cluster
    fake.create("namespaces", None, {"metadata": {"name": CHART_NS}})
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", CHART_NS)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
    }
    chart = str(REPO / "helm/mlhub")
    result = subprocess.run(
        [helm_binary(), "install", "mlhub", chart, "--namespace", CHART_NS, *CHART_VALUES, "--set", f"hub.baseUrl={BASE}"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    hub = wait_for("hub pod Running", lambda: running_pod(fake, "hub"), timeout=60)
    proxy = wait_for("proxy pod Running", lambda: running_pod(fake, "proxy"), timeout=60)
    hub_ip, proxy_ip = hub["status"]["podIP"], proxy["status"]["podIP"]
    (container,) = hub["spec"]["containers"]
    probe_paths = {
        container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probe_paths == {f"{BASE}hub/health"}
    # what the kubelet would ask: the probe's path on the pod's hub port
    health = wait_for(
        "hub health at the probe's path", lambda: http_get(f"http://{hub_ip}:8081{BASE}hub/health")
    )
    assert health[0] == 200, health
    public = f"http://{proxy_ip}:8080"
    through = wait_for(
        "proxy to hub", lambda: (r := http_get(f"{public}{BASE}hub/health")) and r[0] == 200 and r
    )
    assert through[0] == 200
    login = http_get(f"{public}{BASE}hub/login")
    assert login[0] == 200 and f'action="{BASE}hub/login' in login[1], login[1][-2000:]
    # the old paths: the proxy's default target (the hub) sends them into /ml/hub/, where nothing is (404), or
    # to the login page (a workspace URL: the hub's own answer for servers that do not run)
    for old in ("/hub/health", "/hub/login", "/hub/api/users"):
        r = http_get(f"{public}{old}")
        assert r is not None and r[0] == 404 and '"version"' not in r[1], (old, r and r[0])
    r = http_get(f"{public}/user/admin/api/status")
    assert r is not None and f'action="{BASE}hub/login' in r[1] and '"started"' not in r[1], r and r[0]

    wait_for("hub started", lambda: "JupyterHub is now running" in hub_logs(kubelet, hub), timeout=30)
    base = public + BASE.rstrip("/")  # the helpers' "/hub/..." and "/user/..." paths land under /ml/
    admin_token = admin_logs_in(kubelet, hub, base)
    user_workspace_over_ssh(fake, base, admin_token, proxy_ip, tmp_path)
