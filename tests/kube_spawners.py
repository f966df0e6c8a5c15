"""MLHubKubernetesSpawner against the fake API server (``tests/fake_k8s.py``): wiring shared by the tests.

KubeSpawner loads a kubeconfig before it applies ``k8s_api_host``, so one pointing at the fake must exist
while spawners run; :func:`kubeconfig_for` writes it and restores the previous one afterwards.
"""

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace

from fake_k8s import use_kubeconfig, write_kubeconfig_file
from jupyterhub.objects import Hub
from traitlets.config import Config

from mlhubspawner.kubernetes import MLHubKubernetesSpawner


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


class FakeUser:
    """What a spawner reads from JupyterHub's User."""

    def __init__(self, name):
        self.name = name
        self.id = abs(hash(name)) % 10000
        self.escaped_name = name
        self.url = f"/user/{name}/"
        self.spawners = {}


def make_spawner(
    fake, username, server, *, hub_name, namespace, image, user=None, config=None, hub_namespace=None
):
    """A spawner of ``username``'s ``server`` on ``fake``, as the hub would make it (the hub runs in
    ``hub_namespace``, default ``namespace``)."""
    user = user or FakeUser(username)
    spawner = MLHubKubernetesSpawner(
        user=user,
        orm_spawner=SimpleNamespace(
            name=server, display_name=server, server=None, user_options={}, state=None
        ),
        hub=Hub(ip="hub", port=8081, base_url="/hub/"),
        db=None,
        config=config or Config(),
        hub_name=hub_name,
        k8s_api_host=fake.url,
        namespace=namespace,
        hub_namespace=hub_namespace or namespace,
        image=image,
        start_timeout=30,
        k8s_api_request_retry_timeout=10,
    )
    user.spawners[server] = spawner
    return spawner


def make_stock_spawner(fake, username, server, *, namespace, image, user=None, config=None, **traits):
    """A stock ``kubespawner.KubeSpawner`` of ``username``'s ``server`` on ``fake`` (the contract's other side)."""
    from kubespawner import KubeSpawner

    user = user or FakeUser(username)
    spawner = KubeSpawner(
        user=user,
        orm_spawner=SimpleNamespace(
            name=server, display_name=server, server=None, user_options={}, state=None
        ),
        hub=Hub(ip="hub", port=8081, base_url="/hub/"),
        db=None,
        config=config or Config(),
        k8s_api_host=fake.url,
        namespace=namespace,
        image=image,
        **{"start_timeout": 30, "k8s_api_request_retry_timeout": 10, **traits},
    )
    user.spawners[server] = spawner
    return spawner
