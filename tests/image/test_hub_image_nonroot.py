"""The hub image as the Helm chart runs it: not root, read-only root filesystem, no capability.

Real engine, real image. The proxy pod's container runs as ``tunnel`` (1001:1001) with nginx, sslh,
configurable-http-proxy and sshd; its SSH host keys (and TLS pair) come from volumes of root-owned 0440 files
of group 1001, as a Secret mounted with ``fsGroup``. A stand-in hub answers the key lookup with the line the
real hub writes (``mlhubspawner.sshkeys``) and is CHP's default target; an sshd container is the workspace
the key may reach. The hub pod's container runs as ``mlhub`` (1000:1000) on a data volume owned root:1000
mode 2775 (a PVC with ``fsGroup``). Everything carries ``mlhub.test=<name>`` and is removed.
"""

import base64
import json
import os
import secrets
import ssl
import subprocess

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mlhubspawner import __version__
from mlhubspawner.front import certs

from support import free_port, remove_by_label, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

TUNNEL, HUB = "1001", "1000"  # the image's `tunnel` and `mlhub` accounts (uid = gid)

# the hub's key lookup and CHP's default target: the authorized_keys line is the real hub's format
STANDIN_HUB = """
import http.server, os, urllib.parse
from mlhubspawner import sshkeys
TOKEN, KEY, TARGET = os.environ["TOKEN"], os.environ["KEY"].split(), os.environ["TARGET"]
class Hub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        body = b"stand-in hub"
        if url.path == "/hub/api/mlhub/ssh/authorized-keys":
            if self.headers.get("Authorization") != "token " + TOKEN:
                self.send_response(403); self.end_headers(); return
            query = urllib.parse.parse_qs(url.query)
            body = b""
            if query.get("type") == [KEY[0]] and query.get("key") == [KEY[1]]:
                host, port = TARGET.rsplit(":", 1)
                options = sshkeys.forwarding_options([(host, int(port))])
                body = (sshkeys.authorized_keys_line(KEY[0], KEY[1], options) + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8081), Hub).serve_forever()
"""

# the workspace: an sshd that lets the same key in as root
TARGET_SSHD = (
    "ssh-keygen -q -t ed25519 -N '' -f /tmp/host_key && printf '%s\\n' \"$KEY\" > /tmp/authorized "
    "&& exec /usr/sbin/sshd -D -e -f /dev/null -o ListenAddress=0.0.0.0:22 -o HostKey=/tmp/host_key "
    "-o AuthorizedKeysFile=/tmp/authorized -o PermitRootLogin=prohibit-password -o UsePAM=no -o StrictModes=no"
)

# writes {name: base64} into the volume at /v (atomically, as a Secret update), owner root:<gid>, <mode>
FILL_VOLUME = """
import base64, json, os, sys
files, gid, mode, dir_mode = json.loads(os.environ["FILES"]), int(sys.argv[1]), int(sys.argv[2], 8), int(sys.argv[3], 8)
for name, content in files.items():
    tmp = f"/v/.{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(base64.b64decode(content))
    os.chown(tmp, 0, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, f"/v/{name}")
os.chown("/v", 0, gid)
os.chmod("/v", dir_mode)
"""


def image():
    return os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}")


def fill_volume(docker, volume, label, files, gid, mode="0440", dir_mode="0755"):
    """Write ``files`` ({name: bytes}) into ``volume`` as root, owned root:``gid`` (a helper container)."""
    encoded = {name: base64.b64encode(content).decode() for name, content in files.items()}
    helper = docker.containers.create(
        image(),
        ["-c", FILL_VOLUME, str(gid), mode, dir_mode],
        entrypoint="python3",
        user="0:0",
        labels=label,
        environment={"FILES": json.dumps(encoded)},
        tmpfs={"/data": ""},  # not the image's anonymous /data volume
        volumes={volume: {"bind": "/v", "mode": "rw,nocopy"}},
    )
    try:
        helper.start()
        result = helper.wait(timeout=60)
        assert result["StatusCode"] == 0, helper.logs().decode(errors="replace")
    finally:
        helper.remove(force=True, v=True)


