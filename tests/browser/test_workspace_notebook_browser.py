"""A user's notebooks in the ml flavor through the hub's proxy, in headless Chromium (Debian's, via Playwright).

One hub for this module offering the ml image (``make images`` builds it; missing, these tests fail) under a tag
of this module's own, so that an update can be offered without touching ``mlhub-workspace-ml``: a label-only
image built on it takes the tag over. The admin logs in through the browser, runs a scikit-learn cell in
JupyterLab, installs a local wheel with ``%pip install --user``, clicks Update on the home page and imports the
package again in the recreated workspace (the home is on the volume). Screenshots to tests/artifacts/.
"""

import base64
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import time
import zipfile

import pytest
from docker.errors import ImageNotFound, NotFound
from test_ui_browser import (  # noqa: F401 (chromium: a fixture)
    admin_with_workspace,
    chromium,
    flavor_hub,
    recording_page,
    row,
    shot,
    wait_running,
)

from mlhubspawner import __version__, naming

from support import build_image

pytestmark = [pytest.mark.docker, pytest.mark.hub]

ML = os.environ.get("MLHUB_ML_IMAGE", f"mlhub-workspace-ml:{__version__}")
SERVER = "nb"
LAB = f"/user/admin/{SERVER}/lab"
PACKAGE = "mlhub_nbcheck"
WHEEL = f"{PACKAGE}-1.0-py3-none-any.whl"

POLICY = """
c.MLHubDockerSpawner.max_cpu_limit = 2
c.MLHubDockerSpawner.max_mem_limit = "3G"
c.MLHubDockerSpawner.max_days_to_live = 30
c.MLHubDockerSpawner.pull_policy = "never"
"""

SKLEARN_CELL = """\
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
print(f"iris score: {model.score(X, y):.3f}")"""

IMPORT_CELL = f"import {PACKAGE}\nprint({PACKAGE}.GREETING, {PACKAGE}.__file__)"


