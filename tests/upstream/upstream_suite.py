"""DockerSpawner's own test suite, run on the stock class and on ``MLHubDockerSpawner``.

The tests come from DockerSpawner's source distribution on the package registry (the version we pin,
checked against the sha256 in ``dockerspawner_differences.toml``), cached under the state directory
and unpacked to a temporary directory: nothing of it is kept in this repository. Each run is a pytest
process of its own with :mod:`dockerspawner_fixtures` as plugin.

:func:`compare` is pure: the two runs' outcomes and the differences file in, the problems out.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DIFFERENCES_FILE = HERE / "dockerspawner_differences.toml"
TEST_LABEL = "mlhub.test=upstream-dockerspawner"
PACKAGE = "dockerspawner"


@dataclass(frozen=True)
class Differences:
    """The contents of ``dockerspawner_differences.toml``."""

    version: str
    sha256: str
    images: dict  # image name the suite uses -> what it is made from here ("docker-stacks-mimic", "base")
    not_run: dict  # test id (or file) -> why it runs in neither run
    intended: dict  # test id -> why it fails on ours though it passes on the stock class


def load_differences(path=DIFFERENCES_FILE):
    data = tomllib.loads(Path(path).read_text())
    sdist = data["sdist"]
    return Differences(
        version=sdist["version"],
        sha256=sdist["sha256"],
        images=dict(data.get("images", {})),
        not_run=dict(data.get("not_run", {})),
        intended=dict(data.get("differences", {})),
    )


def state_dir():
    return Path(os.environ.get("MLHUB_STATE_DIR") or REPO / ".mlhub")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist(version, sha256, cache_dir=None, timeout=300):
    """The sdist of ``dockerspawner==version``, from the cache or the registry; its sha256 is checked."""
    cache_dir = Path(cache_dir or state_dir() / "cache" / "upstream")
    cached = cache_dir / f"{PACKAGE}-{version}-{sha256[:16]}.tar.gz"
    if cached.is_file() and sha256_of(cached) == sha256:
        return cached
    download = cache_dir / f"download-{os.getpid()}"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
            + ["--disable-pip-version-check", "-q", "-d", str(download)]
            + [f"{PACKAGE}=={version}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        found = sorted(download.glob(f"{PACKAGE}-{version}.tar.gz"))
        if result.returncode != 0 or not found:
            raise RuntimeError(
                f"pip could not download the sdist of {PACKAGE}=={version}:\n{result.stderr[-3000:]}"
            )
        got = sha256_of(found[0])
        if got != sha256:
            raise RuntimeError(
                f"the registry's {found[0].name} has sha256 {got}, not the {sha256} pinned in "
                f"{DIFFERENCES_FILE.name}: a changed upload, or the pin was not updated with the version"
            )
        found[0].replace(cached)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return cached


def unpack_tests(sdist, dest):
    """Unpack the sdist's ``tests/`` folder into ``dest``; returns ``dest``."""
    dest = Path(dest)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) > 2 and parts[1] == "tests" and member.isfile():
                member.name = str(Path(*parts[1:]))
                members.append(member)
        if not any(m.name.endswith(".py") for m in members):
            raise RuntimeError(f"{Path(sdist).name} ships no tests/ folder")
        tar.extractall(dest, members=members, filter="data")
    # the suite's own settings (its pyproject.toml is not unpacked; ML Hub's must not apply)
    (dest / "pytest.ini").write_text(
        "[pytest]\n"
        "asyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = module\n"
        "asyncio_default_test_loop_scope = module\n"
        "addopts = -p no:cacheprovider -p dockerspawner_fixtures -q -rA --durations=15\n"
        "markers =\n    role\n    user\n    slow\n    group\n    services\n"
    )
    return dest


@dataclass
class Run:
    """One run of (a shard of) the suite: ``stock`` or ``mlhub``."""

    target: str
    prefix: str
    root: Path
    deselect: tuple = ()
    shard: int = 0
    shards: int = 1
    process: subprocess.Popen = None
    started: float = 0.0
    seconds: float = 0.0
    outcomes: dict = field(default_factory=dict)

    @property
    def name(self):
        return f"{self.target}-{self.shard}"

    @property
    def log_path(self):
        return self.root / f"{self.name}.log"

    @property
    def results_path(self):
        return self.root / f"{self.name}-results.json"

    def start(self):
        env = dict(
            os.environ,
            MLHUB_UPSTREAM_TARGET=self.target,
            MLHUB_UPSTREAM_PREFIX=self.prefix,
            MLHUB_UPSTREAM_RESULTS=str(self.results_path),
            MLHUB_UPSTREAM_SHARD=f"{self.shard}/{self.shards}",
            HUB_NAME=self.prefix,
            PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            # configurable-http-proxy for the hub (make deps installs it there)
            PATH=f"{state_dir() / 'node/node_modules/.bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        )
        env.pop("PYTEST_ADDOPTS", None)
        # a directory of its own: the hub writes its proxy's pid file there, and kills the proxy it names
        workdir = self.root / f"{self.name}-run"
        workdir.mkdir()
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(self.root / "pytest.ini"),
            "--rootdir",
            str(self.root),
        ]
        command += [f"--basetemp={workdir / 'tmp'}"]
        command += [f"--deselect=tests/{test}" for test in self.deselect]
        self.started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                command + [str(self.root / "tests")],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait(self, timeout):
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(30)
            raise AssertionError(f"the {self.name} run took over {timeout}s:\n{self.log_tail()}") from None
        finally:
            self.seconds = time.monotonic() - self.started
        if not self.results_path.is_file():
            raise AssertionError(
                f"the {self.name} run wrote no results (exit {self.process.returncode}):\n{self.log_tail()}"
            )
        tests = json.loads(self.results_path.read_text())["tests"]
        # ids as in the differences file: relative to the suite's tests/ folder
        self.outcomes = {test.removeprefix("tests/"): result for test, result in tests.items()}
        return self

    def log_tail(self, lines=80):
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])


