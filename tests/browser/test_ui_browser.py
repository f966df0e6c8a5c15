"""The web UI in headless Chromium (Debian's, driven by Playwright) against a real hub and Docker engine.

One hub for this module (its own name, data and containers, removed by label afterwards); signing up as the
admin is refused, the admin logs in (MLHUB_ADMIN_PASSWORD) through the browser; a second user signs up and
is authorized on NativeAuthenticator's page.
Screenshots of the main pages go to tests/artifacts/ (ignored by git).
"""

import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mlhubspawner import __version__

from support import ADMIN_NAMES, LABEL_ORIGIN, PASSWORD, REPO, Hub

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    IMPORT_PROBLEM = None
except ImportError as e:  # reported by the chromium fixture (a failure under CI=true)
    sync_playwright = None
    PlaywrightError = PlaywrightTimeout = RuntimeError
    IMPORT_PROBLEM = f"Playwright's Python package is missing ({e}): run `make browser`"

pytestmark = [pytest.mark.docker, pytest.mark.hub]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
ARTIFACTS = REPO / "tests" / "artifacts"
STEP_MS = 15_000  # one navigation or one element appearing
SPAWN_S = 120  # a workspace reaching "running"

# like tests/conftest.py's policy, with room for the module's servers and only images the engine has
POLICY = """
c.MLHubDockerSpawner.max_cpu_limit = 1.5
c.MLHubDockerSpawner.max_mem_limit = "2G"
c.MLHubDockerSpawner.max_days_to_live = 30
c.MLHubDockerSpawner.max_servers_per_user = 4
c.MLHubDockerSpawner.max_total_mem_per_user = "6G"
"""

DELETE = re.compile("delete|remove", re.IGNORECASE)
XSS_PAYLOAD = "</script><script>window.__mlhub_xss=1</script>\"'"


# ---- the browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium under Playwright; the tests fail (never skip) when it cannot start."""
    problem = IMPORT_PROBLEM
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing: run `make browser`"
    playwright = browser = None
    if problem is None:
        playwright = sync_playwright().start()
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
        except PlaywrightError as e:
            playwright.stop()
            problem = f"{CHROMIUM} did not start under Playwright: {e}"
    if problem is not None:
        pytest.fail(f"browser tests cannot run: {problem}", pytrace=False)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture(scope="module")
def hub(docker, tmp_path_factory):
    """This module's own hub (overrides conftest's, so that its log is dumped on failure too)."""
    hub = Hub(tmp_path_factory.mktemp("browserhub"), hub_name=f"br{secrets.token_hex(3)}", user_config=POLICY)
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def new_context(chromium, hub):
    context = chromium.new_context(viewport=VIEWPORT, base_url=hub.url)
    context.set_default_timeout(STEP_MS)
    context.set_default_navigation_timeout(STEP_MS)
    return context


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def submit(page, form="form"):
    """Submit ``form`` by clicking its submit control and wait for the resulting page."""
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.locator(f"{form} [type=submit]").first.click()


def sign_up_in_browser(page, username):
    page.goto("/hub/signup")
    page.fill("input[name=username]", username)
    page.fill("input[name=signup_password]", PASSWORD)
    page.fill("input[name=signup_password_confirmation]", PASSWORD)
    submit(page)
    assert page.url.rstrip("/").endswith("/hub/signup"), page.url  # NativeAuthenticator answers on the page
    text = page.locator(".alert").first.inner_text()
    if username in ADMIN_NAMES:  # made at hub start, never signed up
        assert "cannot be signed up" in text, text
    else:
        assert "signup was successful" in text or "sent to the admin" in text, text


def log_in_in_browser(page, username):
    page.goto("/hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    submit(page)
    assert "/hub/login" not in page.url, page.locator("body").inner_text()


@pytest.fixture(scope="module")
def admin_context(chromium, hub):
    context = new_context(chromium, hub)
    page = context.new_page()
    sign_up_in_browser(page, "admin")
    log_in_in_browser(page, "admin")
    page.close()
    yield context
    context.close()


@contextlib.contextmanager
def recording_page(context):
    """A fresh page of ``context``; dialogs (confirm/alert) are recorded in ``page.dialogs`` and accepted."""
    page = context.new_page()
    page.dialogs = []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)
    try:
        yield page
    finally:
        page.close()


