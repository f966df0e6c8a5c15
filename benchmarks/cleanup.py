"""Cleanup sweep benchmark: dry-run and executing sweeps over N labelled resources and M hub users.

    .venv/bin/python benchmarks/cleanup.py [--quick]

One real hub (``tests/support.Hub``, periodic sweeps off, no minimum age) gets M users through the
REST API; the benchmark creates N cheap resources with this hub's labels on the Docker engine
(containers of the base image running ``sleep infinity`` or created only, /29 bridge networks,
volumes), half of them belonging to users the hub does not have. Sizes grow as a staircase
(resources first, then users), so each step changes one dimension:
(100, 200) → (500, 200) → (500, 1000) → (1000, 1000) → (1000, 2000). At every point the dry runs
(``GET …/users``, ``GET …/expired``) are timed; at (N, M) pairs the executing sweep
(``POST …/users``) is timed and its effect checked against the engine. Hub API calls are counted
from the hub's log. Results: a table on stdout, ``benchmarks/results/cleanup-<UTC>.json`` and
``cleanup-latest.json``; see ``benchmarks/README.md``.
"""

import argparse
import itertools
import json
import math
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path
from typing import NamedTuple

import docker
import jupyterhub
import psutil
import requests

from mlhubspawner import naming

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import support  # noqa: E402 (tests/ is not a package)
from support import Hub  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BENCH_LABEL, RUN_LABEL = "mlhub.bench", "mlhub.bench.run"
CONTAINER, NETWORK, VOLUME = "container", "network", "volume"
COMPONENTS = {
    CONTAINER: naming.COMPONENT_WORKSPACE,
    NETWORK: naming.COMPONENT_NETWORK,
    VOLUME: naming.COMPONENT_VOLUME,
}
SUBNETS = ip_network("10.251.0.0/16")  # one /29 per benchmark network
WORKERS = 8  # docker-py threads creating / removing resources
REPEATS = 3  # dry runs per point (the median is reported)
PAGE = 200  # the cleanup service's page size (JupyterHub's api_page_max_limit)
USER_BATCH = 200  # usernames per POST /hub/api/users
GONE_SHARE = 0.5  # resources whose user the hub does not have
OLD_SHARE = 0.2  # existing users' containers of a named server ("old") that does not exist, stopped
OLD_RUNNING_SHARE = 0.2  # … the same, running (the sweep keeps running containers)
OLD_VOLUME_SHARE = 0.5  # existing users' volumes of the missing server "old"
DELETED_USERS = 20  # created, then deleted through the API: half of the "gone" owners
CALL = re.compile(r"\] (\d{3}) (GET|POST|PUT|PATCH|DELETE) (/hub/api/\S*) \(([^@)]*)@[^)]*\) ([\d.]+)ms")


def log(message):
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def run_pool(label, func, items):
    """``func(item)`` for every item on WORKERS threads, with progress; the first error is raised."""
    if not items:
        return 0.0
    started, done = time.monotonic(), 0
    pool = ThreadPoolExecutor(WORKERS)
    try:
        for future in as_completed([pool.submit(func, item) for item in items]):
            future.result()
            done += 1
            if done % 200 == 0 or done == len(items):
                log(f"  {label}: {done}/{len(items)} ({time.monotonic() - started:.1f}s)")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return time.monotonic() - started


# ---- the labelled resources -----------------------------------------------------------------


class Category(NamedTuple):
    """How a benchmark resource is made, and what one executing users sweep must do with it."""

    server: str  # its mlhub.server_name label
    running: bool  # containers: started (else created only)
    removed: bool
    marked: bool  # volumes: marked orphaned (kept through the grace period)


# Every hub user has a (stopped) default server "" in the hub's model, so resources of server ""
# belong to an existing server; "old" is a named server that no user has.
CATEGORIES = {
    (CONTAINER, "gone"): Category("", False, True, False),
    (CONTAINER, "keep"): Category("", False, False, False),
    (CONTAINER, "old"): Category("old", False, True, False),
    (CONTAINER, "old-running"): Category("old", True, False, False),
    (NETWORK, "gone"): Category("", False, True, False),
    (NETWORK, "keep"): Category("", False, False, False),
    (VOLUME, "gone"): Category("", False, False, True),
    (VOLUME, "keep"): Category("", False, False, False),
    (VOLUME, "old"): Category("old", False, False, True),
}