def restricted(uid, **tmpfs):
    """Container options of a pod under Pod Security ``restricted`` with a read-only root filesystem."""
    return {
        "user": f"{uid}:{uid}",
        "group_add": [uid],  # the fsGroup
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "tmpfs": {"/run/mlhub": f"uid={uid},gid={uid}", "/tmp": "", **tmpfs},
    }


def new_key(tmp_path, name):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path, path.with_suffix(".pub").read_text().strip()


def host_key(tmp_path):
    path = tmp_path / "ssh_host_ecdsa_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path.read_bytes()


def processes(container):
    """``[(uid, command, CapEff, NoNewPrivs)]`` of every process in the container."""
    script = (
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try: status = open(f'/proc/{pid}/status').read()\n"
        "    except OSError: continue\n"
        "    f = dict(line.split(':', 1) for line in status.splitlines() if ':' in line)\n"
        "    print(f['Uid'].split()[1], f['Name'].strip(), f['CapEff'].strip(), f['NoNewPrivs'].strip())\n"
    )
    result = container.exec_run(["python3", "-c", script])
    assert result.exit_code == 0, result.output
    return [tuple(line.split()) for line in result.output.decode().splitlines()]


@pytest.fixture(scope="module")
def plain_proxy(docker, tmp_path_factory):
    yield from run_proxy(docker, tmp_path_factory, tls=False)


@pytest.fixture(scope="module")
def tls_proxy(docker, tmp_path_factory):
    yield from run_proxy(docker, tmp_path_factory, tls=True)


@pytest.fixture(params=["plain", "tls"])
def proxy(request):
    return request.getfixturevalue(f"{request.param}_proxy")


def run_proxy(docker, tmp_path_factory, tls):
    """The proxy pod, not root: yields ``dict(container, port, url, name, key, stranger, tls, tmp, label)``."""
    name = f"tnr{secrets.token_hex(3)}"
    label = {"mlhub.test": name}
    tmp = tmp_path_factory.mktemp(name)
    key, public = new_key(tmp, "user")
    stranger, _ = new_key(tmp, "stranger")
    token = secrets.token_hex(32)
    port = free_port()
    try:
        network = docker.networks.create(name, labels=label)
        for volume in ("hostkeys", "ssl"):
            docker.volumes.create(f"{name}-{volume}", labels=label)
        fill_volume(docker, f"{name}-hostkeys", label, {"ssh_host_ecdsa_key": host_key(tmp)}, TUNNEL)
        if tls:
            fill_volume(
                docker,
                f"{name}-ssl",
                label,
                dict(zip(("cert.crt", "cert.key"), pair("a"), strict=True)),
                TUNNEL,
            )
        common = {"detach": True, "labels": label, "network": network.name, "tmpfs": {"/data": ""}}
        docker.containers.run(
            image(),
            ["-c", STANDIN_HUB],
            entrypoint="python3",
            name=f"{name}-hub",
            environment={"TOKEN": token, "KEY": public, "TARGET": f"{name}-target:22"},
            **common,
        )
        docker.containers.run(
            image(),
            ["-c", TARGET_SSHD],
            entrypoint="sh",
            name=f"{name}-target",
            environment={"KEY": public},
            **common,
        )
        volumes = {f"{name}-hostkeys": {"bind": "/etc/mlhub/ssh-host-keys", "mode": "ro,nocopy"}}
        if tls:
            volumes[f"{name}-ssl"] = {"bind": "/resources/ssl", "mode": "ro,nocopy"}
        container = docker.containers.run(
            image(),
            name=f"{name}-proxy",
            detach=True,
            labels=label,
            network=network.name,
            ports={"8080/tcp": ("127.0.0.1", port)},
            environment={
                "HUB_NAME": name,
                "START_JHUB": "false",
                "START_CHP": "true",
                "START_NGINX": "true",
                "START_SSH": "true",
                "EXECUTION_MODE": "k8s",
                "SSL_ENABLED": "true" if tls else "false",
                "MLHUB_DATA_DIR": "/data",
                "MLHUB_HUB_SERVICE_URL": f"http://{name}-hub:8081",
                "MLHUB_PROXY_API_LISTEN": "0.0.0.0",
                "MLHUB_SSH_HOST_KEYS_DIR": "/etc/mlhub/ssh-host-keys",
                "MLHUB_CERT_RELOAD_SECONDS": "1",
                "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
                "MLHUB_SSH_FRONT_TOKEN": token,
            },
            volumes=volumes,
            **restricted(TUNNEL, **{"/data": f"mode=2775,gid={TUNNEL}"}),
        )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        if not wait_for(lambda: answers(f"{url}/_chp_healthz"), timeout=60):
            pytest.fail(f"the proxy did not answer:\n{container.logs(tail=60).decode(errors='replace')}")
        yield {"container": container, "port": port, "url": url, "name": name, "key": key,
               "stranger": stranger, "tls": tls, "tmp": tmp, "label": label}  # fmt: skip
    finally:
        remove_by_label(docker, f"mlhub.test={name}")