@contextlib.contextmanager
def flavor_hub(docker, directory, prefix, image, user_config):
    """A started hub whose default and offered workspace image is ``image`` (as the ml flavor); destroyed after."""
    hub = Hub(
        directory,
        hub_name=f"{prefix}{secrets.token_hex(3)}",
        env={"MLHUB_WORKSPACE_IMAGE": image, "MLHUB_WORKSPACE_IMAGES": f"ml={image}"},
        user_config=user_config,
    )
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


@contextlib.contextmanager
def admin_with_workspace(chromium, hub, server, image):
    """The admin's browser context, logged in, with a running workspace ``server`` of ``image`` (2 CPUs, 3G)."""
    context = new_context(chromium, hub)
    page = context.new_page()
    log_in_in_browser(page, "admin")
    started = time.monotonic()
    r = hub.spawn("admin", server, {"image": image, "cpu_limit": 2, "mem_limit": "3G"}, timeout=180)
    assert r.status_code in (201, 202), r.text
    print(f"{image} ready {time.monotonic() - started:.1f}s after the spawn request")
    page.close()
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(admin_context):
    """A fresh page of the logged-in admin; dialogs (confirm/alert) are recorded and accepted."""
    with recording_page(admin_context) as page:
        yield page


def row(page, server):
    return page.locator(f'tr.mlhub-workspace[data-server="{server}"]').first