class Fleet:
    """The benchmark's resources on the engine, each made in one of the :data:`CATEGORIES`.

    ``gone`` resources belong to deleted or never-existing users; the others to existing users.
    """

    def __init__(self, api, hub_name, run_id, image, gone_users):
        self.api, self.hub_name, self.run_id, self.image = api, hub_name, run_id, image
        self.gone_users = gone_users
        self.items = {}  # name -> (kind, category)
        self.marked = set()  # volumes the service has marked orphaned
        self.seq = itertools.count()
        self.subnets = SUBNETS.subnets(new_prefix=29)

    @staticmethod
    def targets(n):
        """``{(kind, category): count}`` for N resources: 80 % containers, 10 % networks, 10 % volumes."""
        networks = volumes = n // 10
        containers = n - networks - volumes
        gone = round(containers * GONE_SHARE)
        old, running = round((containers - gone) * OLD_SHARE), round((containers - gone) * OLD_RUNNING_SHARE)
        out = {
            (CONTAINER, "gone"): gone,
            (CONTAINER, "old"): old,
            (CONTAINER, "old-running"): running,
            (CONTAINER, "keep"): containers - gone - old - running,
        }
        for kind, total in ((NETWORK, networks), (VOLUME, volumes)):
            out[(kind, "gone")] = round(total * GONE_SHARE)
            out[(kind, "keep")] = total - out[(kind, "gone")]
        out[(VOLUME, "old")] = round(out[(VOLUME, "keep")] * OLD_VOLUME_SHARE)
        out[(VOLUME, "keep")] -= out[(VOLUME, "old")]
        return out

    def composition(self):
        return {f"{kind}:{cat}": n for (kind, cat), n in sorted(Counter(self.items.values()).items())}

    def top_up(self, n, users):
        """Create what is missing for N resources; existing users' resources are spread over ``users``."""
        have = Counter(self.items.values())
        specs = []
        for (kind, cat), want in self.targets(n).items():
            for _ in range(want - have[(kind, cat)]):
                i = next(self.seq)
                owner = self.gone_users[i % len(self.gone_users)] if cat == "gone" else users[i % len(users)]
                subnet = str(next(self.subnets)) if kind == NETWORK else None
                specs.append((f"{self.hub_name}-{kind[0]}-{owner}-{i:05d}", kind, cat, owner, subnet))
        specs.sort(key=lambda s: s[1] != CONTAINER)  # containers first: the slow part shows progress
        return run_pool(f"create {len(specs)} resources", self.create, specs)

    def create(self, spec):
        name, kind, cat, owner, subnet = spec
        category = CATEGORIES[(kind, cat)]
        labels = naming.resource_labels(self.hub_name, owner, category.server, COMPONENTS[kind])
        labels.update({BENCH_LABEL: "1", RUN_LABEL: self.run_id})
        if kind == CONTAINER:
            host_config = self.api.create_host_config(network_mode="none")
            cid = self.api.create_container(
                self.image, ["sleep", "infinity"], name=name, labels=labels, host_config=host_config
            )["Id"]
            if category.running:
                self.api.start(cid)
        elif kind == NETWORK:
            pool = docker.types.IPAMPool(subnet=subnet)
            self.api.create_network(
                name, driver="bridge", labels=labels, ipam=docker.types.IPAMConfig(pool_configs=[pool])
            )
        else:
            self.api.create_volume(name, labels=labels)
        self.items[name] = (kind, cat)

    def expected_counts(self):
        """The ``counts`` a users sweep must report now."""
        counts = Counter()
        for name, (kind, cat) in self.items.items():
            category = CATEGORIES[(kind, cat)]
            if category.removed:
                counts[f"remove:{kind}"] += 1
            elif category.marked:
                counts["keep:volume" if name in self.marked else "mark_orphaned:volume"] += 1
        return dict(counts)

    def present(self):
        """``{kind: names}`` of the run's resources on the engine now."""
        label = {"label": [f"{RUN_LABEL}={self.run_id}"]}
        return {
            CONTAINER: {c["Names"][0].lstrip("/") for c in self.api.containers(all=True, filters=label)},
            NETWORK: {n["Name"] for n in self.api.networks(filters=label)},
            VOLUME: {v["Name"] for v in (self.api.volumes(filters=label) or {}).get("Volumes") or []},
        }

    def verify(self, state_path):
        """After an executing sweep: problems found (empty = exactly the right things are gone)."""
        problems, present = [], self.present()
        for kind in (CONTAINER, NETWORK, VOLUME):
            mine = {name for name, (k, _) in self.items.items() if k == kind}
            want = {name for name in mine if not CATEGORIES[self.items[name]].removed}
            if present[kind] & (mine - want):
                problems.append(f"{len(present[kind] & (mine - want))} {kind}s that should be gone remain")
            if want - present[kind]:
                problems.append(f"{len(want - present[kind])} {kind}s that should remain were removed")
        orphans = {name for name, key in self.items.items() if CATEGORIES[key].marked}
        marks = set(json.loads(state_path.read_text())) if state_path.exists() else set()
        if marks != orphans:
            problems.append(
                f"{len(orphans - marks)} orphaned volumes unmarked, {len(marks - orphans)} wrong marks"
            )
        self.items = {n: v for n, v in self.items.items() if n in present[v[0]]}
        self.marked = marks
        return problems

    def engine_list_seconds(self):
        """Wall time of the service's three listing calls, made the same way (concurrently)."""
        label = {"label": [f"{naming.LABEL_ORIGIN}={self.hub_name}"]}
        calls = [
            lambda: self.api.containers(all=True, filters=label),
            lambda: self.api.networks(filters=label),
            lambda: self.api.volumes(filters=label),
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda call: call(), calls))
        return time.monotonic() - started


