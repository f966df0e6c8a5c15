"""The registry of environment variables (settings.VARIABLES): it matches what the code reads, and
``make run`` (run-hub.sh) passes exactly its passthrough variables into the hub container."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from mlhubspawner import settings

ROOT = Path(__file__).resolve().parents[2]
RUN_HUB = ROOT / "resources" / "scripts" / "run-hub.sh"
REGISTRY = {v.name: v for v in settings.VARIABLES}

# variables of other programs that ML Hub's code reads (documented by JupyterHub, Kubernetes, the OS)
FOREIGN = {
    "HOME",
    "HOSTNAME",
    "CONFIGPROXY_AUTH_TOKEN",
    "JUPYTERHUB_API_URL",
    "JUPYTERHUB_API_TOKEN",
    "JUPYTERHUB_SERVICE_URL",
    "JUPYTERHUB_SERVICE_PREFIX",
    "POD_NAMESPACE",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
}
# how the Python code reads a variable: os.environ.get("X", os.environ["X"], environ.get("X", env.get("X",
# env["X"] (not an assignment), _bool(env, "X", _int(env, "X", ... and env.get(CONSTANT) with CONSTANT = "X"
_NAME = r"""["']([A-Z][A-Z0-9_]*)["']"""
_PY_READS = (
    re.compile(rf"\benv(?:iron)?\.get\(\s*{_NAME}"),
    re.compile(rf"\benv(?:iron)?\[\s*{_NAME}\s*\](?!\s*=[^=])"),
    re.compile(rf"\b_\w+\(\s*env\s*,\s*{_NAME}"),
)
_PY_CONSTANT_READ = re.compile(r"\benv(?:iron)?(?:\.get\(|\[)\s*([A-Z][A-Z0-9_]*)\s*[,)\]]")
_PY_CONSTANT = r"^{}\s*=\s*[\"']([A-Z][A-Z0-9_]*)[\"']"
# the shell scripts: $X or ${X...} of ML Hub's own prefixes (not PATH, TMPDIR, DOCKER_HOST, ...)
_SH_READ = re.compile(r"\$\{?((?:MLHUB|HUB|GPU|SSL|START|CLEANUP|EXECUTION|ADDITIONAL)_[A-Z0-9_]*)")


def _python_sources():
    for folder in ("mlhubspawner", "cleanup_service"):
        yield from sorted((ROOT / folder).rglob("*.py"))
    yield ROOT / "jupyterhub_config.py"


def names_read():
    """{name: [files that read it]} over the hub's Python code and resources/scripts/*.sh."""
    found = {}
    for path in _python_sources():
        text = path.read_text()
        names = {m.group(1) for pattern in _PY_READS for m in pattern.finditer(text)}
        for constant in {m.group(1) for m in _PY_CONSTANT_READ.finditer(text)}:
            names |= set(re.findall(_PY_CONSTANT.format(constant), text, re.MULTILINE))
        for name in names:
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "resources" / "scripts").glob("*.sh")):
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for name in set(_SH_READ.findall(code)):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_scan_finds_reads_of_every_kind():
    found = names_read()
    # a plain read, a read in jupyterhub_config.py, a _bool(env, ...), a constant, a shell script
    assert "mlhubspawner/docker/spawner.py" in found["GPU_IDS"]
    assert "jupyterhub_config.py" in found["MLHUB_SSH_PUBLIC_HOST"]
    assert "mlhubspawner/settings.py" in found["MLHUB_EGRESS_FIREWALL"]
    assert "mlhubspawner/chart_values.py" in found["MLHUB_CHART_VALUES"]
    assert "resources/scripts/run-hub.sh" in found["MLHUB_PUBLIC_PORT"]
    # writes are not reads: the entrypoint sets MLHUB_BEHIND_FRONT, the spawner sets workspaces' env
    assert "mlhubspawner/front/entrypoint.py" not in found["MLHUB_BEHIND_FRONT"]
    assert "JUPYTER_IMAGE_SPEC" not in found


def test_every_variable_read_is_documented():
    undocumented = {n: where for n, where in names_read().items() if n not in REGISTRY and n not in FOREIGN}
    assert not undocumented, f"add these to settings.VARIABLES: {undocumented}"


def test_every_documented_variable_is_read():
    read = names_read()
    stale = sorted(set(REGISTRY) - set(read))
    assert not stale, f"settings.VARIABLES documents variables nothing reads: {stale}"
    assert not FOREIGN & set(REGISTRY)


