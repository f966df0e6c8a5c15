"""The fake kubelet (``tests/fake_kubelet.py``) runs the fake API server's pods on the real Docker engine and
shows what only a real kubelet shows: a fresh PVC is root-owned (fsGroup makes it writable), an unprivileged
uid cannot bind port 22 unless the pod lowers ``net.ipv4.ip_unprivileged_port_start`` as containerd's
default (1024) demands. Needs the engine: fails, never skips, without one."""

import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner import naming  # noqa: E402
from mlhubspawner.kubernetes import MLHubKubernetesSpawner  # noqa: E402

import kube_spawners  # noqa: E402
from fake_kubelet import go_duration, pod_sysctls, pull_events, pull_policy, security_settings  # noqa: E402
from kube_spawners import kubeconfig_for  # noqa: E402
from support import base_image  # noqa: E402

NS = "default"
BIND_22 = "import socket; s = socket.socket(); s.bind(('', 22)); print('bound')"


def wait_pod(fake, name, phases=("Succeeded", "Failed"), timeout=60):
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = fake.get("pods", NS, name)
        if pod and pod["status"].get("phase") in phases:
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {name} not in {phases} after {timeout} s: {pod and pod['status']}")


def pod_manifest(name, image, command, security=None, volumes=(), mounts=(), container_security=None):
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": security or {},
            "volumes": list(volumes),
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": command,
                    "volumeMounts": list(mounts),
                    "securityContext": container_security or {},
                }
            ],
        },
    }


def logs(kubelet, pod):
    return kubelet.container_of(pod, "main").logs().decode(errors="replace")


def pod_events(fake, name):
    """The Events about pod ``name``, oldest first, as ``(reason, message)``."""
    events = sorted(fake.list("events", NS), key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["reason"], e["message"]) for e in events if e["involvedObject"]["name"] == name]


