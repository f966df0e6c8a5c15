"""SSH public keys: validation, fingerprints (checked against ssh-keygen), lines, config; the key store."""

import asyncio
import base64
import itertools
import os
import re
import sqlite3
import stat
import statistics
import struct
import subprocess
import threading
import time
from contextlib import closing

import pytest

from mlhubspawner import sshkeys
from mlhubspawner.sshkeys import KeyFormatError, parse_public_key
from mlhubspawner.sshkeys_api import SignatureError, verify_signature
from mlhubspawner.sshkeys_store import (
    ChallengeUsedError,
    KeyExistsError,
    KeyLimitError,
    SSHKeyStore,
    read_or_create_token,
)

from ssh_signing import SCHEMA_0


def ssh_string(data):
    data = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(data)) + data


def mpint(value):
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading zero byte keeps it positive
    return ssh_string(raw)


def key_line(key_type, blob, comment=""):
    line = f"{key_type} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


def keygen(tmp_path, key_type, bits=None, comment="me@laptop"):
    """A fresh key pair from ssh-keygen; returns the .pub line and the private key text."""
    path = tmp_path / f"id_{key_type}_{bits or 0}"
    args = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True)
    return (tmp_path / f"{path.name}.pub").read_text(), path.read_text()


def ssh_keygen_l(tmp_path, line):
    """``(bits, fingerprint)`` as ``ssh-keygen -lf`` prints them for a public key line."""
    path = tmp_path / "check.pub"
    path.write_text(line + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(path)], check=True, capture_output=True, text=True)
    bits, fp = out.stdout.split()[:2]
    return int(bits), fp


def ed25519_pub(tmp_path):
    line, _ = keygen(tmp_path, "ed25519")
    blob = base64.b64decode(line.split()[1])
    return blob[-32:]


# ---- keys made by ssh-keygen ------------------------------------------------------------


@pytest.mark.parametrize(
    "key_type, bits",
    [("ed25519", None), ("ecdsa", 256), ("ecdsa", 384), ("ecdsa", 521), ("rsa", 2048), ("rsa", 3072)],
)
def test_real_keys_parse_with_ssh_keygen_fingerprint_and_size(tmp_path, key_type, bits):
    line, _ = keygen(tmp_path, key_type, bits, comment="ada@laptop  work")
    key = parse_public_key(line)
    assert (key.bits, key.fingerprint) == ssh_keygen_l(tmp_path, line)
    assert key.comment == "ada@laptop  work"
    assert key.line == " ".join(line.split()[:2])
    assert key.type == line.split()[0]


def test_security_key_types_parse_with_ssh_keygen_fingerprint(tmp_path):
    ed = key_line(
        "sk-ssh-ed25519@openssh.com",
        ssh_string("sk-ssh-ed25519@openssh.com") + ssh_string(ed25519_pub(tmp_path)) + ssh_string("ssh:"),
    )
    ecdsa_line, _ = keygen(tmp_path, "ecdsa", 256)
    reader = sshkeys._Reader(base64.b64decode(ecdsa_line.split()[1]))
    reader.string(), reader.string()
    point = reader.string()
    sk = "sk-ecdsa-sha2-nistp256@openssh.com"
    ec = key_line(sk, ssh_string(sk) + ssh_string("nistp256") + ssh_string(point) + ssh_string("ssh:"))
    for line in (ed, ec):
        key = parse_public_key(line)
        assert (key.bits, key.fingerprint) == ssh_keygen_l(tmp_path, line)


def test_weak_rsa_key_is_refused_with_its_size(tmp_path):
    line, _ = keygen(tmp_path, "rsa", 1024)
    with pytest.raises(KeyFormatError, match="at least 2048 bits .this one has 1024"):
        parse_public_key(line)


def test_huge_rsa_key_is_refused():
    modulus = (1 << 16400) + 1
    blob = ssh_string("ssh-rsa") + mpint(65537) + mpint(modulus)
    with pytest.raises(KeyFormatError, match="at most 16384 bits"):
        parse_public_key(key_line("ssh-rsa", blob))