def remove_labelled(api, label):
    """Remove every container, network and volume carrying ``label``; errors are logged, not raised."""

    def remove(item):
        kind, name = item
        try:
            if kind == CONTAINER:
                api.remove_container(name, force=True, v=True)
            elif kind == NETWORK:
                api.remove_network(name)
            else:
                api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log(f"could not remove {kind} {name}: {e}")

    filters = {"label": [label]}
    try:
        containers = [(CONTAINER, c["Id"]) for c in api.containers(all=True, filters=filters)]
        run_pool(f"remove {len(containers)} containers ({label})", remove, containers)
        networks = [(NETWORK, n["Id"]) for n in api.networks(filters=filters)]
        volumes = [(VOLUME, v["Name"]) for v in (api.volumes(filters=filters) or {}).get("Volumes") or []]
        run_pool(f"remove {len(networks) + len(volumes)} networks and volumes", remove, networks + volumes)
    except docker.errors.DockerException as e:
        log(f"clean-up of {label} failed: {e}")


class DestroyEvents:
    """The engine's ``destroy`` events of resources named ``<prefix>…`` while in the block.

    ``docker events`` (a subprocess on the local engine, read by a thread so that it never blocks
    on a full pipe) rather than a query afterwards: the engine keeps only its last 256 events.
    ``stages`` has, per kind, the count and the first and last destroy in seconds after entering.
    """

    def __init__(self, prefix):
        self.prefix = prefix
        self.lines = []
        self.stages = {}

    def __enter__(self):
        self.start = time.time()
        command = ["docker", "events", "--since", f"{self.start:.3f}", "--filter", "event=destroy"]
        command += ["--format", "{{.Type}} {{.TimeNano}} {{.Actor.Attributes.name}}"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc):
        time.sleep(1)  # let the last events arrive
        self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(10)
        times = {}
        for line in self.lines:
            kind, nanos, name = (line.split(maxsplit=2) + ["", "", ""])[:3]
            if name.startswith(self.prefix):
                times.setdefault(kind, []).append(int(nanos) / 1e9 - self.start)
        self.stages = {
            kind: {"n": len(t), "first_s": round(min(t), 3), "last_s": round(max(t), 3)}
            for kind, t in sorted(times.items())
        }


# ---- the hub and its cleanup service -------------------------------------------------------


def service(hub, method, path=""):
    """A request to the cleanup service through the proxy, with the test service's token."""
    url = f"{hub.url}/services/cleanup-service/{path}"
    r = requests.request(method, url, headers={"Authorization": f"token {hub.token}"}, timeout=600)
    if r.status_code != 200:
        raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {r.text[:500]}")
    return r.json()