def test_registry_entries():
    names = [v.name for v in settings.VARIABLES]
    assert len(names) == len(set(names))
    for v in settings.VARIABLES:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", v.name)
        assert v.help.strip() and v.where.strip(), v.name
        assert not (v.by_name and not v.passed), f"{v.name}: a by-name variable is one that is passed"
    assert REGISTRY["GPU_IDS"].passed and "UUID" in REGISTRY["GPU_IDS"].help
    assert settings.by_name_names() == ["MLHUB_ADMIN_PASSWORD"]


def test_host_paths_and_image_settings_stay_out():
    for name in (
        "MLHUB_DATA_DIR",
        "MLHUB_STATE_DIR",
        "MLHUB_USER_CONFIG",
        "MLHUB_SSL_DIR",
        "MLHUB_USERS_DIR",
        "MLHUB_HUB_IMAGE",
        "MLHUB_PUBLIC_PORT",
        "MLHUB_HUB_CONTAINER",
        "MLHUB_HUB_ADDRESS",
        "MLHUB_BEHIND_FRONT",
        "MLHUB_PORT",
    ):
        assert not REGISTRY[name].passed, name
    # what the Makefile exports reaches `make run`: of it, only the workspace image (not a path) is passed
    exported = set(re.findall(r"^export (MLHUB_\w+)", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert {"MLHUB_DATA_DIR", "MLHUB_STATE_DIR", "MLHUB_USER_CONFIG"} <= exported
    assert exported & set(settings.passthrough_names()) == {"MLHUB_WORKSPACE_IMAGE"}


def test_entry_point_is_stdlib_only():
    # -S: no site-packages (no venv): what run-hub.sh runs with the host's python3
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-S", "-m", "mlhubspawner.settings", "passthrough"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == settings.passthrough_names()
    assert "GPU_IDS" in out.stdout.splitlines()


# --- make run (run-hub.sh start) with a fake docker and curl -----------------------------------

FAKE_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "password": os.environ.get("MLHUB_ADMIN_PASSWORD")}}) + "\\n")
if sys.argv[1:2] == ["run"]:
    print("0123456789ab" * 5)
