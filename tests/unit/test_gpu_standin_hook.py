"""The GPU stand-in hook (resources/gpu-standin) against fake OCI bundles, and the nvidia-smi it injects.

The engine tests and the hub's GPU tests rely on it behaving like NVIDIA's hook: the ids Docker puts in
NVIDIA_VISIBLE_DEVICES select GPUs of the inventory, unknown ids stop the container, and a container with
the utility capability lists exactly its GPUs, numbered from 0 in host order, in nvidia-smi.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

STANDIN = Path(__file__).resolve().parents[2] / "resources" / "gpu-standin"
HOOK_NAME = "nvidia-container-runtime-hook"


def read_inventory():
    rows = [line.split(", ") for line in (STANDIN / "inventory.csv").read_text().splitlines() if line]
    return [(int(i), uuid, name, int(mib)) for i, uuid, name, mib in rows]


INVENTORY = read_inventory()
UUID = {index: uuid for index, uuid, _, _ in INVENTORY}


@pytest.fixture
def hook(tmp_path):
    """A copy of the hook and its inventory (so that calls.log is written under tmp_path)."""
    directory = tmp_path / "standin"
    directory.mkdir()
    for name in (HOOK_NAME, "inventory.csv"):
        shutil.copy2(STANDIN / name, directory / name)
    return directory / HOOK_NAME


def make_bundle(tmp_path, env, root="rootfs", name="bundle"):
    bundle = tmp_path / name
    bundle.mkdir()
    rootfs = Path(root) if os.path.isabs(root) else bundle / root
    rootfs.mkdir(parents=True, exist_ok=True)
    config = {"ociVersion": "1.0.2", "root": {"path": str(root)}, "process": {"args": ["sh"], "env": env}}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle, rootfs


def run_hook(hook, stdin, *args, extra_env=None):
    """Run the hook as the engine does (state on stdin); stdout and stderr decoded."""
    env = {"PATH": os.environ["PATH"], **(extra_env or {})}
    data = stdin if isinstance(stdin, bytes) else stdin.encode()
    result = subprocess.run([str(hook), *args], input=data, capture_output=True, timeout=30, env=env)
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


def prestart(hook, bundle, **kwargs):
    return run_hook(
        hook,
        json.dumps({"ociVersion": "1.0.2", "id": "c1", "pid": 4242, "bundle": str(bundle)}),
        "prestart",
        **kwargs,
    )


def smi(rootfs, *args):
    """Run the injected nvidia-smi with /bin/sh, as a container would: (exit status, stdout, stderr)."""
    result = subprocess.run(
        ["/bin/sh", str(rootfs / "usr/bin/nvidia-smi"), *args], capture_output=True, text=True, timeout=30
    )
    return result.returncode, result.stdout, result.stderr


def injected(rootfs):
    return (rootfs / "usr/bin/nvidia-smi").exists()


def started_with(hook, tmp_path, *env, **kwargs):
    bundle, rootfs = make_bundle(tmp_path, ["PATH=/usr/bin:/bin", *env], **kwargs)
    result = prestart(hook, bundle)
    assert result.returncode == 0, result.stderr
    return rootfs


def test_the_inventory_is_four_fixed_gpus_of_two_models():
    assert [i for i, *_ in INVENTORY] == [0, 1, 2, 3]
    assert len(set(UUID.values())) == 4
    assert {name for _, _, name, _ in INVENTORY} == {"NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB"}
    assert os.access(STANDIN / HOOK_NAME, os.X_OK)
    assert (STANDIN / HOOK_NAME).read_text().startswith("#!/usr/bin/env python3\n")


def test_visible_gpus_are_renumbered_from_0_in_host_order(hook, tmp_path):
    rootfs = started_with(hook, tmp_path, f"NVIDIA_VISIBLE_DEVICES={UUID[3]},1")
    smi_path = rootfs / "usr/bin/nvidia-smi"
    assert os.access(smi_path, os.X_OK) and smi_path.read_text().startswith("#!/bin/sh\n")
    assert smi(rootfs, "-L") == (
        0,
        f"GPU 0: NVIDIA A100-SXM4-40GB (UUID: {UUID[1]})\nGPU 1: NVIDIA A100-SXM4-80GB (UUID: {UUID[3]})\n",
        "",
    )
    code, out, _ = smi(rootfs, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits")
    assert code == 0
    assert out.splitlines() == [
        f"0, {UUID[1]}, NVIDIA A100-SXM4-40GB, 40960",
        f"1, {UUID[3]}, NVIDIA A100-SXM4-80GB, 81920",
    ]
    # with a header and units; any field order; the two-argument forms
    code, out, _ = smi(rootfs, "--query-gpu=memory.total,index", "--format=csv")
    assert (code, out) == (0, "memory.total [MiB], index\n40960 MiB, 0\n81920 MiB, 1\n")
    code, out, _ = smi(rootfs, "--query-gpu", "uuid,name", "--format", "csv,noheader")
    assert (code, out) == (0, f"{UUID[1]}, NVIDIA A100-SXM4-40GB\n{UUID[3]}, NVIDIA A100-SXM4-80GB\n")
    code, out, _ = smi(rootfs, "--query-gpu=name,memory.total", "--format=csv,nounits")
    assert (
        out.splitlines()[0] == "name, memory.total [MiB]"
        and out.splitlines()[2] == "NVIDIA A100-SXM4-80GB, 81920"
    )
    # -i picks by the container's index or by UUID
    assert smi(rootfs, "-i", "1", "-L")[1] == f"GPU 1: NVIDIA A100-SXM4-80GB (UUID: {UUID[3]})\n"
    assert smi(rootfs, f"--id={UUID[1]}", "--query-gpu=index", "--format=csv,noheader") == (0, "0\n", "")
    # no arguments: a summary table of the visible GPUs only
    code, out, _ = smi(rootfs)
    assert code == 0 and UUID[1] in out and UUID[3] in out and UUID[0] not in out and "81920MiB" in out
    log = (hook.parent / "calls.log").read_text()
    assert f"prestart NVIDIA_VISIBLE_DEVICES={UUID[3]},1" in log


def test_all_shows_every_gpu_with_its_host_index(hook, tmp_path):
    rootfs = started_with(hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all")
    code, out, _ = smi(rootfs, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits")
    assert code == 0
    assert out.splitlines() == [f"{i}, {uuid}, {name}, {mib}" for i, uuid, name, mib in INVENTORY]


def test_nvidia_smi_refuses_what_it_does_not_know(hook, tmp_path):
    rootfs = started_with(hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=0,2")
    for args in (
        ["--query-gpu=index,temperature.gpu", "--format=csv"],
        ["--bogus"],
        ["--query-gpu=index"],  # no --format
        ["--query-gpu=index", "--format=json"],
        ["-L", "--query-gpu=index", "--format=csv"],
        ["-i"],
    ):
        code, out, err = smi(rootfs, *args)
        assert code != 0 and out == "" and err, args
    assert (
        'Field "temperature.gpu" is not a valid field'
        in smi(rootfs, "--query-gpu=temperature.gpu", "--format=csv")[2]
    )
    code, out, err = smi(rootfs, "-i", "2", "-L")  # host index 2 is GPU 1 in here; there is no GPU 2
    assert code != 0 and out == "" and "No devices were found" in err


@pytest.mark.parametrize(
    "env", [[], ["NVIDIA_VISIBLE_DEVICES="], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES=none"]]
)
def test_no_visible_devices_inject_nothing(hook, tmp_path, env):
    rootfs = started_with(hook, tmp_path, *env)
    assert not injected(rootfs)


def test_the_last_occurrence_of_the_variable_wins(hook, tmp_path):
    # Docker appends its own value after the image's and the container's
    rootfs = started_with(
        hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=2", name="b1"
    )
    assert smi(rootfs, "-L")[1] == f"GPU 0: NVIDIA A100-SXM4-80GB (UUID: {UUID[2]})\n"
    rootfs = started_with(
        hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=2", "NVIDIA_VISIBLE_DEVICES=void", name="b2"
    )
    assert not injected(rootfs)


@pytest.mark.parametrize("devices", ["9", "0,9", "GPU-00000000-0000-0000-0000-000000000000", UUID[0].upper()])
def test_an_unknown_device_stops_the_container(hook, tmp_path, devices):
    bundle, rootfs = make_bundle(tmp_path, [f"NVIDIA_VISIBLE_DEVICES={devices}"])
    result = prestart(hook, bundle)
    unknown = devices.split(",")[-1]
    assert result.returncode == 1
    assert result.stderr.strip() == f"nvidia-container-cli: device error: {unknown}: unknown device"
    assert not injected(rootfs)


@pytest.mark.parametrize(
    "capabilities, expected",
    [("compute", False), ("compute,video", False), ("utility", True), ("", True), ("all", True)],
)
def test_nvidia_smi_needs_the_utility_capability(hook, tmp_path, capabilities, expected):
    rootfs = started_with(
        hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=1", f"NVIDIA_DRIVER_CAPABILITIES={capabilities}"
    )
    assert injected(rootfs) is expected


def test_root_path_relative_to_the_bundle_or_absolute(hook, tmp_path):
    rootfs = started_with(hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=0", root="rootfs", name="relative")
    assert rootfs == tmp_path / "relative" / "rootfs" and injected(rootfs)
    elsewhere = tmp_path / "overlay" / "merged"
    rootfs = started_with(hook, tmp_path, "NVIDIA_VISIBLE_DEVICES=0", root=str(elsewhere), name="absolute")
    assert rootfs == elsewhere and injected(rootfs)
    assert not (tmp_path / "absolute" / "usr").exists()


def test_an_image_symlink_cannot_send_the_write_outside_the_container(hook, tmp_path):
    """The hook runs as root on the host: the image's /usr/bin -> /<host dir> must resolve inside the rootfs."""
    outside = tmp_path / "host-dir"
    outside.mkdir()
    bundle, rootfs = make_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"])
    (rootfs / "usr").mkdir()
    (rootfs / "usr" / "bin").symlink_to(outside)  # absolute: means <rootfs><outside> in the container
    assert prestart(hook, bundle).returncode == 0
    assert list(outside.iterdir()) == []
    assert (rootfs / str(outside).lstrip("/") / "nvidia-smi").is_file()
    # an existing nvidia-smi symlink pointing outside is replaced, not written through
    bundle, rootfs = make_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"], name="bundle2")
    victim = outside / "victim"
    victim.write_text("host file\n")
    (rootfs / "usr" / "bin").mkdir(parents=True)
    (rootfs / "usr" / "bin" / "nvidia-smi").symlink_to(victim)
    assert prestart(hook, bundle).returncode == 0
    assert victim.read_text() == "host file\n"
    assert smi(rootfs, "-L")[1] == f"GPU 0: NVIDIA A100-SXM4-40GB (UUID: {UUID[0]})\n"


