"""The chart's non-root pods (Pod Security ``restricted``) on the fake kubelet (``tests/fake_kubelet.py``) with the
real hub image, where a cluster's storage and ids differ from a plain ``docker run``: the hub's database on a
fresh PersistentVolumeClaim (root-owned 0755 like a new CSI disk: writable only through fsGroup), and the ids
OpenShift's restricted-v2 assigns instead of the chart's (an arbitrary uid, primary gid 0, fsGroup of the
namespace's range). Needs the engine: fails, never skips, without one."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import REPO, helm_binary, wait_for  # noqa: E402

NS = "mlhub"
VALUES = [
    "--set", "image.tag=0.1.0",
    "--set", "image.pullPolicy=Never",
    "--set", "hub.pdb.enabled=false",
    "--set", "proxy.pdb.enabled=false",
    "--set", "prePuller.enabled=false",
]  # fmt: skip
OPENSHIFT_UID = (
    1000650000  # what restricted-v2 picks from a namespace's range (openshift.io/sa.scc.uid-range)
)


# the hub's securityContext of the chart's previous releases: root with a few capabilities, writable root
PREVIOUS_ROOT_HUB = """
hub:
  podSecurityContext: {runAsNonRoot: null, runAsUser: null, runAsGroup: null, fsGroup: null}
  containerSecurityContext:
    runAsUser: 0
    runAsNonRoot: null
    readOnlyRootFilesystem: false
    capabilities: {drop: [ALL], add: [CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETUID]}
"""


def helm_install(fake, tmp_path, *args, command="install"):
    if command == "install":
        fake.create("namespaces", None, {"metadata": {"name": NS}})
    env = {
        **os.environ,
        "KUBECONFIG": str(fake.write_kubeconfig(tmp_path / "kubeconfig", NS)),
        "HELM_CACHE_HOME": "/tmp/mlhub-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/mlhub-helm/config",
    }
    result = subprocess.run(
        [helm_binary(), command, "mlhub", str(REPO / "helm/mlhub"), "--namespace", NS, *VALUES, *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def pod_of(fake, component, phase="Running"):
    pods = fake.list("pods", NS, label_selector=f"app.kubernetes.io/component={component}")
    return next((p for p in pods if p["status"].get("phase") == phase), None)


def hub_health(pod):
    try:
        with urllib.request.urlopen(
            f"http://{pod['status']['podIP']}:8081/hub/health", timeout=3
        ) as response:
            return response.status == 200
    except OSError:
        return False


def exec_out(kubelet, pod, name, command):
    result = kubelet.container_of(pod, name).exec_run(["sh", "-c", command])
    return result.exit_code, result.output.decode(errors="replace")


def test_hub_keeps_its_database_on_a_fresh_pvc_through_fs_group(cluster, tmp_path):
    """The default hub.db (sqlite-pvc): the new claim's root is root:root 0755; fsGroup 1000 makes it the hub's
    group's (2775, OnRootMismatch), and the hub, uid 1000, writes its database there, owner-only."""
    fake, kubelet = cluster
    helm_install(fake, tmp_path)
    assert wait_for(lambda: pod_of(fake, "hub"), timeout=60)
    hub = pod_of(fake, "hub")
    logs = lambda: kubelet.container_of(hub, "hub").logs().decode(errors="replace")  # noqa: E731
    assert wait_for(lambda: hub_health(hub), timeout=90, interval=1), logs()
    assert wait_for(lambda: "JupyterHub is now running" in logs(), timeout=30), logs()
    code, out = exec_out(kubelet, hub, "hub", "id -u; stat -c '%u %g %a' /data /data/jupyterhub.sqlite")
    assert code == 0, out
    assert out.split("\n")[:3] == ["1000", "0 1000 2775", "1000 1000 600"], out


def test_openshift_assigned_ids_run_the_hub(cluster, tmp_path):
    """The hub with the ids restricted-v2 assigns once runAsUser and runAsGroup are null (an arbitrary uid without a
    passwd entry, primary gid 0, fsGroup of the namespace's range on its PVC) starts, writes its database as that
    uid and answers through the proxy, which keeps the chart's tunnel uid (granted e.g. nonroot-v2: not root,
    sshd logs in only its own account)."""
    fake, kubelet = cluster
    helm_install(
        fake,
        tmp_path,
        *("--set", f"hub.podSecurityContext.runAsUser={OPENSHIFT_UID}"),
        *("--set", "hub.podSecurityContext.runAsGroup=null"),
        *("--set", f"hub.podSecurityContext.fsGroup={OPENSHIFT_UID}"),
    )
    assert wait_for(lambda: pod_of(fake, "hub") and pod_of(fake, "proxy"), timeout=60)
    hub, proxy = pod_of(fake, "hub"), pod_of(fake, "proxy")
    logs = lambda: kubelet.container_of(hub, "hub").logs().decode(errors="replace")  # noqa: E731
    assert wait_for(lambda: hub_health(hub), timeout=90, interval=1), logs()
    code, out = exec_out(kubelet, hub, "hub", "id -u; id -g; stat -c '%u %g' /data/jupyterhub.sqlite")
    assert code == 0 and out.split("\n")[:3] == [
        str(OPENSHIFT_UID),
        "0",
        f"{OPENSHIFT_UID} {OPENSHIFT_UID}",
    ], out
    url = f"http://{proxy['status']['podIP']}:8080/hub/login"

    def login_page():
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200 and "ML Hub" in response.read().decode(errors="replace")
        except OSError:
            return False

    assert wait_for(login_page, timeout=60, interval=1), logs()


def admin_token(hub, password):
    """201 and a token when the admin logs in with ``password`` at the hub's own API."""
    request = urllib.request.Request(
        f"http://{hub['status']['podIP']}:8081/hub/api/users/admin/tokens",
        data=json.dumps({"auth": {"username": "admin", "password": password}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_upgrade_from_the_root_hub_keeps_its_data(cluster, tmp_path):
    """An upgrade from a release whose hub ran as root: its PVC holds root-owned owner-only files. fsGroup
    (OnRootMismatch: the root's group differs) hands them to group 1000, and the hub, now uid 1000, starts on
    them: the admin password generated by the root hub still logs in."""
    fake, kubelet = cluster
    previous = tmp_path / "previous.yaml"
    previous.write_text(PREVIOUS_ROOT_HUB)
    helm_install(fake, tmp_path, "-f", previous)
    assert wait_for(lambda: pod_of(fake, "hub"), timeout=60)
    old = pod_of(fake, "hub")
    assert wait_for(lambda: hub_health(old), timeout=90, interval=1)
    code, out = exec_out(
        kubelet, old, "hub", "id -u; stat -c '%u %g %a' /data/admin-password; cat /data/admin-password"
    )
    assert code == 0 and out.split("\n")[:2] == ["0", "0 0 600"], out
    password = out.split("\n")[2].strip()

    helm_install(fake, tmp_path, command="upgrade")
    new = lambda: (p := pod_of(fake, "hub")) and p["metadata"]["name"] != old["metadata"]["name"] and p  # noqa: E731
    assert wait_for(new, timeout=60)
    hub = new()
    logs = lambda: kubelet.container_of(hub, "hub").logs().decode(errors="replace")  # noqa: E731
    assert wait_for(lambda: hub_health(hub), timeout=90, interval=1), logs()
    code, out = exec_out(
        kubelet, hub, "hub", "id -u; stat -c '%u %g %a' /data/admin-password /data/jupyterhub.sqlite"
    )
    assert code == 0 and out.split("\n")[:3] == ["1000", "0 1000 660", "0 1000 660"], out
    assert admin_token(hub, password) == 201
