"""The cleanup core: read the hub and the backend, plan, execute (explicit dependencies, no globals)."""

import asyncio
import time

from . import planner
from .planner import CONTAINER, DELETE_SERVER, MARK_ORPHANED, NETWORK, REMOVE, UNMARK, VOLUME, HubServer

STATE_KEY = "mlhub"


def utcnow():
    """The clock (a function, so that tests can move it)."""
    return time.time()


def hub_view(user_models):
    """``({user: {server names}}, [HubServer])`` from the hub's user models."""
    users, servers = {}, []
    for model in user_models:
        names = users.setdefault(model["name"], set())
        for name, server in (model.get("servers") or {}).items():
            names.add(name)
            state = (server.get("state") or {}).get(STATE_KEY) or {}
            servers.append(
                HubServer(
                    user=model["name"],
                    name=name,
                    expiration=float(state.get("expiration") or 0),
                    active=bool(server.get("ready") or server.get("pending")),
                )
            )
    return users, servers


async def plan(sweep, hub, backend, rules, now=None):
    """``(actions, resources)`` of one sweep (``users`` or ``expired``); nothing is changed."""
    user_models, resources = await asyncio.gather(hub.list_users(), backend.list_resources())
    now = utcnow() if now is None else now
    users, servers = hub_view(user_models)
    if sweep == planner.SWEEP_USERS:
        return planner.plan_deleted_users(users, resources, now, rules), resources
    if sweep == planner.SWEEP_EXPIRED:
        return planner.plan_expired(servers, resources, now, rules), resources
    raise ValueError(f"unknown sweep {sweep!r}")


_ORDER = [
    lambda a: a.kind == DELETE_SERVER,
    lambda a: a.kind == REMOVE and a.resource.kind == CONTAINER,
    lambda a: a.kind == REMOVE and a.resource.kind == NETWORK,
    lambda a: a.resource is not None and a.resource.kind == VOLUME,
]


async def execute(actions, hub, backend, log, concurrency=8, now=None):
    """Carry the actions out in a safe order; one failure is logged and the rest goes on.

    Returns ``{"done": n, "failed": n, "errors": [...]}``.
    """
    now = utcnow() if now is None else now
    semaphore = asyncio.Semaphore(concurrency)
    result = {"done": 0, "failed": 0, "errors": []}

    async def run(action):
        async with semaphore:
            try:
                if action.kind == DELETE_SERVER:
                    await hub.delete_server(action.server.user, action.server.name)
                elif action.kind == REMOVE:
                    await backend.remove(action.resource)
                elif action.kind == MARK_ORPHANED:
                    await backend.mark_orphaned(action.resource, now)
                elif action.kind == UNMARK:
                    await backend.mark_orphaned(action.resource, None)
                else:
                    return
            except Exception as e:  # noqa: BLE001 (one item's failure must not stop the sweep)
                what = action.to_dict()
                log.exception(
                    "Cleanup of %s %s failed", what.get("kind"), what.get("name") or what.get("server")
                )
                result["failed"] += 1
                result["errors"].append(
                    f"{action.kind} {what.get('kind')} {what.get('name', what.get('server'))}: {e}"
                )
            else:
                result["done"] += 1

    for stage in _ORDER:
        await asyncio.gather(*(run(a) for a in actions if stage(a)))
    return result
