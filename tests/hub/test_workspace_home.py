"""The workspace's home lasts on its volume, and its thread variables follow its CPU quota.

Through a real hub on the real engine, as a user sees it: code run in a Jupyter kernel, commands typed in a
JupyterLab terminal (a login shell) and an SSH session. Then the image as Kubernetes runs it (read-only root
filesystem, uid 1000, gid 100, an fsGroup-owned volume) and on a volume from the previous version.
"""

import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import subprocess
import time
import uuid
import zipfile

import pytest
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from mlhubspawner import __version__, naming

from ssh_signing import register_ssh_key
from support import Hub, base_image, build_image

THREAD_NAMES = (
    "MAX_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
PROBE = "mlhub_home_probe"


def workspace_image():
    return os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")


@pytest.fixture(scope="module")
def home_hub(docker, tmp_path_factory):
    """A hub allowing 2 CPUs, whose workspace image is a tag of our own that the Update test moves."""
    tag = f"mlhub-home-test-{secrets.token_hex(3)}:1"
    docker.images.get(workspace_image()).tag(tag)
    hub = Hub(
        tmp_path_factory.mktemp("home-hub"),
        user_config=(
            f"c.MLHubDockerSpawner.image = {tag!r}\nc.MLHubDockerSpawner.workspace_images = [{tag!r}]\n"
            "c.MLHubDockerSpawner.max_cpu_limit = 2\n"
        ),
    )
    hub.tag = tag
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)
        docker.images.remove(tag, force=True)
        docker.images.prune(filters={"label": f"mlhub.home-test={tag}", "dangling": True})


# ---- what a user does in JupyterLab ---------------------------------------------------------------


def through_proxy(hub, method, user, server, path, **kwargs):
    prefix = f"user/{user}/{server}/" if server else f"user/{user}/"
    headers = {"Authorization": f"token {hub.token}"}
    return requests.request(method, f"{hub.url}/{prefix}{path}", headers=headers, timeout=60, **kwargs)


def ws_url(hub, user, server, path):
    prefix = f"user/{user}/{server}/" if server else f"user/{user}/"
    return HTTPRequest(
        f"{hub.url.replace('http', 'ws', 1)}/{prefix}{path}",
        headers={"Authorization": f"token {hub.token}"},
        request_timeout=60,
    )


async def _kernel_exchange(request, code, timeout):
    conn = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "tests",
                    "session": uuid.uuid4().hex,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
                "channel": "shell",
            }
        )
    )
    out, errors = [], []
    deadline = time.monotonic() + timeout
    try:
        while True:
            raw = await asyncio.wait_for(conn.read_message(), max(0.1, deadline - time.monotonic()))
            assert raw is not None, "kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                errors.append("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out), errors
    finally:
        conn.close()


def run_in_kernel(hub, user, server, code, timeout=60):
    """Start a Python kernel in the workspace, run ``code``, return its stdout (fails on an error)."""
    r = through_proxy(hub, "POST", user, server, "api/kernels", json={"name": "python3"})
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    try:
        request = ws_url(hub, user, server, f"api/kernels/{kernel}/channels")
        out, errors = asyncio.run(_kernel_exchange(request, code, timeout))
    finally:
        through_proxy(hub, "DELETE", user, server, f"api/kernels/{kernel}")
    assert not errors, errors
    return out


async def _terminal_exchange(request, command, marker, timeout):
    conn = await websocket_connect(request)
    conn.write_message(json.dumps(["stdin", f"{command}; echo {marker[:4]}''{marker[4:]}\r"]))
    out = ""
    deadline = time.monotonic() + timeout
    try:
        while marker not in out:
            raw = await asyncio.wait_for(conn.read_message(), max(0.1, deadline - time.monotonic()))
            assert raw is not None, f"terminal closed:\n{out}"
            kind, *payload = json.loads(raw)
            if kind == "stdout":
                out += payload[0]
        return out.split(marker)[0]
    finally:
        conn.close()


def run_in_terminal(hub, user, server, command, timeout=120):
    """Open a JupyterLab terminal, type ``command``; its output (with the terminal's echo of it)."""
    r = through_proxy(hub, "POST", user, server, "api/terminals")
    assert r.status_code == 200, r.text
    name = r.json()["name"]
    try:
        request = ws_url(hub, user, server, f"terminals/websocket/{name}")
        return asyncio.run(_terminal_exchange(request, command, f"DONE{secrets.token_hex(4)}", timeout))
    finally:
        through_proxy(hub, "DELETE", user, server, f"api/terminals/{name}")


