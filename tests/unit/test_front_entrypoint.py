"""The entrypoint's file handling: host keys handed in by the chart."""

import os
import stat

import pytest

from mlhubspawner.front.entrypoint import mounted_host_keys


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
