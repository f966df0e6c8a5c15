"""The workspace's thread count from its cgroup (resources/workspace/mlhub_threads.py) on fake cgroup trees."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "resources" / "workspace" / "mlhub_threads.py"
_spec = importlib.util.spec_from_file_location("mlhub_threads", SCRIPT)
threads = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(threads)

V1_DOCKER = "12:cpu,cpuacct:/docker/abc\n11:cpuset:/docker/abc\n1:name=systemd:/docker/abc\n"


def tree(root, files):
    """Write ``{relative path: content}`` under ``root``; returns root."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def v2(root, cpu_max="max 100000", cpuset="0-7", sub=""):
    prefix = f"{sub}/" if sub else ""
    return tree(
        root,
        {
            "cgroup.controllers": "cpuset cpu io memory pids\n",
            f"{prefix}cpu.max": f"{cpu_max}\n",
            f"{prefix}cpuset.cpus.effective": f"{cpuset}\n",
        },
    )


def v1(root, quota="-1", period="100000", cpuset="0-7"):
    """A v1 tree as Docker shows it: the container's own cgroups at the controllers' mount points."""
    return tree(
        root,
        {
            "cpu,cpuacct/cpu.cfs_quota_us": f"{quota}\n",
            "cpu,cpuacct/cpu.cfs_period_us": f"{period}\n",
            "cpuset/cpuset.cpus": f"{cpuset}\n",
        },
    )


def count(root, proc="0::/\n", available=8):
    return threads.thread_count(*threads.cgroup_cpus(root, proc), available)


@pytest.mark.parametrize(
    "cpu_max,expected",
    [
        ("150000 100000", 1),
        ("200000 100000", 2),
        ("50000 100000", 1),
        ("max 100000", 8),
        ("400000 100000", 4),
    ],
)
def test_cgroup_v2_quota_rounds_down_to_at_least_one(tmp_path, cpu_max, expected):
    assert count(v2(tmp_path, cpu_max=cpu_max)) == expected


@pytest.mark.parametrize(
    "quota,period,expected",
    [("150000", "100000", 1), ("200000", "100000", 2), ("50000", "100000", 1), ("-1", "100000", 8)],
)
def test_cgroup_v1_quota_rounds_down_to_at_least_one(tmp_path, quota, period, expected):
    assert count(v1(tmp_path, quota, period), proc=V1_DOCKER) == expected


def test_v1_quota_with_another_period(tmp_path):
    assert count(v1(tmp_path, "75000", "25000"), proc=V1_DOCKER) == 3


def test_no_quota_is_the_cpus_available(tmp_path):
    assert count(v2(tmp_path), available=2) == 2
    assert count(v1(tmp_path / "v1"), proc=V1_DOCKER, available=3) == 3


def test_cpuset_and_affinity_cap_the_quota(tmp_path):
    assert count(v2(tmp_path / "a", cpu_max="800000 100000", cpuset="2-3")) == 2
    assert count(v1(tmp_path / "b", "800000", "100000", cpuset="0,2,4"), proc=V1_DOCKER) == 3
    assert count(v2(tmp_path / "c", cpu_max="800000 100000"), available=1) == 1


def test_v2_without_cgroup_namespace_reads_the_own_cgroup_and_its_parents(tmp_path):
    root = v2(tmp_path, sub="kubepods/pod1/ctr", cpu_max="max 100000")
    tree(root, {"kubepods/pod1/cpu.max": "250000 100000\n"})  # the pod's limit, above the container
    assert count(root, proc="0::/kubepods/pod1/ctr\n") == 2


def test_no_cgroup_files_at_all(tmp_path):
    assert count(tmp_path, proc="", available=4) == 4
    assert threads.thread_count() == 1


@pytest.mark.parametrize(
    "text,expected", [("0-3,6", 5), ("0", 1), ("", None), ("3-1", None), ("a-b", None), ("0-1,\n", 2)]
)
def test_parse_cpuset(text, expected):
    assert threads.parse_cpuset(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("max 100000", None), ("150000 100000", 1.5), ("", None), ("x y", None), ("0 100000", None)],
)
def test_parse_cpu_max(text, expected):
    assert threads.parse_cpu_max(text) == expected


def test_every_thread_variable_is_set_from_the_count():
    env = threads.thread_env({}, 1)
    assert env["MAX_NUM_THREADS"] == "1"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        assert env[name] == "1"
    assert set(threads.THREAD_VARS) <= set(env)


def test_explicit_values_win_and_the_hubs_max_is_capped_at_the_quota():
    given = {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "", "MAX_NUM_THREADS": "2"}
    env = threads.thread_env(given, 1)  # the hub rounded 1.5 CPUs to 2; the quota allows 1
    assert "OMP_NUM_THREADS" not in env  # the user's own value stays
    assert env["MAX_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
    lower = threads.thread_env({"MAX_NUM_THREADS": "2"}, 8)  # a lower MAX_NUM_THREADS is followed
    assert lower["MAX_NUM_THREADS"] == lower["OMP_NUM_THREADS"] == "2"
    for value in ("auto", "0", "-3", "many"):
        assert threads.thread_env({"MAX_NUM_THREADS": value}, 3)["MAX_NUM_THREADS"] == "3"


def test_the_script_prints_only_assignments():
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"OMP_NUM_THREADS": "7"},
        check=True,
    )
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert "OMP_NUM_THREADS" not in lines
    assert int(lines["MAX_NUM_THREADS"]) >= 1 and lines["MKL_NUM_THREADS"] == lines["MAX_NUM_THREADS"]
    assert result.stderr == ""