def test_private_key_is_refused(tmp_path):
    _, private = keygen(tmp_path, "ed25519")
    with pytest.raises(KeyFormatError, match="this is a private key: paste the .pub file"):
        parse_public_key(private)
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(KeyFormatError, match="private key"):
        parse_public_key(pem)


def test_fingerprint_matches_ssh_keygen(tmp_path):
    line, _ = keygen(tmp_path, "ed25519")
    blob = base64.b64decode(line.split()[1])
    assert sshkeys.fingerprint(blob) == ssh_keygen_l(tmp_path, line)[1]
    assert "=" not in sshkeys.fingerprint(blob)


# ---- bad input ----------------------------------------------------------------------------


@pytest.fixture
def ed25519_line(tmp_path):
    line, _ = keygen(tmp_path, "ed25519")
    return line.strip()


def test_options_prefix_is_refused(ed25519_line):
    for prefix in ("restrict", 'no-pty,command="echo hi there"', 'from="10.0.0.1"'):
        with pytest.raises(KeyFormatError, match="options are not allowed"):
            parse_public_key(f"{prefix} {ed25519_line}")


def test_dsa_is_refused_as_insecure():
    blob = ssh_string("ssh-dss") + mpint(7) * 4
    with pytest.raises(KeyFormatError, match="DSA .* insecure"):
        parse_public_key(key_line("ssh-dss", blob))


@pytest.mark.parametrize(
    "line, message",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("hello world", "not an OpenSSH public key"),
        ("ssh-foo AAAA", "unsupported key type 'ssh-foo'"),
        ("ssh-ed25519-cert-v01@openssh.com AAAA", "unsupported key type"),
        ("rsa-sha2-256 AAAA", "unsupported key type"),
        ("ssh-ed25519", "key data is missing"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA", "not valid base64"),  # bad padding
        ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----", "ssh-keygen -i"),
    ],
)
def test_malformed_lines_are_refused_with_a_reason(line, message):
    with pytest.raises(KeyFormatError, match=message):
        parse_public_key(line)


def test_not_a_string_is_refused():
    with pytest.raises(KeyFormatError, match="must be a string"):
        parse_public_key(None)


def test_two_lines_are_refused(ed25519_line):
    with pytest.raises(KeyFormatError, match="one key at a time"):
        parse_public_key(f"{ed25519_line}\n{ed25519_line}")


def test_embedded_type_must_match(ed25519_line):
    blob = ed25519_line.split()[1]
    with pytest.raises(KeyFormatError, match="is a 'ssh-ed25519' key, but the line says 'ssh-rsa'"):
        parse_public_key(f"ssh-rsa {blob}")


@pytest.mark.parametrize(
    "key_type, blob, message",
    [
        ("ssh-ed25519", ssh_string("ssh-ed25519") + ssh_string(b"x" * 31), "not 32 bytes"),
        ("ssh-ed25519", ssh_string("ssh-ed25519") + ssh_string(b"x" * 32) + b"\0", "unexpected bytes"),
        ("ssh-ed25519", ssh_string("ssh-ed25519") + b"\0\0\0\x20abc", "truncated"),
        ("ssh-ed25519", b"\0\0", "truncated"),
        (
            "ecdsa-sha2-nistp384",
            ssh_string("ecdsa-sha2-nistp384") + ssh_string("nistp256") + ssh_string(b"\4" + b"x" * 64),
            "curve 'nistp256' does not match",
        ),
        (
            "ecdsa-sha2-nistp256",
            ssh_string("ecdsa-sha2-nistp256") + ssh_string("nistp256") + ssh_string(b"\2" + b"x" * 32),
            "public point is malformed",
        ),
        ("ssh-rsa", ssh_string("ssh-rsa") + mpint(65537) + ssh_string(b"\x80" + b"\0" * 255), "negative"),
        ("ssh-rsa", ssh_string("ssh-rsa") + mpint(65537) + mpint(1 << 2048), "invalid exponent or modulus"),
        (
            "sk-ssh-ed25519@openssh.com",
            ssh_string("sk-ssh-ed25519@openssh.com") + ssh_string(b"x" * 32) + ssh_string(""),
            "application is empty",
        ),
    ],
)
def test_corrupt_blobs_are_refused(key_type, blob, message):
    with pytest.raises(KeyFormatError, match=message):
        parse_public_key(key_line(key_type, blob))


