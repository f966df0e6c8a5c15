"""A key squatted before keys needed proof of possession: the real hub migrates its key store, the
front's AuthorizedKeysCommand (resources/hub/front-authorized-keys, run as sshd runs it) maps the key
to the squatter until its owner proves possession, then to the owner. Own hub: it logs at DEBUG."""

import base64
import importlib.machinery
import importlib.util
import json
import sqlite3
import subprocess
from contextlib import closing

import pytest

from mlhubspawner import naming, sshkeys

from ssh_signing import SCHEMA_0, register_ssh_key
from support import REPO, Hub

SMALL = {"mem_limit": "512M"}
DEBUG_CONFIG = "c.JupyterHub.log_level = 'DEBUG'\nc.MLHubDockerSpawner.max_total_mem_per_user = '2G'\n"


@pytest.fixture(scope="module")
def debug_hub(docker, tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("hub-debug"), user_config=DEBUG_CONFIG)
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def front_command(tmp_path, hub):
    """``main(user, type, key)`` of the front's AuthorizedKeysCommand, configured as the entrypoint
    configures it (the hub's lookup URL, the ssh-front service token, the tunnel account)."""
    path = REPO / "resources" / "hub" / "front-authorized-keys"
    loader = importlib.machinery.SourceFileLoader("front_authorized_keys", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    config = tmp_path / "ssh-front.json"
    token = (hub.workdir / "data" / "ssh-front.token").read_text().strip()
    url = f"{hub.url}/hub/api/mlhub/ssh/authorized-keys"
    config.write_text(json.dumps({"url": url, "token": token, "user": "tunnel"}))
    module.CONFIG = str(config)
    return module.main


def keygen(tmp_path, name):
    path = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True, timeout=60
    )
    return path, path.with_suffix(".pub").read_text().strip()


def forwarding_line(hub, user, line):
    target = naming.workspace_name(hub.hub_name, user, "work")
    return f'restrict,port-forwarding,permitopen="{target}:22" {" ".join(line.split()[:2])}\n'


def keys_of(hub, user):
    r = hub.api("GET", f"mlhub/users/{user}/ssh-keys")
    assert r.status_code == 200, r.text
    return {key["fingerprint"]: key["proven"] for key in r.json()}


def test_a_squatted_legacy_key_goes_to_its_proven_owner(debug_hub, tmp_path, capsys):
    hub = debug_hub
    owner, squatter = hub.create_user("keyowner"), hub.create_user("squatter")
    squatter_path, _ = keygen(tmp_path, "squatter")
    owner_path, owner_line = keygen(tmp_path, "owner")
    owner_key = sshkeys.parse_public_key(owner_line)
    assert register_ssh_key(hub, squatter, squatter_path).status_code == 201
    store = hub.workdir / "data" / "ssh-keys.sqlite"
    with closing(sqlite3.connect(store)) as db:
        squatter_row = db.execute("SELECT * FROM ssh_keys WHERE user = ?", (squatter,)).fetchone()

    # the store as the previous release left it: the squatter registered the owner's public key
    hub.stop()
    for suffix in ("", "-wal", "-shm"):
        store.with_name(store.name + suffix).unlink(missing_ok=True)
    with closing(sqlite3.connect(store)) as db:
        db.executescript(SCHEMA_0)
        db.execute("INSERT INTO ssh_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)", squatter_row[:8])
        db.execute(
            "INSERT INTO ssh_keys (user, user_created, type, blob, fingerprint, comment, created_at) "
            "VALUES (?, ?, ?, ?, ?, '', '2025-01-01T00:00:00.000000Z')",
            (squatter, squatter_row[2], owner_key.type, owner_key.blob_b64, owner_key.fingerprint),
        )
        db.commit()
    hub.start()
    for user in (owner, squatter):
        assert hub.spawn(user, "work", SMALL).status_code in (201, 202)
    lookup = front_command(tmp_path, hub)
    blob = owner_key.blob_b64

    # before: the front maps the owner's key to the squatter; the squat is listed as unproven
    assert lookup("tunnel", "ssh-ed25519", blob) == 0
    assert capsys.readouterr().out == forwarding_line(hub, squatter, owner_line)
    assert keys_of(hub, squatter)[owner_key.fingerprint] is False
    # not proven either way: the owner's plain POST is told to sign, not "already registered"
    r = hub.api("POST", f"mlhub/users/{owner}/ssh-keys", json={"key": owner_line})
    assert r.status_code == 400 and "ssh-keygen -Y sign" in r.json()["message"], r.text

    # the owner proves possession: the key is theirs, on the front at once
    r = register_ssh_key(hub, owner, owner_path, token=None)
    assert r.status_code == 201, r.text
    assert keys_of(hub, owner) == {owner_key.fingerprint: True}
    assert owner_key.fingerprint not in keys_of(hub, squatter)
    assert lookup("tunnel", "ssh-ed25519", blob) == 0
    assert capsys.readouterr().out == forwarding_line(hub, owner, owner_line)
    assert f"{squatter}, who had registered it without proof, loses it" in hub.log_tail(400)
    # the squatter cannot take it back: without the private key there is no proof
    r = hub.api("POST", f"mlhub/users/{squatter}/ssh-keys", json={"key": owner_line})
    assert r.status_code == 400, r.text
    assert lookup("tunnel", "ssh-ed25519", blob) == 0
    assert capsys.readouterr().out == forwarding_line(hub, owner, owner_line)
    # the squatter's own legacy key still works: unproven keys work until proven elsewhere
    squatter_blob = squatter_row[4]
    assert lookup("tunnel", "ssh-ed25519", squatter_blob) == 0
    assert capsys.readouterr().out == forwarding_line(hub, squatter, f"ssh-ed25519 {squatter_blob}")

    # a key nobody registered: nothing, and the miss is logged at DEBUG level only
    raw = base64.b64decode(blob)
    nobody = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 0xFF])).decode()  # always another key
    assert lookup("tunnel", "ssh-ed25519", nobody) == 0
    assert capsys.readouterr().out == ""
    fingerprint = sshkeys.fingerprint(base64.b64decode(nobody))
    misses = [line for line in hub.log_tail(400).splitlines() if fingerprint in line]
    assert misses and all(line.startswith("[D ") for line in misses), misses
    # the migrated store: schema version 1
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    for user in (owner, squatter):
        hub.stop_server(user, "work")
