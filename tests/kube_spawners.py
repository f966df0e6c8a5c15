"""MLHubKubernetesSpawner against the fake API server (``tests/fake_k8s.py``): wiring shared by the tests.

KubeSpawner loads a kubeconfig before it applies ``k8s_api_host``, so one pointing at the fake must exist
while spawners run; :func:`kubeconfig_for` writes it and restores the previous one afterwards.
:func:`fake_apiserver_fixture` and :func:`stop_reflectors_fixture` make a module's fixtures.
"""

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_k8s import running_fake, use_kubeconfig, write_kubeconfig_file
from jupyterhub.objects import Hub
from traitlets.config import Config

from mlhubspawner import naming
from mlhubspawner.kubernetes import MLHubKubernetesSpawner, objects

WORKSPACE_KINDS = ("pods", "persistentvolumeclaims", "services", "networkpolicies")
POD_PVC_SERVICE = WORKSPACE_KINDS[:3]


@contextlib.contextmanager
def kubeconfig_for(fake, directory, namespace):
    """KUBECONFIG (and kubernetes_asyncio's default location) point at ``fake`` meanwhile."""
    from kubernetes_asyncio.config import kube_config

    previous = os.environ.get("KUBECONFIG"), kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    use_kubeconfig(write_kubeconfig_file(Path(directory) / "config", fake.url, namespace))
    try:
        yield
    finally:
        if previous[0] is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous[0]
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = previous[1]


def fake_apiserver_fixture(namespace, prepare=None):
    """A module's ``fake`` fixture: one fake API server for the module, KUBECONFIG pointing at it in
    ``namespace`` meanwhile (restored after); ``prepare(fake)`` first adds what the module needs; at the end,
    nothing it was sent was rejected."""

    @pytest.fixture(scope="module", name="fake")
    def fake_fixture(tmp_path_factory):
        with running_fake() as fake, kubeconfig_for(fake, tmp_path_factory.mktemp("kube"), namespace):
            if prepare:
                prepare(fake)
            yield fake
        assert not fake.rejected, fake.rejected

    return fake_fixture


def stop_reflectors_fixture():
    """A module's autouse ``stop_reflectors`` fixture: the spawners' shared pod/event watches stop after the
    module (the way KubeSpawner's own tests end them; the stock KubeSpawner's too: one class dict of them)."""

    @pytest.fixture(scope="module", autouse=True, name="stop_reflectors")
    async def stop_reflectors(fake):
        yield
        await MLHubKubernetesSpawner._stop_all_reflectors()

    return stop_reflectors


def labelled_namespaces(fake, levels):
    """Create the namespaces of ``levels`` (name: Pod Security level), enforcing and warning at their level."""
    for name, level in levels.items():
        labels = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn")}
        fake.create("namespaces", None, {"metadata": {"name": name, "labels": labels}})


def owned_by(fake, username, *, hub, namespace=None, kinds=WORKSPACE_KINDS):
    """``hub``'s objects of ``username`` on ``fake``, as ``kind/name`` (``namespace`` None: all namespaces)."""
    selector = f"{naming.LABEL_ORIGIN}={hub},{naming.LABEL_USER}={objects.label_value(username)}"
    return {
        f"{resource}/{obj['metadata']['name']}"
        for resource in kinds
        for obj in fake.list(resource, namespace, label_selector=selector)
    }


def claims(pod):
    """The names of the PVCs ``pod`` mounts, in its volumes' order."""
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]


def spawner_config(**traits):
    """A Config setting ``traits`` on MLHubKubernetesSpawner."""
    config = Config()
    for key, value in traits.items():
        setattr(config.MLHubKubernetesSpawner, key, value)
    return config


class FakeUser:
    """What a spawner reads from JupyterHub's User."""

    def __init__(self, name):
        self.name = name
        self.id = abs(hash(name)) % 10000
        self.escaped_name = name
        self.url = f"/user/{name}/"
        self.spawners = {}


def _spawner(cls, fake, username, server, user, config, **traits):
    """A ``cls`` spawner of ``username``'s ``server`` on ``fake``, as the hub would make it."""
    user = user or FakeUser(username)
    spawner = cls(
        user=user,
        orm_spawner=SimpleNamespace(
            name=server, display_name=server, server=None, user_options={}, state=None
        ),
        hub=Hub(ip="hub", port=8081, base_url="/hub/"),
        db=None,
        config=config or Config(),
        k8s_api_host=fake.url,
        **{"start_timeout": 30, "k8s_api_request_retry_timeout": 10, **traits},
    )
    user.spawners[server] = spawner
    return spawner


def make_spawner(
    fake, username, server, *, hub_name, namespace, image, user=None, config=None, hub_namespace=None
):
    """A spawner of ``username``'s ``server`` on ``fake``, as the hub would make it (the hub runs in
    ``hub_namespace``, default ``namespace``)."""
    return _spawner(
        MLHubKubernetesSpawner,
        fake,
        username,
        server,
        user,
        config,
        hub_name=hub_name,
        namespace=namespace,
        hub_namespace=hub_namespace or namespace,
        image=image,
    )


def make_stock_spawner(fake, username, server, *, namespace, image, user=None, config=None, **traits):
    """A stock ``kubespawner.KubeSpawner`` of ``username``'s ``server`` on ``fake`` (the contract's other side)."""
    from kubespawner import KubeSpawner

    return _spawner(
        KubeSpawner, fake, username, server, user, config, namespace=namespace, image=image, **traits
    )
