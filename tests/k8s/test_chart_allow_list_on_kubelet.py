"""The chart's hub.allowList on the fake API server with the fake kubelet: the hub pod (real image) reads the
rendered ConfigMap at /resources/users/dynamic_whitelist.txt; a listed, authorized user logs in through the proxy
pod, an authorized user who is not listed is refused with the message, the admin (on no list) still logs in.
Needs the engine: fails, never skips, without one. (The fake kubelet does not propagate ConfigMap updates to
mounted files; re-reading after a swap of the kubelet's symlinks is tests/hub/test_allow_list_login.py's.)"""

import os
import re
import subprocess
from types import SimpleNamespace

from test_chart_on_kubelet import CHART_NS, CHART_VALUES, http_get, hub_logs, running_pod, wait_for

from support import REPO, helm_binary, log_in, sign_up

REFUSED = "is not on the list of users allowed on this hub: ask an administrator to add you."


def login_message(r):
    """The message under the login form, as text ('' when there is none)."""
    found = re.search(r"<p class=\"login_error\">(.*?)</p>", r.content.decode(), re.S)
    return " ".join(found.group(1).split()) if found else ""


def test_the_charts_allow_list_decides_who_logs_in(cluster, tmp_path):
    fake, kubelet = cluster
    fake.create("namespaces", None, {"metadata": {"name": CHART_NS}})
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", CHART_NS)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
    }
    allow = ["--set", "hub.allowList.enabled=true", "--set", "hub.allowList.names={Lena,carol}"]
    result = subprocess.run(
        [helm_binary(), "install", "mlhub", str(REPO / "helm/mlhub"), "--namespace", CHART_NS, *CHART_VALUES, *allow],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    hub_pod = wait_for("hub pod Running", lambda: running_pod(fake, "hub"), timeout=60)
    proxy_pod = wait_for("proxy pod Running", lambda: running_pod(fake, "proxy"), timeout=60)
    container = kubelet.container_of(hub_pod, "hub")
    listed = container.exec_run(["cat", "/resources/users/dynamic_whitelist.txt"])
    assert listed.exit_code == 0 and listed.output.decode().split("\n")[1:] == ["Lena", "carol", ""], listed
    # read-only for the hub itself
    write = container.exec_run(["sh", "-c", "echo mallory >> /resources/users/dynamic_whitelist.txt"])
    assert write.exit_code != 0, write.output

    base = f"http://{proxy_pod['status']['podIP']}:8080"
    wait_for("proxy to hub", lambda: (r := http_get(f"{base}/hub/health")) and r[0] == 200, timeout=60)
    log = wait_for(
        "hub started", lambda: "JupyterHub is now running" in (t := hub_logs(kubelet, hub_pod)) and t
    )
    assert "Allow list /resources/users/dynamic_whitelist.txt: 2 users may log in" in log
    password = container.exec_run(["cat", "/data/admin-password"]).output.decode().strip()
    hub = SimpleNamespace(url=base, admin_password=password, verify=True)

    admin, r = log_in(hub, "admin")  # the admin is on no list
    assert r.status_code == 302, login_message(r)
    for name in ("lena", "omar"):
        sign_up(hub, name)
        assert admin.get(f"{base}/hub/authorize/{name}", timeout=30).status_code == 200
    _, r = log_in(hub, "lena")  # listed as "Lena": names are lower-cased
    assert r.status_code == 302, login_message(r)
    _, r = log_in(hub, "omar")
    assert r.status_code == 403 and login_message(r) == f"omar {REFUSED}"
