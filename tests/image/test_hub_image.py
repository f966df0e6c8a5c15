"""The hub image as an operator runs it: one container, one public port for HTTP(S) and SSH.

Real engine, real image (``make images`` builds it offline), real nginx/sslh/sshd/supervisord inside,
real OpenSSH client outside. Each front (TLS off, TLS on) is one module-scoped hub container.
"""

import os
import socket
import ssl
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography import x509

from mlhubspawner import __version__, naming

from ssh_signing import register_ssh_key
from support import (
    PASSWORD,
    HubContainer,
    browser,
    exists,
    generated_admin_password,
    log_in,
    post_form,
    sign_up,
    wait_for,
)

# the fronts' certificates are self-signed: requests to them do not verify
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

FRONT_PORTS = (22, 2222, 8000, 8001, 8002, 8080, 8090, 8091, 8443, 8444, 8445)


@pytest.fixture(scope="module")
def plain_front(docker, tmp_path_factory):
    env = {"CLEANUP_INTERVAL_SECONDS": "-1", "CLEANUP_MIN_AGE_SECONDS": "0"}
    hub = HubContainer(docker, tmp_path_factory.mktemp("plain-front"), env=env)
    try:
        yield hub.start()
    finally:
        hub.destroy()


@pytest.fixture(scope="module")
def tls_front(docker, tmp_path_factory):
    """Without MLHUB_ADMIN_PASSWORD: the hub generates the admin's password at its first start."""
    hub = HubContainer(
        docker, tmp_path_factory.mktemp("tls-front"), ssl=True, env={"MLHUB_ADMIN_PASSWORD": None}
    )
    try:
        hub.start()
        hub.admin_password = generated_admin_password(hub.container.logs().decode(errors="replace"))
        yield hub
    finally:
        hub.destroy()


@pytest.fixture(params=["plain", "tls"])
def front(request):
    return request.getfixturevalue(f"{request.param}_front")


# ---- SSH helpers ---------------------------------------------------------------------------


def new_key(tmp_path, name):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path, path.with_suffix(".pub").read_text().strip()


def register_key(hub, user, private_key):
    """Register the key pair ``private_key`` for ``user``: the hub's challenge, signed with ssh-keygen."""
    r = register_ssh_key(hub, user, private_key)
    assert r.status_code == 201, r.text
    return r.json()["fingerprint"]


def ssh_setup(hub, tmp_path, user, key_path, server=""):
    """An ssh config file: the hub's generated block for the workspace + this key, no prompts."""
    path = f"mlhub/users/{user}/servers/{server}/ssh-config" if server else f"mlhub/users/{user}/ssh-config"
    r = hub.api("GET", path)
    assert r.status_code == 200, r.text
    model = r.json()
    config = tmp_path / f"ssh-config-{user}-{key_path.name}"
    config.write_text(
        model["config"]
        + "\nHost *\n"
        + f"    IdentityFile {key_path}\n    IdentitiesOnly yes\n    BatchMode yes\n"
        + f"    StrictHostKeyChecking no\n    UserKnownHostsFile {tmp_path / 'known_hosts'}\n"
        + "    ConnectTimeout 10\n    LogLevel ERROR\n"
    )
    return config, model


def ssh(config, host, command="true", timeout=60):
    return subprocess.run(
        ["ssh", "-F", str(config), host, command], capture_output=True, text=True, timeout=timeout
    )


def health(hub):
    try:
        return requests.get(f"{hub.url}/hub/health", timeout=3, verify=False).status_code == 200
    except requests.ConnectionError:
        return False


# ---- HTTP(S) -------------------------------------------------------------------------------


def test_public_port_serves_the_hub_with_login(front):
    r = requests.get(f"{front.url}/hub/health", timeout=10, verify=False)
    assert r.status_code == 200
    sign_up(front, "admin")
    session, r = log_in(front, "admin")
    assert r.status_code == 302, r.text
    cookie = next(c for c in session.cookies if c.name.startswith("jupyterhub-hub-login"))
    # behind TLS the hub knows it is served over https (X-Forwarded-Proto) and marks its cookie Secure
    assert cookie.secure is front.ssl
    home = session.get(f"{front.url}/hub/home", timeout=30)
    assert home.status_code == 200 and "admin" in home.text
    _, wrong = log_in(front, "admin", PASSWORD + "x")
    assert wrong.status_code != 302


def test_first_start_logs_the_generated_admin_password_and_keeps_it_0600(tls_front):
    assert tls_front.admin_password and len(tls_front.admin_password) >= 20, tls_front.log_tail()
    code, out = tls_front.exec("stat", "-c", "%a", "/data/admin-password")
    assert (code, out.strip()) == (0, "600"), out
    assert tls_front.exec("cat", "/data/admin-password")[1].strip() == tls_front.admin_password
    fields = {"username": "admin", "signup_password": PASSWORD, "signup_password_confirmation": PASSWORD}
    sign_up_refused = post_form(browser(tls_front), tls_front, "signup", fields)
    assert sign_up_refused.status_code == 403 and "cannot be signed up" in sign_up_refused.text
    assert log_in(tls_front, "admin", PASSWORD)[1].status_code != 302


