"""The Docker backend: containers, networks and volumes carrying this hub's labels.

Docker cannot relabel a volume, so the time a volume was first seen orphaned is kept in a small
JSON file (``state_path``) next to the hub's data; it is the grace period's clock.

Containers and networks are removed by the id they were listed with: one re-created under the same
name since the listing (a user deleted and signed up again, a workspace restarted) is another object
and survives. Volumes have no id: right before removal the volume is inspected again and removed
only if its labels and creation time are still the listed ones (a re-created volume has a later
``CreatedAt``), and never by force, so Docker refuses to remove one a container uses.
"""

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import docker
from docker.errors import APIError, NotFound

from mlhubspawner import naming

from ..planner import CONTAINER, NETWORK, VOLUME, Resource
from .base import Backend


def _epoch(timestamp):
    """Docker's RFC 3339 times (nanoseconds, ``Z`` or an offset) as epoch seconds."""
    if isinstance(timestamp, (int, float)):
        return float(timestamp)
    text = timestamp.replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:  # trim fractions beyond microseconds, keep the offset
        digits = "".join(ch for ch in rest if ch.isdigit())
        offset = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{offset}"
    return datetime.fromisoformat(text).timestamp()


class DockerBackend(Backend):
    def __init__(self, hub_name, log, state_path=None, threads=8, client=None, hub_container=None):
        super().__init__(hub_name, log)
        # the hub image's container sits on every user network: detach it before removing one
        self.hub_container = (
            os.environ.get("MLHUB_HUB_CONTAINER", "") if hub_container is None else hub_container
        )
        self.client = client or docker.APIClient(
            version="auto", max_pool_size=threads, **docker.utils.kwargs_from_env()
        )
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="cleanup-docker")
        self.state_path = Path(state_path) if state_path else None
        self._orphans = self._load_orphans()

    def _call(self, method, *args, **kwargs):
        return asyncio.wrap_future(self.executor.submit(getattr(self.client, method), *args, **kwargs))

    def _load_orphans(self):
        if self.state_path and self.state_path.exists():
            try:
                return json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                self.log.warning("Unreadable %s; orphaned volumes start a new grace period", self.state_path)
        return {}

    def _save_orphans(self):
        if self.state_path:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._orphans, indent=1, sort_keys=True))
            os.replace(tmp, self.state_path)

    async def list_resources(self):
        label = {"label": [f"{naming.LABEL_ORIGIN}={self.hub_name}"]}
        containers, networks, volumes = await asyncio.gather(
            self._call("containers", all=True, filters=label),
            self._call("networks", filters=label),
            self._call("volumes", filters=label),
        )
        attached = {}
        for c in containers:
            for net in ((c.get("NetworkSettings") or {}).get("Networks") or {}).values():
                attached[net.get("NetworkID")] = attached.get(net.get("NetworkID"), 0) + 1
        resources = [
            Resource(
                CONTAINER,
                c["Names"][0].lstrip("/"),
                c.get("Labels") or {},
                c["Created"],
                c["State"] == "running",
                id=c["Id"],
            )
            for c in containers
        ]
        resources += [
            Resource(
                NETWORK,
                n["Name"],
                n.get("Labels") or {},
                _epoch(n["Created"]),
                attached=attached.get(n["Id"], 0),
                id=n["Id"],
            )
            for n in networks
        ]
        names = set()
        for v in (volumes or {}).get("Volumes") or []:
            names.add(v["Name"])
            created = _epoch(v["CreatedAt"]) if v.get("CreatedAt") else 0.0
            orphaned = self._orphans.get(v["Name"])
            resources.append(
                Resource(VOLUME, v["Name"], v.get("Labels") or {}, created, orphaned_since=orphaned)
            )
        # forget marks of volumes that are gone
        if set(self._orphans) - names:
            self._orphans = {k: v for k, v in self._orphans.items() if k in names}
            self._save_orphans()
        return resources

    async def remove(self, resource):
        try:
            if resource.kind == CONTAINER:
                await self._call("remove_container", self._listed_id(resource), v=True, force=True)
            elif resource.kind == NETWORK:
                if self.hub_container:
                    await self._detach_hub(self._listed_id(resource))
                await self._call("remove_network", self._listed_id(resource))
            elif resource.kind == VOLUME:
                if not await self._volume_unchanged(resource):
                    return
                await self._call("remove_volume", resource.name)
                self._orphans.pop(resource.name, None)
                self._save_orphans()
        except NotFound:
            self.log.debug("%s %s is already gone", resource.kind, resource.name)
        except APIError as e:
            if e.status_code == 409 and "removal" in str(e.explanation or "").lower():
                return  # already being removed
            raise

    @staticmethod
    def _listed_id(resource):
        if not resource.id:
            raise ValueError(f"{resource.kind} {resource.name} was listed without an id: not removed by name")
        return resource.id

    async def _volume_unchanged(self, resource):
        """Whether the volume of that name is still the one listed (same labels, same creation time)."""
        current = await self._call("inspect_volume", resource.name)
        created = _epoch(current["CreatedAt"]) if current.get("CreatedAt") else 0.0
        if (current.get("Labels") or {}) == resource.labels and created == resource.created:
            return True
        self.log.info("Volume %s was re-created since it was listed: left alone", resource.name)
        return False

    async def _detach_hub(self, network):
        try:
            await self._call("disconnect_container_from_network", self.hub_container, network, force=True)
        except NotFound:
            pass
        except APIError as e:
            text = str(e.explanation or "").lower()
            if "is not connected" not in text and "not found" not in text:
                raise

    async def mark_orphaned(self, resource, since):
        if since is None:
            if self._orphans.pop(resource.name, None) is not None:
                self._save_orphans()
        elif resource.name not in self._orphans:
            self._orphans[resource.name] = since
            self._save_orphans()

    async def close(self):
        self.executor.shutdown(wait=False)
        self.client.close()
