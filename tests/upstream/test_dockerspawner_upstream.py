"""DockerSpawner's own test suite passes on ``MLHubDockerSpawner``, but for the differences we intend.

The suite (DockerSpawner's sdist, at the pinned version) runs twice side by side on the real engine:
on the stock class, and with ``dockerspawner.DockerSpawner`` rebound to ours. Every test must pass on
the stock class; a test that fails on ours must be listed, with its reason, in
``dockerspawner_differences.toml``; a listed test that passes on ours is a stale entry.
"""

import os
import secrets
import tomllib
from importlib.metadata import version

import dockerspawner
import pytest

from mlhubspawner import __version__

from support import REPO, base_image, build_image, remove_egress_table
from upstream_suite import (
    Run,
    compare,
    count,
    fetch_sdist,
    leftovers,
    load_differences,
    merged,
    prepare_images,
    remove_images,
    remove_leftovers,
    unpack_tests,
)

pytestmark = pytest.mark.docker

RUN_TIMEOUT_SECONDS = 600
SHARDS = 2  # processes per target


def test_the_differences_file_is_for_the_installed_dockerspawner():
    differences = load_differences()
    assert version("dockerspawner") == differences.version, (
        "dockerspawner_differences.toml's [sdist] is for another DockerSpawner than the installed one: "
        "update its version and sha256 with the pin in pyproject.toml"
    )
    # the version ML Hub depends on, in the package and in the hub image
    pins = {
        "pyproject.toml": tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"],
        "resources/hub/requirements.txt": (REPO / "resources/hub/requirements.txt").read_text().splitlines(),
    }
    for path, requirements in pins.items():
        assert f"dockerspawner=={differences.version}" in [r.split(";")[0].strip() for r in requirements], (
            path
        )
    for test, reason in {**differences.not_run, **differences.intended}.items():
        assert isinstance(reason, str) and len(reason.split()) >= 5, f"{test}: give the reason in a sentence"


@pytest.fixture(scope="module")
def suite_images(docker):
    """The registry images the suite names, tagged from local images (removed afterwards)."""
    wanted = dict(load_differences().images)
    wanted[dockerspawner.DockerSpawner.class_traits()["image"].default_value] = "docker-stacks-mimic"
    workspace = os.environ.get("MLHUB_WORKSPACE_IMAGE", f"mlhub-workspace:{__version__}")
    added = prepare_images(docker, wanted, workspace, base_image(docker), build_image)
    try:
        yield wanted
    finally:
        remove_images(docker, added)


def test_dockerspawner_suite_passes_on_mlhub_docker_spawner(docker, suite_images, tmp_path):
    differences = load_differences()
    sdist = fetch_sdist(differences.version, differences.sha256)
    root = unpack_tests(sdist, tmp_path / "suite")
    for entry in differences.not_run:  # a stale entry would deselect nothing, silently
        path, _, name = entry.partition("::")
        source = root / "tests" / path
        found = source.is_file() and (not name or f"def {name.split('[')[0]}(" in source.read_text())
        assert found, f"[not_run] {entry}: no such test in the suite"
    token = secrets.token_hex(3)
    # each target in SHARDS processes side by side (their names, hubs and ports differ): a spawn
    # waits mostly on the workspace's Jupyter starting, so two at a time keep the engine busy
    runs = {
        target: [
            Run(target, f"dsup-{target[0]}{shard}{token}", root, tuple(differences.not_run), shard, SHARDS)
            for shard in range(SHARDS)
        ]
        for target in ("stock", "mlhub")
    }
    every_run = runs["stock"] + runs["mlhub"]
    left = []
    try:
        for run in every_run:
            run.start()
        for run in every_run:
            run.wait(RUN_TIMEOUT_SECONDS)
    finally:
        for run in every_run:
            if run.process is not None and run.process.poll() is None:
                run.process.kill()
            left += leftovers(docker, run.prefix)
            remove_leftovers(docker, run.prefix)
            if run.target == "mlhub":
                remove_egress_table(docker, run.prefix)
    stock, ours = merged(runs["stock"]), merged(runs["mlhub"])
    print(f"\nDockerSpawner {differences.version}'s suite ({len(stock)} tests, logs in {root}):")
    for target, outcomes in (("stock", stock), ("mlhub", ours)):
        seconds = max(run.seconds for run in runs[target])
        print(
            f"  {target:5}: {count(outcomes, 'passed')} passed, {count(outcomes, 'failed')} failed, "
            f"{count(outcomes, 'skipped')} skipped in {seconds:.0f}s"
        )
    for test, result in sorted(ours.items()):
        if result["outcome"] != "passed":
            listed = "intended" if test in differences.intended else "NOT LISTED"
            print(f"  ours {result['outcome']}: {test} ({listed}) {result['message'][:200]}")
    assert stock, f"the suite ran no test:\n{runs['stock'][0].log_tail()}"
    problems = compare(stock, ours, differences.intended)
    assert not problems, "\n".join(problems) + f"\n(logs: {root}/*.log)"
    assert not left, f"the suite left these behind (removed now): {left}"
