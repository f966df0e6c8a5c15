"""The cleanup service's listening address (MLHUB_CLEANUP_LISTEN): loopback by default; in the chart the proxy
runs in another pod and reaches it through the hub's Service, so it listens on the pod's addresses there.

The service is started for real (its tornado app on a free port) with a stand-in cleaner: no hub, no engine.
Only 127.0.0.1 is connected to.
"""

import asyncio
import socket

import pytest
from tornado.httpclient import AsyncHTTPClient

from cleanup_service import app as cleanup_app

pytestmark = pytest.mark.asyncio


class StandInBackend:
    async def close(self):
        pass


class StandInCleaner:
    def __init__(self):
        self.backend = StandInBackend()
        self.status = cleanup_app.Status()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serving(monkeypatch, env):
    """Start the service's serve() with ``env``; return (service, task) once it listens."""
    port = free_port()
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", f"http://team-mlhub-hub:{port}")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/cleanup-service/")
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:1/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "x" * 32)
    monkeypatch.setenv("CLEANUP_INTERVAL_SECONDS", "-1")
    monkeypatch.delenv("MLHUB_CLEANUP_LISTEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service = cleanup_app.CleanupService()
    monkeypatch.setattr(service, "build", StandInCleaner)
    task = asyncio.create_task(service.serve())
    for _ in range(100):
        if getattr(service, "http_server", None) is not None or task.done():
            break
        await asyncio.sleep(0.02)
    return service, task, port


async def stop(task):
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def bound_addresses(service):
    return {sock.getsockname()[:2] for sock in service.http_server._sockets.values()}


async def test_loopback_by_default(monkeypatch):
    service, task, port = await serving(monkeypatch, {})
    try:
        assert bound_addresses(service) == {("127.0.0.1", port)}
    finally:
        await stop(task)


async def test_listens_on_the_pod_addresses_when_asked(monkeypatch):
    """EXECUTION_MODE=k8s in the chart: 0.0.0.0, on the port of the service URL (the hub's Service)."""
    service, task, port = await serving(monkeypatch, {"MLHUB_CLEANUP_LISTEN": "0.0.0.0"})
    try:
        assert bound_addresses(service) == {("0.0.0.0", port)}
        # it answers, and still wants a hub token: the API stays authenticated off loopback
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/services/cleanup-service/", raise_error=False
        )
        assert response.code in (401, 403)
    finally:
        await stop(task)


async def test_a_bad_address_is_refused_naming_the_variable(monkeypatch):
    service, task, _ = await serving(monkeypatch, {"MLHUB_CLEANUP_LISTEN": "hub.example.org"})
    with pytest.raises(ValueError, match="MLHUB_CLEANUP_LISTEN"):
        await task
