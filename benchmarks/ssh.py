"""SSH latency benchmark: `ssh <workspace> true` through the hub's public port vs straight to the workspace.

    .venv/bin/python benchmarks/ssh.py [--runs 20] [--warmup 2] [--no-tls]

One run, one machine: a hub container with TLS off (sslh splits SSH from HTTP on the public port) and one
with TLS on (nginx ssl_preread -> sslh -> sshd), each with one user, one registered key and one running
workspace. Every sample is a new ssh process and a full new connection (no ControlMaster, both hops for the
jump). Paths are measured in interleaved rounds after warm-up runs. Results: a table on stdout,
``benchmarks/results/ssh-<UTC>.json`` and ``ssh-latest.json``. See ``benchmarks/README.md``.
"""

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import docker
import psutil
import urllib3

from mlhubspawner import __version__, naming

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))
import ssh_signing  # noqa: E402
import support  # noqa: E402 (tests/ is not a package; shared with the tests)

USER = "bench"
SERVER = "s"
SSH_TIMEOUT = 60  # seconds, one ssh run
IDLE_SECONDS = 3  # before the measured runs: the machine's background load
KEYS_COMMAND_RUNS = 20  # in-container timings of the AuthorizedKeysCommands
FRONT_KEYS_COMMAND = "/usr/local/libexec/mlhub/front-authorized-keys"
WORKSPACE_KEYS_COMMAND = "/usr/local/bin/mlhub-authorized-keys"
# what the two commands import (resources/hub/front-authorized-keys,
# resources/workspace/mlhub-authorized-keys)
FRONT_IMPORTS = "import json, socket, sys, urllib.parse"
WORKSPACE_IMPORTS = "import os, signal, socket, stat, sys, time, urllib.parse"
FRONT_LOOKUP = re.compile(r" (\d{3}) GET /hub/api/mlhub/ssh/authorized-keys\S* .*?([0-9.]+)ms")
WORKSPACE_FETCH = re.compile(
    r" (\d{3}) GET /hub/api/mlhub/users/[^/ ]+/ssh-keys\?format=authorized_keys.*?([0-9.]+)ms"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")

PATHS = {
    "front": "ssh -F cfg <alias> true: ProxyJump through the public port of the TLS-off hub (sslh -> sshd)",
    "front-tls": "the same through the TLS-on hub (nginx ssl_preread -> sslh -> sshd)",
    "direct": "ssh jovyan@<workspace ip> true: the TLS-off hub's workspace sshd, port 22, no front",
    "hop": "diagnostic: only the front hop of the TLS-off hub (tunnel@127.0.0.1, ends in nologin: exit 1)",
    "hop-tls": "diagnostic: only the front hop of the TLS-on hub",
    "direct-x25519": "diagnostic: direct, with KexAlgorithms curve25519-sha256 (default: sntrup761x25519)",
}


# ---- small helpers ----------------------------------------------------------------------------


def log(message):
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def stats(values, digits=4):
    """p50, p95, min, max and mean of ``values`` (None when empty), rounded."""

    def r(value):
        return None if value is None else round(value, digits)

    return {
        "p50": r(support.percentile(values, 50)),
        "p95": r(support.percentile(values, 95)),
        "min": r(min(values, default=None)),
        "max": r(max(values, default=None)),
        "mean": r(sum(values) / len(values) if values else None),
    }


def command_output(argv):
    """stdout + stderr of a short local command, stripped ('' when it cannot run)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def exec_output(container, command, user="root"):
    result = container.exec_run(command, user=user)
    return result.exit_code, result.output.decode(errors="replace").strip()


def client_options(workdir, key):
    """The ``Host *`` block every ssh config of the benchmark ends with: no prompts, no reuse."""
    return (
        "\nHost *\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        "    BatchMode yes\n"
        "    StrictHostKeyChecking no\n"
        f"    UserKnownHostsFile {workdir / 'known_hosts'}\n"
        "    ControlMaster no\n"
        "    ControlPath none\n"
        "    ConnectTimeout 10\n"
        "    LogLevel ERROR\n"
    )


# ---- setup --------------------------------------------------------------------------------------


def new_key(workdir):
    path = workdir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ssh-bench", "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path, path.with_suffix(".pub").read_text().strip()


def api_ok(response, *codes):
    if response.status_code not in codes:
        raise RuntimeError(
            f"{response.request.method} {response.url}: {response.status_code} {response.text[:300]}"
        )
    return response


def prepare_hub(hub, client, workdir, key, public_line):
    """User + key + running workspace on ``hub``; returns its ssh configs and the workspace container."""
    api_ok(hub.api("POST", f"users/{USER}", json={}), 201, 409)
    # as users do: the hub's challenge signed with ssh-keygen -Y sign (proof of possession)
    api_ok(ssh_signing.register_ssh_key(hub, USER, key, public_line=public_line), 201)
    api_ok(hub.spawn(USER, SERVER, timeout=180), 201, 202)
    model = api_ok(hub.api("GET", f"mlhub/users/{USER}/servers/{SERVER}/ssh-config"), 200).json()
    options = client_options(workdir, key)
    front = workdir / f"{hub.hub_name}-front.cfg"
    front.write_text(model["config"] + options)
    jump = re.search(r"ProxyJump\s+(\S+)@(\S+):(\d+)", model["config"])
    if jump is None:
        raise RuntimeError(f"no ProxyJump user@host:port in the hub's ssh config:\n{model['config']}")
    hop = workdir / f"{hub.hub_name}-hop.cfg"
    hop.write_text(f"Host hop\n    HostName {jump[2]}\n    Port {jump[3]}\n    User {jump[1]}\n" + options)
    container = client.containers.get(naming.workspace_name(hub.hub_name, USER, SERVER))
    networks = container.attrs["NetworkSettings"]["Networks"]
    ip = next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), None)
    if ip is None:
        raise RuntimeError(f"workspace {container.name} has no IP address")
    direct = workdir / f"{hub.hub_name}-direct.cfg"
    direct.write_text(f"Host direct\n    HostName {ip}\n    Port 22\n    User jovyan\n" + options)
    return {
        "front": (front, model["host_alias"]),
        "hop": (hop, "hop"),
        "direct": (direct, "direct"),
        "model": model,
        "workspace": container,
        "workspace_ip": ip,
    }


# ---- measuring ---------------------------------------------------------------------------------


def ssh_once(config, host, expect, options=()):
    """One ``ssh -F config host true``: seconds, ok (exit code == expect) and the wall-clock window."""
    no_reuse = ("-o", "ControlMaster=no", "-o", "ControlPath=none")  # also in the config, for the jump
    argv = ["ssh", "-F", str(config), *no_reuse, *options, host, "true"]
    epoch = time.time()
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SSH_TIMEOUT)
        code, error = done.returncode, done.stderr.strip()
    except subprocess.TimeoutExpired:
        code, error = None, f"no answer within {SSH_TIMEOUT}s"
    seconds = time.perf_counter() - started
    sample = {
        "seconds": round(seconds, 4),
        "ok": code == expect,
        "exit": code,
        "start": epoch,
        "end": time.time(),
    }
    if code != expect:
        sample["error"] = error[-300:]
    return sample


def measure(targets, runs, warmup):
    """Warm-up runs, then ``runs`` interleaved rounds (the order rotates each round); samples per path."""
    names = list(targets)
    samples = {name: [] for name in names}
    warm = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            warm[name].append(ssh_once(*targets[name])["seconds"])
    if warmup:
        log(f"warm-up done: {', '.join(f'{n} {warm[n][-1]:.3f}s' for n in names)}")
    cpu_before = psutil.cpu_times()
    time.sleep(IDLE_SECONDS)  # nothing of ours runs: what the rest of the machine is doing
    background = busy_cores(cpu_before, psutil.cpu_times())
    cpu_before = psutil.cpu_times()
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            sample = ssh_once(*targets[name])
            samples[name].append(sample)
            if not sample["ok"]:
                log(f"{name} run {i + 1} failed (exit {sample['exit']}): {sample.get('error', '')}")
        if (i + 1) % 5 == 0 or i + 1 == runs:
            log(f"round {i + 1}/{runs}: " + ", ".join(f"{n} {samples[n][-1]['seconds']:.3f}s" for n in names))
    return (
        samples,
        warm,
        {"background": background, "during_runs": busy_cores(cpu_before, psutil.cpu_times())},
    )


def busy_cores(before, after):
    """Average number of busy CPU cores between two ``psutil.cpu_times()`` (everything but idle/iowait)."""
    total = sum(after) - sum(before)
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    return round((total - idle) / total * psutil.cpu_count(), 2) if total > 0 else None


def hub_request_times(hub):
    """(docker timestamp, kind, status, ms) of the key requests in the hub container's log."""
    text = ANSI.sub("", hub.container.logs(timestamps=True).decode(errors="replace"))
    found = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        for kind, pattern in (("front_lookup", FRONT_LOOKUP), ("workspace_fetch", WORKSPACE_FETCH)):
            match = pattern.search(rest)
            if match:
                found.append((docker_time(stamp), kind, int(match[1]), float(match[2])))
    return found


def docker_time(stamp):
    """Epoch seconds of a Docker log timestamp (RFC 3339, up to nanoseconds, UTC)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


def attribute_requests(samples, requests_by_hub, hub_of):
    """Give each sample the key requests its hub logged during it (runs never overlap)."""
    for name, path_samples in samples.items():
        found = requests_by_hub[hub_of[name]]
        for sample in path_samples:
            mine = [r for r in found if sample["start"] <= r[0] <= sample["end"] + 0.05]
            for kind in ("front_lookup", "workspace_fetch"):
                sample[kind] = [r[3] for r in mine if r[1] == kind]


def keys_command_times(container, argv, user):
    """``KEYS_COMMAND_RUNS`` runs of a command inside ``container`` as sshd runs it: their seconds."""
    script = (
        "import json,subprocess,sys,time\n"
        "t=[]\n"
        f"for _ in range({KEYS_COMMAND_RUNS}):\n"
        " s=time.perf_counter()\n"
        " r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,env={})\n"
        " t.append((time.perf_counter()-s,r.returncode))\n"
        "print(json.dumps(t))\n"
    )
    code, output = exec_output(container, ["python3", "-c", script, *argv], user=user)
    if code != 0:
        return {"error": output[-300:]}
    runs = json.loads(output.splitlines()[-1])
    times = [t for t, rc in runs if rc == 0]
    return {"n": len(runs), "ok": len(times), **stats(times)}


# ---- report ---------------------------------------------------------------------------------


def summarize(name, path_samples, hub_name):
    times = [s["seconds"] for s in path_samples if s["ok"]]
    lookups = [len(s.get("front_lookup", [])) for s in path_samples if s["ok"]]
    fetches = [len(s.get("workspace_fetch", [])) for s in path_samples if s["ok"]]
    lookup_ms = [ms for s in path_samples if s["ok"] for ms in s.get("front_lookup", [])]
    fetch_ms = [ms for s in path_samples if s["ok"] for ms in s.get("workspace_fetch", [])]
    return {
        "description": PATHS[name],
        "hub": hub_name,
        "n": len(path_samples),
        "ok": len(times),
        "failures": len(path_samples) - len(times),
        **stats(times),
        "hub_requests": {
            "front_lookups_per_run": round(sum(lookups) / len(lookups), 2) if lookups else None,
            "front_lookup_ms": stats(lookup_ms, 2),
            "workspace_fetches_per_run": round(sum(fetches) / len(fetches), 2) if fetches else None,
            "workspace_fetch_ms": stats(fetch_ms, 2),
        },
        "errors": sorted({s["error"] for s in path_samples if not s["ok"]})[:5],
        "samples": [s["seconds"] for s in path_samples],
        "exit_codes": [s["exit"] for s in path_samples],
    }


def overheads(paths):
    """Each front path against ``direct``: p50 ratio and difference."""
    out = {}
    direct = (paths.get("direct") or {}).get("p50")
    for name in ("front", "front-tls", "hop", "hop-tls", "direct-x25519"):
        p50 = (paths.get(name) or {}).get("p50")
        if direct and p50:
            out[name] = {"p50_ratio": round(p50 / direct, 2), "p50_diff_s": round(p50 - direct, 4)}
    return out


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results):
    paths = results.get("paths") or {}
    if not paths:
        return
    over = results.get("overhead") or {}
    header = (
        f"{'path':<13} {'n':>3} {'fail':>4} {'p50 s':>7} {'p95 s':>7} {'min s':>7} {'max s':>7} "
        f"{'x direct':>8} {'+ s':>7} | {'lookups':>7} {'ms':>5} {'fetches':>7} {'ms':>5}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for name, p in paths.items():
        o, h = over.get(name, {}), p["hub_requests"]
        print(
            f"{name:<13} {p['n']:>3} {p['failures']:>4} {fmt(p['p50']):>7} {fmt(p['p95']):>7} "
            f"{fmt(p['min']):>7} {fmt(p['max']):>7} {fmt(o.get('p50_ratio'), 2):>8} "
            f"{fmt(o.get('p50_diff_s')):>7} | {fmt(h['front_lookups_per_run'], 1):>7} "
            f"{fmt(h['front_lookup_ms']['p50'], 1):>5} {fmt(h['workspace_fetches_per_run'], 1):>7} "
            f"{fmt(h['workspace_fetch_ms']['p50'], 1):>5}"
        )
    busy = results.get("busy_cores") or {}
    print(
        f"\nbusy CPU cores of {os.cpu_count()}: {fmt(busy.get('background'), 2)} in {IDLE_SECONDS} s "
        "of idle before "
        f"the runs (other work), {fmt(busy.get('during_runs'), 2)} during the runs (the benchmark included)"
    )
    if results.get("keys_commands"):
        print(
            f"AuthorizedKeysCommands timed inside the containers ({KEYS_COMMAND_RUNS} runs each, "
            "as sshd runs them):"
        )
    for where, figures in (results.get("keys_commands") or {}).items():
        if "error" in figures:
            print(f"{where:<40} ERROR {figures['error']}")
        else:
            print(
                f"{where:<40} {figures['ok']:>2}/{figures['n']} ok, p50 {fmt(figures['p50'])} s, "
                f"min {fmt(figures['min'])} s, max {fmt(figures['max'])} s"
            )


def machine_info(client):
    version = client.version()
    info = {
        "nproc": command_output(["nproc"]),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": version.get("Version"),
        "openssh_client": command_output(["ssh", "-V"]),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    for image in (os.environ.get("MLHUB_HUB_IMAGE", f"mlhub:{__version__}"), workspace_image()):
        info.setdefault("images", {})[image] = client.images.get(image).id
    return info


def workspace_image():
    return os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")


def server_versions(hub, workspace):
    """OpenSSH, sslh and nginx versions inside the containers."""
    out = {}
    for key, container, command in (
        ("front_openssh", hub.container, ["ssh", "-V"]),
        ("front_sslh", hub.container, ["sh", "-c", "sslh -V 2>&1"]),
        ("front_nginx", hub.container, ["nginx", "-v"]),
        ("workspace_openssh", workspace, ["ssh", "-V"]),
    ):
        code, output = exec_output(container, command)
        out[key] = output.splitlines()[0] if output else f"exit {code}"
    return out


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs per path (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded runs per path first (default 2)")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the TLS-on hub (default: yes)",
    )
    parser.add_argument(
        "--diagnostics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the diagnostic paths (front hop alone, direct with another key exchange; default: yes)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the TLS hub's self-signed cert
    client = support.docker_client()
    run_id = secrets.token_hex(3)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix=f"mlhub-sshbench-{run_id}-"))
    results = {
        "timestamp": stamp,
        "complete": False,
        "machine": machine_info(client),
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "tls": args.tls,
            "diagnostics": args.diagnostics,
        },
    }
    hubs = {"plain": support.HubContainer(client, workdir / "plain", hub_name=f"sshb-{run_id}-p")}
    if args.tls:
        hubs["tls"] = support.HubContainer(client, workdir / "tls", hub_name=f"sshb-{run_id}-t", ssl=True)
    log(f"run {run_id}: hubs {', '.join(h.hub_name for h in hubs.values())}, work dir {workdir}")
    try:
        for hub in hubs.values():
            hub.run()  # both containers start at once
        key, public_line = new_key(workdir)
        setups = {}
        for kind, hub in hubs.items():
            hub.start(timeout=120)
            setups[kind] = prepare_hub(hub, client, workdir, key, public_line)
            log(
                f"{kind} hub {hub.hub_name} on 127.0.0.1:{hub.port}, workspace {setups[kind]['workspace_ip']}"
            )
        targets = {"front": (*setups["plain"]["front"], 0)}
        hub_of = {"front": "plain", "direct": "plain", "hop": "plain", "direct-x25519": "plain"}
        if args.tls:
            targets["front-tls"] = (*setups["tls"]["front"], 0)
            hub_of.update({"front-tls": "tls", "hop-tls": "tls"})
        targets["direct"] = (*setups["plain"]["direct"], 0)
        if args.diagnostics:
            # the front hop alone ends in nologin ("This account is currently not available."): exit 1
            targets["hop"] = (*setups["plain"]["hop"], 1)
            if args.tls:
                targets["hop-tls"] = (*setups["tls"]["hop"], 1)
            x25519 = ("-o", "KexAlgorithms=curve25519-sha256")
            targets["direct-x25519"] = (*setups["plain"]["direct"], 0, x25519)
        results["versions"] = server_versions(hubs["plain"], setups["plain"]["workspace"])
        results["ssh_config"] = {kind: s["model"]["config"] for kind, s in setups.items()}

        log(f"measuring {', '.join(targets)}: {args.warmup} warm-up + {args.runs} runs each, interleaved")
        samples, warm, results["busy_cores"] = measure(targets, args.runs, args.warmup)
        requests_by_hub = {kind: hub_request_times(hub) for kind, hub in hubs.items()}
        attribute_requests(samples, requests_by_hub, hub_of)
        results["paths"] = {
            name: summarize(name, path_samples, hubs[hub_of[name]].hub_name)
            for name, path_samples in samples.items()
        }
        results["warmup_samples"] = warm
        results["overhead"] = overheads(results["paths"])

        log("timing the AuthorizedKeysCommands inside the containers")
        front, workspace = hubs["plain"].container, setups["plain"]["workspace"]
        python = ["/usr/bin/python3", "-IS", "-c"]
        results["keys_commands"] = {
            label: keys_command_times(container, argv, user)
            for label, container, argv, user in (
                (
                    "front: keys command",
                    front,
                    [FRONT_KEYS_COMMAND, "tunnel", *public_line.split()[:2]],
                    "mlhub-keys",
                ),
                ("front: python3 -IS, its imports only", front, [*python, FRONT_IMPORTS], "mlhub-keys"),
                ("front: python3 -IS -c pass", front, [*python, "pass"], "mlhub-keys"),
                ("workspace: keys command", workspace, [WORKSPACE_KEYS_COMMAND, "jovyan"], "jovyan"),
                (
                    "workspace: python3 -IS, its imports only",
                    workspace,
                    [*python, WORKSPACE_IMPORTS],
                    "jovyan",
                ),
                ("workspace: python3 -IS -c pass", workspace, [*python, "pass"], "jovyan"),
            )
        }
        results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        results["complete"] = True  # failed ssh runs are counted per path (failures, errors)
    finally:
        log("cleaning up")
        for hub in hubs.values():
            try:
                hub.destroy()
            except docker.errors.APIError as e:
                log(f"could not remove everything of {hub.hub_name}: {e}")
        shutil.rmtree(workdir, ignore_errors=True)
        path = support.write_results(RESULTS, "ssh", results)
        print_table(results)
        latest = " and benchmarks/results/ssh-latest.json" if results["complete"] else " (incomplete run)"
        print(f"\nwrote {path.relative_to(REPO)}{latest}")


if __name__ == "__main__":
    main()