def pair(tag):
    return certs.self_signed(f"cert-{tag}", ["localhost"], ["127.0.0.1"])


def answers(url):
    try:
        return requests.get(url, timeout=3, verify=False).status_code == 200
    except requests.ConnectionError:
        return False


def ssh_config(proxy, key):
    config = proxy["tmp"] / f"ssh-config-{key.name}"
    config.write_text(
        "Host *\n"
        f"    IdentityFile {key}\n    IdentitiesOnly yes\n    BatchMode yes\n    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n    ConnectTimeout 10\n    LogLevel ERROR\n"
    )
    return config


def jump(proxy, key, target, command="echo hello from $(hostname)"):
    """``ssh -J tunnel@<public port> root@<target>``: the jump as every generated ssh config makes it."""
    return subprocess.run(
        [
            "ssh",
            "-F",
            str(ssh_config(proxy, key)),
            "-J",
            f"tunnel@127.0.0.1:{proxy['port']}",
            f"root@{target}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_http_through_the_public_port_reaches_the_hub(proxy):
    r = requests.get(f"{proxy['url']}/hub/health", timeout=10, verify=False)
    assert r.status_code == 200 and r.text == "stand-in hub"  # nginx → CHP → its default target
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert ("Strict-Transport-Security" in r.headers) is proxy["tls"]


def test_ssh_jump_with_the_hubs_key_line_and_nothing_else(proxy):
    target = f"{proxy['name']}-target"
    done = jump(proxy, proxy["key"], target)
    assert done.returncode == 0, done.stderr + proxy["container"].logs(tail=30).decode(errors="replace")
    assert done.stdout.strip() == f"hello from {proxy['container'].client.containers.get(target).id[:12]}"
    # a key the hub does not know opens nothing
    refused = jump(proxy, proxy["stranger"], target)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr
    # the known key, to a destination its line does not permit
    elsewhere = jump(proxy, proxy["key"], f"{proxy['name']}-hub")
    assert elsewhere.returncode != 0, elsewhere.stdout
    assert "forwarding failed" in elsewhere.stderr or "prohibited" in elsewhere.stderr, elsewhere.stderr


def test_no_process_runs_as_root_or_keeps_a_capability(proxy):
    found = processes(proxy["container"])
    names = {name for _, name, _, _ in found}
    assert {"supervisord", "nginx", "sshd", "sslh", "node"} <= names, found
    assert {uid for uid, _, _, _ in found} == {TUNNEL}, found
    assert {cap for _, _, cap, _ in found} == {"0000000000000000"}, found
    assert {nnp for _, _, _, nnp in found} == {"1"}, found


def served_fingerprint(port):
    try:
        pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=3)
    except OSError:
        return None
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())


def test_a_renewed_certificate_is_served_by_the_watcher_not_root(tls_proxy, docker):
    proxy = tls_proxy
    cert_b, key_b = pair("b")
    fill_volume(
        docker, f"{proxy['name']}-ssl", proxy["label"], {"cert.crt": cert_b, "cert.key": key_b}, TUNNEL
    )
    expected = x509.load_pem_x509_certificate(cert_b).fingerprint(hashes.SHA256())
    assert wait_for(lambda: served_fingerprint(proxy["port"]) == expected, timeout=30), (
        proxy["container"].logs(tail=30).decode(errors="replace")
    )


