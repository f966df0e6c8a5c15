"""Workspace flavors benchmark: image size, build time (cold and cached) and spawn p50 of each built flavor.

    .venv/bin/python benchmarks/flavors.py [--flavors minimal,ml,gpu] [--cold ml] [--sequential 5]

Per flavor (only those built; ``make images`` builds minimal and ml, ``make image-gpu`` gpu):
- size: the image's size on the engine, and what it adds to the flavor it is built on;
- build: ``build-images.sh <flavor>`` with every image up to date (the content-hash cache: ``cached``), and
  with ``--cold <flavor>`` after removing that flavor's own images (its image, stage and Debian base; never
  the minimal flavor's when another is asked for) and Docker's build cache of them (``cold``; pip's download
  cache on the host stays);
- spawn: ``--sequential`` spawns of one user against the raw floor of the same image and through a real hub
  (benchmarks/spawn.py's floor and mlhub targets: see benchmarks/README.md).
Results: a table on stdout, ``benchmarks/results/flavors-<UTC>.json`` and ``flavors-latest.json``.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import docker
import spawn  # benchmarks/spawn.py (this directory is on sys.path when run as a script)

REPO = spawn.REPO
BUILD = REPO / "resources" / "scripts" / "build-images.sh"
FLAVORS = {  # flavor: (image repository, the flavor it is built on)
    "minimal": ("mlhub-workspace", None),
    "ml": ("mlhub-workspace-ml", "minimal"),
    "gpu": ("mlhub-workspace-gpu", "ml"),
}
# the images of a flavor's own build steps besides the flavor's image (removed by --cold)
OWN_REPOSITORIES = {"minimal": ["mlhub-base"], "ml": ["mlhub-workspace-ml-stage", "mlhub-base-ml"], "gpu": []}


def image_name(flavor):
    return f"{FLAVORS[flavor][0]}:{spawn.__version__}"


def image_or_none(client, name):
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def build(flavor):
    """``build-images.sh <flavor>``: seconds, and whether it succeeded (its log lines are kept)."""
    started = time.monotonic()
    result = subprocess.run(["bash", str(BUILD), flavor], capture_output=True, text=True, timeout=7200)
    seconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 1),
        "ok": result.returncode == 0,
        "log": result.stderr.splitlines()[-12:],
    }


def remove_own_images(client, flavor):
    """Remove the flavor's image and the images of its own build steps, then the dangling build cache."""
    names = [image_name(flavor)]
    for repository in OWN_REPOSITORIES[flavor]:
        names += [tag for image in client.images.list(name=repository) for tag in image.tags]
    for name in names:
        try:
            client.images.remove(name, force=True)
        except docker.errors.ImageNotFound:
            pass
    client.images.prune(filters={"dangling": True})
    return names


def sizes(client, flavor):
    image = image_or_none(client, image_name(flavor))
    if image is None:
        return None
    parent = FLAVORS[flavor][1]
    parent_image = image_or_none(client, image_name(parent)) if parent else None
    size = image.attrs["Size"]
    return {
        "size_mb": round(size / 1e6),
        "over": parent,
        "added_mb": round((size - parent_image.attrs["Size"]) / 1e6) if parent_image else None,
    }


def spawns(client, flavor, sequential, workdir):
    """p50 of sequential spawns: the raw floor of the image, and through a real hub."""
    spawn.IMAGE = image_name(flavor)
    run_id = f"{flavor[:3]}{int(time.time()) % 100000}"
    gateway = spawn.bridge_gateway(client)
    out = {"floor": spawn.run_floor(client, run_id, gateway, sequential, [])["sequential"]["spawn"]}
    hub = spawn.Hub("mlhub", f"mlhflav-{run_id}", gateway, workdir / flavor)
    hub.workdir.mkdir(parents=True)
    try:
        hub.start()
        out["mlhub"] = spawn.run_hub(hub, client, sequential, [])["sequential"]["spawn"]
    finally:
        hub.stop()
        spawn.remove_labelled(client, f"{spawn.RUN_LABEL}={run_id}")
        spawn.remove_labelled(client, f"mlhub.origin={hub.name}")
    return {target: {k: out[target][k] for k in ("n", "failures", "p50", "p95", "max")} for target in out}


def fmt(value, unit=""):
    return "-" if value is None else f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def print_table(results):
    print(
        f"\n{'flavor':8} {'size MB':>8} {'added MB':>9} {'cold s':>7} {'cached s':>9} {'floor p50':>10} {'hub p50':>8}"
    )
    for flavor, r in results["flavors"].items():
        size, spawned = r.get("size") or {}, r.get("spawn") or {}
        print(
            f"{flavor:8} {fmt(size.get('size_mb')):>8} {fmt(size.get('added_mb')):>9}"
            f" {fmt((r.get('build_cold') or {}).get('seconds')):>7}"
            f" {fmt((r.get('build_cached') or {}).get('seconds')):>9}"
            f" {fmt((spawned.get('floor') or {}).get('p50'), 's'):>10}"
            f" {fmt((spawned.get('mlhub') or {}).get('p50'), 's'):>8}"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--flavors", default="minimal,ml,gpu", help="flavors, comma-separated (built ones only)"
    )
    parser.add_argument("--cold", default="", help="flavors to rebuild from nothing first, comma-separated")
    parser.add_argument("--sequential", type=int, default=5, help="sequential spawns per flavor and target")
    parser.add_argument("--no-spawn", action="store_true", help="sizes and build times only")
    args = parser.parse_args(argv)
    args.flavors = [f.strip() for f in args.flavors.split(",") if f.strip()]
    args.cold = [f.strip() for f in args.cold.split(",") if f.strip()]
    unknown = set(args.flavors + args.cold) - set(FLAVORS)
    if unknown:
        parser.error(f"unknown flavors: {', '.join(sorted(unknown))}")
    return args


def main(argv=None):
    args = parse_args(argv)
    client = docker.from_env(timeout=300)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "timestamp": stamp,
        "machine": {"cpus": spawn.os.cpu_count()},
        "flavors": {},
        "complete": False,
    }
    workdir = Path(tempfile.mkdtemp(prefix="mlhub-bench-flavors-"))
    try:
        for flavor in args.flavors:
            entry = results["flavors"][flavor] = {"image": image_name(flavor)}
            if flavor in args.cold:
                spawn.log(f"{flavor}: cold build (removed {', '.join(remove_own_images(client, flavor))})")
                entry["build_cold"] = build(flavor)
                spawn.log(f"{flavor}: cold build {entry['build_cold']['seconds']} s")
            if image_or_none(client, image_name(flavor)) is None:
                spawn.log(f"{flavor}: {image_name(flavor)} is not built, skipped")
                entry["skipped"] = "not built"
                continue
            entry["build_cached"] = build(flavor)
            entry["size"] = sizes(client, flavor)
            if not args.no_spawn:
                entry["spawn"] = spawns(client, flavor, args.sequential, workdir)
            spawn.log(f"{flavor}: {entry}")
        results["complete"] = True
    finally:
        path = spawn.support.write_results(spawn.RESULTS, "flavors", results)
        print_table(results)
        print(f"\nwrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    sys.exit(main())
