"""Fixtures of the Kubernetes tests: a fake API server with a fake kubelet on the Docker engine."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fake_k8s import running_fake  # noqa: E402

from fake_kubelet import LABEL, FakeKubelet  # noqa: E402

ANONYMOUS = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def cluster(docker):
    """A fake API server with a fake kubelet on the engine; everything it made is removed after."""
    volumes_before = {v.name for v in docker.volumes.list()}
    with running_fake() as fake:
        kubelet = FakeKubelet(fake, docker).start()
        try:
            yield fake, kubelet
        finally:
            kubelet.stop()
            left = [
                *docker.containers.list(all=True, filters={"label": f"{LABEL}={kubelet.label}"}),
                *docker.volumes.list(filters={"label": f"{LABEL}={kubelet.label}"}),
                *docker.networks.list(filters={"label": f"{LABEL}={kubelet.label}"}),
            ]
            assert not left, left
            # anonymous volumes too (an image's VOLUME, e.g. the hub image's /data, when a container is removed):
            # named volumes are other tests' (labelled, checked above), anonymous ones have 64-hex names
            new_volumes = {v.name for v in docker.volumes.list()} - volumes_before
            anonymous = {name for name in new_volumes if ANONYMOUS.fullmatch(name)}
            assert not anonymous, anonymous
    assert not kubelet.errors, kubelet.errors
