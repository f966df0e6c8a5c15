"""Shared fixtures: the real Docker engine, a real hub, label-based clean-up, logs on failure."""

import pytest

from support import LABEL_ORIGIN, Hub, docker_client

# policy of the test hub: small, so that limits and quotas are reachable
TEST_POLICY = """
c.MLHubDockerSpawner.max_cpu_limit = 1.5
c.MLHubDockerSpawner.max_mem_limit = "2G"
c.MLHubDockerSpawner.max_days_to_live = 30
c.MLHubDockerSpawner.max_servers_per_user = 2
c.MLHubDockerSpawner.max_total_mem_per_user = "3G"
c.MLHubDockerSpawner.workspace_images = ["mlhub-test-missing:1"]  # offered, but not on the engine
"""


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def docker():
    """The Docker engine: the tests fail, never skip, when none answers."""
    client = docker_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def hub(docker, tmp_path_factory):
    """One ML Hub (JupyterHub + configurable-http-proxy + our spawner) for the session."""
    hub = Hub(tmp_path_factory.mktemp("hub"), user_config=TEST_POLICY)
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


@pytest.fixture(autouse=True)
def dump_on_failure(request):
    """After a failed test that used the hub: print the hub log and its containers' logs."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for name in ("hub", "chub", "plain_front", "tls_front"):
        if name not in request.fixturenames:
            continue
        hub = request.getfixturevalue(name)
        client = request.getfixturevalue("docker")
        print(f"----- hub log ({hub.hub_name}) -----\n{hub.log_tail(120)}")
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_ORIGIN}={hub.hub_name}"}
        ):
            logs = container.logs(tail=40).decode(errors="replace")
            print(f"----- {container.name} ({container.status}) -----\n{logs}")
