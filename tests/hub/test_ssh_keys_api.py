"""The SSH keys API of a real hub: users' keys, the SSH front's lookups, ssh config blocks."""

import base64
import struct
import subprocess
from urllib.parse import quote

import pytest
import requests

from mlhubspawner import naming

from support import PASSWORD, log_in, sign_up

API = "mlhub"
SMALL = {"mem_limit": "512M"}  # two workspaces within the test hub's per-user memory quota


def ssh_string(data):
    data = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(data)) + data


def made_key(seed, comment=""):
    """A well-formed ed25519 public key line from 32 bytes of ``seed`` (cheap, for counts)."""
    blob = ssh_string("ssh-ed25519") + ssh_string(bytes([seed]) * 32)
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


@pytest.fixture(scope="module")
def keygen(tmp_path_factory):
    """Makes real key pairs with ssh-keygen; returns ``(public line, fingerprint)``."""
    directory = tmp_path_factory.mktemp("ssh-keys")
    count = iter(range(1000))

    def make(key_type="ed25519", bits=None, comment="me@laptop"):
        path = directory / f"id_{next(count)}"
        args = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
        subprocess.run(args + (["-b", str(bits)] if bits else []), check=True)
        out = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True)
        return (directory / f"{path.name}.pub").read_text().strip(), out.stdout.split()[1]

    return make