def test_comment_rules(ed25519_line):
    assert parse_public_key(ed25519_line).comment == "me@laptop"
    bare = " ".join(ed25519_line.split()[:2])
    assert parse_public_key(bare).comment == ""
    assert parse_public_key(f"{bare} {'c' * 256}").comment == "c" * 256
    assert parse_public_key(f"  {bare}   zoë's key \n").comment == "zoë's key"
    with pytest.raises(KeyFormatError, match="longer than 256 characters"):
        parse_public_key(f"{bare} {'c' * 257}")
    with pytest.raises(KeyFormatError, match="printable"):
        parse_public_key(f"{bare} a\x1bb")


def test_line_length_limit(ed25519_line):
    with pytest.raises(KeyFormatError, match="longer than 16384 bytes"):
        parse_public_key(ed25519_line + " " + "x" * 16384)


# ---- lines and config ---------------------------------------------------------------------


def test_forwarding_options():
    options = sshkeys.forwarding_options([("mlhub-ws-ada", 22), ("mlhub-ws-ada--gpu", 2222)])
    assert options == (
        'restrict,port-forwarding,permitopen="mlhub-ws-ada:22",permitopen="mlhub-ws-ada--gpu:2222"'
    )
    assert sshkeys.authorized_keys_line("ssh-ed25519", "AAAA", options) == f"{options} ssh-ed25519 AAAA"
    assert sshkeys.authorized_keys_line("ssh-ed25519", "AAAA") == "ssh-ed25519 AAAA"


@pytest.mark.parametrize(
    "targets", [[], [('a",permitopen="evil', 22)], [("a b", 22)], [("host", 0)], [("host", "22")]]
)
def test_forwarding_options_refuse_empty_or_unsafe_targets(targets):
    with pytest.raises(ValueError):
        sshkeys.forwarding_options(targets)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("hub.example.org", ("hub.example.org", 8080)),
        ("hub.example.org:443", ("hub.example.org", 443)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:2222", ("::1", 2222)),
        ("[fe80::1]", ("fe80::1", 8080)),
    ],
)
def test_parse_public_host(value, expected):
    assert sshkeys.parse_public_host(value) == expected


@pytest.mark.parametrize(
    "value", ["", "a b", "host:", "host:x", "host:70000", "[::1]x", "-host", 'a"b', "[zz]"]
)
def test_parse_public_host_refuses_junk(value):
    with pytest.raises(ValueError):
        sshkeys.parse_public_host(value)


def test_ssh_config_and_command():
    assert sshkeys.host_alias("mlhub", "ada.l@x", "") == "mlhub-ada.l-x"
    assert sshkeys.host_alias("mlhub", "ada", "gpu box") == "mlhub-ada-gpu-box"
    jump = sshkeys.jump_host("tunnel", "hub.example.org", 8080)
    assert jump == "tunnel@hub.example.org:8080"
    assert sshkeys.jump_host("tunnel", "::1", 22) == "tunnel@[::1]:22"
    assert sshkeys.ssh_config("mlhub-ada", "mlhub-ws-ada", 22, "jovyan", jump) == (
        "Host mlhub-ada\n"
        "    HostName mlhub-ws-ada\n"
        "    User jovyan\n"
        "    Port 22\n"
        "    ProxyJump tunnel@hub.example.org:8080\n"
        "    ServerAliveInterval 60\n"
    )
    assert sshkeys.ssh_command("mlhub-ws-ada", 22, "jovyan", jump) == (
        "ssh -J tunnel@hub.example.org:8080 jovyan@mlhub-ws-ada"
    )
    assert sshkeys.ssh_command("mlhub-ws-ada", 2222, "jovyan", jump).endswith("-p 2222 jovyan@mlhub-ws-ada")


