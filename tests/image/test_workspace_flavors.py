"""The workspace flavors on the real engine: ml (what ``make run`` offers first) and gpu (``make image-gpu``).

``make images`` builds minimal and ml offline (resources/scripts/build-images.sh): a missing ml image fails these
tests. The gpu image is only built by ``make image-gpu``: its smoke test skips, saying so, when it is missing.
"""

import json
import re
import textwrap

import pytest
from docker.errors import APIError, ImageNotFound
from docker.types import DeviceRequest

from mlhubspawner import __version__, naming

from support import Hub, log_in, remove_by_label

MINIMAL = f"mlhub-workspace:{__version__}"
ML = f"mlhub-workspace-ml:{__version__}"
GPU = f"mlhub-workspace-gpu:{__version__}"
TEST_LABEL = "mlhub.test=workspace-flavors"


def require_image(docker, image, build):
    try:
        return docker.images.get(image)
    except ImageNotFound:
        pytest.fail(f"{image} is missing: run `{build}` first")


def run_in(docker, image, command, **kwargs):
    """Run ``command`` in a fresh container of ``image`` as its user (jovyan); (exit code, output)."""
    container = docker.containers.run(image, command, detach=True, labels=[TEST_LABEL], **kwargs)
    try:
        status = container.wait(timeout=300)
        return status["StatusCode"], container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def ml_image(docker):
    return require_image(docker, ML, "make images")


# A notebook, run cell by cell in the image's python3 kernel by nbclient (what JupyterLab's kernel does): the
# last cell prints what the test checks.
NOTEBOOK = [
    """
    import numpy as np, pandas as pd, scipy.stats
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X_train, y_train)
    accuracy = model.score(X_test, y_test)
    """,
    """
    import lightgbm as lgb
    booster = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X_train, y_train)
    boosted = booster.score(X_test, y_test)
    """,
    """
    import io, matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    frame = pd.DataFrame(X[:, :2], columns=["a", "b"]).assign(label=y)
    fig, ax = plt.subplots()
    frame.plot.scatter(x="a", y="b", c="label", ax=ax)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    """,
    """
    import getpass, json, subprocess, ipywidgets, tensorboard
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    print("RESULT " + json.dumps({"accuracy": accuracy, "boosted": boosted, "png": png.getvalue()[:4].hex(),
        "rows": len(frame), "user": getpass.getuser(), "git": git, "ttest": float(scipy.stats.ttest_1samp(X[:, 0], 0).pvalue)}))
    """,
]

RUN_NOTEBOOK = """
import json, sys, nbformat, nbclient
cells = [nbformat.v4.new_code_cell(source) for source in json.loads(sys.argv[1])]
notebook = nbformat.v4.new_notebook(cells=cells)
nbclient.NotebookClient(notebook, kernel_name="python3", timeout=240).execute()
for output in notebook.cells[-1].outputs:
    print(output.get("text", ""), end="")
"""


def test_ml_image_runs_a_notebook_that_fits_a_model(docker, ml_image):
    """A user's notebook in the ml flavor: scikit-learn fits, lightgbm boosts, pandas and matplotlib draw."""
    cells = json.dumps([textwrap.dedent(cell) for cell in NOTEBOOK])
    code, out = run_in(docker, ML, ["python", "-c", RUN_NOTEBOOK, cells], entrypoint=[], working_dir="/tmp")
    assert code == 0, out
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["accuracy"] > 0.8 and result["boosted"] > 0.8, result
    assert result["png"] == "89504e47"  # a PNG file
    assert result["rows"] == 400
    assert result["user"] == "jovyan"
    assert result["git"].startswith("git version 2."), result


def test_ml_image_has_the_jupyter_extensions(docker, ml_image):
    """jupyterlab-git, resource usage and server-proxy are enabled in the Jupyter server and in JupyterLab."""
    script = "jupyter server extension list 2>&1; jupyter labextension list 2>&1"
    code, out = run_in(docker, ML, ["sh", "-c", script], entrypoint=[])
    assert code == 0, out
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # the lists color "enabled" and "OK"
    # server extensions: "<name> enabled", then "<name> <version> OK" once it loaded
    enabled = set(re.findall(r"^\s*(\S+) enabled\s*$", out, re.MULTILINE))
    loaded = set(re.findall(r"^\s*(\S+) \S+ OK\s*$", out, re.MULTILINE))
    for server_extension in ("jupyterlab_git", "jupyter_resource_usage", "jupyter_server_proxy"):
        assert server_extension in enabled & loaded, out
    # lab extensions: "<name> v<version> enabled OK (python, <package>)"
    lab = set(re.findall(r"^\s*(\S+) v\S+ enabled\s+OK", out, re.MULTILINE))
    for lab_extension in (
        "@jupyterlab/git",
        "@jupyter-server/resource-usage",
        "@jupyterhub/jupyter-server-proxy",
        "@jupyter-widgets/jupyterlab-manager",
    ):
        assert lab_extension in lab, out


