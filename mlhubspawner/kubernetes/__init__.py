"""The Kubernetes backend of ML Hub."""

from .spawner import MLHubKubernetesSpawner

__all__ = ["MLHubKubernetesSpawner"]