def user_token(hub, user, **body):
    r = hub.api("POST", f"users/{user}/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def admin_token(hub):
    """A token of the real admin user (NativeAuthenticator's 'admin'), made through its browser session."""
    sign_up(hub, "admin")  # a no-op if another module signed it up already
    session, r = log_in(hub, "admin", PASSWORD)
    assert r.status_code == 302, r.text
    r = session.post(
        f"{hub.url}/hub/api/users/admin/tokens",
        json={"note": "ssh keys tests"},
        headers={"X-XSRFToken": session.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


def front_token(hub):
    return (hub.workdir / "data" / "ssh-front.token").read_text().strip()


def keys_path(user, fingerprint=None):
    path = f"{API}/users/{user}/ssh-keys"
    return f"{path}/{quote(fingerprint, safe='')}" if fingerprint else path


def add_key(hub, user, line, token):
    return hub.api("POST", keys_path(user), token=token, json={"key": line})


def list_keys(hub, user, token):
    r = hub.api("GET", keys_path(user), token=token)
    assert r.status_code == 200, r.text
    return r.json()


def lookup(hub, line, token=None, **params):
    key_type, blob = line.split()[:2]
    r = hub.api(
        "GET", f"{API}/ssh/authorized-keys", token=token or front_token(hub), params={"key": blob, **params}
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    return r.text


def plain(line):
    return " ".join(line.split()[:2])


def forwarding_line(hub, user, servers, line):
    permits = ",".join(f'permitopen="{naming.workspace_name(hub.hub_name, user, s)}:22"' for s in servers)
    return f"restrict,port-forwarding,{permits} {plain(line)}\n"


# ---- users' keys ------------------------------------------------------------------------------


def test_owner_adds_lists_and_deletes_keys(hub, keygen):
    user = hub.create_user("sshann")
    token = user_token(hub, user)
    assert list_keys(hub, user, token) == []
    line, fingerprint = keygen(comment="ann@laptop")
    r = add_key(hub, user, line, token)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model.pop("created_at").endswith("Z")
    assert model == {
        "fingerprint": fingerprint,
        "type": "ssh-ed25519",
        "bits": 256,
        "comment": "ann@laptop",
        "key": plain(line),
    }
    rsa_line, rsa_fingerprint = keygen("rsa", 3072, comment="")
    assert add_key(hub, user, rsa_line, token).status_code == 201
    listed = list_keys(hub, user, token)
    assert [(k["fingerprint"], k["bits"], k["comment"]) for k in listed] == [
        (fingerprint, 256, "ann@laptop"),
        (rsa_fingerprint, 3072, ""),
    ]
    r = hub.api("GET", keys_path(user), token=token, params={"format": "authorized_keys"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == f"{plain(line)}\n{plain(rsa_line)}\n"
    assert hub.api("GET", keys_path(user), token=token, params={"format": "yaml"}).status_code == 400

    r = hub.api("DELETE", keys_path(user, fingerprint), token=token)
    assert r.status_code == 204, r.text
    assert [k["fingerprint"] for k in list_keys(hub, user, token)] == [rsa_fingerprint]
    assert hub.api("DELETE", keys_path(user, fingerprint), token=token).status_code == 404
    # the fingerprint without its SHA256: prefix works too
    bare = rsa_fingerprint.removeprefix("SHA256:")
    assert hub.api("DELETE", keys_path(user, bare), token=token).status_code == 204
    assert list_keys(hub, user, token) == []


def test_others_cannot_see_or_change_a_users_keys(hub, keygen):
    owner, other = hub.create_user("sshbob"), hub.create_user("sshcid")
    line, fingerprint = keygen()
    assert add_key(hub, owner, line, user_token(hub, owner)).status_code == 201
    nosy = user_token(hub, other)
    # like JupyterHub for users one cannot see: 404, whether or not they exist
    assert hub.api("GET", keys_path(owner), token=nosy).status_code == 404
    assert add_key(hub, owner, keygen()[0], nosy).status_code == 404
    assert hub.api("DELETE", keys_path(owner, fingerprint), token=nosy).status_code == 404
    # a token without the SSH scopes, even the owner's own
    narrow = user_token(hub, owner, scopes=["read:users:name!user"])
    assert hub.api("GET", keys_path(owner), token=narrow).status_code == 403
    assert add_key(hub, owner, keygen()[0], narrow).status_code == 403
    # no token at all
    r = requests.get(f"{hub.url}/hub/api/{keys_path(owner)}", timeout=30)
    assert r.status_code == 403
    # the owner's keys are untouched
    assert [k["fingerprint"] for k in list_keys(hub, owner, user_token(hub, owner))] == [fingerprint]


def test_admins_manage_everyones_keys(hub, keygen, admin_token):
    user = hub.create_user("sshdee")
    line, fingerprint = keygen()
    assert add_key(hub, user, line, admin_token).status_code == 201
    assert [k["fingerprint"] for k in list_keys(hub, user, admin_token)] == [fingerprint]
    assert [k["fingerprint"] for k in list_keys(hub, user, user_token(hub, user))] == [fingerprint]
    assert hub.api("DELETE", keys_path(user, fingerprint), token=admin_token).status_code == 204
    # admin:users alone (the test service's token) is enough
    assert add_key(hub, user, line, hub.token).status_code == 201
    assert hub.api("DELETE", keys_path(user, fingerprint), token=hub.token).status_code == 204
    # unknown users
    assert hub.api("GET", keys_path("sshnobody"), token=admin_token).status_code == 404
    assert add_key(hub, "sshnobody", line, admin_token).status_code == 404
    assert hub.api("DELETE", keys_path("sshnobody", fingerprint), token=admin_token).status_code == 404


def test_a_key_is_registered_once_in_the_hub(hub, keygen):
    first, second = hub.create_user("sshemy"), hub.create_user("sshfox")
    line, _ = keygen()
    assert add_key(hub, first, line, user_token(hub, first)).status_code == 201
    mine = add_key(hub, first, line.replace("me@laptop", "again"), user_token(hub, first))
    theirs = add_key(hub, second, line, user_token(hub, second))
    assert mine.status_code == theirs.status_code == 409
    assert mine.json()["message"] == theirs.json()["message"] == "this key is already registered"


def test_bad_keys_and_bodies_are_400_with_a_reason(hub, keygen, tmp_path):
    user = hub.create_user("sshgus")
    token = user_token(hub, user)
    private = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    weak, _ = keygen("rsa", 1024)
    line, _ = keygen()
    cases = [
        (private.read_text(), "this is a private key: paste the .pub file"),
        (weak, "at least 2048 bits"),
        (f'command="ls" {line}', "options are not allowed"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "DSA"),
        ("ssh-ed25519 AAAA", "truncated"),
        ("hello", "not an OpenSSH public key"),
    ]
    for key, reason in cases:
        r = add_key(hub, user, key, token)
        assert r.status_code == 400 and reason in r.json()["message"], (key, r.text)
    for body in ([line], {"key": line, "comment": "x"}, {"key": 1}, {}):
        r = hub.api("POST", keys_path(user), token=token, json=body)
        assert r.status_code == 400 and "expected" in r.json()["message"], (body, r.text)
    r = hub.api("POST", keys_path(user), token=token, data="{not json")
    assert r.status_code == 400
    assert list_keys(hub, user, token) == []


def test_at_most_32_keys_per_user(hub):
    user = hub.create_user("sshhal")
    token = user_token(hub, user)
    for seed in range(32):
        assert add_key(hub, user, made_key(seed), token).status_code == 201
    r = add_key(hub, user, made_key(32), token)
    assert r.status_code == 400 and "at most 32 SSH keys" in r.json()["message"]
    assert len(list_keys(hub, user, token)) == 32


# ---- the SSH front's lookups ------------------------------------------------------------------


def test_only_the_ssh_front_may_look_keys_up(hub, admin_token):
    blob = made_key(99).split()[1]
    user = hub.create_user("sshivy")
    for token in (user_token(hub, user), admin_token, hub.token):
        r = hub.api("GET", f"{API}/ssh/authorized-keys", token=token, params={"key": blob})
        assert r.status_code == 403, r.text
    r = hub.api("GET", f"{API}/ssh/authorized-keys", token=front_token(hub), params={"key": "not base64!"})
    assert r.status_code == 400
    assert lookup(hub, made_key(99)) == ""  # nobody's key


def test_lookup_forwards_only_to_the_owners_running_workspaces(hub, docker, keygen):
    owner, other = hub.create_user("sshjo"), hub.create_user("sshkim")
    token = user_token(hub, owner)
    line, fingerprint = keygen()
    plus_key = made_key(0xFB)  # its base64 has '+' and '/'
    assert "+" in plus_key
    for key in (line, plus_key):
        assert add_key(hub, owner, key, token).status_code == 201
    other_line, _ = keygen()
    other_rsa, _ = keygen("rsa", 2048)
    for key in (other_line, other_rsa):
        assert add_key(hub, other, key, user_token(hub, other)).status_code == 201

    assert lookup(hub, line) == ""  # no running workspace
    for user, server in ((owner, ""), (owner, "two"), (other, "")):
        assert hub.spawn(user, server, SMALL).status_code in (201, 202)
    expected = forwarding_line(hub, owner, ["", "two"], line)
    assert lookup(hub, line) == expected
    assert lookup(hub, line, type="ssh-ed25519") == expected
    assert lookup(hub, line, type="ssh-rsa") == ""
    assert lookup(hub, other_line) == forwarding_line(hub, other, [""], other_line)
    for key_type in ("ssh-rsa", "rsa-sha2-512"):
        assert lookup(hub, other_rsa, type=key_type) == forwarding_line(hub, other, [""], other_rsa)
    # a '+' the caller forgot to URL-encode arrives as a space: still found
    blob = plus_key.split()[1]
    r = requests.get(
        f"{hub.url}/hub/api/{API}/ssh/authorized-keys?key={blob}",
        headers={"Authorization": f"token {front_token(hub)}"},
        timeout=30,
    )
    assert r.text == forwarding_line(hub, owner, ["", "two"], plus_key)

    # the workspace's own token reads its owner's keys, for the workspace's sshd, and nothing more
    container = docker.containers.get(naming.workspace_name(hub.hub_name, owner, "two"))
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    server_token = env["JUPYTERHUB_API_TOKEN"]
    r = hub.api("GET", keys_path(owner), token=server_token, params={"format": "authorized_keys"})
    assert r.status_code == 200 and r.text == f"{plain(line)}\n{plain(plus_key)}\n"
    assert hub.api("GET", keys_path(other), token=server_token).status_code == 404
    assert add_key(hub, owner, made_key(7), server_token).status_code == 403
    assert hub.api("DELETE", keys_path(owner, fingerprint), token=server_token).status_code == 403

    hub.stop_server(owner, "two")
    assert lookup(hub, line) == forwarding_line(hub, owner, [""], line)
    assert hub.api("DELETE", keys_path(owner, fingerprint), token=token).status_code == 204
    assert lookup(hub, line) == ""
    assert lookup(hub, plus_key) == forwarding_line(hub, owner, [""], plus_key)

    # a deleted user's keys stop working at once (JupyterHub stops the default server first)
    assert hub.api("DELETE", f"users/{owner}").status_code == 204
    assert lookup(hub, plus_key) == ""
    # ... and never pass to a new user of the same name; the key is free again
    hub.create_user(owner)
    assert list_keys(hub, owner, user_token(hub, owner)) == []
    assert add_key(hub, other, plus_key, user_token(hub, other)).status_code == 201
    hub.stop_server(other)


def test_keys_of_a_recreated_user_are_dropped(hub):
    user = hub.create_user("sshlea")
    assert add_key(hub, user, made_key(0xA1), user_token(hub, user)).status_code == 201
    assert hub.api("DELETE", f"users/{user}").status_code == 204
    hub.create_user(user)
    # the stale key does not block its owner's namesake from registering it anew
    r = add_key(hub, user, made_key(0xA1), user_token(hub, user))
    assert r.status_code == 201, r.text
    assert len(list_keys(hub, user, user_token(hub, user))) == 1


# ---- ssh config -------------------------------------------------------------------------------


def test_ssh_config_for_a_workspace(hub):
    user, nosy = hub.create_user("sshmo"), hub.create_user("sshned")
    assert hub.spawn(user, "box", SMALL).status_code in (201, 202)
    hub.stop_server(user, "box")
    token = user_token(hub, user)
    r = hub.api("GET", f"{API}/users/{user}/servers/box/ssh-config", token=token)
    assert r.status_code == 200, r.text
    container = naming.workspace_name(hub.hub_name, user, "box")
    alias = f"{hub.hub_name}-{user}-box"
    jump = f"tunnel@127.0.0.1:{hub.port}"  # the Host header the client used
    assert r.json() == {
        "host_alias": alias,
        "hostname": container,
        "port": 22,
        "user": "jovyan",
        "proxy_jump": jump,
        "config": (
            f"Host {alias}\n    HostName {container}\n    User jovyan\n    Port 22\n"
            f"    ProxyJump {jump}\n    ServerAliveInterval 60\n"
        ),
        "command": f"ssh -J {jump} jovyan@{container}",
    }
    r = requests.get(
        f"{hub.url}/hub/api/{API}/users/{user}/servers/box/ssh-config",
        headers={"Authorization": f"token {token}", "Host": "hub.example.org"},
        timeout=30,
    )
    assert r.json()["proxy_jump"] == "tunnel@hub.example.org:8080"
    assert hub.api("GET", f"{API}/users/{user}/servers/nope/ssh-config", token=token).status_code == 404
    # the default server exists for every user, started or not
    r = hub.api("GET", f"{API}/users/{user}/ssh-config", token=token)
    assert r.status_code == 200, r.text
    default = naming.workspace_name(hub.hub_name, user)
    assert (r.json()["host_alias"], r.json()["hostname"]) == (f"{hub.hub_name}-{user}", default)
    assert r.json()["command"] == f"ssh -J {jump} jovyan@{default}"
    assert (
        hub.api("GET", f"{API}/users/{user}/servers/box/ssh-config", token=user_token(hub, nosy)).status_code
        == 404
    )
