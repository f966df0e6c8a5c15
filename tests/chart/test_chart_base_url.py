"""The chart's hub.baseUrl (JupyterHub's base_url) and singleuser.imageSettings (workspace_image_settings):
rendered into both pods, the hub's probes and the Ingress path; bad values refused by the schema, naming them."""

# ruff: noqa: F401, F811 (the fixtures helm_bin, render and fake come from test_chart; the tests take them as arguments)

import pytest
from test_chart import (
    CHART,
    NAMESPACE,
    container,
    env_of,
    fake,
    helm_bin,
    hub_values,
    one,
    pod_env_for_settings,
    render,
    run_helm,
    secret_data,
)
from traitlets.config import Config

from mlhubspawner import chart_values
from mlhubspawner.front import layout as L
from mlhubspawner.settings import load_settings

INGRESS = ["--set", "ingress.enabled=true", "--set", "ingress.hosts={hub.example.org}"]


def probes(deployment):
    c = container(deployment)
    return {name: c[name]["httpGet"]["path"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}


def test_default_base_url_is_the_root(render):
    docs = render(*INGRESS)
    hub, proxy = one(docs, "Deployment", "-hub"), one(docs, "Deployment", "-proxy")
    assert env_of(hub)["MLHUB_BASE_URL"]["value"] == env_of(proxy)["MLHUB_BASE_URL"]["value"] == "/"
    assert set(probes(hub).values()) == {"/hub/health"}
    (path,) = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/"


def test_base_url_reaches_both_pods_the_probes_and_the_ingress(render):
    docs = render("--set", "hub.baseUrl=/team/ml/", *INGRESS)
    hub, proxy = one(docs, "Deployment", "-hub"), one(docs, "Deployment", "-proxy")
    assert set(probes(hub).values()) == {"/team/ml/hub/health"}
    (path,) = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/team/ml/", "Prefix")
    # what each pod's entrypoint and hub make of their env
    secrets = secret_data(one(docs, "Secret", "-secret"))
    hub_settings = load_settings(pod_env_for_settings(hub, secrets))
    proxy_settings = load_settings(pod_env_for_settings(proxy, secrets))
    assert hub_settings.base_url == proxy_settings.base_url == "/team/ml/"
    layout = L.layout_from_settings(proxy_settings, host_keys=("key",), unprivileged=True)
    assert f"--error-target={proxy_settings.hub_service_url}/team/ml/hub/error" in L.chp_command(layout)
    # the proxy's own readiness page is CHP's, not under the base URL
    assert container(proxy)["readinessProbe"]["httpGet"]["path"] == "/_chp_healthz"


def test_install_notes_give_the_urls_under_the_base_url(helm_bin, fake):
    """``helm install`` (on the fake API server): NOTES.txt's sign-up, Ingress and login URLs."""
    installed = run_helm(
        helm_bin, "install", "mlhub", CHART, "--namespace", NAMESPACE, "--kubeconfig", fake.kubeconfig,
        "--set", "hub.baseUrl=/ml/", *INGRESS, kubeconfig=fake.kubeconfig, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    notes = installed.stdout.split("NOTES:", 1)[1]
    assert "http://localhost:8080/ml/hub/signup" in notes
    assert "Ingress: http://hub.example.org/ml/" in notes
    assert "<hub URL>/ml/hub/login" in notes
    assert "/hub/signup" not in notes.replace("/ml/hub/signup", "")


def test_a_new_base_url_rolls_the_hub(render):
    def checksum(*args):
        return one(render(*args), "Deployment", "-hub")["spec"]["template"]["metadata"]["annotations"][
            "checksum/values"
        ]

    assert checksum() != checksum("--set", "hub.baseUrl=/ml/")


@pytest.mark.parametrize(
    "value", ["/ml", "ml/", "ml", "", "//", "/ml//x/", "/../", "/ml/../x/", "/./", "/a b/", "/.x/", "/ml?x/"]
)
def test_schema_refuses_a_bad_base_url(helm_bin, value):
    for command in (["lint", "--strict", CHART], ["template", "x", CHART]):
        result = run_helm(helm_bin, *command, "--set-string", f"hub.baseUrl={value}", check=False)
        assert result.returncode != 0, (command, value)
        assert "hub.baseUrl" in result.stdout + result.stderr, result.stdout + result.stderr


def test_schema_refuses_the_base_url_through_extra_env(helm_bin):
    for component in ("hub", "proxy"):
        result = run_helm(
            helm_bin, "template", "x", CHART, "--set", f"{component}.extraEnv.MLHUB_BASE_URL=/x/", check=False
        )
        assert result.returncode != 0 and f"{component}.extraEnv" in result.stderr, result.stderr


# ---- singleuser.imageSettings ------------------------------------------------------------------------------

IMAGE_SETTINGS = {
    "registry.example.org/ml-workspace:*": {
        "convention": "ml-workspace",
        "env": {"SHUTDOWN_INACTIVE_KERNELS": "3600"},
    },
    "registry.example.org/notebook:*": {
        "convention": "docker-stacks",
        "cmd": ["start-notebook.py"],
        "port": 8888,
        "volume_path": "/home/jovyan/data",
        "run_as_root": False,
    },
}


def test_image_settings_reach_the_spawner(render, tmp_path):
    import yaml

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"singleuser": {"imageSettings": IMAGE_SETTINGS}}))
    docs = render("-f", values)
    c = chart_values.apply_chart_values(Config(), hub_values(docs))
    table = c.MLHubKubernetesSpawner.workspace_image_settings
    assert {k: table[k] for k in IMAGE_SETTINGS} == IMAGE_SETTINGS
    assert table["jupyter/*"] == {"convention": "docker-stacks"}  # ML Hub's defaults stay after them


@pytest.mark.parametrize(
    "args, field",
    [
        (["--set", "singleuser.imageSettings.x.convention=other"], "singleuser.imageSettings.x.convention"),
        (["--set", "singleuser.imageSettings.x.bogus=1"], "Additional property bogus is not allowed"),
        (["--set", "singleuser.imageSettings.x.port=0"], "singleuser.imageSettings.x.port"),
        (
            ["--set", "singleuser.imageSettings.x.volume_path=relative"],
            "singleuser.imageSettings.x.volume_path",
        ),
        (["--set", "singleuser.imageSettings.x.run_as_root=maybe"], "singleuser.imageSettings.x.run_as_root"),
        (["--set", "singleuser.imageSettings.x.env.1BAD=v"], "singleuser.imageSettings.x.env"),
        (["--set", "singleuser.imageSettings.x=notamap"], "singleuser.imageSettings.x"),
    ],
)
def test_schema_refuses_bad_image_settings(helm_bin, args, field):
    result = run_helm(helm_bin, "template", "x", CHART, *args, check=False)
    assert result.returncode != 0, args
    assert field in result.stdout + result.stderr, result.stdout + result.stderr