def merged(runs):
    """The outcomes of a target's shards, as one run's."""
    outcomes = {}
    for run in runs:
        outcomes.update(run.outcomes)
    return outcomes


def count(outcomes, outcome):
    return sum(1 for result in outcomes.values() if result["outcome"] == outcome)


def compare(stock, ours, intended):
    """Problems (strings) between two runs' outcomes ``{test id: {"outcome": ...}}`` and the listed differences.

    - every test must pass on the stock class (else this harness, not our class, is wrong);
    - every test that fails on ours must be listed in ``intended`` with a reason;
    - every listed test must still fail on ours (else the entry is stale) and exist in the suite.
    """
    problems = []
    if set(stock) != set(ours):
        problems.append(f"the runs collected different tests: {sorted(set(stock) ^ set(ours))}")
    for test, result in sorted(stock.items()):
        if result["outcome"] != "passed":
            problems.append(
                f"{test}: {result['outcome']} on the stock class too ({result.get('message', '')})"
            )
    for test, result in sorted(ours.items()):
        if result["outcome"] == "passed" or stock.get(test, {}).get("outcome") != "passed":
            continue
        reason = str(intended.get(test, "")).strip()
        if not reason:
            problems.append(
                f"{test}: passes on DockerSpawner, {result['outcome']} on MLHubDockerSpawner, and is not an "
                f"intended difference ({result.get('message', '')})"
            )
    for test in sorted(intended):
        if test not in ours:
            problems.append(f"{test}: listed as an intended difference but not in the suite (remove it)")
        elif ours[test]["outcome"] == "passed":
            problems.append(f"{test}: listed as an intended difference but passes on ours (remove the entry)")
    return problems


# ---- Docker: the images the suite names, and what the runs leave behind ------------------


def prepare_images(client, wanted, workspace_image, base_image, build):
    """Tag local images with the registry names the suite uses, so that nothing is pulled.

    ``wanted``: ``{name: "docker-stacks-mimic" | "base"}``; the mimic (``tests/images/docker-stacks-mimic``,
    what ``quay.io/jupyterhub/singleuser`` is: a Docker Stacks image running ``jupyterhub-singleuser``)
    is built FROM ``workspace_image``; ``base`` is ``base_image`` (a shell and coreutils). A name the
    engine already has is left as it is. Returns the names added here (:func:`remove_images` them).
    """
    from docker.errors import ImageNotFound

    added = []
    sources = {}
    for name, source in wanted.items():
        try:
            client.images.get(name)
            continue
        except ImageNotFound:
            pass
        if source not in sources:
            if source == "docker-stacks-mimic":
                tag = "mlhub-test/upstream-singleuser:mimic"
                build(
                    client,
                    path=str(REPO / "tests/images/docker-stacks-mimic"),
                    tag=tag,
                    buildargs={"BASE_IMAGE": workspace_image},
                    labels=dict([TEST_LABEL.split("=", 1)]),
                    rm=True,
                    forcerm=True,
                )
                added.append(tag)
                sources[source] = client.images.get(tag)
            elif source == "base":
                sources[source] = client.images.get(base_image)
            else:
                raise ValueError(f"[images] {name}: unknown source {source!r}")
        repository, _, tag = name.rpartition(":")
        sources[source].tag(repository, tag)
        added.append(name)
    return added


def remove_images(client, names):
    for name in reversed(names):
        client.images.remove(name, noprune=False)


def leftovers(client, prefix):
    """Containers, networks and volumes of a run (by name prefix or ``mlhub.origin`` label): ``[(kind, name)]``."""
    found = []
    for kind, collection in (("container", client.containers), ("network", client.networks)):
        kwargs = {"all": True} if kind == "container" else {}
        for filters in ({"name": prefix}, {"label": f"mlhub.origin={prefix}"}):
            for item in collection.list(filters=filters, **kwargs):
                if item.name.startswith(prefix) or filters.get("label"):
                    found.append((kind, item.name))
    for filters in ({"name": prefix}, {"label": f"mlhub.origin={prefix}"}):
        for volume in client.volumes.list(filters=filters):
            if volume.name.startswith(prefix) or filters.get("label"):
                found.append(("volume", volume.name))
    return sorted(set(found))


def remove_leftovers(client, prefix):
    from docker.errors import NotFound

    for kind, name in leftovers(client, prefix):
        try:
            if kind == "container":
                client.containers.get(name).remove(force=True, v=True)
            elif kind == "network":
                network = client.networks.get(name)
                for container in network.attrs.get("Containers") or {}:
                    network.disconnect(container, force=True)
                network.remove()
            else:
                client.volumes.get(name).remove(force=True)
        except NotFound:
            pass
