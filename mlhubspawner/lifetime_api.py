"""The lifetime API, served by the hub itself (it changes spawner state, which only the hub can).

``GET  /hub/api/mlhub/users/{user}/servers/{name}/lifetime``  (``.../users/{user}/lifetime`` for
the default server): expiration and remaining seconds.
``POST`` the same URL with ``{"days_to_live": 14}`` sets the lifetime, counted from the workspace's
creation: the owner within the policy's maximum, an admin of that server (``admin:servers`` for its
user, filters honoured) beyond it, nobody beyond ``MAX_DAYS_TO_LIVE`` (3650 days);
``null`` means never expires (admins, or when the policy has no maximum).
"""

import json
import time
from dataclasses import replace

from jupyterhub.scopes import needs_scope
from tornado import web

from .api_base import WorkspaceAPIHandler
from .options import OptionsError, parse_days_to_live


def lifetime_model(spawner, now=None):
    now = time.time() if now is None else now
    options = spawner.workspace_options
    return {
        "user": spawner.user.name,
        "server": spawner.name,
        "days_to_live": options.days_to_live if options else None,
        "created_at": spawner.created_at or None,
        "expiration_timestamp_seconds": int(spawner.expiration),
        "remaining_lifetime_seconds": max(0, int(spawner.expiration - now)) if spawner.expiration else None,
    }


class LifetimeAPIHandler(WorkspaceAPIHandler):
    def _spawner(self, user_name, server_name):
        return self.workspace(user_name, server_name)[1]

    @needs_scope("read:servers")
    async def get(self, user_name, server_name=""):
        self.write(json.dumps(lifetime_model(self._spawner(user_name, server_name))))

    @needs_scope("servers")
    async def post(self, user_name, server_name=""):
        spawner = self._spawner(user_name, server_name)
        body = self.get_json_body()
        if not isinstance(body, dict) or set(body) != {"days_to_live"}:
            raise web.HTTPError(400, 'expected {"days_to_live": <days or null>}')
        days = body["days_to_live"]
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
            raise web.HTTPError(400, "days_to_live must be a positive number of days, or null")
        if spawner.workspace_options is None:
            raise web.HTTPError(409, "the workspace has not been started yet")
        policy = await spawner.current_policy()
        # admin of *this* server (a filtered admin:servers!user=<other> is not), so beyond the policy
        is_admin = self.has_scope(f"admin:servers!server={spawner.user.name}/{spawner.name}")
        limit = None if is_admin else policy.max_days_to_live
        if days is None:
            if limit is not None:
                raise web.HTTPError(400, f"days_to_live: at most {limit:g} days")
        else:
            try:
                days = parse_days_to_live(days, limit)
            except OptionsError as e:
                raise web.HTTPError(400, f"days_to_live: {e.message}") from None
        now = time.time()
        created_at = spawner.created_at or now
        expiration = created_at + days * 86400 if days else 0
        if expiration and expiration <= now:
            raise web.HTTPError(400, "days_to_live: that lifetime has already passed")
        spawner.created_at, spawner.expiration = created_at, expiration
        spawner.workspace_options = replace(spawner.workspace_options, days_to_live=days)
        raw = dict(spawner.orm_spawner.user_options or {})
        raw["days_to_live"] = days
        spawner._last_raw_options = raw
        spawner.orm_spawner.user_options = raw
        spawner.orm_spawner.state = spawner.get_state()
        self.db.commit()
        self.log.info("%s set the lifetime of %s to %s days", self.current_user.name, spawner._log_name, days)
        self.write(json.dumps(lifetime_model(spawner, now)))


handlers = [
    (r"/api/mlhub/users/([^/]+)/lifetime", LifetimeAPIHandler),
    (r"/api/mlhub/users/([^/]+)/servers/([^/]+)/lifetime", LifetimeAPIHandler),
]