def wait_running(page, server, timeout=SPAWN_S):
    """Reload home until the workspace's row says running (bounded)."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        page.goto("/hub/home")
        status_cell = row(page, server).locator(".mlhub-status")
        if status_cell.count():
            status = status_cell.inner_text().strip().lower()
            if "running" in status:
                return status
        time.sleep(2)
    raise AssertionError(
        f"workspace {server!r} not shown running on home within {timeout}s (last: {status!r})"
    )


def open_dialog(page, server, button):
    row(page, server).locator(button).first.click()
    dialog = page.locator("#mlhub-dialog")
    dialog.wait_for(state="visible")
    text = page.locator("#mlhub-dialog-text")
    text.wait_for(state="visible")
    return text.inner_text()


def containers_of(docker, hub, server):
    return docker.containers.list(
        all=True, filters={"label": [f"{LABEL_ORIGIN}={hub.hub_name}", f"mlhub.server_name={server}"]}
    )


# ---- the tests ------------------------------------------------------------------------------------------


def test_admin_signs_up_logs_in_and_sees_the_footer_with_the_version(page):
    response = page.goto("/hub/home")
    assert response.status == 200
    footer = page.locator("#mlhub-footer")
    footer.wait_for(state="visible")
    text = footer.inner_text()
    assert "ML Hub" in text and __version__ in text, text
    shot(page, "home-empty")


def test_a_named_workspace_is_created_through_the_form_runs_and_opens_through_the_proxy(page, hub, docker):
    page.goto("/hub/home")
    page.fill("#mlhub-new-name", "train")
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.click("#mlhub-new-workspace")
    assert "/hub/spawn/admin/train" in page.url, page.url
    for name in ("cpu_limit", "mem_limit", "shm_size", "days_to_live"):
        assert page.locator(f'#spawn_form input[name="{name}"]').count() == 1, name
    assert page.locator('#spawn_form textarea[name="env"]').count() == 1
    assert page.locator('#spawn_form select[name="defined_image"]').count() == 1
    page.fill('input[name="cpu_limit"]', "0.5")
    page.fill('input[name="mem_limit"]', "1G")
    page.fill('input[name="shm_size"]', "256M")
    page.fill('textarea[name="env"]', "GREETING=hello-browser")
    page.fill('input[name="days_to_live"]', "2")
    shot(page, "options-form")
    started = time.monotonic()
    submit(page, "#spawn_form")
    assert "/hub/spawn/admin/train" not in page.url or "pending" in page.url, page.locator(
        "body"
    ).inner_text()

    wait_running(page, "train")
    print(f"train: running on home {time.monotonic() - started:.1f}s after submitting the form")
    shot(page, "home")
    (container,) = containers_of(docker, hub, "train")
    assert "GREETING=hello-browser" in container.attrs["Config"]["Env"]
    assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000

    # the image did not change: no Update is offered once the page asked the hub
    with page.expect_response(lambda r: "/servers/train/update" in r.url) as checked:
        page.reload()
    assert checked.value.json() == {"update_available": False}
    assert row(page, "train").locator("button.mlhub-update").is_hidden()

    link = row(page, "train").locator("a.mlhub-open").first
    if link.get_attribute("target") == "_blank":
        with page.context.expect_page() as new_page:
            link.click()
        lab = new_page.value
    else:
        link.click()
        lab = page

    def in_lab():
        return urlparse(lab.url).path.startswith("/user/admin/train/") or "JupyterLab" in lab.title()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not in_lab():
        lab.wait_for_timeout(500)
    assert in_lab(), (lab.url, lab.title())
    print(f"train: opened through the proxy at {urlparse(lab.url).path} ({lab.title()!r})")
    lab.wait_for_load_state("domcontentloaded")
    if lab is not page:
        lab.close()


def test_info_ssh_and_remaining_lifetime_are_shown(page):
    page.goto("/hub/home")
    info = open_dialog(page, "train", ".mlhub-info")
    assert "0.5" in info and "GREETING" in info and "hello-browser" in info, info
    page.goto("/hub/home")
    ssh = open_dialog(page, "train", ".mlhub-ssh")
    assert "ProxyJump tunnel@" in ssh and "HostName" in ssh, ssh
    shot(page, "ssh-dialog")
    page.goto("/hub/home")
    lifetime = row(page, "train").locator(".mlhub-lifetime").first.inner_text().strip()
    assert lifetime and lifetime not in ("-", "—", "never"), lifetime


def test_a_bad_value_is_shown_next_to_the_field_and_creates_nothing(page, hub, docker):
    page.goto("/hub/home")
    page.fill("#mlhub-new-name", "badws")
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.click("#mlhub-new-workspace")
    page.fill('input[name="cpu_limit"]', "lots")
    submit(page, "#spawn_form")
    error = page.locator("#mlhub-error-cpu_limit")
    error.wait_for(state="visible")
    assert error.inner_text().strip(), "empty error text"
    assert page.input_value('input[name="cpu_limit"]') == "lots"
    shot(page, "options-form-error")
    assert hub.server_model("admin", "badws") is None
    assert not containers_of(docker, hub, "badws")


def test_a_refused_form_leaves_nothing_a_user_sees(page, hub, docker):
    """JupyterHub records a named server as soon as its spawn page is opened (stock behaviour, as for a form
    opened and abandoned); after a refused form nothing of it runs or exists, and no page lists it."""
    servers = hub.api("GET", "users/admin", params={"include_stopped_servers": "1"}).json()["servers"]
    if "badws" in servers:  # only JupyterHub's record: never started, no state
        state = servers["badws"]["state"].get("mlhub", {})
        assert not servers["badws"]["started"] and not state.get("options") and not state.get("created_at")
    assert not docker.volumes.list(filters={"label": f"mlhub.origin={hub.hub_name}", "name": "badws"})
    for path in ("/hub/home", "/hub/mlhub/admin"):
        page.goto(path)
        assert row(page, "badws").count() == 0, path


def test_a_non_admin_gets_403_on_the_admin_page(chromium, hub, page):
    context = new_context(chromium, hub)
    try:
        bob = context.new_page()
        sign_up_in_browser(bob, "bob")
        # the admin authorizes bob on NativeAuthenticator's page
        assert page.goto("/hub/authorize").status == 200
        with page.expect_navigation(wait_until="domcontentloaded"):
            page.click('a[href$="/authorize/bob"]')
        log_in_in_browser(bob, "bob")
        response = bob.goto("/hub/mlhub/admin")
        assert response.status == 403, response.status
        assert page.goto("/hub/mlhub/admin").status == 200  # the admin still sees it
    finally:
        context.close()


def test_an_env_value_with_markup_is_shown_as_text_and_never_runs(page, hub):
    r = hub.spawn("admin", "xss", {"env": {"EVIL": XSS_PAYLOAD}})
    assert r.status_code in (201, 202), r.text
    for path in ("/hub/home", "/hub/mlhub/admin"):
        assert page.goto(path).status == 200
        row(page, "xss").wait_for(state="visible")
        assert page.evaluate("window.__mlhub_xss") is None, path
        text = open_dialog(page, "xss", ".mlhub-info")
        # shown as text: verbatim, or as the JSON string of the options (quotes backslash-escaped)
        assert XSS_PAYLOAD in text or json.dumps(XSS_PAYLOAD)[1:-1] in text, (path, text)
        assert "<script>window.__mlhub_xss=1</script>" in text, (path, text)
        assert page.evaluate("window.__mlhub_xss") is None, path
        if path == "/hub/mlhub/admin":
            page.goto(path)
            shot(page, "admin")
    assert not page.dialogs, page.dialogs  # no alert/confirm was raised by the payload


def test_the_admin_sees_the_gpus_and_looks_for_them_again(page):
    """The stand-in engine's 4 GPUs on the admin page; the button probes the engine again and reloads."""
    assert page.goto("/hub/mlhub/admin").status == 200
    gpus = page.locator("#mlhub-gpu-table tr.mlhub-gpu")
    assert gpus.count() == 4
    assert "NVIDIA A100-SXM4-80GB" in gpus.nth(3).inner_text()
    with (
        page.expect_navigation(wait_until="domcontentloaded"),
        page.expect_response(lambda r: r.url.split("?")[0].endswith("/api/mlhub/gpus/refresh")) as probe,
    ):
        page.locator("#mlhub-gpus-refresh").click()
    assert probe.value.status == 200 and probe.value.request.method == "POST"
    assert "probed" in page.locator("#mlhub-gpus").inner_text()
    assert page.locator("#mlhub-gpu-table tr.mlhub-gpu").count() == 4
    assert page.locator("#mlhub-error").is_hidden()


