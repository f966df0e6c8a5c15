"""The chart on the fake API server with the fake kubelet (``tests/fake_kubelet.py``): pods reach each other by
Service name and the API server as in-cluster clients do, and ``helm install`` brings up the hub and the proxy
with their real images. Needs the engine: fails, never skips, without one."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fake_kubelet import service_aliases  # noqa: E402
from support import REPO, base_image, helm_binary  # noqa: E402

NS = "default"
HUB_IMAGE = "mlhub:0.1.0"


def wait_for(what, check, timeout=60, interval=0.3):
    """Poll ``check`` until it returns something truthy (bounded); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last})")


def service(name, selector, port, target_port=None):
    return {
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": port, "targetPort": target_port or port}]},
    }


def pod(name, image, script, labels=None, restart="Never"):
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": restart,
            "containers": [{"name": "main", "image": image, "command": ["python3", "-c", script]}],
        },
    }


SERVE = (
    "import http.server, socketserver\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'hello from web')\n"
    "socketserver.TCPServer(('', 8080), H).serve_forever()\n"
)

# resolves every name given on the command line's env NAMES and fetches port 8080 of each, with retries;
# then lists pods through the API server as an in-cluster client does (token, ca.crt, KUBERNETES_SERVICE_*)
CLIENT = """
import json, os, ssl, time, urllib.request
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
out = {}
for name in os.environ['NAMES'].split():
    for _ in range(100):
        try:
            out[name] = urllib.request.urlopen(f'http://{name}:8080/', timeout=2).read().decode()
            break
        except OSError as e:
            out[name] = repr(e)
            time.sleep(0.2)
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
url = 'https://{}:{}/api/v1/namespaces/{}/pods'.format(
    os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'], open(sa + '/namespace').read())
request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})
out['api'] = sorted(p['metadata']['name'] for p in json.load(urllib.request.urlopen(request, context=ctx))['items'])
print(json.dumps(out))
"""


def test_service_aliases_are_the_cluster_dns_names():
    """Pure: every Service of the pod's namespace selecting it gives its four DNS names; others none."""
    the_pod = {"metadata": {"namespace": "ml", "labels": {"app": "hub", "tier": "x"}}}
    services = [
        {"metadata": {"name": "hub", "namespace": "ml"}, "spec": {"selector": {"app": "hub"}}},
        {"metadata": {"name": "proxy", "namespace": "ml"}, "spec": {"selector": {"app": "proxy"}}},
        {"metadata": {"name": "headless", "namespace": "ml"}, "spec": {}},
        {"metadata": {"name": "other", "namespace": "ns2"}, "spec": {"selector": {"app": "hub"}}},
    ]
    assert service_aliases(services, the_pod) == ["hub", "hub.ml", "hub.ml.svc", "hub.ml.svc.cluster.local"]


def test_pods_reach_services_by_name_and_the_api_server_in_cluster(cluster, docker):
    """A pod reaches another by its Service's names (also a Service made after the pod started), on the
    target port, and lists pods through the API server with its service account files over TLS."""
    fake, kubelet = cluster
    image = base_image(docker)
    fake.create("services", NS, service("web", {"app": "web"}, 80, 8080))
    fake.create("pods", NS, pod("web-0", image, SERVE, labels={"app": "web"}, restart="Always"))
    wait_for("web-0 Running", lambda: fake.get("pods", NS, "web-0")["status"].get("phase") == "Running")
    fake.create("services", NS, service("late", {"app": "web"}, 8080))
    names = "web web.default web.default.svc web.default.svc.cluster.local late.default.svc.cluster.local"
    client = pod("client", image, CLIENT)
    client["spec"]["containers"][0]["env"] = [{"name": "NAMES", "value": names}]
    fake.create("pods", NS, client)
    done = wait_for(
        "client done",
        lambda: (p := fake.get("pods", NS, "client"))["status"].get("phase") in ("Succeeded", "Failed") and p,
    )
    output = kubelet.container_of(done, "main").logs().decode(errors="replace")
    assert done["status"]["phase"] == "Succeeded", output
    result = json.loads(output.strip().splitlines()[-1])
    for name in names.split():
        assert result[name] == "hello from web", (name, result)
    assert result["api"] == ["client", "web-0"]


# ---- the chart -----------------------------------------------------------------------------------------------

CHART_NS = "mlhub"
CHART_VALUES = [
    "--set", "hub.db.type=sqlite-memory",
    "--set", "image.tag=0.1.0",
    "--set", "image.pullPolicy=Never",
    "--set", "hub.pdb.enabled=false",
    "--set", "proxy.pdb.enabled=false",
]  # fmt: skip