sys.exit(1 if sys.argv[1:2] == ["inspect"] else 0)
"""


def _fakes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (bin_dir / "curl").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("docker", "curl"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    return bin_dir


def run_hub(tmp_path, variables, path=None):
    """``run-hub.sh start`` with only ``variables`` set; its result and the docker calls it made."""
    log = tmp_path / "docker.log"
    env = {
        "PATH": path or f"{_fakes(tmp_path)}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_DOCKER_LOG": str(log),
        **variables,
    }
    result = subprocess.run(
        [shutil.which("bash"), str(RUN_HUB), "start"], env=env, capture_output=True, text=True, timeout=60
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def _run_call(calls):
    runs = [c for c in calls if c["argv"][:1] == ["run"]]
    assert len(runs) == 1, calls
    return runs[0]


def _env_args(argv):
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-e"]


# a distinct valid value for every variable make run passes
VALID = {
    "HUB_NAME": "team-a",
    "EXECUTION_MODE": "local",
    "CLEANUP_INTERVAL_SECONDS": "1800",
    "CLEANUP_MIN_AGE_SECONDS": "300",
    "CLEANUP_VOLUME_GRACE_SECONDS": "86400",
    "IS_CLEANUP_SERVICE_ENABLED": "false",
    "DYNAMIC_WHITELIST_ENABLED": "on",
    "MLHUB_BASE_URL": "/ml/",
    "SSL_ENABLED": "true",
    "START_NGINX": "yes",
    "START_SSH": "off",
    "START_JHUB": "on",
    "START_CHP": "0",
    "ADDITIONAL_ARGS": "--log-level debug",
    "MLHUB_PUBLIC_HOSTNAMES": "hub.example.org,ml.example.org",
    "MLHUB_SSH_PUBLIC_HOST": "hub.example.org:2222",
    "MLHUB_SSH_PUBLIC_PORT": "2222",
    "MLHUB_CERT_RELOAD_SECONDS": "120",
    "MLHUB_WORKSPACE_IMAGE": "mlhub-workspace:test",
    "MLHUB_WORKSPACE_IMAGES": "minimal=mlhub-workspace:test,gpu=mlhub-workspace-gpu:test",
    "MLHUB_IDLE_TIMEOUT_SECONDS": "7200",
    "MLHUB_CLEANUP_PORT": "8003",
    "MLHUB_EGRESS_FIREWALL": "false",
    "MLHUB_EGRESS_ALLOW_PRIVATE": "true",
    "GPU_IDS": "0,GPU-8f2c61c3-5d6a-4c2e-9b1e-0a1b2c3d4e5f",
    "MLHUB_ADMIN_PASSWORD": "correct-horse-battery-42",
}


def test_make_run_passes_every_passthrough_variable(tmp_path):
    assert set(VALID) == set(settings.passthrough_names()), "give the new variable a value here"
    settings.load_settings(VALID)  # valid values: the hub would start with them
    user_config = tmp_path / "user_config.py"
    user_config.write_text("c = get_config()  # noqa\n")
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    users_dir = tmp_path / "users"
    users_dir.mkdir()
    host_only = {v.name: f"/host/{v.name.lower()}" for v in settings.VARIABLES if not v.passed} | {
        "MLHUB_PUBLIC_PORT": "18080",
        "MLHUB_USER_CONFIG": str(user_config),
        "MLHUB_SSL_DIR": str(ssl_dir),
        "MLHUB_USERS_DIR": str(users_dir),
        "MLHUB_HUB_IMAGE": "mlhub:under-test",
    }
    result, calls = run_hub(tmp_path, VALID | host_only)
    assert result.returncode == 0, result.stderr
    assert "ML Hub is up on https://localhost:18080" in result.stdout
    run = _run_call(calls)
    argv, env_args = run["argv"], _env_args(run["argv"])
    for name, value in VALID.items():
        if name == "MLHUB_ADMIN_PASSWORD":
            assert name in env_args
        else:
            assert f"{name}={value}" in env_args, name
    # the password by name only: docker gets it from its environment, never on its command line
    assert run["password"] == VALID["MLHUB_ADMIN_PASSWORD"]
    assert not any(VALID["MLHUB_ADMIN_PASSWORD"] in arg for c in calls for arg in c["argv"])
    # nothing else: no host path, no setting the hub image makes itself
    assert sorted(a.split("=", 1)[0] for a in env_args) == sorted(VALID)
    assert not any(a.split("=", 1)[0] in host_only for a in env_args)
    # host-only variables become the image, the published port and mounts
    assert argv[-1] == "mlhub:under-test"
    assert "18080:8080" in argv
    assert f"{user_config}:/resources/jupyterhub_user_config.py:ro" in argv
    assert f"{ssl_dir}:/resources/ssl:ro" in argv
    assert f"{users_dir}:/resources/users:ro" in argv
    assert "team-a-data:/data" in argv


def test_gpu_ids_reach_the_hub_container(tmp_path):
    result, calls = run_hub(tmp_path, {"GPU_IDS": "0,1"})
    assert result.returncode == 0, result.stderr
    assert "GPU_IDS=0,1" in _env_args(_run_call(calls)["argv"])


def test_unset_variables_are_not_passed(tmp_path):
    result, calls = run_hub(tmp_path, {"MLHUB_DATA_DIR": "/root/.mlhub/data"})
    assert result.returncode == 0, result.stderr
    assert _env_args(_run_call(calls)["argv"]) == []


def test_make_run_without_python3_says_so(tmp_path):
    # a PATH with the fakes and the few tools run-hub.sh needs before it runs docker, but no python3
    bin_dir = _fakes(tmp_path)
    for tool in ("sed", "dirname", "seq", "head", "realpath", "sleep", "cat", "tr"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    result, calls = run_hub(tmp_path, {"GPU_IDS": "0,1"}, path=str(bin_dir))
    assert result.returncode != 0
    assert "python3" in result.stderr
    assert not [c for c in calls if c["argv"][:1] == ["run"]]


# --- the README's table ------------------------------------------------------------------------

README_MARKER = "<!-- generated: python3 -m mlhubspawner.settings table -->"


def test_generated_table_has_one_row_per_variable():
    rows = settings.markdown_table().splitlines()[2:]
    assert len(rows) == len(settings.VARIABLES)
    for row, v in zip(rows, settings.VARIABLES, strict=True):
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        assert len(cells) == 4, row
        assert cells[0].strip() == f"`{v.name}`"
        assert cells[3].strip().startswith("yes" if v.passed else "no: ")


def test_readme_table_matches_the_registry():
    section = (ROOT / "README.md").read_text().split("### Environment variables", 1)[1].split("\n#", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table, "README.md: no table under ### Environment variables"
    if README_MARKER in section:
        assert "\n".join(table) + "\n" == settings.markdown_table(), (
            "regenerate: python3 -m mlhubspawner.settings table"
        )
    else:  # a hand-written table: at least every variable it names is a real one
        named = {n for row in table[2:] for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
        assert named and named <= set(REGISTRY), named - set(REGISTRY)
