"""The Docker cleanup backend removes what it listed, never a namesake created since (real engine)."""

import asyncio
import logging
import secrets
import time

import pytest

from cleanup_service.backends.docker import DockerBackend
from cleanup_service.planner import CONTAINER, NETWORK, VOLUME
from mlhubspawner import naming

from support import base_image, exists, labelled_resources, remove_by_label

LOG = logging.getLogger("test-cleanup-by-id")


@pytest.fixture
def hub_name(docker):
    name = f"t{secrets.token_hex(3)}"
    yield name
    remove_by_label(docker, f"{naming.LABEL_ORIGIN}={name}")


def listed(hub_name, tmp_path):
    """A backend and what it lists now, by kind."""
    backend = DockerBackend(hub_name, LOG, state_path=tmp_path / "state.json", hub_container="")
    resources = asyncio.run(backend.list_resources())
    return backend, {r.kind: r for r in resources}


def test_a_namesake_created_after_the_listing_survives(docker, hub_name, tmp_path):
    container, network, volume = labelled_resources(docker, hub_name, "gone", "srv")
    backend, before = listed(hub_name, tmp_path)
    assert set(before) == {CONTAINER, NETWORK, VOLUME}
    # between the listing and the removal, the same user's workspace is made again: same names, same labels
    labels = container.labels
    container.remove(force=True)
    network.remove()
    volume.remove()
    time.sleep(1.1)  # a volume's CreatedAt has whole seconds
    network2 = docker.networks.create(network.name, labels=labels)
    volume2 = docker.volumes.create(volume.name, labels=labels)
    container2 = docker.containers.run(
        base_image(docker),
        ["sleep", "infinity"],
        name=container.name,
        labels=labels,
        network=network2.name,
        detach=True,
    )
    container2.stop(timeout=0)  # not using the volume: Docker alone would let it go
    try:

        async def remove_listed():
            for kind in (CONTAINER, NETWORK, VOLUME):
                await backend.remove(before[kind])
            await backend.close()

        asyncio.run(remove_listed())
        assert docker.containers.get(container.name).id == container2.id
        assert docker.networks.get(network.name).id == network2.id
        assert exists(docker.volumes, volume.name)
    finally:
        container2.remove(force=True)
        network2.remove()
        volume2.remove(force=True)


def test_what_was_listed_is_removed(docker, hub_name, tmp_path):
    container, network, volume = labelled_resources(docker, hub_name, "gone", "srv")
    backend, before = listed(hub_name, tmp_path)

    async def remove_listed():
        for kind in (CONTAINER, NETWORK, VOLUME):
            await backend.remove(before[kind])
        # a second removal of what is gone is no error
        for kind in (CONTAINER, NETWORK):
            await backend.remove(before[kind])
        await backend.close()

    asyncio.run(remove_listed())
    assert not exists(docker.containers, container.name)
    assert not exists(docker.networks, network.name)
    assert not exists(docker.volumes, volume.name)