def key_pair(directory, comment="browser@test"):
    """A real ed25519 key pair from ssh-keygen: (private key path, public line, fingerprint)."""
    path = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=30,
    )
    listing = subprocess.run(
        ["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True, timeout=30
    )
    return path, Path(f"{path}.pub").read_text().strip(), listing.stdout.split()[1]


def test_ssh_keys_are_added_with_a_signed_challenge_refused_when_malformed_and_deleted(page, tmp_path):
    assert page.goto("/hub/mlhub/ssh-keys").status == 200
    keys = page.locator("#mlhub-keys li[data-fingerprint]")
    before = keys.count()
    private, line, fingerprint = key_pair(tmp_path)
    command = page.locator("#mlhub-sign-command")
    page.wait_for_function(
        "document.getElementById('mlhub-sign-command').textContent.indexOf('ssh-keygen -Y sign') > 0",
        timeout=10_000,
    )
    # without the signature: the page says what is missing, nothing is added
    page.fill("#mlhub-key", line)
    page.click("#mlhub-add-key")
    error = page.locator("#mlhub-key-error")
    error.wait_for(state="visible")
    assert "signature" in error.inner_text()
    # run the command the page shows (with this test's key file), paste what ssh-keygen printed
    shown = command.inner_text().strip()
    assert shown.startswith("printf '%s' 'mlhub-ssh-key-v1.") and shown.endswith(
        " | ssh-keygen -Y sign -n mlhub-ssh-key -f ~/.ssh/id_ed25519"
    ), shown
    signed = subprocess.run(
        ["bash", "-c", shown.replace("~/.ssh/id_ed25519", str(private))],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    page.fill("#mlhub-signature", signed.stdout)
    page.click("#mlhub-add-key")
    added = page.locator(f'#mlhub-keys li[data-fingerprint="{fingerprint}"]')
    added.wait_for(state="visible", timeout=10_000)
    assert "unverified" not in added.inner_text()
    # the challenge was used: the page shows a fresh one
    page.wait_for_function(
        f"document.getElementById('mlhub-sign-command').textContent !== {json.dumps(shown)}"
        " && document.getElementById('mlhub-sign-command').textContent.indexOf('ssh-keygen') > 0",
        timeout=10_000,
    )
    shot(page, "ssh-keys")

    page.fill("#mlhub-key", "ssh-ed25519 not-a-key")
    page.fill("#mlhub-signature", signed.stdout)
    page.click("#mlhub-add-key")
    page.wait_for_function(
        "document.getElementById('mlhub-key-error').textContent.indexOf('Invalid SSH key') >= 0",
        timeout=10_000,
    )
    assert keys.count() == before + 1

    added.locator("button, a, input[type=submit]").filter(has_text=DELETE).first.click()
    page.wait_for_function(
        f"document.querySelectorAll('#mlhub-keys li[data-fingerprint]').length === {before}", timeout=10_000
    )


def test_native_authenticator_signup_and_authorize_pages_still_render(chromium, hub, page):
    context = new_context(chromium, hub)
    try:
        anonymous = context.new_page()
        response = anonymous.goto("/hub/signup")
        assert response.status == 200
        assert anonymous.locator("form input[name=signup_password]").count() == 1
    finally:
        context.close()
    response = page.goto("/hub/authorize")
    assert response.status == 200
    assert page.locator('a[href$="/authorize/bob"]').count() == 1  # bob, from the 403 test
    assert "admin" in page.locator("table").first.inner_text()


def test_screenshots_of_the_main_pages_exist():
    for name in ("home", "options-form", "admin", "ssh-keys"):
        assert Path(ARTIFACTS / f"{name}.png").stat().st_size > 1000, name