def env_in_kernel(hub, user, server, names=THREAD_NAMES):
    code = f"import json, os; print(json.dumps({{n: os.environ.get(n) for n in {list(names)!r}}}))"
    return json.loads(run_in_kernel(hub, user, server, code).strip().splitlines()[-1])


def values_in_terminal(hub, user, server, names=THREAD_NAMES):
    command = "echo VALUES " + " ".join(f"${n}" for n in names)
    out = run_in_terminal(hub, user, server, command)
    line = [x for x in out.splitlines() if x.startswith("VALUES ")][-1]
    return dict(zip(names, line.split()[1:], strict=True))


def container_of(docker, hub, user, server=""):
    return docker.containers.get(naming.workspace_name(hub.hub_name, user, server))


def probe_wheel():
    """A tiny pure-Python wheel (a module and a console script), built here: the workspace has no index."""
    dist = f"{PROBE}-1.0"
    files = {
        f"{PROBE}/__init__.py": 'VALUE = "kept"\n\n\ndef main():\n    print("probe says", VALUE)\n',
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\nName: mlhub-home-probe\nVersion: 1.0\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}.dist-info/entry_points.txt": f"[console_scripts]\nmlhub-home-probe = {PROBE}:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return f"{dist}-py3-none-any.whl", buffer.getvalue()


def upload(hub, user, server, name, data):
    """Upload a file to /workspace as JupyterLab's upload does (contents API, base64)."""
    body = {"type": "file", "format": "base64", "content": base64.b64encode(data).decode()}
    r = through_proxy(hub, "PUT", user, server, f"api/contents/{name}", json=body)
    assert r.status_code in (200, 201), r.text


HOME_CHECK = f"""
import json, os, pathlib, {PROBE}
home = pathlib.Path.home()
print(json.dumps({{
    "HOME": os.environ["HOME"],
    "real": os.path.realpath(home),
    "probe": {PROBE}.VALUE,
    "probe_file": {PROBE}.__file__,
    "gitconfig": pathlib.Path("/home/jovyan/.gitconfig").read_text(),
    "bashrc_mine": "from hana" in (home / ".bashrc").read_text(),
    "new_skeleton": (home / ".mlhub-test-skeleton").exists(),
}}))
"""


def home_state(hub, user):
    return json.loads(run_in_kernel(hub, user, "", HOME_CHECK).strip().splitlines()[-1])


# ---- threads -----------------------------------------------------------------------------------------


