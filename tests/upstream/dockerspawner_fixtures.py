"""Fixtures for DockerSpawner's own test suite (its sdist ships the tests, not their conftest.py).

Loaded as a pytest plugin (``-p dockerspawner_fixtures``) by ``tests/upstream/upstream_suite.py``,
in a pytest process of its own run on the unpacked ``tests/`` folder, never in ML Hub's test session.
The environment says what to run against:

- ``MLHUB_UPSTREAM_TARGET``: ``stock`` (DockerSpawner as released) or ``mlhub``
  (``dockerspawner.DockerSpawner`` rebound to ``MLHubDockerSpawner`` before the tests import it);
- ``MLHUB_UPSTREAM_PREFIX``: the containers' name prefix (stock) and hub name (ours) of this run;
- ``MLHUB_UPSTREAM_RESULTS``: where the outcome of each test is written (JSON);
- ``MLHUB_UPSTREAM_SHARD``: ``k/n``: this process runs every n-th test from the k-th (default ``0/1``).

No image is ever pulled: a pull raises, so a test that would pull fails.
"""

import itertools
import json
import os
import socket
from pathlib import Path
from unittest import mock

import docker as docker_sdk
import dockerspawner
import jupyterhub
import psutil
import pytest
from docker.api.image import ImageApiMixin

# the hub application and fixtures of JupyterHub's own tests (shipped in the jupyterhub package)
from jupyterhub.tests.conftest import app as jupyterhub_app  # noqa: F401
from jupyterhub.tests.conftest import cleanup_after, ssl_tmpdir, user  # noqa: F401
from jupyterhub.tests.mocking import MockHub
from jupyterhub.user import User

from upstream_suite import remove_leftovers

TARGET = os.environ.get("MLHUB_UPSTREAM_TARGET", "stock")
PREFIX = os.environ.get("MLHUB_UPSTREAM_PREFIX", "dsup")
RESULTS = os.environ.get("MLHUB_UPSTREAM_RESULTS", "")
SHARD, SHARDS = (int(part) for part in os.environ.get("MLHUB_UPSTREAM_SHARD", "0/1").split("/"))

if TARGET == "mlhub":
    from mlhubspawner.docker import MLHubDockerSpawner

    # the tests' `from dockerspawner import DockerSpawner` now gets ML Hub's class
    dockerspawner.DockerSpawner = MLHubDockerSpawner
elif TARGET != "stock":
    raise pytest.UsageError(f"MLHUB_UPSTREAM_TARGET must be 'stock' or 'mlhub', not {TARGET!r}")


def _refuse_pull(self, repository, tag=None, *args, **kwargs):
    raise RuntimeError(
        f"the upstream suite pulls nothing: {repository}:{tag or 'latest'} is not on the engine "
        "(tests/upstream/dockerspawner_differences.toml [images] lists the images built locally)"
    )


ImageApiMixin.pull = _refuse_pull


def _bridge_gateway():
    """The host's address on Docker's default bridge: where the stock class's containers reach the hub."""
    client = docker_sdk.from_env(timeout=30)
    try:
        bridge = client.networks.get("bridge").attrs
    finally:
        client.close()
    gateway = (bridge["IPAM"].get("Config") or [{}])[0].get("Gateway")
    if gateway:
        return gateway
    interface = bridge.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    for address in psutil.net_if_addrs().get(interface, []):
        if address.family == socket.AF_INET:
            return address.address
    raise RuntimeError(f"Docker's default bridge ({interface}) has no IPv4 address on this host")


# JupyterHub 6's `user.spawners[name]` no longer creates a missing named server (5's did); the suite
# (written for JupyterHub 5) relies on it for the names it tests, so both runs get 5's behaviour back
_jupyterhub_new_spawner = User._new_spawner


def _new_spawner_and_server(self, server_name, *args, **kwargs):
    if server_name not in self.orm_spawners:
        self._new_orm_spawner(server_name, server_name)
    return _jupyterhub_new_spawner(self, server_name, *args, **kwargs)


