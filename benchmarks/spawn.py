"""Spawn latency benchmark: raw Docker floor vs ML Hub's spawner vs stock DockerSpawner, in one run.

    .venv/bin/python benchmarks/spawn.py [--quick] [--only floor,mlhub,stock] [--concurrency 10,30]

Each target runs the same phases with the same image: sequential spawns of one user (each
followed by a stop+delete), then N users spawning at once (and all stopping at once). The hubs run
``jupyterhub_config.py`` unchanged; only a generated user config (``MLHUB_USER_CONFIG``) is added.
Results: a table on stdout, ``benchmarks/results/spawn-<UTC>.json`` and ``spawn-latest.json``, plus
each hub's log next to them. See ``benchmarks/README.md`` for what each figure means.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import jupyterhub
import psutil
import requests

from mlhubspawner import __version__

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))
import support  # noqa: E402 (tests/ is not a package; shared with the tests)

NODE_BIN = REPO / ".mlhub" / "node" / "node_modules" / ".bin"
IMAGE = os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")
PORT = 8080  # the workspace image's Jupyter port
BENCH_LABEL = "mlhub.bench"
RUN_LABEL = "mlhub.bench.run"
SERVER = "w"  # every hub spawn is a named server (so DELETE {"remove": true} applies)
HTTP_TIMEOUT, START_TIMEOUT = 120, 300  # the same for both hubs (ours: jupyterhub_config.py)
SPAWN_DEADLINE = START_TIMEOUT + 60  # client-side bound of one spawn
STOP_DEADLINE = 180  # client-side bound of one stop+delete
POLL = 0.05  # floor readiness poll interval
ABORT = threading.Event()  # set on Ctrl-C/SIGTERM: worker threads stop waiting
SCOPES = ["admin:users", "admin:servers", "servers", "read:users", "list:users", "tokens"]


# ---- small helpers ----------------------------------------------------------------------------


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(results, wall):
    """Figures of one batch of spawns or stops: ``results`` are dicts with ok/seconds/error."""
    times = [r["seconds"] for r in results if r["ok"]]
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return {
        "n": len(results),
        "ok": len(times),
        "failures": len(results) - len(times),
        "p50": support.percentile(times, 50),
        "p95": support.percentile(times, 95),
        "max": max(times, default=None),
        "wall": wall,
        "times": [round(r["seconds"], 3) if r["ok"] else None for r in results],
        "errors": errors[:5],
    }


def run_parallel(func, items):
    """Call ``func(item)`` for all items at once (released together); return results and wall time."""
    barrier = threading.Barrier(len(items))
    start = []

    def task(item):
        if barrier.wait() == 0:
            start.append(time.monotonic())
        return func(item)

    pool = ThreadPoolExecutor(len(items))
    try:
        results = list(pool.map(task, items))
    except BaseException:
        ABORT.set()
        raise
    finally:
        pool.shutdown(wait=not ABORT.is_set(), cancel_futures=True)
    return results, time.monotonic() - start[0]


def failure(started, error):
    """A failed spawn/stop result."""
    return {"ok": False, "seconds": time.monotonic() - started, "error": str(error)[:300]}


def http_answers(ip, port, path, timeout=2.0):
    """True if ``ip:port`` answers an HTTP request with a status line (any status).

    A raw socket, not ``requests``: 30 threads polling every 50 ms with ``requests`` take CPU
    from the very containers being timed.
    """
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def bridge_gateway(client):
    """The default bridge's gateway address (docker0), which containers on it reach the host by."""
    attrs = client.networks.get("bridge").attrs
    for config in attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
    iface = attrs.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    for addr in psutil.net_if_addrs().get(iface, []):
        if addr.family == socket.AF_INET:
            return addr.address
    raise RuntimeError("cannot find the default bridge's gateway address")


# ---- hub process sampling ---------------------------------------------------------------------