def wait_for_service(hub, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return service(hub, "GET")
        except (RuntimeError, requests.RequestException):
            time.sleep(0.3)
    raise RuntimeError(f"the cleanup service did not answer within {timeout}s:\n{hub.log_tail()}")


def add_users(hub, users, total):
    """Create users ``u00000``… through the REST API until there are ``total``."""
    started = time.monotonic()
    while len(users) < total:
        batch = [f"u{i:05d}" for i in range(len(users), min(total, len(users) + USER_BATCH))]
        r = hub.api("POST", "users", json={"usernames": batch})
        if r.status_code != 201:
            raise RuntimeError(f"creating users: HTTP {r.status_code} {r.text[:300]}")
        users.extend(batch)
    log(f"  {total} users ({time.monotonic() - started:.1f}s)")


def deleted_users(hub):
    """Owners that existed and were deleted (half) or never existed (half)."""
    names = [f"del{i:02d}" for i in range(DELETED_USERS)]
    for name in names:
        hub.create_user(name)
        r = hub.api("DELETE", f"users/{name}")
        if r.status_code != 204:
            raise RuntimeError(f"deleting {name}: HTTP {r.status_code} {r.text[:300]}")
    never = [f"nobody{i:02d}" for i in range(DELETED_USERS)]
    return [name for pair in zip(names, never, strict=True) for name in pair]


def hub_user_count(hub):
    """The hub's own user total (ours plus ``admin``, which the config creates)."""
    r = requests.get(
        f"{hub.url}/hub/api/users",
        params={"limit": 1},
        headers={"Authorization": f"token {hub.token}", "Accept": "application/jupyterhub-pagination+json"},
        timeout=60,
    )
    r.raise_for_status()
    return r.json()["_pagination"]["total"]


def hub_calls(hub, offset):
    """Hub API requests logged since ``offset``: the service's (count, user pages, summed ms), others'."""
    with open(hub.log_path, errors="replace") as f:
        f.seek(offset)
        text = f.read()
    mine = [m for m in CALL.finditer(text) if m.group(4) == "cleanup-service"]
    return {
        "hub_calls": len(mine),
        "user_pages": sum(m.group(3).startswith("/hub/api/users?") for m in mine),
        "hub_ms": round(sum(float(m.group(5)) for m in mine), 1),
        "other_hub_calls": len(CALL.findall(text)) - len(mine),
        "non_200": [m.group(0)[2:] for m in mine if m.group(1) != "200"][:5],
    }


def timed_sweep(hub, method, sweep):
    """One sweep through the proxy: wall time, hub calls from the log, the report's counts."""
    offset = hub.log_path.stat().st_size
    started = time.monotonic()
    report = service(hub, method, sweep)
    wall = time.monotonic() - started
    time.sleep(0.2)  # the hub logs a request before answering it; this is only a margin
    out = {"wall": round(wall, 4), "counts": report["counts"], "actions": len(report["actions"])}
    out.update({k: report[k] for k in ("done", "failed") if k in report})
    out["errors"] = report.get("errors", [])[:5]
    out.update(hub_calls(hub, offset))
    return out


def dry_runs(hub, sweep):
    runs = [timed_sweep(hub, "GET", sweep) for _ in range(REPEATS)]
    out = dict(runs[-1])
    out["walls"] = [r["wall"] for r in runs]
    out["wall"] = round(statistics.median(out["walls"]), 4)
    out["hub_calls"] = max(r["hub_calls"] for r in runs)
    out["hub_ms"] = round(statistics.median(r["hub_ms"] for r in runs), 1)
    return out


def measure(hub, fleet, n, m, execute):
    """Dry runs of both sweeps at (N, M); with ``execute``, also the executing users sweep and its check."""
    log(f"point N={n} M={m}: dry runs" + (" + executing sweep" if execute else ""))
    expected = fleet.expected_counts()
    row = {"resources": n, "users": m, "composition": fleet.composition(), "expected_counts": expected}
    row["engine_list_s"] = round(statistics.median(fleet.engine_list_seconds() for _ in range(REPEATS)), 4)
    row["dry_users"], row["dry_expired"] = dry_runs(hub, "users"), dry_runs(hub, "expired")
    problems = []
    if row["dry_users"]["counts"] != expected:
        problems.append(f"dry run counts {row['dry_users']['counts']} != expected {expected}")
    if row["dry_expired"]["counts"]:
        problems.append(f"expired sweep plans {row['dry_expired']['counts']} with no servers")
    row["hub_users"] = hub_user_count(hub)
    pages = row["pages_expected"] = math.ceil(row["hub_users"] / PAGE)
    for key in ("dry_users", "dry_expired"):
        if row[key]["user_pages"] != pages:
            problems.append(f"{key}: {row[key]['user_pages']} user pages, expected {pages}")
    if execute:
        with DestroyEvents(f"{fleet.hub_name}-") as events:
            ex = row["execute"] = timed_sweep(hub, "POST", "users")
        ex["engine_destroy"] = events.stages
        ex["service_duration_s"] = service(hub, "GET")["last_run"]["users"]["duration_seconds"]
        if ex["counts"] != expected:
            problems.append(f"executed counts {ex['counts']} != expected {expected}")
        if ex["failed"] or ex["done"] != sum(v for k, v in expected.items() if not k.startswith("keep:")):
            problems.append(f"done {ex['done']}, failed {ex['failed']}: {ex['errors']}")
        problems += fleet.verify(hub.workdir / "data" / f"cleanup-{fleet.hub_name}.json")
        again = row["after"] = timed_sweep(hub, "GET", "users")
        if any(k.startswith(("remove:", "mark_orphaned:")) for k in again["counts"]):
            problems.append(f"a dry run after the sweep still plans {again['counts']}")
    row["problems"] = problems
    row["check"] = ("PASS" if not problems else "FAIL") if execute else ("ok" if not problems else "FAIL")
    for problem in problems:
        log(f"  PROBLEM: {problem}")
    return row


# ---- report ---------------------------------------------------------------------------------


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def scaling(rows):
    """Consecutive points that differ in one dimension: growth factor of size and time, exponent."""
    out = []
    for a, b in itertools.pairwise(rows):
        if a["users"] == b["users"] and a["resources"] != b["resources"]:
            dim = "resources"
        elif a["resources"] == b["resources"] and a["users"] != b["users"]:
            dim = "users"
        else:
            continue
        for key in ("dry_users", "dry_expired"):
            ta, tb = a[key]["wall"], b[key]["wall"]
            out.append(
                {
                    "sweep": key,
                    "dimension": dim,
                    "from": [a["resources"], a["users"]],
                    "to": [b["resources"], b["users"]],
                    "size_factor": round(b[dim] / a[dim], 2),
                    "time_factor": round(tb / ta, 2),
                    "exponent": round(math.log(tb / ta) / math.log(b[dim] / a[dim]), 2),
                    "marginal_ms_per_unit": round(1000 * (tb - ta) / (b[dim] - a[dim]), 3),
                }
            )
    executed = [r for r in rows if "execute" in r]
    for a, b in itertools.pairwise(executed):
        ta, tb = a["execute"]["wall"], b["execute"]["wall"]
        out.append(
            {
                "sweep": "execute_users",
                "dimension": "both",
                "from": [a["resources"], a["users"]],
                "to": [b["resources"], b["users"]],
                "size_factor": round(b["resources"] / a["resources"], 2),
                "time_factor": round(tb / ta, 2),
                "exponent": round(math.log(tb / ta) / math.log(b["resources"] / a["resources"]), 2),
                "marginal_ms_per_unit": round(1000 * (tb - ta) / (b["resources"] - a["resources"]), 3),
            }
        )
    return out


def print_table(results):
    rows = results["rows"]
    header = (
        f"{'N':>5} {'M':>5} | {'dry users s':>11} {'ms/res':>6} {'ms/usr':>6} | {'dry exp s':>9} | "
        f"{'exec s':>7} {'ms/res':>6} {'removed':>7} | {'calls d/e/x':>11} {'pages':>5} {'hub ms':>6} "
        f"{'engine s':>8} | check"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        n, m, du, de, ex = r["resources"], r["users"], r["dry_users"], r["dry_expired"], r.get("execute")
        removed = sum(v for k, v in ex["counts"].items() if k.startswith("remove:")) if ex else None
        calls = f"{du['hub_calls']}/{de['hub_calls']}/{ex['hub_calls'] if ex else '-'}"
        print(
            f"{n:>5} {m:>5} | {fmt(du['wall'], 3):>11} {fmt(1000 * du['wall'] / n):>6} "
            f"{fmt(1000 * du['wall'] / m):>6} | {fmt(de['wall'], 3):>9} | "
            f"{fmt(ex['wall'] if ex else None, 3):>7} {fmt(1000 * ex['wall'] / n if ex else None):>6} "
            f"{removed if ex else '-':>7} | {calls:>11} {r['pages_expected']:>5} {fmt(du['hub_ms'], 0):>6} "
            f"{fmt(r['engine_list_s'], 3):>8} | {r['check']}"
        )
    print("\nexecuting sweeps: engine destroy events, seconds after the POST (first-last, count):")
    for r in rows:
        if "execute" in r:
            stages = ", ".join(
                f"{kind}s {v['first_s']:.2f}-{v['last_s']:.2f} ({v['n']})"
                for kind, v in r["execute"]["engine_destroy"].items()
            )
            print(f"  N={r['resources']} M={r['users']}: {stages}; answer at {r['execute']['wall']:.2f}")
    print("\nscaling (exponent: time grows like size^exponent; <= 1 is linear or better):")
    for s in results["scaling"]:
        print(
            f"  {s['sweep']:<13} {s['dimension']:<9} {tuple(s['from'])} -> {tuple(s['to'])}: size x{s['size_factor']}, "
            f"time x{s['time_factor']}, exponent {s['exponent']}, marginal {s['marginal_ms_per_unit']} ms/unit"
        )


def write_results(results):
    """Write the JSON; only a complete run replaces ``cleanup-latest.json``."""
    return support.write_results(RESULTS, "cleanup", results)


# ---- main ---------------------------------------------------------------------------------


def base_image(api):
    """The newest ``mlhub-base:bookworm-*`` image on the engine (never pulled)."""
    images = [
        (img["Created"], tag)
        for img in api.images(name="mlhub-base")
        for tag in img.get("RepoTags") or []
        if tag.startswith("mlhub-base:bookworm-")
    ]
    if not images:
        raise SystemExit("no mlhub-base:bookworm-<hash> image on the engine (build the base image first)")
    return max(images)[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N 50/100, M 100/300")
    args = parser.parse_args(argv)
    ns, ms = ([50, 100], [100, 300]) if args.quick else ([100, 500, 1000], [200, 1000, 2000])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    api = docker.APIClient(version="auto", timeout=300, max_pool_size=WORKERS + 4)
    image = base_image(api)
    run_id = secrets.token_hex(3)
    hub_name = f"mlhcbench-{run_id}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "timestamp": stamp,
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "docker": api.version().get("Version"),
            "jupyterhub": jupyterhub.__version__,
            "image": image,
        },
        "settings": {
            "resources": ns,
            "users": ms,
            "repeats": REPEATS,
            "gone_share": GONE_SHARE,
            "old_share": OLD_SHARE,
            "old_running_share": OLD_RUNNING_SHARE,
            "old_volume_share": OLD_VOLUME_SHARE,
            "page_size": PAGE,
            "hub_name": hub_name,
        },
        "rows": [],
        "complete": False,
    }
    workdir = Path(tempfile.mkdtemp(prefix=f"mlhub-cleanup-bench-{run_id}-"))
    hub = Hub(workdir, hub_name=hub_name)
    hub.env.update(CLEANUP_INTERVAL_SECONDS="-1", CLEANUP_MIN_AGE_SECONDS="0")
    log(f"run {run_id}: hub {hub_name}, image {image}, work dir {workdir}")
    try:
        hub.start(timeout=120)
        wait_for_service(hub)
        fleet = Fleet(api, hub_name, run_id, image, deleted_users(hub))
        users = []
        for k, (n, m) in enumerate(zip(ns, ms, strict=True)):
            if k == 0:
                add_users(hub, users, m)
            results.setdefault("create_seconds", []).append(round(fleet.top_up(n, users), 1))
            if len(users) < m:  # first more resources, same users; then more users
                results["rows"].append(measure(hub, fleet, n, len(users), execute=False))
                add_users(hub, users, m)
            results["rows"].append(measure(hub, fleet, n, m, execute=True))
        results["complete"] = True
    finally:
        log("cleaning up")
        hub.stop()
        if hub.log_path.exists():
            RESULTS.mkdir(parents=True, exist_ok=True)
            kept = RESULTS / f"cleanup-{stamp}-hub.log"
            shutil.copyfile(hub.log_path, kept)
            results["hub_log"] = str(kept.relative_to(REPO))
        remove_labelled(api, f"{RUN_LABEL}={run_id}")
        remove_labelled(api, f"{naming.LABEL_ORIGIN}={hub_name}")
        api.close()
        shutil.rmtree(workdir, ignore_errors=True)
        results["scaling"] = scaling(results["rows"])
        path = write_results(results)
        print_table(results)
        latest = " and benchmarks/results/cleanup-latest.json" if results["complete"] else " (incomplete run)"
        print(f"\nwrote {path.relative_to(REPO)}{latest}")


if __name__ == "__main__":
    main()
