"""ML Hub spawners: JupyterHub spawners for ML workspaces on Docker (and, later, Kubernetes)."""

from ._version import __version__

__all__ = ["MLHubDockerSpawner", "__version__"]


def __getattr__(name):
    # imported lazily so that the pure modules (naming, options) load without docker-py
    if name == "MLHubDockerSpawner":
        from .docker import MLHubDockerSpawner

        return MLHubDockerSpawner
    raise AttributeError(name)