@pytest.mark.parametrize(
    "state",
    ["", "{", "[]", '{"pid": 1}', '{"bundle": 42}', '{"bundle": "/nonexistent/bundle"}', b"\xff\xfe"],
)
def test_odd_input_is_an_error_not_a_crash(hook, state):
    result = run_hook(hook, state, "prestart")
    assert result.returncode == 1 and "stand-in" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "config",
    [
        "not json",
        "[]",
        '{"root": {}}',
        '{"root": {"path": "missing"}}',
        '{"root": {"path": "rootfs"}, "process": {"env": "x"}}',
    ],
)
def test_a_bad_bundle_is_an_error_not_a_crash(hook, tmp_path, config):
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(config)
    result = prestart(hook, bundle)
    assert result.returncode == 1 and "stand-in" in result.stderr and "Traceback" not in result.stderr


def test_other_hooks_only_record_the_call(hook, tmp_path):
    for stage in ("poststart", "poststop"):
        result = run_hook(hook, "{}", stage)
        assert result.returncode == 0 and result.stderr == ""
    lines = (hook.parent / "calls.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["poststart", "poststop"]
    assert all(line.split(" ", 1)[0].isdigit() for line in lines)


def test_the_inventory_path_may_be_overridden(hook, tmp_path):
    inventory = tmp_path / "two.csv"
    inventory.write_text(f"0, {UUID[3]}, NVIDIA H100 80GB HBM3, 81559\n5, {UUID[0]}, Tesla T4, 15360\n")
    bundle, rootfs = make_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=5"])
    result = prestart(hook, bundle, extra_env={"MLHUB_GPU_STANDIN_INVENTORY": str(inventory)})
    assert result.returncode == 0, result.stderr
    assert smi(rootfs, "-L")[1] == f"GPU 0: Tesla T4 (UUID: {UUID[0]})\n"
    inventory.write_text("0, not-a-uuid, Bad, 1\n")
    result = prestart(hook, bundle, extra_env={"MLHUB_GPU_STANDIN_INVENTORY": str(inventory)})
    assert result.returncode == 1 and "inventory" in result.stderr