# ---- the store ----------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path):
    """Five distinct valid ed25519 keys (made cheaply from ssh-keygen's one)."""
    return [
        parse_public_key(key_line("ssh-ed25519", ssh_string("ssh-ed25519") + ssh_string(bytes([i]) * 32)))
        for i in range(5)
    ]


@pytest.fixture
def store(tmp_path):
    store = SSHKeyStore(tmp_path / "data" / "ssh-keys.sqlite", max_keys_per_user=3)
    yield store
    store.close()


_nonces = (f"{n:022d}" for n in itertools.count())


def add(store, user, created, key):
    """Register ``key`` with a fresh challenge nonce; returns the new row."""
    row, _ = store.add(user, created, key, next(_nonces), int(time.time()) + 600)
    return row


def test_store_add_list_delete(store, keys):
    row = add(store, "ada", "2026-01-01T00:00:00.000000Z", keys[0])
    assert (row.user, row.type, row.blob, row.fingerprint, row.proven) == (
        "ada",
        "ssh-ed25519",
        keys[0].blob_b64,
        keys[0].fingerprint,
        True,
    )
    add(store, "ada", "2026-01-01T00:00:00.000000Z", keys[1])
    assert [r.fingerprint for r in store.list("ada")] == [keys[0].fingerprint, keys[1].fingerprint]
    assert store.list("bob") == []
    assert store.owner_of(keys[1].blob_b64).user == "ada"
    assert store.owner_of(keys[2].blob_b64) is None
    assert store.owner_of("not base64!") is None
    assert store.delete("bob", keys[0].fingerprint) is False
    assert store.delete("ada", keys[0].fingerprint) is True
    assert store.delete("ada", keys[0].fingerprint) is False
    assert [r.fingerprint for r in store.list("ada")] == [keys[1].fingerprint]
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_store_key_is_unique_in_the_hub_and_limited_per_user(store, keys):
    add(store, "ada", "t1", keys[0])
    for user in ("ada", "bob"):
        with pytest.raises(KeyExistsError, match="already registered"):
            add(store, user, "t1", keys[0])
    add(store, "ada", "t1", keys[1])
    add(store, "ada", "t1", keys[2])
    with pytest.raises(KeyLimitError, match="at most 3 SSH keys per user"):
        add(store, "ada", "t1", keys[3])
    add(store, "bob", "t1", keys[3])  # the limit is per user
    assert len(store.list("ada")) == 3


def test_store_accepts_each_challenge_nonce_once(store, keys):
    store.add("ada", "t1", keys[0], "n" * 22, int(time.time()) + 600)
    assert store.delete("ada", keys[0].fingerprint)
    with pytest.raises(ChallengeUsedError, match="used already"):
        store.add("ada", "t1", keys[0], "n" * 22, int(time.time()) + 600)
    # a refused registration does not use its nonce up
    add(store, "ada", "t1", keys[1])
    with pytest.raises(KeyExistsError):
        store.add("bob", "t1", keys[1], "m" * 22, int(time.time()) + 600)
    row, _ = store.add("bob", "t1", keys[2], "m" * 22, int(time.time()) + 600)
    assert row.user == "bob"
    # expired nonces are forgotten (their challenges are refused as expired anyway)
    store.add("bob", "t1", keys[3], "e" * 22, 1)
    add(store, "bob", "t1", keys[4])
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT COUNT(*) FROM used_challenges WHERE nonce = ?", ("e" * 22,)).fetchone() == (
            0,
        )


