"""The entrypoint (pure parts): host keys handed in by the chart, IP forwarding, the data dir, supervisord."""

import configparser
import os
import stat

import pytest

from mlhubspawner.front import layout as L
from mlhubspawner.front.entrypoint import check_ip_forward, mounted_host_keys, private_data_dir


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
