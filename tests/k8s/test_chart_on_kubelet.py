"""The chart on the fake API server with the fake kubelet (``tests/fake_kubelet.py``): pods reach each other by
Service name and the API server as in-cluster clients do, and ``helm install`` brings up the hub and the proxy
with their real images; users spawn workspaces (the spawn progress shows the image pull), write to /workspace
through Jupyter and over SSH through the proxy pod's public port (real ssh client, the hub's generated config),
and cannot jump to another user's workspace. Needs the engine: fails, never skips, without one."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner.naming import LABEL_USER  # noqa: E402

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
    "--set", "singleuser.image.pullPolicy=Always",  # the kubelet reports a pull (the fake only checks the engine)
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


def assert_restricted(kubelet, pod, name, uid, secret_file):
    """The chart's default securityContext as the engine ran it: the container and each of its processes as
    ``uid`` (gid ``uid``, the fsGroup ``uid``), no capability, a read-only root filesystem where only /run/mlhub
    and /tmp are writable; its Secret file is root-owned, group ``uid``, 0440."""
    container = kubelet.container_of(pod, name)
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == f"{uid}:{uid}", container.attrs["Config"]["User"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert str(uid) in host["GroupAdd"] and "no-new-privileges" in host["SecurityOpt"]
    processes = container.top(ps_args="-o pid,uid,args")["Processes"]
    assert processes and all(p[1] == str(uid) for p in processes), processes
    probe = container.exec_run(
        ["sh", "-c", f"touch /run/mlhub/.probe /tmp/.probe && rm /run/mlhub/.probe /tmp/.probe && "
         f"stat -c '%a %u %g' {secret_file}; touch /etc/.probe"]
    )  # fmt: skip
    out = probe.output.decode(errors="replace")
    assert probe.exit_code != 0 and "Read-only file system" in out, out
    assert out.splitlines()[0] == f"440 0 {uid}", out


def test_helm_install_runs_hub_and_proxy(cluster, docker, tmp_path):
    """``helm install`` on the fake: the hub and proxy pods run their real image; the hub answers
    /hub/health on its pod IP, the proxy forwards to it on its pod IP:8080; the admin spawns a workspace;
    a user's spawn progress shows the image pull, the user writes to /workspace through Jupyter and over SSH
    through the proxy pod's public port, and another user's key cannot jump to that workspace.

    Everything is reached at pod IPs: the fake has no kube-proxy, so the public Service (80 -> 8080) is its
    pod's IP:8080, which the hub sees in the Host header and puts in the generated ssh config's ProxyJump
    (no override needed)."""
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
        # the image each container was created from (its other tags are whatever else the engine holds)
        assert kubelet.container_of(hub, "hub").attrs["Config"]["Image"] == HUB_IMAGE
        assert kubelet.container_of(proxy, "proxy").attrs["Config"]["Image"] == HUB_IMAGE
        # non-root on read-only roots (Pod Security restricted): the hub as mlhub, the proxy as tunnel
        assert_restricted(kubelet, hub, "hub", 1000, "/usr/local/etc/mlhub/values.yaml")
        assert_restricted(kubelet, proxy, "proxy", 1001, "/etc/mlhub/ssh-host-keys/ssh_host_ecdsa_key")
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
        base = f"http://{proxy_ip}:8080"
        admin_token = admin_logs_in(kubelet, hub, base)
        with ThreadPoolExecutor(1) as pool:  # the workspaces start together: a spawn is mostly waiting
            admin_started = pool.submit(api, base, "/hub/api/users/admin/server", admin_token, "POST", {})
            user_workspace_over_ssh(fake, base, admin_token, proxy_ip, tmp_path)
            status, body = admin_started.result(timeout=120)
        assert status in (201, 202), body
        admin_workspace_through_the_proxy(fake, kubelet, base, admin_token)
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


def admin_logs_in(kubelet, hub, base):
    """The admin's API token, with the generated password read as an operator would; the cleanup service
    answers through the proxy."""
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
    return token


def workspace_ready(base, user, token):
    return wait_for(
        f"{user}'s workspace ready",
        lambda: (api(base, f"/hub/api/users/{user}", token)[1].get("servers") or {}).get("", {}).get("ready"),
        timeout=60,
    )


def admin_workspace_through_the_proxy(fake, kubelet, base, token):
    """The admin's started workspace: the hub created its pod through the API server, the kubelet runs it,
    the proxy routes /user/admin/ to it; stopping it deletes the pod."""
    workspace_ready(base, "admin", token)
    admins = f"component=singleuser-server,{LABEL_USER}=admin"
    (workspace,) = fake.list("pods", CHART_NS, label_selector=admins)
    assert workspace["status"]["phase"] == "Running"
    container = kubelet.container_of(workspace, workspace["spec"]["containers"][0]["name"])
    assert container.attrs["Config"]["Image"] == "mlhub-workspace:0.1.0"
    status, body = api(base, "/user/admin/api/status", token)
    assert status == 200 and "started" in body, body  # Jupyter Server's own answer, through the proxy
    status, body = api(base, "/hub/api/users/admin/server", token, method="DELETE")
    assert status in (202, 204), body
    wait_for(
        "workspace pod deleted", lambda: not fake.list("pods", CHART_NS, label_selector=admins), timeout=30
    )


# ---- a user's workspace: spawn progress, /workspace, SSH through the proxy pod --------------------------------


def new_user(base, admin_token, name):
    """A hub user made by the admin, and an API token of theirs (what the user would create on /hub/token)."""
    status, body = api(base, f"/hub/api/users/{name}", admin_token, method="POST", body={})
    assert status == 201, body
    status, body = api(base, f"/hub/api/users/{name}/tokens", admin_token, method="POST", body={})
    assert status == 201, body
    return body["token"]


def register_key(base, user, token, tmp_path):
    """A new ed25519 key pair, registered as users do: the hub's challenge signed with ``ssh-keygen -Y sign``."""
    key = tmp_path / f"id_{user}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", user, "-f", str(key)], check=True)
    status, body = api(base, f"/hub/api/mlhub/users/{user}/ssh-keys/challenge", token)
    assert status == 200, body
    signed = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", body["namespace"], "-f", str(key)],
        input=body["challenge"].encode(), capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    proof = {
        "key": key.with_suffix(".pub").read_text().strip(),
        "challenge": body["challenge"],
        "signature": signed.stdout.decode(),
    }
    status, body = api(base, f"/hub/api/mlhub/users/{user}/ssh-keys", token, method="POST", body=proof)
    assert status == 201, body
    return key