def make_pvc(fake, name):
    fake.create(
        "persistentvolumeclaims",
        NS,
        {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )


def test_image_pull_policy_and_events_are_the_kubelets():
    """Pure: the API server's default pull policy; the kubelet's pull Events and Go's duration format."""
    assert pull_policy({"image": "a/b:1.0"}) == "IfNotPresent"
    assert pull_policy({"image": "registry:5000/b"}) == "Always"
    assert pull_policy({"image": "b:latest"}) == "Always"
    assert pull_policy({"image": "b@sha256:00"}) == "IfNotPresent"
    assert pull_policy({"image": "b:latest", "imagePullPolicy": "Never"}) == "Never"
    assert [go_duration(s) for s in (0, 0.0125, 1, 1.2345, 62.5)] == ["0s", "12ms", "1s", "1.234s", "1m2.5s"]
    assert pull_events("x:1", "IfNotPresent", True) == [
        ("Normal", "Pulled", 'Container image "x:1" already present on machine')
    ]
    assert pull_events("x:1", "Always", True, 42, 1.5) == [
        ("Normal", "Pulling", 'Pulling image "x:1"'),
        (
            "Normal",
            "Pulled",
            'Successfully pulled image "x:1" in 1.5s (1.5s including waiting). Image size: 42 bytes.',
        ),
    ]
    assert [e[1] for e in pull_events("x:1", "Never", False)] == ["ErrImageNeverPull"]
    assert [e[1] for e in pull_events("x:1", "Always", False)] == ["Pulling", "Failed"]


def test_mapping_is_containerd_like():
    """Pure mapping: containerd's unprivileged-port default unless the pod sets it; securityContext."""
    assert pod_sysctls({}) == {"net.ipv4.ip_unprivileged_port_start": "1024"}
    assert pod_sysctls({"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"}]}) == {
        "net.ipv4.ip_unprivileged_port_start": "22"
    }
    settings = security_settings(
        {"runAsUser": 1000, "fsGroup": 100, "supplementalGroups": [5]},
        {"runAsGroup": 100, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    )
    assert settings == {
        "user": "1000:100",
        "group_add": ["100", "5"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
    }


@pytest.mark.parametrize("fs_group", [100, None])
def test_pvc_writable_only_with_fs_group(cluster, docker, fs_group):
    """Issue 13 item 1: a fresh PVC is root-owned 0755; uid 1000 writes it only thanks to fsGroup."""
    fake, kubelet = cluster
    make_pvc(fake, "data")
    security = {"runAsUser": 1000, "runAsGroup": 1000}
    if fs_group is not None:
        security["fsGroup"] = fs_group
    script = "stat -c '%u:%g %a' /data; id; echo hi > /data/file && echo wrote"
    fake.create(
        "pods",
        NS,
        pod_manifest(
            "writer",
            base_image(docker),
            ["sh", "-c", script],
            security=security,
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            mounts=[{"name": "data", "mountPath": "/data"}],
        ),
    )
    pod = wait_pod(fake, "writer")
    out = logs(kubelet, pod)
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["podIP"]
    if fs_group is None:
        assert pod["status"]["phase"] == "Failed", out
        assert state["exitCode"] != 0
        assert "Permission denied" in out, out
        assert "0:0 755" in out, out
    else:
        assert pod["status"]["phase"] == "Succeeded", out
        assert state["exitCode"] == 0 and "wrote" in out, out
        assert "0:100 2775" in out, out


@pytest.mark.parametrize("sysctl", [None, "22"])
def test_unprivileged_port_22_needs_sysctl(cluster, docker, sysctl):
    """uid 1000 binding port 22: refused under containerd's default (1024), allowed with the pod sysctl."""
    fake, kubelet = cluster
    security = {"runAsUser": 1000, "runAsNonRoot": True}
    if sysctl:
        security["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": sysctl}]
    fake.create(
        "pods",
        NS,
        pod_manifest(
            "sshd",
            base_image(docker),
            ["python3", "-c", BIND_22],
            security=security,
            container_security={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        ),
    )
    pod = wait_pod(fake, "sshd")
    out = logs(kubelet, pod)
    if sysctl is None:
        assert pod["status"]["phase"] == "Failed", out
        assert "Permission denied" in out, out
    else:
        assert pod["status"]["phase"] == "Succeeded", out
        assert "bound" in out


def test_running_pod_env_secret_files_and_deletion(cluster, docker):
    """A long-running pod: Running with a real IP, env from a Secret, Secret files with their modes, an
    init container ran first; the kubelet's Events tell each image's pull by its policy, as a real kubelet
    words them; deleting the pod removes its containers."""
    fake, kubelet = cluster
    fake.create("secrets", NS, {"metadata": {"name": "s"}, "stringData": {"token": "t0k", "other": "x"}})
    manifest = pod_manifest(
        "runner",
        base_image(docker),
        ["sh", "-c", "cat /init/done; stat -c '%a' /sec/dir/tok; echo $TOKEN; sleep infinity"],
        security={"runAsUser": 1000, "fsGroup": 100},
        volumes=[
            {
                "name": "sec",
                "secret": {
                    "secretName": "s",
                    "items": [{"key": "token", "path": "dir/tok"}],
                    "defaultMode": 0o400,
                },
            },
            {"name": "init", "emptyDir": {}},
        ],
        mounts=[{"name": "sec", "mountPath": "/sec"}, {"name": "init", "mountPath": "/init"}],
    )
    manifest["spec"]["restartPolicy"] = "Always"
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}
    ]
    manifest["spec"]["initContainers"] = [
        {
            "name": "prep",
            "image": base_image(docker),
            "command": ["sh", "-c", "echo init-ran > /init/done"],
            "volumeMounts": [{"name": "init", "mountPath": "/init"}],
            "imagePullPolicy": "Always",
        }
    ]
    fake.create("pods", NS, manifest)
    pod = wait_pod(fake, "runner", phases=("Running", "Failed"))
    assert pod["status"]["phase"] == "Running", pod["status"]
    image = base_image(docker)
    size = docker.images.get(image).attrs["Size"]
    events = [e for e in pod_events(fake, "runner") if e[0] != "Scheduled"]
    # the init container's image under Always, then the main container's (IfNotPresent: a tagged image)
    expected = ["Pulling", "Pulled", "Created", "Started", "Pulled", "Created", "Started"]
    assert [reason for reason, _ in events] == expected, events
    assert events[0][1] == f'Pulling image "{image}"'
    assert re.fullmatch(
        rf'Successfully pulled image "{re.escape(image)}" in (\S+) \(\1 including waiting\)\. '
        rf"Image size: {size} bytes\.",
        events[1][1],
    ), events[1]
    assert events[2:4] == [("Created", "Created container: prep"), ("Started", "Started container prep")]
    assert events[4][1] == f'Container image "{image}" already present on machine'
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and "running" in status["state"]
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    container = kubelet.container_of(pod, "main")
    network = container.client.containers.get(f"{container.name.rsplit('-c-', 1)[0]}-pause")
    network.reload()
    assert (
        pod["status"]["podIP"]
        == network.attrs["NetworkSettings"]["Networks"][kubelet.network_name]["IPAddress"]
    )
    deadline = time.monotonic() + 10
    while "t0k" not in logs(kubelet, pod) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert logs(kubelet, pod).split() == ["init-ran", "440", "t0k"]
    fake.delete("pods", NS, "runner")
    deadline = time.monotonic() + 20
    selector = {"label": f"mlhub.test.pod={NS}/runner/{pod['metadata']['uid']}"}
    while docker.containers.list(all=True, filters=selector) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not docker.containers.list(all=True, filters=selector)