class Sampler:
    """Samples RSS and CPU time of a process and its children every 0.2 s in a thread."""

    def __init__(self, pid, interval=0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples = []  # (monotonic time, rss bytes, cumulative cpu seconds)
        self._cpu = {}  # pid -> last cpu seconds seen (children that exit keep their last value)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        rss = 0
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                self._cpu[proc.pid] = times.user + times.system
            except psutil.Error:
                continue
        self.samples.append((time.monotonic(), rss, sum(self._cpu.values())))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def window(self, start, end):
        """Peak RSS (MB), mean and peak CPU (% of one core) between two monotonic times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {"rss_peak_mb": None, "cpu_mean_pct": None, "cpu_peak_pct": None}
        steps = [
            100 * (b[2] - a[2]) / (b[0] - a[0])
            for a, b in zip(inside, inside[1:], strict=False)
            if b[0] > a[0]
        ]
        return {
            "rss_peak_mb": round(max(s[1] for s in inside) / 2**20, 1),
            "cpu_mean_pct": round(100 * (inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0]), 1),
            "cpu_peak_pct": round(max(steps), 1),
        }


# ---- the floor: docker run of the same image ------------------------------------------------


class StubHub:
    """Answers the two calls jupyterhub-singleuser makes to its hub: the version check and activity.

    ``jupyterhub-singleuser`` GETs ``$JUPYTERHUB_API_URL`` before it listens and exits after 5 failed
    attempts (2+4+8+16 s back-off), so the floor needs something to answer; this stub answers at
    once, which is the floor: same container work, no hub.
    """

    def __init__(self, host, version):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.requests += 1
                body = json.dumps({"version": version}).encode()
                self.send_response(200)
                self.send_header("X-JupyterHub-Version", version)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.requests = 0
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/hub/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class Floor:
    """``docker run -d`` of the workspace image until its HTTP port answers, then stop + remove."""

    def __init__(self, client, run_id, stub_url):
        self.api = client.api
        self.run_id = run_id
        self.stub_url = stub_url

    def env(self, user):
        prefix = f"/user/{user}/"
        return {
            "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{PORT}{prefix}",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
            "JUPYTERHUB_API_URL": self.stub_url,
            "JUPYTERHUB_ACTIVITY_URL": f"{self.stub_url}/users/{user}/activity",
            "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVER_NAME": "",
        }

    def spawn(self, user):
        """Create + start a container and poll its HTTP port every 50 ms; returns a result dict."""
        started = time.monotonic()
        try:
            container = self.api.create_container(
                IMAGE,
                name=f"mlhub-bench-{self.run_id}-{user}",
                environment=self.env(user),
                labels={BENCH_LABEL: "1", RUN_LABEL: self.run_id},
                host_config=self.api.create_host_config(network_mode="bridge"),
            )
            self.api.start(container["Id"])
            ip = self.api.inspect_container(container["Id"])["NetworkSettings"]["IPAddress"]
        except docker.errors.DockerException as e:
            return failure(started, e)
        for _ in range(int(SPAWN_DEADLINE / POLL)):
            if http_answers(ip, PORT, f"/user/{user}/api"):
                return {"ok": True, "seconds": time.monotonic() - started}
            if ABORT.is_set() or time.monotonic() - started > SPAWN_DEADLINE:
                break
            time.sleep(POLL)
        return failure(started, f"{user}: port {ip}:{PORT} did not answer")

    def stop(self, user):
        """``docker stop`` + ``docker rm -v`` of the user's container; returns a result dict."""
        started = time.monotonic()
        name = f"mlhub-bench-{self.run_id}-{user}"
        try:
            self.api.stop(name, timeout=10)
            self.api.remove_container(name, v=True)
        except docker.errors.DockerException as e:
            return failure(started, e)
        return {"ok": True, "seconds": time.monotonic() - started}


def run_floor(client, run_id, gateway, sequential, concurrency):
    """All floor phases; returns {phase name: figures}."""
    with StubHub(gateway, jupyterhub.__version__) as stub:
        floor = Floor(client, run_id, stub.url)
        out = run_phases("floor", floor.spawn, floor.stop, sequential, concurrency)
        out["stub_requests"] = stub.requests
    return out


class CpuMeter:
    """CPU seconds used between snapshots: the whole machine, the Docker engine, this benchmark."""

    ENGINE = {"dockerd", "containerd"}

    def __init__(self):
        self.engine = [p for p in psutil.process_iter(["name"]) if p.info["name"] in self.ENGINE]
        self.me = psutil.Process()

    def snapshot(self):
        t = psutil.cpu_times()
        engine = 0.0
        for proc in self.engine:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            engine += times.user + times.system
        mine = self.me.cpu_times()
        return {
            "time": time.monotonic(),
            "machine": t.user + t.nice + t.system + t.irq + t.softirq + t.steal,
            "engine": engine,
            "bench": mine.user + mine.system,
        }

    @staticmethod
    def delta(a, b):
        """Busy cores of the machine (0..CPU count) and CPU seconds of the engine and benchmark."""
        wall = b["time"] - a["time"]
        return {
            "wall": round(wall, 2),
            "machine_busy_cores": round((b["machine"] - a["machine"]) / wall, 2) if wall > 0 else None,
            "engine_cpu_s": round(b["engine"] - a["engine"], 2),
            "bench_cpu_s": round(b["bench"] - a["bench"], 2),
        }


def run_phases(
    target, spawn, stop, sequential, concurrency, settle=3, sampler=None, prepare=None, finish=None
):
    """The phases of one target; ``spawn(user)`` and ``stop(user)`` return result dicts.

    ``prepare(users)`` runs before a phase (not timed); ``finish(phase, result, users, spawns)`` adds
    target-specific figures. Each phase starts after ``settle`` idle seconds, whose machine CPU use
    (``cpu.before``) shows how busy the machine was with other work.
    """
    meter, out = CpuMeter(), {}
    phases = [("sequential", ["seq"] * sequential)]
    phases += [(f"concurrent-{n}", [f"c{n}u{i:03d}" for i in range(n)]) for n in concurrency]
    for phase, users in phases:
        if prepare:
            prepare(sorted(set(users)))
        before = meter.snapshot()
        time.sleep(settle)
        s0 = meter.snapshot()
        if phase == "sequential":
            spawns, stops = [], []
            for i, user in enumerate(users):
                spawns.append(spawn(user))
                stops.append(stop(user))
                log(f"{target} sequential {i + 1}/{sequential}: {spawns[-1]['seconds']:.2f}s")
            wall = stop_wall = None
            s1 = s2 = meter.snapshot()
        else:
            spawns, wall = run_parallel(spawn, users)
            s1 = meter.snapshot()
            stops, stop_wall = run_parallel(stop, users)
            s2 = meter.snapshot()
            failed = sum(not r["ok"] for r in spawns)
            log(f"{target} {phase}: wall {wall:.2f}s, {failed} failed")
        hub = None
        if sampler:
            hub = {
                "spawn": sampler.window(s0["time"], s1["time"]),
                "stop": sampler.window(s1["time"], s2["time"]),
            }
        result = phase_result(spawns, wall, stops, stop_wall, hub)
        result["cpu"] = {
            "before": CpuMeter.delta(before, s0),
            "spawn": CpuMeter.delta(s0, s1),
            "stop": CpuMeter.delta(s1, s2),
        }
        if finish:
            finish(phase, result, users, spawns)
        out[phase] = result
    return out


def phase_result(spawns, wall, stops, stop_wall, hub=None):
    """Figures of one phase; a sequential phase (wall None) counts the sum of its spawns/stops."""
    spawn = summarize(spawns, wall if wall is not None else sum(r["seconds"] for r in spawns))
    stop = summarize(stops, stop_wall if stop_wall is not None else sum(r["seconds"] for r in stops))
    return {"spawn": spawn, "stop": stop, "hub": hub}


# ---- the hubs -----------------------------------------------------------------------------


class Hub:
    """``jupyterhub -f jupyterhub_config.py`` in its own process group, driven by a service token."""

    def __init__(self, kind, name, gateway, workdir, debug=False, extra_config=""):
        self.kind, self.name, self.gateway, self.debug = kind, name, gateway, debug
        self.extra_config = extra_config
        self.workdir = Path(workdir)
        self.token = secrets.token_hex(24)
        self.hub_port, self.port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.hub_port}/hub/api"
        self.log_path = self.workdir / "hub.log"
        self.process = None

    def user_config(self):
        """The generated ``MLHUB_USER_CONFIG``: the bench service, plus stock DockerSpawner if asked."""
        text = (
            f"c.JupyterHub.services = [{{'name': 'bench', 'api_token': {self.token!r}}}]\n"
            f"c.JupyterHub.load_roles = [{{'name': 'bench', 'scopes': {SCOPES!r}, 'services': ['bench']}}]\n"
        )
        if self.debug:
            text += 'c.JupyterHub.log_level = "DEBUG"\n'
        if self.kind == "stock":
            # hub_connect_url (set by jupyterhub_config.py) wins over hub_connect_ip: override it
            text += f"""
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.JupyterHub.hub_connect_url = "http://{self.gateway}:{self.hub_port}"
c.DockerSpawner.image = {IMAGE!r}
c.DockerSpawner.port = {PORT}
c.DockerSpawner.network_name = "bridge"
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.prefix = {self.name!r}
c.DockerSpawner.extra_create_kwargs = {{"labels": {{"{BENCH_LABEL}": "1", "{RUN_LABEL}": {self.name!r}}}}}
c.DockerSpawner.http_timeout = {HTTP_TIMEOUT}
c.DockerSpawner.start_timeout = {START_TIMEOUT}
"""
        return text + self.extra_config

    def start(self, timeout=60):
        """Start the hub and wait until its API answers."""
        config = self.workdir / "user_config.py"
        config.write_text(self.user_config())
        env = dict(
            os.environ,
            HUB_NAME=self.name,
            MLHUB_DATA_DIR=str(self.workdir / "data"),
            MLHUB_PORT=str(self.port),
            MLHUB_HUB_PORT=str(self.hub_port),
            MLHUB_PROXY_API_PORT=str(self.proxy_port),
            MLHUB_WORKSPACE_IMAGE=IMAGE,
            MLHUB_USER_CONFIG=str(config),
            PATH=f"{NODE_BIN}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        )
        with open(self.log_path, "ab") as logfile:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(REPO / "jupyterhub_config.py")],
                cwd=self.workdir,
                env=env,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} hub exited with {self.process.returncode}: see {self.log_path}"
                )
            try:
                if requests.get(f"{self.url}/users", headers=self.headers, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} hub did not answer within {timeout}s: see {self.log_path}")

    def stop(self, timeout=30):
        """SIGTERM the hub's process group (hub + proxy), SIGKILL after ``timeout``; ML Hub's egress table too."""
        support.stop_process_group(self.process, timeout)
        if self.kind == "mlhub":
            client = docker.from_env()
            try:
                support.remove_egress_table(client, self.name)  # the host's nftables outlive the hub
            finally:
                client.close()

    @property
    def headers(self):
        return {"Authorization": f"token {self.token}"}

    @property
    def label(self):
        """The label all this hub's containers carry (stock: set via extra_create_kwargs)."""
        return f"mlhub.origin={self.name}" if self.kind == "mlhub" else f"{RUN_LABEL}={self.name}"

    def log_size(self):
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def reported_start_times(self, offset):
        """``User x:w took N seconds to start`` (the hub's own spawn timer) logged after ``offset``."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return [float(s) for s in re.findall(r"took ([0-9.]+) seconds to start", text)]

    # ---- REST API -------------------------------------------------------------------------

    def create_users(self, names):
        r = requests.post(f"{self.url}/users", json={"usernames": names}, headers=self.headers, timeout=60)
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating users failed: {r.status_code} {r.text[:300]}")

    def spawn(self, user):
        """POST the named server; ready on 201, else follow the progress stream to its ready event."""
        started, epoch = time.monotonic(), time.time()
        url = f"{self.url}/users/{user}/servers/{SERVER}"
        with requests.Session() as s:
            s.headers.update(self.headers)
            try:
                r = s.post(url, json={}, timeout=(5, SPAWN_DEADLINE))
                if r.status_code == 201:
                    result = {"ok": True, "seconds": time.monotonic() - started, "status": 201}
                elif r.status_code == 202:
                    result = self._follow_progress(s, user, started)
                else:
                    result = failure(started, f"POST {r.status_code}: {r.text[:200]}")
            except (requests.RequestException, ValueError) as e:  # ValueError: a garbled event
                result = failure(started, e)
        result["epoch"] = epoch
        return result

    def _follow_progress(self, session, user, started):
        """Read the SSE progress stream until ``ready`` or ``failed`` (bounded in time)."""
        url = f"{self.url}/users/{user}/servers/{SERVER}/progress"
        with session.get(url, stream=True, timeout=(5, 30)) as r:
            if r.status_code != 200:
                return failure(started, f"progress {r.status_code}: {r.text[:200]}")
            for line in r.iter_lines(chunk_size=None, decode_unicode=True):
                if ABORT.is_set() or time.monotonic() - started > SPAWN_DEADLINE:
                    break
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("ready"):
                    return {"ok": True, "seconds": time.monotonic() - started, "status": 202}
                if event.get("failed"):
                    return failure(started, event.get("message", "spawn failed"))
        return failure(started, "progress stream ended without a ready event")

    def stop_server(self, user):
        """DELETE the named server with ``remove``; wait until the hub no longer knows it (404)."""
        started = time.monotonic()
        url = f"{self.url}/users/{user}/servers/{SERVER}"
        with requests.Session() as s:  # one keep-alive connection: cheap polling
            s.headers.update(self.headers)
            try:
                r = s.delete(url, json={"remove": True}, timeout=(5, STOP_DEADLINE))
                if r.status_code not in (202, 204, 404):
                    return failure(started, f"DELETE {r.status_code}: {r.text[:200]}")
                for _ in range(int(STOP_DEADLINE / 0.1)):
                    if s.get(url, timeout=(5, 30)).status_code == 404:
                        return {"ok": True, "seconds": time.monotonic() - started}
                    if ABORT.is_set() or time.monotonic() - started > STOP_DEADLINE:
                        break
                    time.sleep(0.1)
            except requests.RequestException as e:
                return failure(started, e)
        return failure(started, f"{user}/{SERVER} still exists after {STOP_DEADLINE}s")


def run_hub(hub, client, sequential, concurrency):
    """All phases of one hub; returns {phase name: figures}."""
    log_offset = [0]

    def prepare(users):
        hub.create_users(users)
        log_offset[0] = hub.log_size()

    def finish(phase, result, users, spawns):
        result["hub_reported_start_p50"] = support.percentile(hub.reported_start_times(log_offset[0]), 50)
        labelled = {"filters": {"label": hub.label}}
        result["leftover_containers"] = len(client.containers.list(all=True, **labelled))
        result["leftover_networks"] = len(client.networks.list(**labelled))  # ours: kept per user
        result["leftover_volumes"] = len(client.volumes.list(**labelled))  # ours: kept per workspace
        if phase == "sequential":
            index = min(1, len(spawns) - 1)  # a warm spawn: the user's network and volume exist
        else:
            index = max(range(len(spawns)), key=lambda i: spawns[i]["seconds"] if spawns[i]["ok"] else 0)
        if spawns[index]["ok"]:
            result["timeline"] = spawn_timeline(hub, client, spawns[index], users[index])

    with Sampler(hub.process.pid) as sampler:
        return run_phases(
            hub.kind,
            hub.spawn,
            hub.stop_server,
            sequential,
            concurrency,
            sampler=sampler,
            prepare=prepare,
            finish=finish,
        )


HUB_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] (.*)$")
PROXY_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \[ConfigProxy\] \w+: (.*)$")
ACCESS_LINE = re.compile(r"^(\d{3}) (POST) (\S+/servers/\S*) \(.*\) ([0-9.]+)ms$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def spawn_timeline(hub, client, result, user):
    """One spawn as the hub log and the Docker engine saw it, in seconds after the client's POST.

    Hub/proxy lines and container events that mention ``user`` within the spawn's wall-clock window;
    the POST's arrival is derived from its access-log line (logged on completion, with its duration).
    """
    start, end = result["epoch"], result["epoch"] + result["seconds"]
    events, day = [], None

    def keep(when, source, message):
        if user in message and start - 0.01 <= when <= end + 0.002:
            events.append((when, source, message))

    for line in ANSI.sub("", hub.log_path.read_text(errors="replace")).splitlines():
        hub_match, proxy_match = HUB_LINE.match(line), PROXY_LINE.match(line)
        if hub_match:
            stamp = datetime.strptime(hub_match[1], "%Y-%m-%d %H:%M:%S.%f")
            day, message = stamp.date(), hub_match[2]
            access = ACCESS_LINE.match(message)
            if access:
                arrived = stamp.timestamp() - float(access[4]) / 1000
                keep(arrived, "hub", f"(derived) {access[2]} {access[3]} arrives")
            if " GET /hub/api/users/" not in message:  # not the benchmark's own polling
                keep(stamp.timestamp(), "hub", message)
        elif proxy_match and day is not None:
            stamp = datetime.combine(day, datetime.strptime(proxy_match[1], "%H:%M:%S.%f").time())
            keep(stamp.timestamp(), "proxy", proxy_match[2])
    since, until = int(start) - 1, int(end) + 2
    for event in client.events(since=since, until=until, filters={"label": hub.label}, decode=True):
        name = event["Actor"]["Attributes"].get("name", "")
        keep(event["timeNano"] / 1e9, "docker", f"{event['Action']} {name}")
    return [f"{when - start:+7.3f}s {source:<6} {message[:160]}" for when, source, message in sorted(events)]


def remove_labelled(client, label):
    """Remove every container, volume and network carrying ``label`` (``key=value``)."""
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters={"label": label}):
        try:
            network.remove()
        except docker.errors.APIError as e:
            log(f"could not remove network {network.name}: {e}")
    for volume in client.volumes.list(filters={"label": label}):
        try:
            volume.remove(force=True)
        except docker.errors.APIError as e:
            log(f"could not remove volume {volume.name}: {e}")


def remove_by_prefix(client, prefix):
    """Remove containers whose name starts with ``prefix-`` (stock DockerSpawner's names)."""
    for container in client.containers.list(all=True, filters={"name": f"^/{prefix}-"}):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


# ---- report -------------------------------------------------------------------------------


def log(message):
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def ratios(results, concurrency):
    """Hub figures relative to the floor: p50 (sequential) and wall (concurrent)."""
    out = {}
    floor = results.get("floor") or {}
    for kind in ("mlhub", "stock"):
        phases = results.get(kind) or {}
        if "sequential" not in floor or "sequential" not in phases:  # not run, failed or interrupted
            continue
        ratio = {}
        fp, hp = floor["sequential"]["spawn"]["p50"], phases["sequential"]["spawn"]["p50"]
        if fp and hp:
            ratio["sequential_p50"] = round(hp / fp, 2)
        for n in concurrency:
            key = f"concurrent-{n}"
            if key in floor and key in phases and phases[key]["spawn"]["failures"] == 0:
                ratio[f"{key}_wall"] = round(phases[key]["spawn"]["wall"] / floor[key]["spawn"]["wall"], 2)
        out[kind] = ratio
    return out


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results, concurrency):
    """A human-readable table of every phase, then the ratios."""
    header = (
        f"{'target':<7} {'phase':<14} {'n':>3} {'fail':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
        f"{'wall s':>7} {'stop p50':>8} {'stop wall':>9} {'hub MB':>7} {'CPU%':>6} {'CPU%pk':>6} {'bg':>4} {'busy':>4}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for kind in ("floor", "mlhub", "stock"):
        phases = results.get(kind)
        if not phases:
            continue
        if "error" in phases:
            print(f"{kind:<7} ERROR: {phases['error']}")
            continue
        for name, phase in phases.items():
            if not isinstance(phase, dict) or "spawn" not in phase:
                continue
            sp, st, hub = phase["spawn"], phase["stop"], (phase["hub"] or {}).get("spawn") or {}
            cpu = phase["cpu"]
            print(
                f"{kind:<7} {name:<14} {sp['n']:>3} {sp['failures']:>4} {fmt(sp['p50']):>7} {fmt(sp['p95']):>7} "
                f"{fmt(sp['max']):>7} {fmt(sp['wall']):>7} {fmt(st['p50']):>8} {fmt(st['wall']):>9} "
                f"{fmt(hub.get('rss_peak_mb'), 0):>7} {fmt(hub.get('cpu_mean_pct'), 0):>6} "
                f"{fmt(hub.get('cpu_peak_pct'), 0):>6} {fmt(cpu['before']['machine_busy_cores'], 1):>4} "
                f"{fmt(cpu['spawn']['machine_busy_cores'], 1):>4}"
            )
    for kind, ratio in ratios(results, concurrency).items():
        print(f"{kind} / floor: " + ", ".join(f"{k} = {v}" for k, v in ratio.items()))
    for kind in ("mlhub", "stock"):
        timeline = ((results.get(kind) or {}).get("sequential") or {}).get("timeline")
        if timeline:
            print(
                f"\n{kind}: one warm sequential spawn (hub log + Docker events)\n  " + "\n  ".join(timeline)
            )


def machine_info(client):
    version = client.version()
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "docker": version.get("Version"),
        "image": IMAGE,
        "image_id": client.images.get(IMAGE).id,
    }


