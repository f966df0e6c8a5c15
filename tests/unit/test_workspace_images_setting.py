"""MLHUB_WORKSPACE_IMAGES: the images (workspace flavors) the options form offers after the default."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlhubspawner import __version__
from mlhubspawner.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def images(value):
    return load_settings({"MLHUB_WORKSPACE_IMAGES": value}).workspace_images


def test_named_and_plain_entries():
    assert images(" minimal=mlhub-workspace:0.1.0, ml = mlhub-workspace-ml:0.1.0 ,, team/lab:2") == (
        ("minimal", "mlhub-workspace:0.1.0"),
        ("ml", "mlhub-workspace-ml:0.1.0"),
        ("team/lab:2", "team/lab:2"),
    )
    assert (
        images("GPU (CUDA 13)=registry.example.org:5000/ml/gpu@sha256:" + "a" * 64)[0][0] == "GPU (CUDA 13)"
    )


def test_unset_or_empty_offers_only_the_default():
    assert load_settings({}).workspace_images == ()
    assert images(" , ") == ()


@pytest.mark.parametrize(
    "value, named",
    [
        ("ml=", "''"),
        ("ml=team lab:1", "'team lab:1'"),
        ("ml=-rm:1", "'-rm:1'"),
        ("<b>x</b>=lab:1", "'<b>x</b>'"),
        ("a=b=lab:1", "'a=b'"),
    ],
)
def test_bad_entries_stop_the_hub_naming_them(value, named):
    with pytest.raises(SettingsError, match="MLHUB_WORKSPACE_IMAGES") as e:
        images(value)
    assert named in str(e.value)


# --- make run (run-hub.sh start) offers the flavors built on the engine: a fake docker knows some images ----------

FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:1] == ["run"]:
    print("0123456789ab" * 5)
if args[:3] == ["inspect", "--type", "image"]:
    sys.exit(0 if args[3] in os.environ["FAKE_IMAGES"].split(",") else 1)
sys.exit(1 if args[:1] == ["inspect"] else 0)
"""


def make_run(tmp_path, built, **variables):
    """``run-hub.sh start`` with a fake engine holding the images ``built``; the hub container's -e values."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (bin_dir / "curl").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("docker", "curl"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    log = tmp_path / "docker.log"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_DOCKER_LOG": str(log),
        "FAKE_IMAGES": ",".join(built),
        **variables,
    }
    script = REPO / "resources/scripts/run-hub.sh"
    result = subprocess.run(
        ["bash", str(script), "start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('["run"')]
    assert len(runs) == 1
    argv = runs[0]
    return dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv[:-1]) if arg == "-e")


MINIMAL, ML, GPU = (f"mlhub-workspace{suffix}:{__version__}" for suffix in ("", "-ml", "-gpu"))


def test_make_run_offers_the_built_flavors_ml_first(tmp_path):
    env = make_run(tmp_path, [MINIMAL, ML])
    assert env["MLHUB_WORKSPACE_IMAGE"] == ML
    assert env["MLHUB_WORKSPACE_IMAGES"] == f"ml={ML},minimal={MINIMAL}"
    assert load_settings(env).workspace_images == (("ml", ML), ("minimal", MINIMAL))


def test_make_run_offers_gpu_once_built(tmp_path):
    env = make_run(tmp_path, [MINIMAL, ML, GPU])
    assert env["MLHUB_WORKSPACE_IMAGES"] == f"ml={ML},minimal={MINIMAL},gpu={GPU}"


def test_make_run_keeps_the_operators_choice(tmp_path):
    env = make_run(tmp_path, [MINIMAL, ML], MLHUB_WORKSPACE_IMAGE="team/lab:3", MLHUB_WORKSPACE_IMAGES="")
    assert env["MLHUB_WORKSPACE_IMAGE"] == "team/lab:3"
    assert env["MLHUB_WORKSPACE_IMAGES"] == ""  # set (even empty): only the default is offered


def test_make_run_without_flavors_sets_nothing(tmp_path):
    assert make_run(tmp_path, []) == {}