def test_hub_pod_not_root_keeps_its_database_in_the_data_volume(docker):
    name = f"tnr{secrets.token_hex(3)}"
    label = {"mlhub.test": name}
    port = free_port()
    try:
        docker.volumes.create(f"{name}-data", labels=label)
        fill_volume(docker, f"{name}-data", label, {}, HUB, dir_mode="2775")  # a PVC root:1000 2775
        container = docker.containers.run(
            image(),
            name=name,
            detach=True,
            labels=label,
            ports={"8081/tcp": ("127.0.0.1", port)},
            environment={
                "HUB_NAME": name,
                "START_JHUB": "true",
                "START_CHP": "false",
                "START_NGINX": "false",
                "START_SSH": "false",
                "EXECUTION_MODE": "k8s",
                "POD_NAMESPACE": name,
                "MLHUB_DATA_DIR": "/data",
            },
            volumes={f"{name}-data": {"bind": "/data", "mode": "rw,nocopy"}},
            **restricted(HUB),
        )
        if not wait_for(lambda: answers(f"http://127.0.0.1:{port}/hub/health"), timeout=90):
            pytest.fail(f"the hub did not answer:\n{container.logs(tail=60).decode(errors='replace')}")
        listing = container.exec_run(["stat", "-c", "%n %u:%g %a", "/data", "/data/jupyterhub.sqlite"])
        assert listing.output.decode().split("\n")[:2] == [
            "/data 0:1000 2775",
            "/data/jupyterhub.sqlite 1000:1000 600",
        ]
        assert {uid for uid, _, _, _ in processes(container)} == {HUB}
    finally:
        remove_by_label(docker, f"mlhub.test={name}")


REFUSALS = {
    # the hub's account cannot be sshd's: the jump account is another
    "ssh-as-hub": (
        {"START_SSH": "true"},
        True,
        False,
        ["START_SSH=false", "proxy.containerSecurityContext.runAsUser"],
    ),
    # no emptyDir on /run/mlhub: nothing can be rendered
    "no-run-dir": ({}, False, False, ["/run/mlhub is not writable", "emptyDir"]),
    # the chart's values Secret not readable by the pod's user (no fsGroup)
    "values-unreadable": ({}, True, True, ["cannot read /usr/local/etc/mlhub/values.yaml", "fsGroup"]),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_start_that_cannot_work_stops_with_a_one_line_reason(docker, case):
    env, run_dir, values, expected = case
    name = f"tnr{secrets.token_hex(3)}"
    label = {"mlhub.test": name}
    options = restricted(HUB, **{"/data": f"mode=2775,gid={HUB}"})
    if not run_dir:
        del options["tmpfs"]["/run/mlhub"]
    volumes = {}
    try:
        if values:
            docker.volumes.create(f"{name}-values", labels=label)
            fill_volume(docker, f"{name}-values", label, {"values.yaml": b"hub: {}\n"}, 0, mode="0400")
            volumes[f"{name}-values"] = {"bind": "/usr/local/etc/mlhub", "mode": "ro,nocopy"}
        container = docker.containers.run(
            image(),
            name=name,
            detach=True,
            labels=label,
            environment={
                "HUB_NAME": name,
                "START_JHUB": "true",
                "START_NGINX": "false",
                "START_SSH": "false",
                "EXECUTION_MODE": "k8s",
                "MLHUB_CHART_VALUES": "/usr/local/etc/mlhub/values.yaml",
                **env,
            },
            volumes=volumes,
            **options,
        )
        status = container.wait(timeout=60)
        output = container.logs().decode(errors="replace")
    finally:
        remove_by_label(docker, f"mlhub.test={name}")
    assert status["StatusCode"] != 0, output
    assert "Traceback" not in output and "supervisord" not in output, output
    for text in expected:
        assert text in output, output
