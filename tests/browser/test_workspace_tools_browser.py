"""The ml flavor's browser tools through the hub's proxy, in headless Chromium (Debian's, driven by Playwright).

One hub for this module offering the ml image (``make images`` builds it; missing, these tests fail). The admin
logs in through the browser, starts an ml workspace and opens, from the links on the home page's row, VS Code
(code-server), the desktop (noVNC on TigerVNC) and TensorBoard, all under ``/user/admin/tools/``; another user and
an anonymous browser get none of them. Screenshots to tests/artifacts/ (ignored by git); the time from a click to
the tool's first useful paint is printed.
"""

import os
import textwrap
import time
from urllib.parse import urlparse

import pytest
from docker.errors import ImageNotFound
from test_ui_browser import (  # noqa: F401 (chromium: a fixture)
    admin_with_workspace,
    chromium,
    flavor_hub,
    log_in_in_browser,
    new_context,
    recording_page,
    shot,
)

from mlhubspawner import __version__, naming

from support import log_in, sign_up

pytestmark = [pytest.mark.docker, pytest.mark.hub]

ML = os.environ.get("MLHUB_ML_IMAGE", f"mlhub-workspace-ml:{__version__}")  # another build of the ml flavor
SERVER = "tools"
OWNER_URL = f"/user/admin/{SERVER}/"
TOOL_MS = 90_000  # a tool's first start in the workspace (code-server, TensorBoard, the VNC server)
RUN = "browser-run"  # the TensorBoard run the workspace's Python writes

POLICY = """
c.MLHubDockerSpawner.max_cpu_limit = 2
c.MLHubDockerSpawner.max_mem_limit = "3G"
c.MLHubDockerSpawner.max_days_to_live = 30
"""

# Run in the workspace as its user: a scalar series under /workspace/logs/<run>, with PyTorch's writer when the
# image has it, else TensorBoard's own (no TensorFlow in the image).
WRITE_RUN = textwrap.dedent(
    f"""
    import math
    try:
        from torch.utils.tensorboard import SummaryWriter as Writer
    except ImportError:
        from tensorboard.summary import Writer
    writer = Writer("/workspace/logs/{RUN}")
    for step in range(25):
        writer.add_scalar("loss", math.exp(-step / 6), step)
    writer.close()
    print("wrote", writer.__class__.__module__)
    """
)


@pytest.fixture(scope="module")
def ml_image(docker):
    try:
        return docker.images.get(ML)
    except ImageNotFound:
        pytest.fail(f"{ML} is missing: run `make images` first", pytrace=False)


@pytest.fixture(scope="module")
def hub(docker, ml_image, tmp_path_factory):
    """This module's hub: the ml flavor offered (and the default)."""
    with flavor_hub(docker, tmp_path_factory.mktemp("toolshub"), "tl", ML, POLICY) as hub:
        yield hub


@pytest.fixture(scope="module")
def owner(chromium, hub):  # noqa: F811 (the imported fixture)
    """The admin's browser, logged in, with a running ml workspace ``tools``."""
    with admin_with_workspace(chromium, hub, SERVER, ML) as context:
        yield context


@pytest.fixture
def page(owner):
    with recording_page(owner) as page:
        yield page


def open_tool(page, title):
    """Click the home row's link to a tool (it opens a new tab); the tool's page and the click's time."""
    page.goto("/hub/home")
    link = page.locator(f'tr.mlhub-workspace[data-server="{SERVER}"] a.mlhub-tool').filter(has_text=title)
    assert link.count() == 1, page.locator("#mlhub-workspaces").inner_text()
    clicked = time.monotonic()
    with page.context.expect_page() as opened:
        link.click()
    tool = opened.value
    tool.set_default_timeout(TOOL_MS)
    return tool, clicked


def workspace_exec(docker, hub, command):
    container = docker.containers.get(naming.workspace_name(hub.hub_name, "admin", SERVER))
    result = container.exec_run(command, user="1000", workdir="/workspace")
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode(errors="replace")


# ---- the tests ------------------------------------------------------------------------------------------


def test_the_home_row_of_a_running_ml_workspace_links_its_tools(page):
    page.goto("/hub/home")
    links = page.locator(f'tr.mlhub-workspace[data-server="{SERVER}"] a.mlhub-tool')
    assert {
        links.nth(i).inner_text().strip(): links.nth(i).get_attribute("href") for i in range(links.count())
    } == {
        "VS Code": f"{OWNER_URL}vscode/",
        "Desktop": f"{OWNER_URL}desktop/",
        "TensorBoard": f"{OWNER_URL}tensorboard/",
    }
    shot(page, "home-tools")


