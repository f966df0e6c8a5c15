"""The entrypoint (pure parts): host keys handed in by the chart, IP forwarding, the data dir, supervisord,
and the start as a user other than root (the chart's pods)."""

import configparser
import json
import os
import pwd
import stat

import pytest

from mlhubspawner.front import entrypoint
from mlhubspawner.front import layout as L
from mlhubspawner.front.entrypoint import (
    check_ip_forward,
    check_readable,
    check_run_dir,
    check_tunnel_account,
    home_dir,
    mounted_host_keys,
    private_data_dir,
)
from mlhubspawner.settings import load_settings


def test_mounted_host_keys_become_private_copies(tmp_path):
    source = tmp_path / "secret"
    source.mkdir()
    key = source / "ssh_host_ecdsa_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    os.chmod(key, 0o644)  # as some kubelets mount secrets: sshd would refuse it
    (source / "README").write_text("not a key")
    paths = mounted_host_keys(source, tmp_path / "run" / "ssh")
    assert [os.path.basename(p) for p in paths] == ["ssh_host_ecdsa_key"]
    assert stat.S_IMODE(os.stat(paths[0]).st_mode) == 0o600
    assert open(paths[0]).read() == key.read_text()


def test_no_mounted_host_key_stops_the_start_naming_the_variable(tmp_path):
    with pytest.raises(SystemExit, match="MLHUB_SSH_HOST_KEYS_DIR"):
        mounted_host_keys(tmp_path, tmp_path / "run")


def test_ip_forwarding_on_stops_the_start_naming_the_flag(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    on.write_text("1\n")
    off.write_text("0\n")
    with pytest.raises(SystemExit, match=r"--sysctl net\.ipv4\.ip_forward=0"):
        check_ip_forward(on)
    assert check_ip_forward(off) is None
    assert check_ip_forward(tmp_path / "missing") is None  # unknown: a warning, not a refusal


def test_data_dir_becomes_owner_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "jupyterhub.sqlite"
    db.write_text("x")
    os.chmod(db, 0o644)
    (data / "ssl").mkdir()
    os.chmod(data / "ssl", 0o755)
    private_data_dir(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "ssl").stat().st_mode) == 0o700
    private_data_dir(tmp_path / "new")  # made owner-only
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_only_root_programs_run_in_the_data_dir_and_the_hub_writes_owner_only():
    layout = L.Layout(ssl=False, nginx=True, ssh=True, jhub=True, chp=True, data_dir="/data")
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(L.render_supervisord(layout, ["jupyterhub"]))
    programs = {s.split(":", 1)[1]: config[s] for s in config.sections() if s.startswith("program:")}
    for name, section in programs.items():
        assert section["directory"] == ("/data" if section["user"] == "root" else "/"), name
    assert programs["jupyterhub"]["umask"] == "077"
    assert {programs[n]["user"] for n in ("sslh", "configurable-http-proxy")} == {"sslh", "nobody"}


# --- not root (the chart's pods) ------------------------------------------------------------


def passwd(uid, gid):
    return pwd.struct_passwd(("tunnel", "*", uid, gid, "", "/nonexistent", "/usr/sbin/nologin"))


def test_not_root_sshd_needs_the_tunnel_account_and_the_refusal_names_the_fix():
    check_tunnel_account(1001, 1001, passwd(1001, 1001))  # the proxy pod as the chart runs it
    for uid, gid in ((1000, 1000), (1001, 0), (0, 0)):
        with pytest.raises(SystemExit) as refused:
            check_tunnel_account(uid, gid, passwd(1001, 1001))
        message = str(refused.value)
        assert f"uid {uid} gid {gid}" in message and "uid 1001 gid 1001" in message
        for fix in ("START_SSH=false", "proxy.containerSecurityContext.runAsUser", "'tunnel'"):
            assert fix in message
    with pytest.raises(SystemExit, match="missing from this image"):
        check_tunnel_account(1001, 1001, None)


def test_not_root_home_is_kept_when_writable_else_tmp(tmp_path):
    assert home_dir({"HOME": str(tmp_path)}, unprivileged=True) == str(tmp_path)
    assert home_dir({"HOME": "/nonexistent"}, unprivileged=True) == "/tmp"
    assert home_dir({}, unprivileged=True) == "/tmp"
    assert home_dir({"HOME": "/nonexistent"}, unprivileged=False) == "/nonexistent"  # root: as today


def test_an_unusable_run_dir_or_mounted_file_stops_the_start_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match=r"file/mlhub is not writable.*emptyDir"):
        check_run_dir(blocker / "mlhub")
    readable = tmp_path / "values.yaml"
    readable.write_text("a: 1\n")
    check_readable([readable, tmp_path / "missing.yaml"])  # a missing file is each caller's business
    # a directory where a file is expected: the same refusal as a Secret this user cannot read
    with pytest.raises(SystemExit, match=rf"cannot read {tmp_path}/dir \(.*\) as uid .*fsGroup"):
        (tmp_path / "dir").mkdir()
        check_readable([readable, tmp_path / "dir"])


def test_not_root_proxy_writes_only_to_the_run_and_data_dirs(tmp_path, monkeypatch):
    """The proxy pod's start, not root: its files in /run/mlhub and the data dir only, the key lookup's
    config private to sshd's (the one) account, supervisord switching no account."""
    run, data, secret = tmp_path / "run", tmp_path / "data", tmp_path / "secret"
    secret.mkdir()
    (secret / "ssh_host_ecdsa_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    monkeypatch.setattr(L, "RUN_DIR", run)
    monkeypatch.setattr(entrypoint, "tunnel_account", lambda: passwd(os.geteuid(), os.getegid()))
    monkeypatch.setenv("MLHUB_SSH_HOST_KEYS_DIR", str(secret))
    env = {
        "START_JHUB": "false",
        "START_CHP": "true",
        "EXECUTION_MODE": "k8s",
        "MLHUB_DATA_DIR": str(data),
        "MLHUB_HUB_SERVICE_URL": "http://mlhub-hub:8081",
        "MLHUB_SSH_FRONT_TOKEN": "f" * 64,
        "CONFIGPROXY_AUTH_TOKEN": "c" * 64,
        "HOME": "/nonexistent",
    }
    layout = entrypoint.prepare(load_settings(env), env, unprivileged=True)
    assert layout.unprivileged and env["HOME"] == "/tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run", "secret"]
    lookup = run / "ssh-front.json"
    assert stat.S_IMODE(lookup.stat().st_mode) == 0o600
    assert lookup.stat().st_gid == os.getegid()
    assert json.loads(lookup.read_text())["user"] == "tunnel"
    assert "\nuser=" not in (run / "supervisord.conf").read_text()
    assert "AuthorizedKeysCommandUser tunnel\n" in (run / "sshd_config").read_text()
    assert "\nuser " not in (run / "nginx.conf").read_text()
