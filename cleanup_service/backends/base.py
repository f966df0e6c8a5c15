"""The interface every cleanup backend implements."""

from abc import ABC, abstractmethod


class Backend(ABC):
    """Lists and removes the resources of one hub (selected by its ``mlhub.origin`` label)."""

    def __init__(self, hub_name, log):
        self.hub_name = hub_name
        self.log = log

    @abstractmethod
    async def list_resources(self):
        """All of this hub's workspace resources, as :class:`cleanup_service.planner.Resource`."""

    @abstractmethod
    async def remove(self, resource):
        """Remove the resource that was listed; a resource that is already gone is not an error.

        Removal goes by the listed id (``resource.id``), so that another resource created under the
        same name since the listing survives.
        """

    @abstractmethod
    async def mark_orphaned(self, resource, since):
        """Remember that ``resource`` (a volume) lost its owner at ``since`` (epoch seconds).

        ``since=None`` forgets the mark (the volume has an owner again).
        """

    async def close(self):  # noqa: B027 (optional hook, nothing to release by default)
        """Release clients and threads."""