def test_ml_image_is_the_minimal_image_plus_layers(docker, ml_image):
    """The ml flavor keeps the minimal flavor's entrypoint, user, ports and working directory."""
    minimal = require_image(docker, MINIMAL, "make images")
    for key in ("Entrypoint", "Cmd", "User", "WorkingDir", "ExposedPorts"):
        assert ml_image.attrs["Config"][key] == minimal.attrs["Config"][key], key
    assert ml_image.labels["mlhub.flavor"] == "ml"


@pytest.fixture(scope="module")
def flavor_hub(docker, ml_image, tmp_path_factory):
    """A hub offering the flavors by name (MLHUB_WORKSPACE_IMAGES), minimal still the default."""
    hub = Hub(
        tmp_path_factory.mktemp("flavor-hub"),
        env={"MLHUB_WORKSPACE_IMAGE": MINIMAL, "MLHUB_WORKSPACE_IMAGES": f"minimal={MINIMAL},ml={ML}"},
        user_config='c.MLHubDockerSpawner.max_mem_limit = "2G"\n',
    )
    try:
        hub.start()
        yield hub
    finally:
        hub.destroy(docker)


def test_ml_flavor_spawns_through_the_hub(docker, flavor_hub):
    """The form offers both flavors; an ml workspace starts and its git, metrics and proxy APIs answer."""
    hub = flavor_hub
    session, r = log_in(hub, "admin")
    assert r.status_code == 302, r.text
    form = session.get(f"{hub.url}/hub/spawn/admin/flavors", timeout=60).text
    assert f'value="{MINIMAL}"' in form and f'value="{ML}"' in form

    user = hub.create_user("flora")
    r = hub.spawn(user, "ml", options={"image": ML, "mem_limit": "1G"}, timeout=180)
    assert r.status_code in (201, 202), r.text
    container = docker.containers.get(naming.workspace_name(hub.hub_name, user, "ml"))
    assert container.attrs["Config"]["Image"] == ML
    assert hub.get_through_proxy(user, "ml", "api/status").status_code == 200
    git = hub.get_through_proxy(user, "ml", "git/settings")
    assert git.status_code == 200 and git.json()["gitVersion"].startswith("2."), git.text
    metrics = hub.get_through_proxy(user, "ml", "api/metrics/v1")
    assert metrics.status_code == 200, metrics.text
    assert metrics.json()["limits"]["memory"]["rss"] == 1024**3  # the indicator shows the workspace's limit
    assert hub.get_through_proxy(user, "ml", "server-proxy/servers-info").status_code == 200
    hub.stop_server(user, "ml", remove=True)


# PyTorch on the CPU, and on every GPU the container sees
TORCH_SMOKE = """
import json, torch
a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
result = {"torch": torch.__version__, "cpu": (a @ a.T).sum().item(), "cuda": torch.cuda.is_available()}
if result["cuda"]:
    g = a.to("cuda")
    result["gpu"] = (g @ g.T).sum().item()
    result["device"] = torch.cuda.get_device_name(0)
print("RESULT " + json.dumps(result))
"""


def test_gpu_image_runs_torch(docker):
    """The gpu flavor imports torch and multiplies tensors on the CPU, and on the GPU where there is one."""
    try:
        docker.images.get(GPU)
    except ImageNotFound:
        pytest.skip(f"{GPU} is not built (make image-gpu: multi-GB, not part of make images / make test)")
    command = ["python", "-c", TORCH_SMOKE]
    try:  # every GPU of the engine, if it has an NVIDIA runtime (real, or the tests' stand-in)
        gpus = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        code, out = run_in(docker, GPU, command, entrypoint=[], device_requests=gpus)
    except APIError as e:
        if "device driver" not in str(e):
            raise
        code, out = run_in(docker, GPU, command, entrypoint=[])
    assert code == 0, out
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["cpu"] == 83.0, result
    if result["cuda"]:
        assert result["gpu"] == 83.0, result


@pytest.fixture(autouse=True, scope="module")
def _cleanup(docker):
    yield
    remove_by_label(docker, TEST_LABEL)
