"""The hub client refuses partial user lists, so a sweep never acts on one.

A real hub cannot be made to fail in the middle of a listing on demand, so these tests serve
JupyterHub's paginated ``/users`` format from a small tornado app on 127.0.0.1 (the format is the
one a real hub sends: ``tests/hub/test_cleanup.py`` reads 260 users from a real hub).
"""

import json
import logging

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from cleanup_service.app import Cleaner
from cleanup_service.hub import HubClient, IncompleteListing
from cleanup_service.planner import Resource, Rules


class Users(web.RequestHandler):
    def initialize(self, behaviour):
        self.behaviour = behaviour

    def get(self):
        offset = int(self.get_argument("offset"))
        limit = int(self.get_argument("limit"))
        total = 5
        if self.behaviour == "error" and offset:
            raise web.HTTPError(500)
        if self.behaviour == "flat":
            self.finish(json.dumps([{"name": "u0", "servers": {}}]))
            return
        reported = total + 1 if self.behaviour == "short" else total
        items = [{"name": f"u{i}", "servers": {}} for i in range(offset, min(offset + limit, total))]
        following = {"offset": offset + limit, "limit": limit} if offset + limit < reported else None
        self.finish(json.dumps({"items": items, "_pagination": {"total": reported, "next": following}}))


@pytest.fixture
def fake_hub():
    servers = []

    def serve(behaviour):
        sock, port = bind_unused_port()
        server = HTTPServer(web.Application([(r"/hub/api/users", Users, {"behaviour": behaviour})]))
        server.add_sockets([sock])
        servers.append(server)
        return HubClient(f"http://127.0.0.1:{port}/hub/api", "token", page_size=2)

    yield serve
    for server in servers:
        server.stop()


async def test_reads_every_page(fake_hub):
    client = fake_hub("ok")
    users = await client.list_users()
    assert [u["name"] for u in users] == ["u0", "u1", "u2", "u3", "u4"]
    assert client.calls == 3


@pytest.mark.parametrize("behaviour", ["error", "short", "flat"])
async def test_partial_or_unpaginated_lists_are_refused(fake_hub, behaviour):
    with pytest.raises(IncompleteListing):
        await fake_hub(behaviour).list_users()


class RecordingBackend:
    """Stands in for the engine: records removals (there must be none)."""

    def __init__(self):
        self.removed = []

    async def list_resources(self):
        # u4 is on the page that fails: with a partial list it would look deleted
        labels = {"mlhub.origin": "mlhub", "mlhub.user": "u4", "mlhub.server_name": ""}
        return [Resource("container", "mlhub-ws-u4", labels, created=0)]

    async def remove(self, resource):
        self.removed.append(resource)


async def test_a_sweep_aborts_before_removing_anything(fake_hub):
    backend = RecordingBackend()
    cleaner = Cleaner(fake_hub("error"), backend, Rules("mlhub"), logging.getLogger("test"))
    with pytest.raises(IncompleteListing):
        await cleaner.run("users")
    assert backend.removed == []
    assert "listing users failed" in cleaner.status.last_error