def test_security_headers_and_no_reflected_cors(front):
    r = requests.get(
        f"{front.url}/hub/login", headers={"Origin": "https://evil.example"}, timeout=10, verify=False
    )
    assert r.status_code == 200
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Credentials" not in r.headers
    assert ("Strict-Transport-Security" in r.headers) is front.ssl


def test_workspace_paths_go_through_hub_auth(front):
    user = front.create_user("walter")
    r = front.spawn(user)
    assert r.status_code in (201, 202), r.text
    anonymous = requests.get(
        f"{front.url}/user/{user}/api/status", timeout=30, verify=False, allow_redirects=False
    )
    assert anonymous.status_code in (302, 401, 403)
    assert front.get_through_proxy(user).status_code == 200


def test_plain_http_on_the_tls_port_is_redirected(tls_front):
    r = requests.get(f"http://127.0.0.1:{tls_front.port}/hub/health?x=1", timeout=10, allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://127.0.0.1:{tls_front.port}/hub/health?x=1"


def test_generated_certificate_names_the_hub(tls_front):
    pem = ssl.get_server_certificate(("127.0.0.1", tls_front.port), timeout=10)
    san = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    dns = san.value.get_values_for_type(x509.DNSName)
    ips = [str(i) for i in san.value.get_values_for_type(x509.IPAddress)]
    tls_front.container.reload()
    front_ip = tls_front.container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert {"localhost", tls_front.hub_name} <= set(dns)
    assert {"127.0.0.1", front_ip} <= set(ips)


# ---- SSH -----------------------------------------------------------------------------------


def test_ssh_reaches_only_the_key_owners_workspaces(front, tmp_path):
    alice, bob = front.create_user("alice"), front.create_user("bob")
    alice_key, alice_pub = new_key(tmp_path, "alice")
    bob_key, bob_pub = new_key(tmp_path, "bob")
    alice_fp = register_key(front, alice, alice_key)
    register_key(front, bob, bob_key)
    for user in (alice, bob):
        r = front.spawn(user, "work")
        assert r.status_code in (201, 202), r.text

    config, model = ssh_setup(front, tmp_path, alice, alice_key, "work")
    assert f"ProxyJump tunnel@127.0.0.1:{front.port}" in model["config"]
    done = ssh(config, model["host_alias"], "id -un; pwd; echo $JUPYTERHUB_USER")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["jovyan", "/workspace", alice]

    # bob's key opens the front (bob has a running workspace) but not alice's workspace
    bob_to_alice, _ = ssh_setup(front, tmp_path, alice, bob_key, "work")
    refused = ssh(bob_to_alice, model["host_alias"])
    assert refused.returncode != 0
    assert "forwarding failed" in refused.stderr or "prohibited" in refused.stderr, refused.stderr
    bob_config, bob_model = ssh_setup(front, tmp_path, bob, bob_key, "work")
    assert ssh(bob_config, bob_model["host_alias"]).returncode == 0

    # the tunnel account has no shell
    shell = subprocess.run(
        ["ssh", "-F", str(config), "-p", str(front.port), "tunnel@127.0.0.1", "id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode != 0 and "uid=" not in shell.stdout

    # a deleted key, and a deleted user's key, stop working at once
    r = front.api("DELETE", f"mlhub/users/{alice}/ssh-keys/{urllib.parse.quote(alice_fp, safe='')}")
    assert r.status_code == 204, r.text
    assert ssh(config, model["host_alias"]).returncode != 0
    front.stop_server(bob, "work")  # JupyterHub refuses to delete a user with a running named server
    r = front.api("DELETE", f"users/{bob}")
    assert r.status_code == 204, r.text
    assert ssh(bob_config, bob_model["host_alias"]).returncode != 0


# a registration as the release before proof of possession stored it: the squatter's, unproven
LEGACY_SQUAT = """
import sqlite3, sys
user, key_type, blob, fingerprint = sys.argv[1:5]
db = sqlite3.connect("/data/ssh-keys.sqlite")
(created,) = db.execute("SELECT user_created FROM ssh_keys WHERE user = ?", (user,)).fetchone()
db.execute(
    "INSERT INTO ssh_keys (user, user_created, type, blob, fingerprint, comment, created_at, proven) "
    "VALUES (?, ?, ?, ?, ?, '', '2025-01-01T00:00:00.000000Z', 0)",
    (user, created, key_type, blob, fingerprint),
)
db.commit()
"""


def test_a_squatted_legacy_key_goes_to_its_proven_owner_over_ssh(plain_front, tmp_path):
    front = plain_front
    owner, squatter = front.create_user("erin"), front.create_user("mallory")
    owner_key, owner_public = new_key(tmp_path, "erin")
    squatter_key, _ = new_key(tmp_path, "mallory")
    register_key(front, squatter, squatter_key)
    listing = subprocess.run(
        ["ssh-keygen", "-lf", f"{owner_key}.pub"], check=True, capture_output=True, text=True, timeout=30
    )
    key_type, blob = owner_public.split()[:2]
    code, output = front.exec(
        "python3", "-c", LEGACY_SQUAT, squatter, key_type, blob, listing.stdout.split()[1]
    )
    assert code == 0, output
    for user in (owner, squatter):
        r = front.spawn(user, "work")
        assert r.status_code in (201, 202), r.text
    # the squat: erin's key reaches mallory's workspace through the front
    squat_config, squat_model = ssh_setup(front, tmp_path, squatter, owner_key, "work")
    done = ssh(squat_config, squat_model["host_alias"], "echo $JUPYTERHUB_USER")
    assert done.returncode == 0 and done.stdout.split() == [squatter], done.stderr

    # erin proves possession: the key is hers, on the front and in the workspaces, at once
    register_key(front, owner, owner_key)
    config, model = ssh_setup(front, tmp_path, owner, owner_key, "work")
    done = ssh(config, model["host_alias"], "echo $JUPYTERHUB_USER")
    assert done.returncode == 0 and done.stdout.split() == [owner], done.stderr
    refused = ssh(squat_config, squat_model["host_alias"])
    assert refused.returncode != 0
    assert "forwarding failed" in refused.stderr or "prohibited" in refused.stderr, refused.stderr
    for user in (owner, squatter):
        front.stop_server(user, "work")


# ---- the container ---------------------------------------------------------------------------


def probe(container, host, port):
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(3)\n"
        f"sys.exit(0 if s.connect_ex(({host!r},{port}))==0 else 1)"
    )
    return container.exec_run(["python3", "-c", code]).exit_code == 0


def test_from_a_workspace_only_the_hub_api_answers(plain_front, docker):
    user = plain_front.create_user("probe")
    assert plain_front.spawn(user).status_code in (201, 202)
    workspace = docker.containers.get(f"{plain_front.hub_name}-ws-{user}")
    assert probe(workspace, plain_front.hub_name, 8081)
    open_ports = [p for p in FRONT_PORTS if probe(workspace, plain_front.hub_name, p)]
    assert open_ports == []
    # nor does the Docker host: with the hub in a container, the egress table leaves no host port open
    # (a listener this test binds on the user network's gateway, the host's own address there)
    network = docker.networks.get(naming.network_name(plain_front.hub_name, user))
    gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
    with socket.socket() as listener:
        listener.bind((gateway, 0))
        listener.listen()
        assert not probe(workspace, gateway, listener.getsockname()[1])


def supervised_pid(hub, program):
    return hub.exec("supervisorctl", "-c", "/run/mlhub/supervisord.conf", "pid", program)[1].strip()


def test_supervisor_restarts_a_killed_process(plain_front):
    for program in ("sslh", "sshd", "nginx"):
        before = supervised_pid(plain_front, program)
        assert before.isdigit() and before != "0", before
        assert plain_front.exec("kill", "-9", before)[0] == 0
        assert wait_for(
            lambda p=program, b=before: supervised_pid(plain_front, p) not in ("0", b, ""), timeout=30
        ), f"{program} was not restarted"
        assert wait_for(lambda: health(plain_front), timeout=30), f"no answer after {program} restarted"


def test_recreated_hub_container_finds_running_workspaces(tls_front, tmp_path):
    user = tls_front.create_user("carol")
    key, public = new_key(tmp_path, "carol")
    register_key(tls_front, user, key)
    assert tls_front.spawn(user, "keep").status_code in (201, 202)
    config, model = ssh_setup(tls_front, tmp_path, user, key, "keep")
    assert ssh(config, model["host_alias"]).returncode == 0

    tls_front.remove()  # the container is gone; /data stays
    tls_front.run().start()
    # the admin password generated at the first start is not logged again, and still works
    assert tls_front.admin_password not in tls_front.container.logs().decode(errors="replace")
    assert log_in(tls_front, "admin")[1].status_code == 302
    config, model = ssh_setup(tls_front, tmp_path, user, key, "keep")  # the public port changed
    assert tls_front.server_model(user, "keep")["ready"]
    assert wait_for(lambda: tls_front.get_through_proxy(user, "keep").status_code == 200, timeout=60)
    done = ssh(config, model["host_alias"], "echo alive")
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr


def test_cleanup_removes_a_deleted_users_network_the_hub_sits_on(plain_front, docker):
    user = plain_front.create_user("leaver")
    assert plain_front.spawn(user).status_code in (201, 202)
    network = docker.networks.get(f"{plain_front.hub_name}-{user}")
    network.reload()
    assert plain_front.container.id in network.attrs["Containers"]  # the hub joined it
    plain_front.stop_server(user)
    assert plain_front.api("DELETE", f"users/{user}").status_code == 204
    r = requests.post(
        f"{plain_front.url}/services/cleanup-service/users",
        headers={"Authorization": f"token {plain_front.token}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["failed"] == 0, r.text
    assert not exists(docker.networks, network.name)
    assert health(plain_front)


def test_proxy_as_its_own_supervised_process(docker, tmp_path):
    """START_CHP=true: configurable-http-proxy runs beside the hub under supervisord (as in the chart)."""
    hub = HubContainer(docker, tmp_path, env={"START_CHP": "true"})
    try:
        hub.start()
        user = hub.create_user("pat")
        assert hub.spawn(user).status_code in (201, 202)
        assert hub.get_through_proxy(user).status_code == 200
        before = supervised_pid(hub, "configurable-http-proxy")
        assert before.isdigit() and before != "0"
        assert hub.exec("kill", "-9", before)[0] == 0
        assert wait_for(lambda: supervised_pid(hub, "configurable-http-proxy") not in ("0", before, ""), 30)
        assert wait_for(lambda: health(hub), timeout=30)  # the hub is the proxy's default target
    finally:
        hub.destroy()


def test_bad_settings_stop_the_container_with_a_clear_error(docker):
    image = os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}")
    for env, variable in (
        ({"HUB_NAME": "Bad_Name"}, "HUB_NAME"),
        ({"SSL_ENABLED": "maybe"}, "SSL_ENABLED"),
        ({"MLHUB_ADMIN_PASSWORD": "too-short"}, "MLHUB_ADMIN_PASSWORD"),
    ):
        container = docker.containers.run(
            image, detach=True, environment=env, labels={"mlhub.test": "badenv"}
        )
        try:
            status = container.wait(timeout=60)
            output = container.logs().decode()
        finally:
            container.remove(force=True, v=True)  # and its anonymous /data volume
        assert status["StatusCode"] != 0
        assert variable in output, output


def test_front_listens_only_where_published(plain_front):
    """Loopback and the published network only: nothing on the user networks but the hub API."""
    code, out = plain_front.exec("cat", "/proc/net/tcp")
    listening = set()
    for line in out.splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            address, port = local.split(":")
            listening.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    wildcard = {port for address, port in listening if address == "0.0.0.0"}
    assert wildcard == {8081}


def test_the_hub_container_finds_the_gpus_and_each_workspace_sees_only_its_own(plain_front, docker):
    """`make run`'s path with no GPU setting, on the engine with the GPU stand-in (`make test`): the hub, which
    has no nvidia-smi of its own, finds the 4 GPUs through the engine and offers them; two users asking for 2
    GPUs at the same time get disjoint pairs, and nvidia-smi -L in each workspace lists exactly its own two."""
    hub = plain_front
    if "the Docker engine has no GPU support" in hub.log_tail(2000) and os.environ.get("CI") != "true":
        pytest.skip("the engine has no GPU stand-in: run the tests with `make test`")
    assert hub.exec("sh", "-c", "command -v nvidia-smi")[0] != 0  # the hub itself sees no GPU
    assert wait_for(lambda: "4 GPUs found through the Docker engine" in hub.log_tail(2000), timeout=60)
    admin, _ = log_in(hub, "admin")
    form = admin.get(f"{hub.url}/hub/spawn/admin/gpus", timeout=30, verify=False).text
    assert 'name="gpus"' in form and all(f"GPU {n}: NVIDIA A100" in form for n in range(4)), form[-3000:]

    users = [hub.create_user(name) for name in ("gpu-ann", "gpu-bob")]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda u: hub.spawn(u, "g", {"gpus": 2, "mem_limit": "512M"}), users))
    assert all(r.status_code in (201, 202) for r in results), [r.text for r in results]
    seen = {}
    for user in users:
        container = docker.containers.get(naming.workspace_name(hub.hub_name, user, "g"))
        given = container.labels[naming.LABEL_GPUS].split(",")
        listing = container.exec_run(["nvidia-smi", "-L"], user="1000").output.decode()
        seen[user] = sorted(line.rsplit("(UUID: ", 1)[1].rstrip(")") for line in listing.splitlines())
        assert seen[user] == sorted(given) and len(given) == 2, listing
    assert not set(seen["gpu-ann"]) & set(seen["gpu-bob"])
    for user in users:
        hub.stop_server(user, "g", remove=True)
