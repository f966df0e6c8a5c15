"""The SSH keys API of a real hub: users' keys, the SSH front's lookups, ssh config blocks."""

import base64
import sqlite3
import struct
import subprocess
import time
from contextlib import closing
from urllib.parse import quote

import pytest
import requests

from mlhubspawner import naming, sshkeys

from ssh_signing import register_ssh_key, sign_ssh_challenge, ssh_key_challenge
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


class Pair:
    """A key pair made by the real ssh-keygen: private key path, public line, SHA256 fingerprint."""

    def __init__(self, path, line, fingerprint):
        self.path, self.line, self.fingerprint = path, line, fingerprint


@pytest.fixture(scope="module")
def keygen(tmp_path_factory):
    """Makes real key pairs with ssh-keygen; returns a :class:`Pair`."""
    directory = tmp_path_factory.mktemp("ssh-keys")
    count = iter(range(1000))

    def make(key_type="ed25519", bits=None, comment="me@laptop"):
        path = directory / f"id_{next(count)}"
        args = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
        subprocess.run(args + (["-b", str(bits)] if bits else []), check=True, timeout=60)
        out = subprocess.run(
            ["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True, timeout=30
        )
        return Pair(path, (directory / f"{path.name}.pub").read_text().strip(), out.stdout.split()[1])

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


def add_key(hub, user, pair, token, line=None):
    """Register ``pair`` for ``user`` as users do: the hub's challenge signed with ssh-keygen."""
    return register_ssh_key(hub, user, pair.path, token=token, public_line=line or pair.line)


def post_key(hub, user, line, token, **body):
    """POST a key line (and whatever else ``body`` holds) as is: no proof unless given."""
    return hub.api("POST", keys_path(user), token=token, json={"key": line, **body})


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
    ann = keygen(comment="ann@laptop")
    r = add_key(hub, user, ann, token)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model.pop("created_at").endswith("Z")
    assert model == {
        "fingerprint": ann.fingerprint,
        "type": "ssh-ed25519",
        "bits": 256,
        "comment": "ann@laptop",
        "key": plain(ann.line),
        "proven": True,
    }
    rsa = keygen("rsa", 3072, comment="")
    assert add_key(hub, user, rsa, token).status_code == 201
    listed = list_keys(hub, user, token)
    assert [(k["fingerprint"], k["bits"], k["comment"], k["proven"]) for k in listed] == [
        (ann.fingerprint, 256, "ann@laptop", True),
        (rsa.fingerprint, 3072, "", True),
    ]
    r = hub.api("GET", keys_path(user), token=token, params={"format": "authorized_keys"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == f"{plain(ann.line)}\n{plain(rsa.line)}\n"
    assert hub.api("GET", keys_path(user), token=token, params={"format": "yaml"}).status_code == 400

    r = hub.api("DELETE", keys_path(user, ann.fingerprint), token=token)
    assert r.status_code == 204, r.text
    assert [k["fingerprint"] for k in list_keys(hub, user, token)] == [rsa.fingerprint]
    assert hub.api("DELETE", keys_path(user, ann.fingerprint), token=token).status_code == 404
    # the fingerprint without its SHA256: prefix works too
    bare = rsa.fingerprint.removeprefix("SHA256:")
    assert hub.api("DELETE", keys_path(user, bare), token=token).status_code == 204
    assert list_keys(hub, user, token) == []


def test_others_cannot_see_or_change_a_users_keys(hub, keygen):
    owner, other = hub.create_user("sshbob"), hub.create_user("sshcid")
    pair = keygen()
    assert add_key(hub, owner, pair, user_token(hub, owner)).status_code == 201
    nosy = user_token(hub, other)
    # like JupyterHub for users one cannot see: 404, whether or not they exist
    assert hub.api("GET", keys_path(owner), token=nosy).status_code == 404
    assert hub.api("GET", f"{keys_path(owner)}/challenge", token=nosy).status_code == 404
    assert post_key(hub, owner, keygen().line, nosy).status_code == 404
    assert hub.api("DELETE", keys_path(owner, pair.fingerprint), token=nosy).status_code == 404
    # a token without the SSH scopes, even the owner's own
    narrow = user_token(hub, owner, scopes=["read:users:name!user"])
    assert hub.api("GET", keys_path(owner), token=narrow).status_code == 403
    assert hub.api("GET", f"{keys_path(owner)}/challenge", token=narrow).status_code == 403
    assert post_key(hub, owner, keygen().line, narrow).status_code == 403
    # no token at all
    r = requests.get(f"{hub.url}/hub/api/{keys_path(owner)}", timeout=30)
    assert r.status_code == 403
    # the owner's keys are untouched
    assert [k["fingerprint"] for k in list_keys(hub, owner, user_token(hub, owner))] == [pair.fingerprint]


def test_admins_manage_everyones_keys(hub, keygen, admin_token):
    user = hub.create_user("sshdee")
    pair = keygen()
    assert add_key(hub, user, pair, admin_token).status_code == 201
    assert [k["fingerprint"] for k in list_keys(hub, user, admin_token)] == [pair.fingerprint]
    assert [k["fingerprint"] for k in list_keys(hub, user, user_token(hub, user))] == [pair.fingerprint]
    assert hub.api("DELETE", keys_path(user, pair.fingerprint), token=admin_token).status_code == 204
    # admin:users alone (the test service's token) is enough
    assert add_key(hub, user, pair, hub.token).status_code == 201
    assert hub.api("DELETE", keys_path(user, pair.fingerprint), token=hub.token).status_code == 204
    # unknown users
    assert hub.api("GET", keys_path("sshnobody"), token=admin_token).status_code == 404
    assert hub.api("GET", f"{keys_path('sshnobody')}/challenge", token=admin_token).status_code == 404
    assert post_key(hub, "sshnobody", pair.line, admin_token).status_code == 404
    assert hub.api("DELETE", keys_path("sshnobody", pair.fingerprint), token=admin_token).status_code == 404


def test_a_key_is_registered_once_in_the_hub(hub, keygen):
    first, second = hub.create_user("sshemy"), hub.create_user("sshfox")
    pair = keygen()
    assert add_key(hub, first, pair, user_token(hub, first)).status_code == 201
    mine = add_key(hub, first, pair, user_token(hub, first), line=pair.line.replace("me@laptop", "again"))
    # even someone who holds the private key too cannot take a proven key over
    theirs = add_key(hub, second, pair, user_token(hub, second))
    assert mine.status_code == theirs.status_code == 409
    assert mine.json()["message"] == theirs.json()["message"] == "this key is already registered"


def test_bad_keys_and_bodies_are_400_with_a_reason(hub, keygen, tmp_path):
    user = hub.create_user("sshgus")
    token = user_token(hub, user)
    private = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    weak = keygen("rsa", 1024).line
    line = keygen().line
    cases = [
        (private.read_text(), "this is a private key: paste the .pub file"),
        (weak, "at least 2048 bits"),
        (f'command="ls" {line}', "options are not allowed"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "DSA"),
        ("ssh-ed25519 AAAA", "truncated"),
        ("hello", "not an OpenSSH public key"),
    ]
    for key, reason in cases:
        r = post_key(hub, user, key, token)
        assert r.status_code == 400 and reason in r.json()["message"], (key, r.text)
    for body in ([line], {"key": line, "comment": "x"}, {"key": 1}, {"key": line, "signature": 1}, {}):
        r = hub.api("POST", keys_path(user), token=token, json=body)
        assert r.status_code == 400 and "expected" in r.json()["message"], (body, r.text)
    r = hub.api("POST", keys_path(user), token=token, data="{not json")
    assert r.status_code == 400
    assert list_keys(hub, user, token) == []


def test_at_most_32_keys_per_user(hub, keygen):
    user = hub.create_user("sshhal")
    token = user_token(hub, user)
    for _ in range(32):
        assert add_key(hub, user, keygen(), token).status_code == 201
    r = add_key(hub, user, keygen(), token)
    assert r.status_code == 400 and "at most 32 SSH keys" in r.json()["message"]
    assert len(list_keys(hub, user, token)) == 32


# ---- proof of possession ---------------------------------------------------------------------


def store_facts(hub, user):
    """The hub's challenge secret and ``user``'s creation time as its key store holds them."""
    with closing(sqlite3.connect(hub.workdir / "data" / "ssh-keys.sqlite")) as db:
        (secret,) = db.execute("SELECT value FROM settings WHERE name = 'challenge_secret'").fetchone()
        (created,) = db.execute(
            "SELECT user_created FROM ssh_keys WHERE user = ? LIMIT 1", (user,)
        ).fetchone()
    return secret, created


def command_from(message):
    """The ``printf ... | ssh-keygen -Y sign ...`` line of a 400 message."""
    lines = [line.strip() for line in message.splitlines() if "ssh-keygen -Y sign" in line]
    assert len(lines) == 1 and lines[0].startswith("printf '%s' '"), message
    return lines[0]


def test_a_users_public_key_cannot_be_registered_by_someone_else(hub, keygen):
    """The attack: public keys are public (code hosting sites list them). Without the private key,
    another user cannot register one; its owner can, at any time."""
    victim, attacker = hub.create_user("sshvic"), hub.create_user("sshmal")
    victim_pair, attacker_pair = keygen(), keygen()
    attacker_token = user_token(hub, attacker)

    # the old API: the key alone -> 400 saying exactly what to run (and nothing stored)
    r = post_key(hub, attacker, victim_pair.line, attacker_token)
    assert r.status_code == 400, r.text
    command = command_from(r.json()["message"])
    assert command.endswith(" | ssh-keygen -Y sign -n mlhub-ssh-key -f ~/.ssh/id_ed25519"), command
    # the attacker signs their own challenge with their own key: refused, the signer is not the key
    challenge = ssh_key_challenge(hub, attacker, attacker_token)
    signature = sign_ssh_challenge(attacker_pair.path, challenge)
    r = post_key(hub, attacker, victim_pair.line, attacker_token, challenge=challenge, signature=signature)
    assert r.status_code == 400 and "made with another key" in r.json()["message"], r.text
    # ... or a signature with a forged signer: the bytes do not verify
    forged = sshkeys.parse_signature(signature, sshkeys.parse_public_key(attacker_pair.line))
    blob = base64.b64decode("".join(forged.splitlines()[1:-1]))
    victim_blob = base64.b64decode(victim_pair.line.split()[1])
    forged_blob = blob.replace(base64.b64decode(attacker_pair.line.split()[1]), victim_blob)
    armored = "\n".join(
        [
            "-----BEGIN SSH SIGNATURE-----",
            base64.b64encode(forged_blob).decode(),
            "-----END SSH SIGNATURE-----",
        ]
    )
    r = post_key(hub, attacker, victim_pair.line, attacker_token, challenge=challenge, signature=armored)
    assert r.status_code == 400 and "does not verify" in r.json()["message"], r.text
    assert list_keys(hub, attacker, attacker_token) == []

    # the owner runs exactly the command the hub printed (with their key file): registered
    victim_token = user_token(hub, victim)
    r = post_key(hub, victim, victim_pair.line, victim_token)
    command = command_from(r.json()["message"]).replace("~/.ssh/id_ed25519", str(victim_pair.path))
    signed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True)
    challenge = command.split("'")[3]
    r = post_key(hub, victim, victim_pair.line, victim_token, challenge=challenge, signature=signed.stdout)
    assert r.status_code == 201, r.text
    assert [k["fingerprint"] for k in list_keys(hub, victim, victim_token)] == [victim_pair.fingerprint]


def test_challenges_are_single_use_bound_to_their_user_and_expire(hub, keygen):
    ann, bea = hub.create_user("sshchal"), hub.create_user("sshchbe")
    ann_token, bea_token = user_token(hub, ann), user_token(hub, bea)
    pair = keygen()
    r = hub.api("GET", f"{keys_path(ann)}/challenge", token=ann_token)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    model = r.json()
    assert model["namespace"] == "mlhub-ssh-key" and model["expires_at"].endswith("Z")
    assert model["command"] == (
        f"printf '%s' '{model['challenge']}' | ssh-keygen -Y sign -n mlhub-ssh-key -f ~/.ssh/id_ed25519"
    )
    proof = {"challenge": model["challenge"], "signature": sign_ssh_challenge(pair.path, model["challenge"])}
    assert post_key(hub, ann, pair.line, ann_token, **proof).status_code == 201
    # replayed (even after the key is deleted): refused
    assert hub.api("DELETE", keys_path(ann, pair.fingerprint), token=ann_token).status_code == 204
    r = post_key(hub, ann, pair.line, ann_token, **proof)
    assert r.status_code == 400 and "used already" in r.json()["message"], r.text
    # another user's challenge, signed with the right key: refused
    theirs = ssh_key_challenge(hub, bea, bea_token)
    r = post_key(
        hub, ann, pair.line, ann_token, challenge=theirs, signature=sign_ssh_challenge(pair.path, theirs)
    )
    assert r.status_code == 400 and f"not issued to {ann}" in r.json()["message"], r.text
    # signed in another namespace: refused, saying which one to use
    mine = ssh_key_challenge(hub, ann, ann_token)
    r = post_key(
        hub, ann, pair.line, ann_token, challenge=mine, signature=sign_ssh_challenge(pair.path, mine, "git")
    )
    assert r.status_code == 400 and "-n mlhub-ssh-key" in r.json()["message"], r.text
    # a tampered challenge: refused
    tampered = mine[:-1] + ("A" if mine[-1] != "A" else "B")
    r = post_key(
        hub, ann, pair.line, ann_token, challenge=tampered, signature=sign_ssh_challenge(pair.path, tampered)
    )
    assert r.status_code == 400 and "not issued" in r.json()["message"], r.text
    # expired: a challenge of this hub (its secret, bea's creation time) issued 11 minutes ago
    assert add_key(hub, bea, keygen(), bea_token).status_code == 201
    secret, created = store_facts(hub, bea)
    old = sshkeys.make_challenge(bytes.fromhex(secret), bea, created, time.time() - 660)
    other = keygen()
    r = post_key(
        hub, bea, other.line, bea_token, challenge=old, signature=sign_ssh_challenge(other.path, old)
    )
    assert r.status_code == 400 and "expired" in r.json()["message"], r.text
    # a challenge of the right shape made with a wrong secret: refused
    forged = sshkeys.make_challenge(b"0" * 32, bea, created, time.time())
    r = post_key(
        hub, bea, other.line, bea_token, challenge=forged, signature=sign_ssh_challenge(other.path, forged)
    )
    assert r.status_code == 400 and "not issued" in r.json()["message"], r.text
    assert [k["fingerprint"] for k in list_keys(hub, ann, ann_token)] == []


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
    # a miss is logged at debug level only (the test hub logs at INFO)
    assert sshkeys.fingerprint(base64.b64decode(blob)) not in hub.log_tail(400)
    assert "is not registered" not in hub.log_tail(400)


def key_with_plus(keygen):
    """A real key pair whose base64 has a '+' (about two in three have one)."""
    for _ in range(40):
        pair = keygen()
        if "+" in pair.line.split()[1]:
            return pair
    raise AssertionError("40 keys without a '+' in their base64")


def test_lookup_forwards_only_to_the_owners_running_workspaces(hub, docker, keygen):
    owner, other = hub.create_user("sshjo"), hub.create_user("sshkim")
    token = user_token(hub, owner)
    first = keygen()
    line, fingerprint = first.line, first.fingerprint
    plus_pair = key_with_plus(keygen)
    plus_key = plus_pair.line
    for pair in (first, plus_pair):
        assert add_key(hub, owner, pair, token).status_code == 201
    other_pair, other_rsa_pair = keygen(), keygen("rsa", 2048)
    other_line, other_rsa = other_pair.line, other_rsa_pair.line
    for pair in (other_pair, other_rsa_pair):
        assert add_key(hub, other, pair, user_token(hub, other)).status_code == 201

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
    assert hub.api("GET", f"{keys_path(owner)}/challenge", token=server_token).status_code == 403
    assert post_key(hub, owner, made_key(7), server_token).status_code == 403
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
    assert add_key(hub, other, plus_pair, user_token(hub, other)).status_code == 201
    hub.stop_server(other)


def test_keys_of_a_recreated_user_are_dropped(hub, keygen):
    user = hub.create_user("sshlea")
    pair = keygen()
    challenge = ssh_key_challenge(hub, user, user_token(hub, user))
    assert add_key(hub, user, pair, user_token(hub, user)).status_code == 201
    assert hub.api("DELETE", f"users/{user}").status_code == 204
    hub.create_user(user)
    # the old incarnation's challenges are void for the new one
    r = post_key(
        hub,
        user,
        pair.line,
        user_token(hub, user),
        challenge=challenge,
        signature=sign_ssh_challenge(pair.path, challenge),
    )
    assert r.status_code == 400 and "not issued" in r.json()["message"], r.text
    # the stale key does not block its owner's namesake from registering it anew
    r = add_key(hub, user, pair, user_token(hub, user))
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
