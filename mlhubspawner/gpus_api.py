"""The GPU API, served by the hub (admins): every GPU, who holds it, and a fresh discovery.

``GET  /hub/api/mlhub/gpus`` → ``{"gpus": [{"id", "index", "uuid", "name", "memory_mb", "label", "free",
"holders"}], "source": "<how they were found>", "probed_at": <epoch or null>, "ok": true|false}``.
``POST /hub/api/mlhub/gpus/refresh``: probe the engine again (a GPU added, a driver reinstalled), then as GET.
Both need the unfiltered ``admin:servers`` scope (admins have it).
"""

import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web


def hub_gpu_source(settings, current_user=None):
    """Something that answers ``gpu_overview()``: a hub-wide spawner for Docker, else the user's own."""
    spawner_class = settings.get("spawner_class")
    if getattr(spawner_class, "discover_gpus_at_start", None) is not None:
        return spawner_class(config=settings.get("config"))
    spawner = getattr(current_user, "spawner", None)
    if spawner is not None and hasattr(spawner, "gpu_status"):
        return spawner
    return None


async def gpu_overview(source, refresh=False):
    """The overview of :func:`hub_gpu_source`'s GPUs (empty when the backend has none)."""
    if source is None:
        return {"gpus": [], "source": "this hub's spawner has no GPUs", "probed_at": None, "ok": False}
    overview = getattr(source, "gpu_overview", None)
    if overview is not None:
        return await overview(refresh=refresh)
    return {"gpus": await source.gpu_status(), "source": "", "probed_at": None, "ok": True}


class GPUsAPIHandler(APIHandler):
    async def answer(self, refresh):
        if "admin:servers" not in self.expanded_scopes:
            raise web.HTTPError(403, "the GPU overview needs the admin:servers scope (admins)")
        source = hub_gpu_source(self.settings, self.current_user)
        self.write(json.dumps(await gpu_overview(source, refresh=refresh)))

    async def get(self):
        await self.answer(refresh=False)


class GPUsRefreshAPIHandler(GPUsAPIHandler):
    async def post(self):
        await self.answer(refresh=True)


handlers = [
    (r"/api/mlhub/gpus", GPUsAPIHandler),
    (r"/api/mlhub/gpus/refresh", GPUsRefreshAPIHandler),
]
