"""The update API, served by the hub: is a newer image there, and recreate the workspace from it.

``GET  /hub/api/mlhub/users/{user}[/servers/{name}]/update`` → ``{"update_available": true|false}``: the
workspace's image now has another ID than its container's (the backend's ``is_update_available()``).
``POST`` the same URL: stop the workspace if it runs, then start it again with its last options and
``update`` set, which pulls the image and recreates the container; the volume is kept.
"""

import asyncio
import json

from jupyterhub.scopes import needs_scope
from tornado import web

from .api_base import WorkspaceAPIHandler


class UpdateAPIHandler(WorkspaceAPIHandler):
    def _user_and_spawner(self, user_name, server_name):
        return self.workspace(user_name, server_name, mlhub_only=False)

    @needs_scope("read:servers")
    async def get(self, user_name, server_name=""):
        _, spawner = self._user_and_spawner(user_name, server_name)
        check = getattr(spawner, "is_update_available", None)
        available = bool(spawner.ready and check is not None and await check())
        self.write(json.dumps({"update_available": available}))

    @needs_scope("servers")
    async def post(self, user_name, server_name=""):
        user, spawner = self._user_and_spawner(user_name, server_name)
        if spawner.pending:
            raise web.HTTPError(409, f"{spawner._log_name} is {spawner.pending}: try again when it is done")
        last = dict(spawner.orm_spawner.user_options or {})
        if not last:
            raise web.HTTPError(409, "the workspace has never been started: start it from the options form")
        if spawner.active:
            await self.stop_single_user(user, server_name)
            for _ in range(300):  # a slow stop goes on in the background: wait for it (at most 60 s)
                if not spawner.pending:
                    break
                await asyncio.sleep(0.2)
            else:
                raise web.HTTPError(503, f"{spawner._log_name} did not stop in time: try again")
        # the spawner keeps "update" out of the options later starts default to
        await self.spawn_single_user(user, server_name, options={**last, "update": True})
        self.set_status(202 if spawner.pending else 201)
        self.write(json.dumps({"started": spawner.ready, "pending": spawner.pending}))


handlers = [
    (r"/api/mlhub/users/([^/]+)/update", UpdateAPIHandler),
    (r"/api/mlhub/users/([^/]+)/servers/([^/]+)/update", UpdateAPIHandler),
]
