"""``make run`` with MLHUB_USERS_DIR and DYNAMIC_WHITELIST_ENABLED=true (run-hub.sh, the hub image): the host's
directory is mounted read-only at /resources/users; the hub lets in the listed, authorized users and the admin,
refuses the others with the message, and an edit on the host (an editor's write-and-rename included) decides the
next login without a restart. Needs the engine: fails, never skips, without one."""

import os
import shutil
import subprocess

import pytest

from mlhubspawner import __version__

from support import PASSWORD, REPO, HubContainer, free_port, log_in, sign_up

RUN_HUB = REPO / "resources" / "scripts" / "run-hub.sh"
REFUSED = "is not on the list of users allowed on this hub: ask an administrator to add you."
# run-hub.sh's `docker run` gets the tests' label (its container is not a HubContainer's)
DOCKER_SHIM = """#!/bin/sh
if [ "$1" = run ]; then shift; exec {docker} run --label "{label}" "$@"; fi
exec {docker} "$@"
"""


@pytest.fixture(scope="module")
def users_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("users")
    folder.chmod(0o755)  # the hub reads it as its own account
    (folder / "dynamic_whitelist.txt").write_text("# who may use the hub\nlena\n")
    (folder / "dynamic_whitelist.txt").chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def listed_hub(docker, tmp_path_factory, users_dir):
    workdir = tmp_path_factory.mktemp("make-run-users")
    hub = HubContainer(docker, workdir)
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER_SHIM.format(docker=shutil.which("docker"), label=hub.test_label))
    (bin_dir / "docker").chmod(0o755)
    docker.volumes.create(hub.volume, labels=dict([hub.test_label.split("=", 1)]))
    port = free_port()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(workdir),
        "HUB_NAME": hub.hub_name,
        "MLHUB_PUBLIC_PORT": str(port),
        "MLHUB_ADMIN_PASSWORD": PASSWORD,
        "MLHUB_HUB_IMAGE": hub.image,
        "MLHUB_WORKSPACE_IMAGE": os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}"),
        "MLHUB_WORKSPACE_IMAGES": "",
        "CLEANUP_INTERVAL_SECONDS": "-1",
        "DYNAMIC_WHITELIST_ENABLED": "true",
        "MLHUB_USERS_DIR": str(users_dir),
    }
    try:
        started = subprocess.run(
            ["bash", str(RUN_HUB), "start"], env=env, capture_output=True, text=True, timeout=300
        )
        assert started.returncode == 0, started.stdout + started.stderr
        hub.container = docker.containers.get(hub.hub_name)
        hub.port, hub.url = port, f"http://127.0.0.1:{port}"
        yield hub
    finally:
        subprocess.run(["bash", str(RUN_HUB), "stop"], env=env, capture_output=True, timeout=120)
        hub.container = None
        hub.destroy()


def login_outcome(hub, name):
    _, r = log_in(hub, name)
    if r.status_code == 302:
        return True
    assert r.status_code == 403, r.status_code
    return REFUSED if REFUSED in r.content.decode() else r.content.decode()[-500:]


def test_the_hosts_directory_decides_at_each_login(listed_hub, users_dir):
    hub = listed_hub
    hub.container.reload()
    (mount,) = [m for m in hub.container.attrs["Mounts"] if m["Destination"] == "/resources/users"]
    assert mount["Source"] == str(users_dir) and mount["RW"] is False
    write = hub.container.exec_run(
        ["sh", "-c", "echo mallory >> /resources/users/dynamic_whitelist.txt"], user="root"
    )
    assert write.exit_code != 0, write.output
    started_at = hub.container.attrs["State"]["StartedAt"]

    admin, r = log_in(hub, "admin")  # the admin is on no list
    assert r.status_code == 302
    for name in ("lena", "omar"):
        sign_up(hub, name)
        assert admin.get(f"{hub.url}/hub/authorize/{name}", timeout=30).status_code == 200
    assert login_outcome(hub, "lena") is True
    assert login_outcome(hub, "omar") == REFUSED

    # an editor's save: a new file renamed over the old one (a new inode, which a file bind mount would miss)
    new = users_dir / ".dynamic_whitelist.txt.swp"
    new.write_text("lena\nomar\n")
    new.chmod(0o644)
    os.replace(new, users_dir / "dynamic_whitelist.txt")
    assert login_outcome(hub, "omar") is True
    # removed again in place: out at the next login
    (users_dir / "dynamic_whitelist.txt").write_text("omar\n")
    assert login_outcome(hub, "lena") == REFUSED
    assert login_outcome(hub, "omar") is True
    hub.container.reload()
    assert hub.container.attrs["State"]["StartedAt"] == started_at  # no restart