def spawn_with_progress(base, user, token):
    """Start ``user``'s workspace and follow its spawn progress as the spawn page does (the event stream,
    opened while the spawn is pending); returns the progress messages once it is ready."""
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(api, base, f"/hub/api/users/{user}/server", token, "POST", {})
        request = urllib.request.Request(
            f"{base}/hub/api/users/{user}/server/progress", headers={"Authorization": f"token {token}"}
        )
        messages, ready = [], False
        for _ in range(300):  # until the spawn is pending (404 or 400 before), bounded
            try:
                with urllib.request.urlopen(request, timeout=120) as stream:
                    for line in stream:
                        if line.startswith(b"data:"):
                            event = json.loads(line[5:])
                            messages.append(event.get("message", ""))
                            ready = ready or bool(event.get("ready"))
                            assert not event.get("failed"), messages
                break
            except urllib.error.HTTPError as e:
                assert e.code in (400, 404) and not started.done(), (e.code, e.read(), started.done())
                time.sleep(0.1)
        status, body = started.result(timeout=120)
    assert status in (201, 202), body
    assert ready, messages
    return messages


def ssh_config_file(base, owner, token, key, tmp_path, name):
    """The hub's generated ssh config block for ``owner``'s workspace, used as is, followed by the client's own
    settings (which key, a fresh known_hosts that learns host keys on first use, no prompts); returns the
    file and the hub's model."""
    status, model = api(base, f"/hub/api/mlhub/users/{owner}/ssh-config", token)
    assert status == 200, model
    config = tmp_path / name
    config.write_text(
        model["config"]
        + "\nHost *\n"
        + f"    IdentityFile {key}\n    IdentitiesOnly yes\n    BatchMode yes\n"
        + f"    UserKnownHostsFile {tmp_path / 'known_hosts'}\n    StrictHostKeyChecking accept-new\n"
        + "    ConnectTimeout 20\n    LogLevel ERROR\n"
    )
    return config, model


