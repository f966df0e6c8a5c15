"""The home page's SSH button for a workspace whose sshd does not answer: the hub's 409 message, shown in
the dialog instead of an ssh config that cannot work (real hub, real engine, real browser)."""

import secrets

import pytest
import test_ui_browser as ui

from mlhubspawner import naming

from support import Hub

chromium = ui.chromium  # the browser, a fixture of the UI tests

pytestmark = [pytest.mark.docker, pytest.mark.hub]

POLICY = """
c.MLHubDockerSpawner.max_mem_limit = "2G"
c.MLHubDockerSpawner.max_total_mem_per_user = "2G"
c.SSHHealth.cache_seconds = 1
"""


@pytest.fixture(scope="module")
def hub(docker, tmp_path_factory):
    """This module's own hub, probes of sshd cached for 1 s."""
    hub = Hub(
        tmp_path_factory.mktemp("sshhealthhub"), hub_name=f"bs{secrets.token_hex(3)}", user_config=POLICY
    )
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def test_the_ssh_button_says_why_a_workspace_without_sshd_cannot_be_reached(chromium, hub, docker):
    assert hub.spawn("admin", "box", {"mem_limit": "512M"}).status_code in (201, 202)
    container = docker.containers.get(naming.workspace_name(hub.hub_name, "admin", "box"))
    context = ui.new_context(chromium, hub)
    try:
        page = context.new_page()
        ui.sign_up_in_browser(page, "admin")
        ui.log_in_in_browser(page, "admin")
        ui.wait_running(page, "box")
        page.goto("/hub/home")
        text = ui.open_dialog(page, "box", ".mlhub-ssh")
        assert "ProxyJump tunnel@" in text, text

        result = container.exec_run(["sh", "-c", "kill $(cat /run/mlhub-sshd/sshd.pid)"])
        assert result.exit_code == 0, result.output
        page.wait_for_timeout(1500)  # past the hub's cache of the last probe
        page.goto("/hub/home")
        text = ui.open_dialog(page, "box", ".mlhub-ssh")
        ui.shot(page, "ssh-dialog-no-sshd")
        assert text.startswith("Error: the workspace's SSH server is not running: "), text
        assert "images without sshd cannot be reached over SSH" in text and "ProxyJump" not in text, text
    finally:
        context.close()
    hub.stop_server("admin", "box")