def test_store_delete_user_keeps_only_the_current_incarnation(store, keys):
    add(store, "ada", "old", keys[0])
    add(store, "ada", "new", keys[1])
    add(store, "bob", "old", keys[2])
    assert store.delete_user("ada", keep_created="new") == 1
    assert [r.fingerprint for r in store.list("ada")] == [keys[1].fingerprint]
    assert store.delete_user("ada") == 1
    assert store.list("ada") == [] and len(store.list("bob")) == 1


def test_store_survives_reopening_and_concurrent_adds(tmp_path, keys):
    path = tmp_path / "ssh-keys.sqlite"
    store = SSHKeyStore(path, max_keys_per_user=2)
    secret = store.challenge_secret()
    errors = []

    def add_one(key):
        try:
            add(store, "ada", "t", key)
        except KeyLimitError as e:
            errors.append(e)

    threads = [threading.Thread(target=add_one, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.list("ada")) == 2 and len(errors) == 3
    store.close()
    reopened = SSHKeyStore(path)
    assert len(reopened.list("ada")) == 2
    assert len(secret) == 32 and reopened.challenge_secret() == secret  # challenges survive a restart
    reopened.close()


def legacy_store(path, rows):
    """A key store as the release before proof of possession wrote it (schema version 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_0)
        for user, key in rows:
            db.execute(
                "INSERT INTO ssh_keys (user, user_created, type, blob, fingerprint, comment, created_at) "
                "VALUES (?, 't1', ?, ?, ?, 'old', '2025-01-01T00:00:00.000000Z')",
                (user, key.type, key.blob_b64, key.fingerprint),
            )
        db.commit()


def test_legacy_store_is_migrated_and_unproven_keys_go_to_whoever_proves_them(tmp_path, keys):
    path = tmp_path / "ssh-keys.sqlite"
    # mallory squatted ada's public key; bob's and mallory's own keys are theirs
    legacy_store(path, [("mallory", keys[0]), ("bob", keys[1]), ("mallory", keys[2])])
    store = SSHKeyStore(path)
    assert [(r.fingerprint, r.proven) for r in store.list("mallory")] == [
        (keys[0].fingerprint, False),
        (keys[2].fingerprint, False),
    ]
    assert store.owner_of(keys[0].blob_b64).user == "mallory"  # legacy keys keep working...
    row, taken_over = store.add("ada", "t9", keys[0], "a" * 22, int(time.time()) + 600)
    assert (row.user, row.proven) == ("ada", True)
    assert (taken_over.user, taken_over.proven) == ("mallory", False)  # ... until proven elsewhere
    assert store.owner_of(keys[0].blob_b64).user == "ada"
    assert [r.fingerprint for r in store.list("mallory")] == [keys[2].fingerprint]
    # an owner proving their own legacy key keeps it, now proven
    row, taken_over = store.add("bob", "t1", keys[1], "b" * 22, int(time.time()) + 600)
    assert (row.user, row.proven, taken_over.user) == ("bob", True, "bob")
    assert [(r.fingerprint, r.proven) for r in store.list("bob")] == [(keys[1].fingerprint, True)]
    # a proven key is nobody else's to take
    with pytest.raises(KeyExistsError):
        store.add("mallory", "t1", keys[0], "c" * 22, int(time.time()) + 600)
    store.close()
    # migrating again is a no-op
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    store = SSHKeyStore(path)
    assert store.owner_of(keys[0].blob_b64).user == "ada"
    store.close()


def test_lookups_use_indexes_and_are_trivially_fast(tmp_path):
    """The front's and the workspace's lookups run on the hub's event loop: index searches, well under
    a millisecond with 20 000 keys in the store."""
    path = tmp_path / "ssh-keys.sqlite"
    store = SSHKeyStore(path, max_keys_per_user=100)
    store.challenge_secret()  # creates the tables
    blobs = []
    with closing(sqlite3.connect(path)) as db:
        for i in range(20_000):
            blob = ssh_string("ssh-ed25519") + ssh_string(i.to_bytes(32, "big"))
            b64 = base64.b64encode(blob).decode()
            blobs.append(b64)
            db.execute(
                "INSERT INTO ssh_keys (user, user_created, type, blob, fingerprint, comment, created_at, proven)"
                " VALUES (?, 't', 'ssh-ed25519', ?, ?, '', 't', 1)",
                (f"user{i // 20}", b64, sshkeys.fingerprint(blob)),
            )
        db.commit()
        plans = {
            "owner_of": "SELECT * FROM ssh_keys WHERE fingerprint = ? AND blob = ?",
            "list": "SELECT * FROM ssh_keys WHERE user = ? ORDER BY id",
        }
        for name, sql in plans.items():
            plan = " ".join(
                row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", ("x", "y")[: sql.count("?")])
            )
            assert "USING INDEX" in plan and "SCAN" not in plan, (name, plan)
    durations = []
    for b64 in blobs[::40]:
        start = time.perf_counter()
        assert store.owner_of(b64) is not None
        durations.append(time.perf_counter() - start)
    for i in range(0, 1000, 2):
        start = time.perf_counter()
        assert len(store.list(f"user{i}")) == 20
        durations.append(time.perf_counter() - start)
    assert (
        store.owner_of(base64.b64encode(ssh_string("ssh-ed25519") + ssh_string(b"\xff" * 32)).decode())
        is None
    )
    median = statistics.median(durations)
    print(f"median lookup {median * 1e6:.0f} us, max {max(durations) * 1e6:.0f} us over {len(durations)}")
    assert median < 0.001
    store.close()


# ---- proof of possession -------------------------------------------------------------------

SECRET = b"s" * 32


def test_challenge_is_bound_to_its_user_incarnation_hub_and_time():
    now = 1_800_000_000
    text = sshkeys.make_challenge(SECRET, "ada", "t1", now)
    assert re.fullmatch(r"mlhub-ssh-key-v1\.[A-Za-z0-9_-]{22}\.1800000600\.[A-Za-z0-9_-]{43}", text), text
    checked = sshkeys.check_challenge(SECRET, text, "ada", "t1", now + 600)
    assert (checked.text, checked.expires) == (text, now + 600) and checked.nonce == text.split(".")[1]
    assert sshkeys.make_challenge(SECRET, "ada", "t1", now) != text  # a fresh nonce each time
    refusals = [
        ((SECRET, text, "bob", "t1", now), "not issued to bob"),
        ((SECRET, text, "ada", "t2", now), "not issued to ada"),  # a re-created namesake
        ((b"o" * 32, text, "ada", "t1", now), "not issued to ada"),  # another hub
        ((SECRET, text.replace(".1800000600.", ".1800009999."), "ada", "t1", now), "not issued"),
        ((SECRET, text, "ada", "t1", now + 601), "expired"),
        ((SECRET, text + "x", "ada", "t1", now), "malformed"),
        ((SECRET, "", "ada", "t1", now), "malformed"),
        ((SECRET, None, "ada", "t1", now), "malformed"),
    ]
    for args, message in refusals:
        with pytest.raises(sshkeys.ChallengeError, match=message):
            sshkeys.check_challenge(*args)


def test_sign_command_names_the_default_key_file():
    assert (
        sshkeys.sign_command("C")
        == "printf '%s' 'C' | ssh-keygen -Y sign -n mlhub-ssh-key -f ~/.ssh/id_ed25519"
    )
    for key_type, name in [
        ("ssh-rsa", "id_rsa"),
        ("ecdsa-sha2-nistp384", "id_ecdsa"),
        (sshkeys.SK_ED25519, "id_ed25519_sk"),
        (sshkeys.SK_ECDSA, "id_ecdsa_sk"),
    ]:
        assert sshkeys.sign_command("C", key_type).endswith(f"-f ~/.ssh/{name}")


def sign(tmp_path, name, message, namespace="mlhub-ssh-key"):
    out = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(tmp_path / name)],
        input=message,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return out.stdout.decode()


@pytest.mark.parametrize("key_type, bits", [("ed25519", None), ("ecdsa", 256), ("ecdsa", 521), ("rsa", 3072)])
def test_real_ssh_keygen_signatures_verify_for_their_key_only(tmp_path, key_type, bits):
    line, _ = keygen(tmp_path, key_type, bits)
    key = parse_public_key(line)
    name = f"id_{key_type}_{bits or 0}"
    signature = sshkeys.parse_signature(sign(tmp_path, name, b"challenge"), key)
    verify_signature(key, b"challenge", signature)
    # signed with a trailing newline (echo instead of printf): accepted too
    verify_signature(key, b"challenge", sign(tmp_path, name, b"challenge\n"))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(key, b"challengf", signature)
    # submitted with another public key: refused before anything runs
    with pytest.raises(sshkeys.SignatureFormatError, match="another key"):
        sshkeys.parse_signature(
            signature,
            parse_public_key(key_line("ssh-ed25519", ssh_string("ssh-ed25519") + ssh_string(bytes(32)))),
        )


def test_parse_signature_refuses_junk_other_namespaces_and_other_keys(tmp_path):
    line, _ = keygen(tmp_path, "ed25519")
    key = parse_public_key(line)
    good = sign(tmp_path, "id_ed25519_0", b"x")
    assert sshkeys.parse_signature("\r\n  " + good.replace("\n", "\r\n") + "  ", key) == good
    cases = [
        (
            sign(tmp_path, "id_ed25519_0", b"x", namespace="git"),
            "namespace 'git': sign with -n mlhub-ssh-key",
        ),
        (good.replace("-----END SSH SIGNATURE-----", ""), "the whole block"),
        ("-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----", "not valid base64"),
        ("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----", "not an SSH signature"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQAA\n-----END SSH SIGNATURE-----", "truncated"),
        ("x" * 20_000, "longer than"),
        (None, "must be a string"),
    ]
    for text, message in cases:
        with pytest.raises(sshkeys.SignatureFormatError, match=re.escape(message)):
            sshkeys.parse_signature(text, key)


def test_token_file_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "ssh-front.token"
    token = read_or_create_token(path)
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_or_create_token(path) == token
    path.write_text("short\n")
    with pytest.raises(ValueError, match="no usable token"):
        read_or_create_token(path)


async def test_lookups_never_hold_up_the_event_loop(store, keys):
    """A lookup waiting on the store (a slow disk, a busy lock) runs on the store's thread: the hub's
    event loop keeps serving meanwhile, and the lookup still answers once the store is free."""
    row = add(store, "ada", "2026-01-01T00:00:00.000000Z", keys[0])
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        with store._lock:  # the store is busy for 0.5 s
            lookup = asyncio.create_task(store.call("owner_of", row.blob))
            await asyncio.sleep(0.5)
            assert not lookup.done() and ticks >= 20
        assert (await asyncio.wait_for(lookup, 10)) == row
        assert await store.call("list", "ada") == [row]
    finally:
        ticking.cancel()


@pytest.mark.parametrize(
    "data",
    [
        b"ssh-ed25519-blob" + bytes(32) + b"\x00\x03\xfe",  # base64 ends in '+'
        b"\xfbsh-ed25519-blob" + bytes(32) + b"\x00\x03\x00",  # base64 starts with '+'
    ],
)
def test_a_plus_sent_unencoded_arrives_as_a_space_and_is_restored(data):
    """The front URL-encodes keys, other callers may not: a '+' then arrives as a space, also as the
    first or last character of an ed25519-sized blob (51 bytes: 68 characters, no padding)."""
    text = base64.b64encode(data).decode()
    assert text.startswith("+") or text.endswith("+")
    arrived = text.replace("+", " ")  # what a query string's unencoded '+' becomes
    assert sshkeys.blob_from_query(arrived) == data
    assert sshkeys.blob_from_query(f"{text}\n") == data
    assert sshkeys.blob_from_query("not base64!") == b""