@pytest.mark.parametrize(
    ("policy", "expected"), [("Never", "ErrImageNeverPull"), ("IfNotPresent", "ErrImagePull")]
)
def test_missing_image_is_never_pulled(cluster, policy, expected):
    """A missing image stays missing: under Never it is refused, otherwise its pull fails (Events say so)."""
    fake, _ = cluster
    manifest = pod_manifest("ghost", "mlhub-test-missing:1", ["true"])
    manifest["spec"]["containers"][0]["imagePullPolicy"] = policy
    fake.create("pods", NS, manifest)
    deadline = time.monotonic() + 20
    reason = None
    while time.monotonic() < deadline:
        statuses = (fake.get("pods", NS, "ghost")["status"].get("containerStatuses")) or [{}]
        reason = (statuses[0].get("state") or {}).get("waiting", {}).get("reason")
        if reason == expected:
            break
        time.sleep(0.2)
    assert reason == expected
    assert fake.get("pods", NS, "ghost")["status"]["phase"] == "Pending"
    reasons = [reason for reason, _ in pod_events(fake, "ghost")]
    pulls = ["Pulling", "Failed", "Failed"] if policy == "IfNotPresent" else ["ErrImageNeverPull", "Failed"]
    assert reasons == ["Scheduled", *pulls], reasons


WORKSPACE_IMAGE = "mlhub-workspace:0.1.0"


@pytest.mark.asyncio(loop_scope="function")
async def test_spawned_workspace_runs_with_writable_workspace_and_sshd_on_22(cluster, tmp_path):
    """MLHubKubernetesSpawner's pod with the real workspace image on the fake + kubelet: Running, its
    /workspace (a fresh root-owned volume) writable by its user, its non-root sshd listening on port 22."""
    fake, kubelet = cluster
    with kubeconfig_for(fake, tmp_path, NS):
        spawner = kube_spawners.make_spawner(
            fake, "alice", "ws", hub_name="fkhub", namespace=NS, image=WORKSPACE_IMAGE
        )
        spawner.api_token = "not-checked"  # sshd starts only with hub credentials (used at login only)
        # no hub answers here: the image's start script (sshd) with a command that does not call the hub
        spawner.cmd = ["sleep", "infinity"]
        try:
            await spawner.start()
            pod = fake.get("pods", NS, naming.workspace_name("fkhub", "alice", "ws"))
            assert pod["status"]["phase"] == "Running", pod["status"]
            container = kubelet.container_of(pod, "notebook")
            deadline = time.monotonic() + 30
            listening = ""
            while time.monotonic() < deadline:
                result = container.exec_run(["sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"])
                listening = result.output.decode()
                # 0016 = port 22, state 0A = LISTEN
                if any(
                    line.split()[1].endswith(":0016") and line.split()[3] == "0A"
                    for line in listening.splitlines()[1:]
                    if len(line.split()) > 3 and ":" in line.split()[1]
                ):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"no sshd on 22:\n{container.logs().decode(errors='replace')[:3000]}")
            write = container.exec_run(["sh", "-c", "id -u; touch /workspace/probe && echo ok"])
            assert write.exit_code == 0 and b"ok" in write.output, write.output
            assert write.output.split()[0] != b"0"
        finally:
            await spawner.stop(now=True)
            await MLHubKubernetesSpawner._stop_all_reflectors()


def test_containers_of_a_pod_share_localhost(cluster, docker):
    """Two containers of one pod: the second reaches the first on localhost, as in a Kubernetes pod."""
    fake, kubelet = cluster
    manifest = pod_manifest(
        "pair", base_image(docker), ["python3", "-m", "http.server", "8080"], security={"runAsUser": 1000}
    )
    manifest["spec"]["containers"].append(
        {
            "name": "client",
            "image": base_image(docker),
            "command": [
                "python3",
                "-c",
                "import time, urllib.request\n"
                "for _ in range(50):\n"
                "    try: print(urllib.request.urlopen('http://127.0.0.1:8080/').status); break\n"
                "    except OSError: time.sleep(0.2)\n",
            ],
        }
    )
    fake.create("pods", NS, manifest)
    deadline = time.monotonic() + 30
    client = {}
    while time.monotonic() < deadline:
        statuses = fake.get("pods", NS, "pair")["status"].get("containerStatuses") or []
        client = next((s for s in statuses if s["name"] == "client"), {})
        if "terminated" in client.get("state", {}):
            break
        time.sleep(0.2)
    assert client["state"]["terminated"]["exitCode"] == 0, client
    assert kubelet.container_of(fake.get("pods", NS, "pair"), "client").logs().split() == [b"200"]
    assert fake.get("pods", NS, "pair")["status"]["phase"] == "Running"