def http_get(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return None


def hub_logs(kubelet, hub):
    return kubelet.container_of(hub, "hub").logs().decode(errors="replace")


def running_pod(fake, component):
    pods = fake.list("pods", CHART_NS, label_selector=f"app.kubernetes.io/component={component}")
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    return running[0] if running else None


def test_helm_install_runs_hub_and_proxy(cluster, docker, tmp_path):
    """``helm install`` on the fake: the hub and proxy pods run their real image; the hub answers
    /hub/health on its pod IP, the proxy forwards to it on its pod IP:8080; the admin spawns a workspace."""
    fake, kubelet = cluster
    fake.create("namespaces", None, {"metadata": {"name": CHART_NS}})
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", CHART_NS)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
    }
    result = subprocess.run(
        [helm_binary(), "install", "mlhub", str(REPO / "helm/mlhub"), "--namespace", CHART_NS, *CHART_VALUES],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    def diagnose():
        lines = []
        for p in fake.list("pods", CHART_NS):
            lines.append(f"{p['metadata']['name']}: {json.dumps(p['status'].get('containerStatuses'))}")
            for c in p["spec"]["containers"]:
                try:
                    logs = kubelet.container_of(p, c["name"]).logs(tail=40).decode(errors="replace")
                except Exception as e:  # noqa: BLE001 - only for the failure message
                    logs = repr(e)
                lines.append(f"--- {p['metadata']['name']}/{c['name']}:\n{logs}")
        return "\n".join(lines)

    try:
        hub = wait_for("hub pod Running", lambda: running_pod(fake, "hub"), timeout=60)
        proxy = wait_for("proxy pod Running", lambda: running_pod(fake, "proxy"), timeout=60)
        assert kubelet.container_of(hub, "hub").image.tags == [HUB_IMAGE]
        assert kubelet.container_of(proxy, "proxy").image.tags == [HUB_IMAGE]
        hub_ip, proxy_ip = hub["status"]["podIP"], proxy["status"]["podIP"]
        status = wait_for("hub health", lambda: http_get(f"http://{hub_ip}:8081/hub/health"), timeout=60)
        assert status[0] == 200, status
        through = wait_for(
            "proxy to hub",
            lambda: (r := http_get(f"http://{proxy_ip}:8080/hub/health")) and r[0] == 200 and r,
            timeout=60,
        )
        assert through[0] == 200
        login = http_get(f"http://{proxy_ip}:8080/hub/login")
        assert login[0] == 200 and "ML Hub" in login[1]
        hub_log = wait_for(
            "hub started",
            lambda: "JupyterHub is now running" in (text := hub_logs(kubelet, hub)) and text,
            timeout=30,
        )
        assert "Kubernetes cleanup backend: namespace mlhub" in hub_log
        spawn_through_the_proxy(fake, kubelet, hub, f"http://{proxy_ip}:8080")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnose()}") from None


def api(base, path, token=None, method="GET", body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text.strip().startswith(("{", "[")) else text
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def spawn_through_the_proxy(fake, kubelet, hub, base):
    """The admin logs in (the generated password, read as an operator would) and starts a workspace: the
    hub creates its pod through the API server, the kubelet runs it, the proxy routes /user/admin/ to it;
    stopping it deletes the pod."""
    password = (
        kubelet.container_of(hub, "hub").exec_run(["cat", "/data/admin-password"]).output.decode().strip()
    )
    status, body = api(
        base,
        "/hub/api/users/admin/tokens",
        method="POST",
        body={"auth": {"username": "admin", "password": password}},
    )
    assert status == 201, body
    token = body["token"]
    # the cleanup service runs in the hub pod: the proxy pod reaches it through the hub Service (item 4); its own
    # answer without a token is 401/403, while 503 would mean the proxy could not reach it at all
    status, body = api(base, "/services/cleanup-service/")
    assert status in (401, 403), (status, body)
    status, body = api(base, "/services/cleanup-service/", token)
    assert status != 503, (status, body)
    status, body = api(base, "/hub/api/users/admin/server", token, method="POST", body={})
    assert status in (201, 202), body
    wait_for(
        "workspace ready",
        lambda: (api(base, "/hub/api/users/admin", token)[1].get("servers") or {}).get("", {}).get("ready"),
        timeout=60,
    )
    (workspace,) = fake.list("pods", CHART_NS, label_selector="component=singleuser-server")
    assert workspace["status"]["phase"] == "Running"
    assert kubelet.container_of(workspace, workspace["spec"]["containers"][0]["name"]).image.tags == [
        "mlhub-workspace:0.1.0"
    ]
    status, body = api(base, "/user/admin/api/status", token)
    assert status == 200 and "started" in body, body  # Jupyter Server's own answer, through the proxy
    status, body = api(base, "/hub/api/users/admin/server", token, method="DELETE")
    assert status in (202, 204), body
    wait_for(
        "workspace pod deleted",
        lambda: not fake.list("pods", CHART_NS, label_selector="component=singleuser-server"),
        timeout=30,
    )
