"""The admin's profiles in a real browser: the form offers them first, the custom fields appear only while
Custom is chosen, and a workspace started with a profile shows it on the home page."""

import secrets

import pytest
from test_ui_browser import (  # noqa: F401 (chromium: a fixture)
    chromium,
    log_in_in_browser,
    new_context,
    shot,
    submit,
)

from support import Hub

pytestmark = [pytest.mark.docker, pytest.mark.hub]

CONFIG = """
c.MLHubDockerSpawner.max_cpu_limit = 1.5
c.MLHubDockerSpawner.max_mem_limit = "2G"
c.MLHubSpawner.profiles = [
    {"name": "Team small", "slug": "small", "description": "One CPU, 1 GB", "cpu_limit": 1, "mem_limit": "1G",
     "default": True},
    {"name": "<b>Bold</b> half", "slug": "half", "cpu_limit": 0.5, "mem_limit": "512M"},
]
"""
RUNNING_MS = 120_000


@pytest.fixture(scope="module")
def hub(docker, tmp_path_factory):
    hub = Hub(
        tmp_path_factory.mktemp("profiles-browser"),
        hub_name=f"pb{secrets.token_hex(3)}",
        user_config=CONFIG,
        env={"MLHUB_WORKSPACE_IMAGES": None},
    )
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


def test_custom_fields_only_with_custom_and_the_profile_on_home(chromium, hub):  # noqa: F811
    context = new_context(chromium, hub)
    page = context.new_page()
    try:
        log_in_in_browser(page, "admin")
        page.goto("/hub/spawn/admin/picked")
        profiles = page.locator(".mlhub-profile label")
        assert profiles.all_inner_texts() == ["Team small", "<b>Bold</b> half", "Custom"]  # text, not markup
        assert page.locator("input[name=profile][value=small]").is_checked()  # the default
        cpu = page.locator("input[name=cpu_limit]")
        assert not cpu.is_visible()
        page.locator("input[name=profile][value=custom]").check()
        assert cpu.is_visible()
        shot(page, "profiles-form-custom")
        page.locator("input[name=profile][value=half]").check()
        assert not cpu.is_visible()
        shot(page, "profiles-form")
        submit(page)
        page.wait_for_url("**/hub/spawn-pending/admin/picked**", timeout=RUNNING_MS)
        hub.wait_ready("admin", "picked")
        page.goto("/hub/home")
        cell = page.locator("tr.mlhub-workspace[data-server=picked] .mlhub-profile-name")
        assert cell.inner_text() == "Profile: <b>Bold</b> half"
        assert (
            "0.5 CPUs" in page.locator("tr.mlhub-workspace[data-server=picked] .mlhub-resources").inner_text()
        )
        shot(page, "profiles-home")
    finally:
        page.close()
        context.close()
    hub.stop_server("admin", "picked", remove=True)
