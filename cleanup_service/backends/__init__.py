"""Where workspaces live: one interface, one implementation per execution mode."""

from .base import Backend

BACKENDS = {
    "docker": "cleanup_service.backends.docker:DockerBackend",
    "k8s": "cleanup_service.backends.kubernetes:KubernetesBackend",
}


def backend_class(mode):
    """The backend class for an ``EXECUTION_MODE`` (``docker`` or ``k8s``)."""
    import importlib

    try:
        module, _, name = BACKENDS[mode].partition(":")
    except KeyError:
        raise ValueError(
            f"no cleanup backend for execution mode {mode!r} (known: {', '.join(BACKENDS)})"
        ) from None
    return getattr(importlib.import_module(module), name)


__all__ = ["Backend", "backend_class"]