if jupyterhub.version_info >= (6,):
    User._new_spawner = _new_spawner_and_server

# the hub listens on every address and is reached at the bridge's gateway (ours: each network's gateway)
MockHub.hub_ip = "0.0.0.0"
MockHub.hub_connect_ip = _bridge_gateway()


@pytest.fixture
def app(jupyterhub_app):  # noqa: F811
    """JupyterHub's MockHub, configured so this run's containers carry this run's names."""
    config = jupyterhub_app.config
    config.DockerSpawner.prefix = PREFIX
    # a loaded machine (2 cores, several test sessions) starts Jupyter slower than the defaults allow
    config.Spawner.http_timeout = 60
    config.Spawner.start_timeout = 120
    if TARGET == "mlhub":
        config.MLHubDockerSpawner.hub_name = PREFIX
        # the hub runs on the Docker host (not in a container on the users' networks)
        config.MLHubDockerSpawner.connect_hub_via_gateway = True
    return jupyterhub_app


@pytest.fixture
def named_servers(app):
    with mock.patch.dict(
        app.tornado_settings, {"allow_named_servers": True, "named_server_limit_per_user": 2}
    ):
        yield


@pytest.fixture
def dockerspawner_configured_app(app, named_servers):
    """The hub with ``dockerspawner.DockerSpawner`` (stock or rebound) as its spawner class."""
    with mock.patch.dict(app.tornado_settings, {"spawner_class": dockerspawner.DockerSpawner}):
        yield app


_usernames = itertools.count(1)


@pytest.fixture
def username():
    return f"upstream-user-{next(_usernames)}"


@pytest.fixture(scope="session", autouse=True)
def docker():
    """A client for the engine (the tests fail when none answers); at the end, this run's containers,
    networks and volumes are removed (ML Hub keeps a stopped workspace's network and volume)."""
    client = docker_sdk.from_env(timeout=60)
    client.ping()
    try:
        yield client
    finally:
        remove_leftovers(client, PREFIX)
        client.close()


def _this_runs_containers(client):
    by_name = client.containers.list(all=True, filters={"name": PREFIX})
    by_label = client.containers.list(all=True, filters={"label": f"mlhub.origin={PREFIX}"})
    return {c.id: c for c in by_name + by_label}.values()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def containers_on_failure(request, docker):
    """After a failed test: this run's containers, their state and the end of their logs."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for container in _this_runs_containers(docker):
        logs = container.logs(tail=30).decode(errors="replace")
        print(f"----- {container.name} ({container.status}) -----\n{logs}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """This shard's tests: every SHARDS-th of those left after ``--deselect``, from the SHARD-th."""
    if SHARDS > 1:
        others = [item for index, item in enumerate(items) if index % SHARDS != SHARD]
        items[:] = [item for index, item in enumerate(items) if index % SHARDS == SHARD]
        config.hook.pytest_deselected(items=others)


# ---- outcomes: one per test, for the comparison of the two runs ---------------------------

_outcomes = {}


def pytest_runtest_logreport(report):
    """passed / failed / skipped per test id; a failure in setup or teardown is a failure."""
    previous = _outcomes.get(report.nodeid, {}).get("outcome")
    if report.failed:
        message = report.longreprtext.strip().splitlines()[-1:] if report.longreprtext else []
        _outcomes[report.nodeid] = {"outcome": "failed", "when": report.when, "message": "".join(message)}
    elif report.skipped and previous != "failed":
        _outcomes[report.nodeid] = {"outcome": "skipped", "when": report.when, "message": ""}
    elif report.when == "call" and previous is None:
        _outcomes[report.nodeid] = {"outcome": "passed", "when": report.when, "message": ""}


def pytest_sessionfinish(session):
    if RESULTS:
        Path(RESULTS).write_text(json.dumps({"target": TARGET, "tests": _outcomes}, indent=1, sort_keys=True))