def test_threads_follow_the_cpu_quota_in_kernels_terminals_and_ssh(home_hub, docker, tmp_path):
    user = home_hub.create_user("tina")
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    r = register_ssh_key(home_hub, user, key)
    assert r.status_code in (200, 201), r.text

    # 1.5 CPUs: one thread everywhere (the hub's own MAX_NUM_THREADS says 2), NUMBA_NUM_THREADS as she set it
    options = {"cpu_limit": 1.5, "env": {"NUMBA_NUM_THREADS": "3"}}
    assert home_hub.spawn(user, "small", options).status_code in (201, 202)
    container = container_of(docker, home_hub, user, "small")
    assert container.attrs["HostConfig"]["NanoCpus"] == 1_500_000_000
    names = (*THREAD_NAMES, "NUMBA_NUM_THREADS")
    one = dict.fromkeys(THREAD_NAMES, "1")
    assert env_in_kernel(home_hub, user, "small", names) == {**one, "NUMBA_NUM_THREADS": "3"}
    assert values_in_terminal(home_hub, user, "small") == one

    container.reload()
    ip = container.attrs["NetworkSettings"]["Networks"][naming.network_name(home_hub.hub_name, user)][
        "IPAddress"
    ]
    command = "echo " + " ".join(f"${n}" for n in THREAD_NAMES)
    ssh = [
        "ssh", "-F", "/dev/null", "-i", str(key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", f"jovyan@{ip}",
    ]  # fmt: skip
    result = None
    for _ in range(60):  # sshd starts beside the Jupyter server
        result = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=60)
        if result.returncode != 255:
            break
        time.sleep(0.5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1"] * len(THREAD_NAMES)
    home_hub.stop_server(user, "small", remove=True)

    # 2 CPUs: two threads
    assert home_hub.spawn(user, "big", {"cpu_limit": 2}).status_code in (201, 202)
    assert env_in_kernel(home_hub, user, "big") == dict.fromkeys(THREAD_NAMES, "2")
    assert values_in_terminal(home_hub, user, "big") == dict.fromkeys(THREAD_NAMES, "2")
    home_hub.stop_server(user, "big", remove=True)


# ---- the home --------------------------------------------------------------------------------------------


def test_home_and_user_packages_survive_stop_start_and_update(home_hub, docker):
    user = home_hub.create_user("hana")
    assert home_hub.spawn(user, options={"cpu_limit": 1}).status_code in (201, 202)
    first = container_of(docker, home_hub, user)
    wheel_name, wheel = probe_wheel()
    upload(home_hub, user, "", wheel_name, wheel)

    # in a terminal, without root: pip installs for the user; its script is on PATH at once
    out = run_in_terminal(
        home_hub,
        user,
        "",
        f"pip install --no-index --disable-pip-version-check /workspace/{wheel_name} 2>&1 | tail -n 3"
        "; printf '[user]\\n\\tname = Hana\\n' > ~/.gitconfig; echo '# from hana' >> ~/.bashrc"
        "; mlhub-home-probe; id -u; pwd -P",
    )
    assert "Successfully installed mlhub-home-probe-1.0" in out, out
    assert "probe says kept" in out, out
    state = home_state(home_hub, user)
    assert state["HOME"] == "/home/jovyan" and state["real"] == "/workspace/.home"
    assert state["probe"] == "kept" and state["probe_file"].startswith("/home/jovyan/.local/lib/python3")
    assert state["gitconfig"] == "[user]\n\tname = Hana\n" and state["bashrc_mine"]

    # stop and start: the same container, the same home
    home_hub.stop_server(user)
    assert home_hub.spawn(user).status_code in (201, 202)
    assert container_of(docker, home_hub, user).id == first.id
    again = home_state(home_hub, user)
    assert (again["probe"], again["gitconfig"], again["bashrc_mine"]) == ("kept", state["gitconfig"], True)

    # Update to an image with a changed skeleton: a new container, the home kept, new skeleton files added,
    # her own files not overwritten
    dockerfile = (
        f"FROM {home_hub.tag}\nUSER root\n"
        "RUN echo 'skeleton of the new image' > /etc/skel/.mlhub-test-skeleton"
        " && echo '# new image bashrc' >> /etc/skel/.bashrc && printf '[user]\\n' > /etc/skel/.gitconfig\n"
        f"USER 1000\nLABEL mlhub.home-test={home_hub.tag}\n"
    )
    new_image, _ = build_image(docker, fileobj=io.BytesIO(dockerfile.encode()), tag=home_hub.tag, rm=True)
    r = home_hub.api("POST", f"mlhub/users/{user}/update")  # the default server's Update
    assert r.status_code in (201, 202), r.text
    home_hub.wait_ready(user)
    updated = container_of(docker, home_hub, user)
    assert updated.id != first.id and updated.image.id == new_image.id
    after = home_state(home_hub, user)
    assert (after["probe"], after["gitconfig"], after["bashrc_mine"]) == ("kept", state["gitconfig"], True)
    assert after["new_skeleton"]
    assert "probe says kept" in run_in_terminal(home_hub, user, "", "mlhub-home-probe")
    home_hub.stop_server(user)


def test_workspace_without_volume_has_the_image_home(home_hub, docker):
    user = home_hub.create_user("nova")
    assert home_hub.spawn(user, "novol", {"is_mount_volume": False}).status_code in (201, 202)
    container = container_of(docker, home_hub, user, "novol")
    assert not [m for m in container.attrs["Mounts"] if m["Destination"] == "/workspace"]
    code = (
        "import os, pathlib; h = pathlib.Path.home(); (h / 'x').write_text('1'); print(os.path.realpath(h))"
    )
    assert run_in_kernel(home_hub, user, "novol", code).strip() == "/workspace/.home"
    assert "not on a volume" in container.logs().decode(errors="replace")
    home_hub.stop_server(user, "novol", remove=True)


# ---- the image as Kubernetes runs it ------------------------------------------------------------------


def run_image(docker, command, volume=None, volume_path="/workspace", **kwargs):
    """Run the workspace image's entry point with ``command`` (no hub, no sshd); (exit code, output)."""
    container = docker.containers.create(
        workspace_image(),
        command,
        environment={"MLHUB_SSHD": "0"},
        volumes={volume: {"bind": volume_path, "mode": "rw"}} if volume else None,
        labels={"mlhub.test": "workspace-home"},
        nano_cpus=1_500_000_000,
        **kwargs,
    )
    try:
        container.start()
        code = container.wait(timeout=120)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


IMAGE_CHECK = (
    "import json, os, pathlib, site; h = pathlib.Path.home(); (h / 'probe').write_text('1\\n');"
    "print('RESULT', json.dumps({'HOME': os.environ['HOME'], 'real': os.path.realpath(h),"
    " 'user_site': site.ENABLE_USER_SITE, 'omp': os.environ.get('OMP_NUM_THREADS'),"
    " 'path': os.environ['PATH'].split(':')[:2], 'bashrc': (h / '.bashrc').is_file()}))"
)


def result_of(output):
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture
def volume(docker):
    created = docker.volumes.create(
        f"mlhub-home-test-{secrets.token_hex(3)}", labels={"mlhub.test": "workspace-home"}
    )
    yield created
    created.remove(force=True)


def prepare(docker, volume, script):
    """Shape a volume as root with ``script`` (in the base image)."""
    docker.containers.run(
        base_image(docker),
        ["sh", "-c", script],
        volumes={volume.name: {"bind": "/workspace", "mode": "rw"}},
        labels={"mlhub.test": "workspace-home"},
        remove=True,
    )


def test_read_only_non_root_pod_with_an_fsgroup_volume_from_the_previous_version(docker, volume):
    # a PVC with fsGroup 100 as the kubelet leaves it, holding what the previous version kept there
    prepare(
        docker,
        volume,
        "mkdir -p /workspace/.mlhub/ssh && echo key > /workspace/.mlhub/ssh/ssh_host_ed25519_key"
        " && echo notes > /workspace/notes.txt && chown -R 1000:100 /workspace/.mlhub /workspace/notes.txt"
        " && chown root:100 /workspace && chmod 2775 /workspace",
    )
    code, out = run_image(
        docker,
        ["python3", "-c", IMAGE_CHECK],
        volume=volume.name,
        user="1000:100",
        group_add=["100"],
        read_only=True,
        tmpfs={"/tmp": ""},
    )
    assert code == 0, out
    result = result_of(out)
    assert result["HOME"] == "/home/jovyan" and result["real"] == "/workspace/.home"
    assert result["user_site"] is True and result["bashrc"]
    assert result["path"] == ["/opt/mlhub/venv/bin", "/home/jovyan/.local/bin"]
    assert result["omp"] == "1"
    assert "kept on the volume" in out
    # nothing of the previous version's was touched
    check = "cat /workspace/notes.txt /workspace/.mlhub/ssh/ssh_host_ed25519_key /workspace/.home/probe"
    listing = docker.containers.run(
        base_image(docker),
        ["sh", "-c", check],
        volumes={volume.name: {"bind": "/workspace", "mode": "ro"}},
        labels={"mlhub.test": "workspace-home"},
        remove=True,
    )
    assert listing.decode().split() == ["notes", "key", "1"]


@pytest.mark.parametrize(
    "user,prefix", [("1000:100", "/tmp/home-jovyan."), ("1000670000:0", "/tmp/home-1000670000.")]
)
def test_read_only_root_without_volume_gets_a_temporary_home(docker, user, prefix):
    code, out = run_image(
        docker, ["python3", "-c", IMAGE_CHECK], user=user, read_only=True, tmpfs={"/tmp": ""}
    )
    assert code == 0, out
    result = result_of(out)
    assert result["HOME"].startswith(prefix) and result["real"] == result["HOME"]
    assert result["bashrc"] and result["omp"] == "1"
    assert "a temporary home, lost at the next start" in out


def test_volume_mounted_at_home_jovyan_holds_the_home(docker, volume):
    """An admin's volume_path of /home/jovyan (the docker-stacks habit) lands on the link's target."""
    code, out = run_image(
        docker, ["python3", "-c", IMAGE_CHECK], volume=volume.name, volume_path="/home/jovyan"
    )
    assert code == 0, out
    result = result_of(out)
    assert result["HOME"] == "/home/jovyan" and result["real"] == "/workspace/.home"
    assert "kept on the volume" in out