def ssh(config, alias, command="true"):
    return subprocess.run(
        ["ssh", "-F", str(config), alias, command], capture_output=True, text=True, timeout=90
    )


def front_public_key(fake):
    """The SSH front's host public key, from the chart's Secret (what an operator publishes to users)."""
    (secret,) = [s for s in fake.list("secrets", CHART_NS) if "ssh-host-ecdsa-key" in (s.get("data") or {})]
    private = base64.b64decode(secret["data"]["ssh-host-ecdsa-key"]).decode()
    result = subprocess.run(
        ["ssh-keygen", "-y", "-f", "/dev/stdin"], input=private, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split()[:2])


def user_workspace_over_ssh(fake, base, admin_token, proxy_ip, tmp_path):
    """alice's spawn progress shows the kubelet's image pull; she writes a file to /workspace with Jupyter's
    contents API through the proxy, and over SSH with the hub's generated config (the real ssh client, through
    the proxy pod's public port, where sslh hands SSH to the front) she runs as uid 1000 and writes there too:
    both files are hers (uid 1000, group 100 of fsGroup). mallory, with her own key and running workspace,
    cannot jump to alice's workspace."""
    alice, mallory = "alice", "mallory"
    alice_token, mallory_token = new_user(base, admin_token, alice), new_user(base, admin_token, mallory)
    alice_key = register_key(base, alice, alice_token, tmp_path)
    mallory_key = register_key(base, mallory, mallory_token, tmp_path)
    with ThreadPoolExecutor(1) as pool:
        mallory_started = pool.submit(
            api, base, f"/hub/api/users/{mallory}/server", mallory_token, "POST", {}
        )
        messages = spawn_with_progress(base, alice, alice_token)
        status, body = mallory_started.result(timeout=120)
        assert status in (201, 202), body
    image = "mlhub-workspace:0.1.0"
    assert any(f'Pulling image "{image}"' in m for m in messages), messages
    assert any(f'Successfully pulled image "{image}" in ' in m for m in messages), messages

    content = {"type": "file", "format": "text", "content": "written through Jupyter\n"}
    status, body = api(base, f"/user/{alice}/api/contents/jupyter.txt", alice_token, "PUT", content)
    assert status in (200, 201), body
    status, body = api(base, f"/user/{alice}/api/contents/jupyter.txt?content=1", alice_token)
    assert status == 200 and body["content"] == content["content"], body

    config, model = ssh_config_file(base, alice, alice_token, alice_key, tmp_path, "alice.sshconfig")
    assert model["proxy_jump"] == f"tunnel@{proxy_ip}:8080", model
    done = ssh(
        config,
        model["host_alias"],
        "id -u; echo over ssh > /workspace/ssh.txt && stat -c '%n %u %g' /workspace/jupyter.txt /workspace/ssh.txt",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == [
        "1000",
        "/workspace/jupyter.txt 1000 100",
        "/workspace/ssh.txt 1000 100",
    ], done.stdout
    known = (tmp_path / "known_hosts").read_text()
    assert f"[{proxy_ip}]:8080 {front_public_key(fake)}" in known, known  # the front's key is the chart's

    workspace_ready(base, mallory, mallory_token)
    mallory_config, mallory_model = ssh_config_file(
        base, mallory, mallory_token, mallory_key, tmp_path, "mallory.sshconfig"
    )
    assert ssh(mallory_config, mallory_model["host_alias"], "id -u").stdout.strip() == "1000"
    status, _ = api(base, f"/hub/api/mlhub/users/{alice}/ssh-config", mallory_token)
    assert status in (403, 404)
    # mallory writes alice's config herself (it holds nothing secret) and uses her own key
    attack = tmp_path / "attack.sshconfig"
    attack.write_text(config.read_text().replace(str(alice_key), str(mallory_key)))
    refused = ssh(attack, model["host_alias"], "touch /workspace/mallory-was-here")
    assert refused.returncode != 0
    # refused by the front (her key may forward only to her own workspace), not by a broken setup
    assert "prohibited" in refused.stderr or "forwarding failed" in refused.stderr, refused.stderr
    status, body = api(base, f"/user/{alice}/api/contents/", alice_token)
    assert status == 200 and sorted(f["name"] for f in body["content"]) == ["jupyter.txt", "ssh.txt"], body
