"""The workspace's own sshd, end to end: keys registered through the real hub's SSH keys API, a workspace
spawned by the real hub onto the real engine, and the real OpenSSH client connecting straight to the
container's address on its user network (the last hop of ``ssh -J tunnel@hub jovyan@<workspace>``)."""

import re
import socket
import subprocess
import time
import urllib.parse

import pytest

from mlhubspawner import naming

from ssh_signing import register_ssh_key
from support import Hub

KEYS_COMMAND = "/usr/local/bin/mlhub-authorized-keys"


class Key:
    """An ed25519 key pair made by ssh-keygen, with its public line and SHA256 fingerprint."""

    def __init__(self, directory, name):
        self.path = directory / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@tests", "-f", str(self.path)],
            check=True,
            timeout=30,
        )
        self.public = self.path.with_suffix(".pub").read_text().strip()
        listing = subprocess.run(
            ["ssh-keygen", "-lf", str(self.path.with_suffix(".pub"))],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.fingerprint = listing.stdout.split()[1]
        assert self.fingerprint.startswith("SHA256:"), listing.stdout


def register(hub, user, key):
    """Register ``key`` for ``user`` with the hub's challenge signed by the real ssh-keygen."""
    r = register_ssh_key(hub, user, key.path, public_line=key.public)
    assert r.status_code in (200, 201), r.text


def unregister(hub, user, key):
    r = hub.api("DELETE", f"mlhub/users/{user}/ssh-keys/{urllib.parse.quote(key.fingerprint, safe='')}")
    assert r.status_code in (200, 204), r.text


def workspace(docker, hub, user, server=""):
    """The workspace container and its address on the user's network."""
    container = docker.containers.get(naming.workspace_name(hub.hub_name, user, server))
    ip = container.attrs["NetworkSettings"]["Networks"][naming.network_name(hub.hub_name, user)]["IPAddress"]
    assert ip, container.attrs["NetworkSettings"]
    return container, ip


def wait_port(ip, port=22, timeout=30):
    """sshd starts beside the Jupyter server: wait (bounded) until it accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def client_options(known_hosts=None, options=()):
    """OpenSSH client options without any config, agent or key of this machine; ``options`` come first (for
    ssh, the first value of an option wins)."""
    defaults = {
        "BatchMode": "yes",
        "ConnectTimeout": "10",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "LogLevel": "ERROR",
        "UserKnownHostsFile": str(known_hosts or "/dev/null"),
        "StrictHostKeyChecking": "no",
    }
    return [
        "-F",
        "/dev/null",
        *options,
        *(arg for name, value in defaults.items() for arg in ("-o", f"{name}={value}")),
    ]


def ssh(ip, command, key=None, known_hosts=None, user="jovyan", options=(), client="ssh", stdin=None):
    argv = [client, *client_options(known_hosts, options)]
    if key is not None:
        argv += ["-i", str(key.path)]
    argv.append(f"{user}@{ip}")
    if command is not None:
        argv.append(command)
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )


def refused(result):
    return result.returncode == 255 and "Permission denied" in result.stderr


def host_keys(ip):
    """The workspace's host public keys as ssh-keyscan sees them (without the host name)."""
    result = subprocess.run(
        ["ssh-keyscan", "-T", "10", "-t", "ed25519,ecdsa", ip], capture_output=True, text=True, timeout=30
    )
    keys = sorted(line.split(None, 1)[1] for line in result.stdout.splitlines() if not line.startswith("#"))
    assert keys, result.stderr
    return keys


def exec_out(container, *argv):
    result = container.exec_run(list(argv))
    return result.exit_code, result.output.decode(errors="replace")


@pytest.fixture
def keydir(tmp_path):
    directory = tmp_path / "ssh"
    directory.mkdir(mode=0o700)
    return directory


def test_owner_keys_log_in_until_deleted(hub, docker, keydir):
    owner, other = hub.create_user("sshowner"), hub.create_user("sshother")
    owner_key, other_key, unknown_key = Key(keydir, "owner"), Key(keydir, "other"), Key(keydir, "unknown")
    register(hub, owner, owner_key)
    register(hub, other, other_key)
    assert hub.spawn(owner).status_code in (201, 202)
    container, ip = workspace(docker, hub, owner)
    wait_port(ip)

    # the owner's registered key: a shell as jovyan in /workspace, with the workspace's env but no hub token
    result = ssh(ip, 'id -u; pwd; echo "$JUPYTERHUB_USER"', owner_key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["1000", "/workspace", owner]
    result = ssh(
        ip,
        'echo "$PATH"; command -v jupyterhub-singleuser; echo "token=${JUPYTERHUB_API_TOKEN:-}";'
        ' echo "jpy=${JPY_API_TOKEN:-}"; echo "api=$JUPYTERHUB_API_URL"',
        owner_key,
    )
    assert result.returncode == 0, result.stderr
    path, singleuser, token, jpy, api = result.stdout.split("\n")[:5]
    assert path.startswith("/opt/mlhub/venv/bin:")
    assert singleuser == "/opt/mlhub/venv/bin/jupyterhub-singleuser"
    assert (token, jpy) == ("token=", "jpy=")
    assert api.startswith("api=http")
    # a login shell (no command, with a terminal) also starts in /workspace with the venv first on PATH
    script = 'shopt -q login_shell && echo "login=$PWD:$PATH"; exit\n'
    result = ssh(ip, None, owner_key, options=("-tt",), stdin=script)
    assert "login=/workspace:/opt/mlhub/venv/bin:" in result.stdout, (result.stdout, result.stderr)
    # sftp lands in /workspace too
    upload = f"put {owner_key.path.with_suffix('.pub')} sftp-upload.pub\n"
    sftp = ssh(ip, None, owner_key, options=("-b", "-"), client="sftp", stdin=upload)
    assert sftp.returncode == 0, sftp.stderr
    assert exec_out(container, "cat", "/workspace/sftp-upload.pub")[1].strip() == owner_key.public

    # keys of someone else, keys nobody registered, other login names, passwords: refused
    assert refused(ssh(ip, "true", other_key))
    assert refused(ssh(ip, "true", unknown_key))
    assert refused(ssh(ip, "true", owner_key, user="root"))
    assert refused(ssh(ip, "true", owner_key, user=owner))
    result = ssh(
        ip,
        "true",
        options=(
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ),
    )
    assert refused(result)
    assert "(publickey)" in result.stderr  # the only method the server offers

    # how sshd runs: as jovyan, the keys command root-owned and read-only, secrets and host keys private
    code, out = exec_out(container, "ps", "-o", "user=", "-C", "sshd")
    assert code == 0 and set(out.split()) == {"jovyan"}, out
    code, out = exec_out(
        container,
        "stat",
        "-c",
        "%n %U %a",
        KEYS_COMMAND,
        "/run/mlhub-sshd/hub-api.env",
        "/workspace/.mlhub/ssh",
        "/workspace/.mlhub/ssh/ssh_host_ed25519_key",
    )
    assert code == 0, out
    assert out.split("\n")[:4] == [
        f"{KEYS_COMMAND} root 755",
        "/run/mlhub-sshd/hub-api.env jovyan 600",
        "/workspace/.mlhub/ssh jovyan 700",
        "/workspace/.mlhub/ssh/ssh_host_ed25519_key jovyan 600",
    ]
    # the keys command prints the owner's lines from the hub; with the hub unreachable, nothing (denied)
    code, out = exec_out(container, KEYS_COMMAND, "jovyan", "/run/mlhub-sshd/hub-api.env")
    assert code == 0 and out.split() == owner_key.public.split()[:2], out
    code, out = exec_out(
        container,
        "bash",
        "-c",
        "umask 077 && sed 's|^JUPYTERHUB_API_URL=.*|JUPYTERHUB_API_URL=http://127.0.0.1:9/hub/api|'"
        " /run/mlhub-sshd/hub-api.env > /tmp/unreachable.env && "
        + KEYS_COMMAND
        + " jovyan /tmp/unreachable.env",
    )
    assert code != 0 and "denied" in out and "ssh-ed25519" not in out, out

    # a deleted key stops working at once, with the workspace still running
    unregister(hub, owner, owner_key)
    assert refused(ssh(ip, "true", owner_key))
    register(hub, owner, owner_key)
    assert ssh(ip, "true", owner_key).returncode == 0
    hub.stop_server(owner)


def test_host_key_survives_recreation(hub, docker, keydir):
    user = hub.create_user("sshhostkey")
    key = Key(keydir, "hostkey")
    register(hub, user, key)
    # the client remembers the host key under an alias: the address may change with the container
    known_hosts = keydir / "known_hosts"
    alias = ("-o", f"HostKeyAlias={user}-workspace", "-o", "CheckHostIP=no")
    assert hub.spawn(user, options={"cpu_limit": "0.5"}).status_code in (201, 202)
    container, ip = workspace(docker, hub, user)
    wait_port(ip)
    first_keys = host_keys(ip)
    result = ssh(ip, "true", key, known_hosts, options=(*alias, "-o", "StrictHostKeyChecking=accept-new"))
    assert result.returncode == 0, result.stderr
    assert f"{user}-workspace ssh-ed25519 " in known_hosts.read_text()

    hub.stop_server(user)
    assert hub.spawn(user, options={"cpu_limit": "1"}).status_code in (201, 202)
    recreated, ip = workspace(docker, hub, user)
    assert recreated.id != container.id  # a new container on the same volume
    wait_port(ip)
    assert host_keys(ip) == first_keys
    result = ssh(ip, "true", key, known_hosts, options=(*alias, "-o", "StrictHostKeyChecking=yes"))
    assert result.returncode == 0, result.stderr
    hub.stop_server(user)


# ---- a workspace whose sshd does not answer is not offered for SSH --------------------------------

HEALTH_CONFIG = (
    "c.SSHHealth.cache_seconds = 1\n"  # the default 30 s would hold a dead sshd's workspace for that long
    "c.MLHubDockerSpawner.max_total_mem_per_user = '2G'\n"
)
SMALL = {"mem_limit": "512M"}


@pytest.fixture(scope="module")
def health_hub(docker, tmp_path_factory):
    """A hub of its own: probes of workspaces' sshd cached for 1 s."""
    hub = Hub(tmp_path_factory.mktemp("hub-sshd-health"), user_config=HEALTH_CONFIG)
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def front_lookup(hub, key):
    """The line the hub answers the SSH front for ``key`` (what its AuthorizedKeysCommand prints)."""
    token = (hub.workdir / "data" / "ssh-front.token").read_text().strip()
    key_type, blob = key.public.split()[:2]
    r = hub.api("GET", "mlhub/ssh/authorized-keys", token=token, params={"key": blob, "type": key_type})
    assert r.status_code == 200, r.text
    return r.text


def permitted(hub, user, key):
    """The servers of ``user`` the front lets ``key`` forward to."""
    line = front_lookup(hub, key)
    names = {naming.workspace_name(hub.hub_name, user, s): s for s in ("good", "bad")}
    return {names[target] for target in re.findall(r'permitopen="([^":]+):22"', line) if target in names}


def wait_until(predicate, timeout=20, interval=0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def ssh_config(hub, user, server):
    return hub.api("GET", f"mlhub/users/{user}/servers/{server}/ssh-config")


def test_a_workspace_without_sshd_is_not_offered(health_hub, docker, keydir):
    hub = health_hub
    user = hub.create_user("sshdead")
    key = Key(keydir, "dead")
    register(hub, user, key)
    for server in ("good", "bad"):
        assert hub.spawn(user, server, SMALL).status_code in (201, 202)
    (_, good_ip), (bad, bad_ip) = workspace(docker, hub, user, "good"), workspace(docker, hub, user, "bad")
    wait_port(good_ip)
    wait_port(bad_ip)
    assert wait_until(lambda: permitted(hub, user, key) == {"good", "bad"}), front_lookup(hub, key)
    assert ssh_config(hub, user, "bad").status_code == 200

    # sshd dies (as when it could not bind its port, or the image has none): the Jupyter server runs on
    code, out = exec_out(bad, "sh", "-c", "kill $(cat /run/mlhub-sshd/sshd.pid)")
    assert code == 0, out
    assert wait_until(lambda: permitted(hub, user, key) == {"good"}), front_lookup(hub, key)
    r = ssh_config(hub, user, "bad")
    assert r.status_code == 409, r.text
    message = r.json()["message"]  # what the home page's SSH button shows (mlhub.js: data.message)
    assert message.startswith("the workspace's SSH server is not running: "), message
    assert "images without sshd cannot be reached over SSH" in message
    assert ssh_config(hub, user, "good").status_code == 200
    assert hub.get_through_proxy(user, "bad").status_code == 200  # the workspace itself still runs

    # another listener on the port is not sshd either
    listener = bad.exec_run(
        [
            "python3",
            "-c",
            "import http.server as h; h.HTTPServer(('', 22), h.BaseHTTPRequestHandler).serve_forever()",
        ],
        detach=True,
    )
    assert listener is not None
    wait_port(bad_ip)
    time.sleep(1.2)  # past the cache
    r = ssh_config(hub, user, "bad")
    assert r.status_code == 409 and "sent no SSH banner" in r.json()["message"], r.text
    assert permitted(hub, user, key) == {"good"}

    # a restart brings sshd back: offered again at once (a new start is probed anew)
    hub.stop_server(user, "bad")
    assert hub.spawn(user, "bad", SMALL).status_code in (201, 202)
    _, bad_ip = workspace(docker, hub, user, "bad")
    wait_port(bad_ip)
    assert ssh_config(hub, user, "bad").status_code == 200
    assert permitted(hub, user, key) == {"good", "bad"}
    hub.stop_server(user, "good")
    hub.stop_server(user, "bad")
