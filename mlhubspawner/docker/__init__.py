"""The Docker backend of ML Hub."""

from .spawner import MLHubDockerSpawner

__all__ = ["MLHubDockerSpawner"]
