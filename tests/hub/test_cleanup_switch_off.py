"""IS_CLEANUP_SERVICE_ENABLED=false on a real hub: no cleanup service at all, and the pages still work."""

import psutil
import pytest
import requests

from support import Hub, log_in


def cleanup_processes(hub):
    """The hub's child processes (recursively) that run the cleanup service."""
    children = psutil.Process(hub.process.pid).children(recursive=True)
    found = []
    for child in children:
        try:
            if "cleanup_service" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found, children


@pytest.fixture(scope="module")
def no_cleanup_hub(docker, tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("no-cleanup-hub"), env={"IS_CLEANUP_SERVICE_ENABLED": "false"})
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


def test_the_default_hub_runs_its_cleanup_service(hub):
    """The control: the same look finds the service on a hub with the default (true)."""
    found, _ = cleanup_processes(hub)
    assert len(found) == 1
    assert "cleanup-service" in hub.api("GET", "services").json()


def test_no_cleanup_process_route_or_service(no_cleanup_hub):
    hub = no_cleanup_hub
    found, children = cleanup_processes(hub)
    assert found == []
    assert any("configurable-http-proxy" in " ".join(c.cmdline()) for c in children)  # the look sees children
    services = hub.api("GET", "services").json()
    assert "cleanup-service" not in services and "ssh-front" in services
    r = requests.get(f"{hub.url}/services/cleanup-service/", timeout=30)
    assert r.status_code == 404
    r = hub.api("GET", "services/cleanup-service")
    assert r.status_code == 404
    assert "ML Hub cannot start" not in hub.log_tail(200)


def test_home_and_admin_pages_render_and_say_cleanup_is_off(no_cleanup_hub):
    hub = no_cleanup_hub
    admin, r = log_in(hub, "admin")
    assert r.status_code == 302
    home = admin.get(f"{hub.url}/hub/home", timeout=30)
    assert home.status_code == 200
    page = admin.get(f"{hub.url}/hub/mlhub/admin", timeout=30)
    assert page.status_code == 200
    assert "services/cleanup-service" not in page.text
    assert "the cleanup service is off" in page.text
    # the cleanup URL through the admin's own session is no page either
    assert admin.get(f"{hub.url}/services/cleanup-service/expired", timeout=30).status_code == 404