def notebook(*cells):
    """An nbformat 4 notebook of code cells, for the python3 kernel."""
    return json.dumps(
        {
            "cells": [
                {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": cell}
                for cell in cells
            ],
            "metadata": {
                "kernelspec": {
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "name": "python3",
                },
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    ).encode()


def tiny_wheel():
    """A pure-Python wheel of ``PACKAGE`` 1.0 (no dependencies), as bytes."""
    dist_info = f"{PACKAGE}-1.0.dist-info"
    files = {
        f"{PACKAGE}/__init__.py": b'GREETING = "hello from a local wheel"\n',
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: mlhub-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return buffer.getvalue()


def put_in_workspace(container, files):
    """Write ``files`` (name → bytes) into the workspace's /workspace, owned by its user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode, info.mtime = len(data), 1000, 100, 0o644, time.time()
            tar.addfile(info, io.BytesIO(data))
    assert container.put_archive("/workspace", buffer.getvalue())


def workspace_container(docker, hub):
    return docker.containers.get(naming.workspace_name(hub.hub_name, "admin", SERVER))


@pytest.fixture(scope="module")
def image(docker):
    """This module's tag of the ml image (removed afterwards with the image built onto it)."""
    try:
        ml = docker.images.get(ML)
    except ImageNotFound:
        pytest.fail(f"{ML} is missing: run `make images` first", pytrace=False)
    repository = f"mlhub-nbtest-{secrets.token_hex(3)}"
    ml.tag(repository, "1")
    try:
        yield f"{repository}:1"
    finally:
        try:
            docker.images.remove(f"{repository}:1")
        except NotFound:
            pass


@pytest.fixture(scope="module")
def hub(docker, image, tmp_path_factory):
    """This module's hub: the ml flavor (this module's tag) offered and the default."""
    with flavor_hub(docker, tmp_path_factory.mktemp("nbhub"), "nb", image, POLICY) as hub:
        yield hub


@pytest.fixture(scope="module")
def owner(chromium, hub, image):  # noqa: F811 (the imported fixture)
    """The admin's browser, logged in, with a running ml workspace ``nb``."""
    with admin_with_workspace(chromium, hub, SERVER, image) as context:
        yield context


@pytest.fixture
def page(owner):
    """A fresh page of the admin; confirm dialogs are recorded and accepted."""
    with recording_page(owner) as page:
        yield page


def open_notebook(page, name):
    """Open ``/workspace/<name>`` in JupyterLab; the notebook panel."""
    page.goto(f"{LAB}/tree/{name}?reset", timeout=60_000)  # not the last layout
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first
    panel.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible", timeout=60_000)
    return panel


def run_cell(page, panel, index, expect, timeout_s=180):
    """Run the panel's cell ``index`` (Shift+Enter) and wait until its output shows ``expect`` (a regex).

    A run asked for before the kernel is connected is dropped: asked again until the prompt says it ran."""
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=120_000)
    cell = panel.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(12):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        for _ in range(20):
            if re.search(r"\[(\*|\d+)\]", prompt.inner_text()):
                break
            page.wait_for_timeout(250)
        else:
            continue
        break
    output = cell.locator(".jp-OutputArea-output")
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = "\n".join(output.all_inner_texts())
        if re.search(expect, text) or "Error" in text:
            break
        page.wait_for_timeout(500)
    if not re.search(expect, text):
        shot(page, f"failed-cell-{index}")
        raise AssertionError(f"cell {index}: {expect!r} not in its output:\n{text}")
    return text


# ---- the tests ------------------------------------------------------------------------------------------


def test_a_notebook_cell_fits_a_sklearn_model_and_shows_the_score(page, docker, hub):
    put_in_workspace(workspace_container(docker, hub), {"sklearn-iris.ipynb": notebook(SKLEARN_CELL)})
    started = time.monotonic()
    panel = open_notebook(page, "sklearn-iris.ipynb")
    text = run_cell(page, panel, 0, r"iris score: 0\.9\d\d")
    print(
        f"notebook: sklearn score shown {time.monotonic() - started:.1f}s after opening it ({text.strip()!r})"
    )
    shot(page, "notebook-sklearn")


def test_a_user_pip_install_survives_an_update_from_the_home_page(page, docker, hub, image):
    before = workspace_container(docker, hub)
    put_in_workspace(
        before,
        {
            WHEEL: tiny_wheel(),
            "pip-install.ipynb": notebook(f"%pip install --user --no-index /workspace/{WHEEL}"),
            "after-update.ipynb": notebook(IMPORT_CELL),
        },
    )
    panel = open_notebook(page, "pip-install.ipynb")
    run_cell(page, panel, 0, r"Successfully installed mlhub[-_]nbcheck-1\.0")

    # the home page offers no update until the tag moves to another image
    with page.expect_response(lambda r: f"/servers/{SERVER}/update" in r.url) as checked:
        page.goto("/hub/home")
    assert checked.value.json() == {"update_available": False}
    assert row(page, SERVER).locator("button.mlhub-update").is_hidden()
    dockerfile = f"FROM {image}\nLABEL mlhub.test.update={secrets.token_hex(3)}\n"
    newer, _ = build_image(docker, fileobj=io.BytesIO(dockerfile.encode()), tag=image, rm=True, pull=False)
    page.reload()
    update = row(page, SERVER).locator("button.mlhub-update")
    update.wait_for(state="visible")

    started = time.monotonic()
    with page.expect_response(
        lambda r: r.request.method == "POST" and f"/servers/{SERVER}/update?" in r.url, timeout=180_000
    ) as posted:
        update.click()
    assert posted.value.status in (201, 202), posted.value.text()
    wait_running(page, SERVER, timeout=180)
    print(f"update: running on home {time.monotonic() - started:.1f}s after the click")
    assert any("volume is kept" in message for message in page.dialogs), page.dialogs  # the confirm
    after = workspace_container(docker, hub)
    assert after.id != before.id
    assert after.image.id == newer.id

    panel = open_notebook(page, "after-update.ipynb")
    text = run_cell(
        page,
        panel,
        0,
        r"hello from a local wheel /(home/jovyan|workspace/\.home)/\.local/lib/python[\d.]+/site-packages/",
    )
    print(f"after update: {text.strip()!r}")
    shot(page, "pip-after-update")