def write_results(results):
    """Write the JSON; only a complete run replaces ``spawn-latest.json``."""
    return support.write_results(RESULTS, "spawn", results)


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 sequential, concurrency 5")
    parser.add_argument("--only", default="floor,mlhub,stock", help="targets, comma-separated")
    parser.add_argument("--concurrency", help="concurrent users per phase, comma-separated (default 10,30)")
    parser.add_argument("--sequential", type=int, help="sequential spawns (default 10)")
    parser.add_argument("--hub-debug", action="store_true", help="run the hubs with log_level DEBUG")
    parser.add_argument(
        "--mlhub-config", type=Path, help="extra config lines for our hub only (A/B tests of its settings)"
    )
    args = parser.parse_args(argv)
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(args.only) - {"floor", "mlhub", "stock"}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.concurrency:
        args.concurrency = [int(n) for n in args.concurrency.split(",")]
    else:
        args.concurrency = [5] if args.quick else [10, 30]
    args.sequential = args.sequential or (3 if args.quick else 10)
    return args


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    client = docker.from_env(timeout=180, max_pool_size=max(args.concurrency) + 8)
    run_id = secrets.token_hex(3)
    gateway = bridge_gateway(client)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "timestamp": stamp,
        "machine": machine_info(client),
        "settings": {
            "sequential": args.sequential,
            "concurrency": args.concurrency,
            "targets": args.only,
            "mlhub_config": args.mlhub_config.read_text() if args.mlhub_config else "",
        },
        "complete": False,
    }
    names = {"mlhub": f"mlhbench-{run_id}", "stock": f"mlhbstock-{run_id}"}
    workdir = Path(tempfile.mkdtemp(prefix=f"mlhub-bench-{run_id}-"))
    log(f"run {run_id}: image {IMAGE}, bridge gateway {gateway}, work dir {workdir}")
    try:
        if "floor" in args.only:
            results["floor"] = run_floor(client, run_id, gateway, args.sequential, args.concurrency)
        for kind in ("mlhub", "stock"):
            if kind not in args.only:
                continue
            extra = args.mlhub_config.read_text() if kind == "mlhub" and args.mlhub_config else ""
            hub = Hub(kind, names[kind], gateway, workdir / kind, args.hub_debug, extra)
            hub.workdir.mkdir()
            try:
                hub.start()
                log(f"{kind} hub up ({hub.name}, API {hub.url})")
                results[kind] = run_hub(hub, client, args.sequential, args.concurrency)
            except RuntimeError as e:
                results[kind] = {"error": str(e)}
                log(f"{kind} failed: {e}")
            finally:
                hub.stop()
                if hub.log_path.exists():
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    kept = RESULTS / f"spawn-{stamp}-{kind}-hub.log"
                    shutil.copyfile(hub.log_path, kept)
                    results.setdefault(kind, {})["hub_log"] = str(kept.relative_to(REPO))
        results["complete"] = True
    finally:
        log("cleaning up")
        remove_labelled(client, f"{RUN_LABEL}={run_id}")
        remove_labelled(client, f"mlhub.origin={names['mlhub']}")
        remove_labelled(client, f"{RUN_LABEL}={names['stock']}")
        remove_by_prefix(client, names["stock"])
        shutil.rmtree(workdir, ignore_errors=True)
        results["ratios"] = ratios(results, args.concurrency)
        path = write_results(results)
        print_table(results, args.concurrency)
        latest = " and benchmarks/results/spawn-latest.json" if results["complete"] else " (incomplete run)"
        print(f"\nwrote {path.relative_to(REPO)}{latest}")


if __name__ == "__main__":
    main()
