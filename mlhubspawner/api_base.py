"""What the hub's own ML Hub API handlers share: finding the workspace a URL names."""

from jupyterhub.apihandlers.base import APIHandler
from tornado import web


class WorkspaceAPIHandler(APIHandler):
    """A handler of ``/hub/api/mlhub/users/{user}[/servers/{name}]/...``."""

    def workspace(self, user_name, server_name, default_always=False, mlhub_only=True):
        """``(user, spawner)``: 404 for an unknown user or server, 400 for a non-ML Hub spawner.

        ``default_always``: every user has a default server, started or not.
        """
        user = self.find_user(user_name)
        known = server_name in user.orm_spawners if user is not None else False
        if user is None or not (known or (default_always and not server_name)):
            raise web.HTTPError(404, f"no server {user_name}/{server_name}")
        spawner = user.spawners[server_name]
        if mlhub_only and not hasattr(spawner, "workspace_options"):
            raise web.HTTPError(400, "this server is not an ML Hub workspace")
        return user, spawner