def test_jupyterlab_launcher_has_a_tile_per_tool(page):
    page.goto(f"{OWNER_URL}lab")
    launcher = page.locator(".jp-Launcher")
    launcher.wait_for(state="visible", timeout=60_000)
    for title in ("VS Code", "Desktop", "TensorBoard"):
        page.locator(".jp-LauncherCard-label", has_text=title).first.wait_for(state="visible")
    shot(page, "lab-launcher-tools")


def test_vscode_opens_the_editor_on_workspace(page, docker, hub):
    workspace_exec(docker, hub, ["sh", "-c", "echo 'print(42)' > /workspace/hello_from_vscode.py"])
    editor, clicked = open_tool(page, "VS Code")
    try:
        editor.locator(".monaco-workbench").wait_for(state="visible")
        painted = time.monotonic() - clicked
        assert urlparse(editor.url).path.startswith(f"{OWNER_URL}vscode/"), editor.url
        # the explorer shows /workspace's files
        editor.locator(".explorer-folders-view .monaco-list-row", has_text="hello_from_vscode.py").wait_for()
        print(f"VS Code: workbench painted {painted:.1f}s after the click (first start of code-server)")
        editor.locator(".explorer-folders-view .monaco-list-row", has_text="hello_from_vscode.py").click()
        editor.locator(".monaco-editor .view-lines", has_text="print(42)").first.wait_for()
        # no AI chat (it needs a cloud account): the home's default settings close its side bar once loaded
        editor.locator(".part.auxiliarybar").wait_for(state="hidden", timeout=20_000)
        assert editor.get_by_text("Build with Agent").count() == 0
        shot(editor, "vscode")
    finally:
        editor.close()


def test_desktop_connects_to_the_vnc_server(page):
    desktop, clicked = open_tool(page, "Desktop")
    try:
        desktop.locator("#status", has_text="Connected").wait_for()
        painted = time.monotonic() - clicked
        desktop.locator("#screen canvas").wait_for(state="visible")
        print(f"Desktop: noVNC connected {painted:.1f}s after the click (first start of the VNC server)")
        desktop.wait_for_timeout(3000)  # the session's window manager and terminal draw
        shot(desktop, "desktop")
    finally:
        desktop.close()


def test_tensorboard_shows_a_run_written_in_the_workspace(page, docker, hub):
    output = workspace_exec(docker, hub, ["python", "-c", WRITE_RUN])
    assert "wrote" in output, output
    board, clicked = open_tool(page, "TensorBoard")
    try:
        board.wait_for_function(
            f"document.body && document.body.innerText.includes({RUN!r})", timeout=TOOL_MS, polling=500
        )
        painted = time.monotonic() - clicked
        assert urlparse(board.url).path.startswith(f"{OWNER_URL}tensorboard/"), board.url
        board.wait_for_function("document.body.innerText.includes('loss')", timeout=30_000, polling=500)
        print(f"TensorBoard: run {RUN!r} shown {painted:.1f}s after the click (first start of TensorBoard)")
        shot(board, "tensorboard")
    finally:
        board.close()


@pytest.mark.parametrize("tool", ["vscode/", "desktop/", "tensorboard/"])
def test_an_anonymous_browser_is_sent_to_the_login(chromium, hub, owner, tool):  # noqa: F811
    context = new_context(chromium, hub)
    try:
        anonymous = context.new_page()
        anonymous.goto(f"{OWNER_URL}{tool}")
        assert urlparse(anonymous.url).path == "/hub/login", anonymous.url
        assert anonymous.locator(".monaco-workbench, #screen, canvas").count() == 0
    finally:
        context.close()


def test_another_user_gets_none_of_the_tools(chromium, hub, owner):  # noqa: F811
    sign_up(hub, "bob")
    admin, r = log_in(hub, "admin")
    assert r.status_code == 302, r.text
    assert admin.get(f"{hub.url}/hub/authorize/bob", timeout=30).status_code == 200
    context = new_context(chromium, hub)
    try:
        bob = context.new_page()
        log_in_in_browser(bob, "bob")
        for tool in ("vscode/", "desktop/", "tensorboard/", "lab"):
            response = bob.goto(f"{OWNER_URL}{tool}")
            path = urlparse(bob.url).path
            assert response.status == 403 or not path.startswith("/user/admin/"), (
                tool,
                response.status,
                path,
            )
            assert bob.locator(".monaco-workbench, #screen canvas, .jp-Launcher").count() == 0, tool
        shot(bob, "tools-forbidden")
    finally:
        context.close()
