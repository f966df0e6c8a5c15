"""GPU discovery through the Docker engine: a short-lived probe container asks ``nvidia-smi``.

The hub never looks for ``nvidia-smi`` itself (a hub in a container has none). It starts a container
with a GPU DeviceRequest for all GPUs, like ``docker run --gpus all <image> nvidia-smi``: on a host
with NVIDIA's container toolkit, the toolkit's hook puts the driver's ``nvidia-smi`` into the
container, which reports index, UUID, name and memory of every GPU. An engine without the toolkit
refuses the request ("could not select device driver"): no GPUs, said once in the log.

The probe's image is one the engine already has (never pulled). Results are cached per process
and engine; :meth:`Discovery.refresh` probes again (hub start, the admin page's button).
"""

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field

from docker.errors import APIError, ImageNotFound, NotFound
from requests.exceptions import RequestException

from .. import gpus, naming

COMPONENT_GPU_PROBE = "gpu-probe"
PROBE_TIMEOUT_SECONDS = 60
NO_DRIVER_HINT = (
    "install NVIDIA's container toolkit on the Docker host and restart dockerd "
    "(or set c.MLHubDockerSpawner.gpu_ids / GPU_IDS)"
)


@dataclass
class Result:
    """One probe: the GPUs found, what happened (for the log and the admin page) and when."""

    gpus: list = field(default_factory=list)
    message: str = ""
    image: str = ""
    probed_at: float = 0.0  # epoch seconds
    ok: bool = False


def probe_create_kwargs(image, hub_name, driver="nvidia"):
    """``create_container`` arguments of the probe (host config apart): nvidia-smi as entrypoint."""
    return {
        "image": image,
        "name": f"{hub_name}-gpu-probe-{secrets.token_hex(4)}",
        "entrypoint": [gpus.NVIDIA_SMI_QUERY[0]],
        "command": list(gpus.NVIDIA_SMI_QUERY[1:]),
        "labels": {naming.LABEL_ORIGIN: hub_name, naming.LABEL_COMPONENT: COMPONENT_GPU_PROBE},
    }


def probe_host_config(driver="nvidia"):
    """The probe's host config: every GPU (``--gpus all``) with the utility capability, nothing else."""
    return {
        "device_requests": [{"Driver": driver, "Count": -1, "Capabilities": [["gpu", "utility"]]}],
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": "256m",
        "pids_limit": 64,
    }


def explain_failure(error_text, driver="nvidia"):
    """A clear sentence for an engine error of the probe."""
    if "could not select device driver" in error_text:
        return f'the Docker engine has no GPU support (no "{driver}" device driver): {NO_DRIVER_HINT}'
    return f"the GPU probe failed: {error_text.strip()[-500:]}"


async def run_probe(docker, client, image, hub_name, driver="nvidia"):
    """Start the probe from ``image``; a :class:`Result`. ``docker`` is the spawner's async caller."""
    result = Result(image=image, probed_at=time.time())
    kwargs = probe_create_kwargs(image, hub_name, driver)
    kwargs["host_config"] = client.create_host_config(**probe_host_config(driver))
    try:
        container = await docker("create_container", **kwargs)
    except ImageNotFound:
        result.message = f"the GPU probe image {image} is not on the Docker engine"
        return result
    except APIError as e:
        result.message = f"could not create the GPU probe: {e.explanation or e}"
        return result
    try:
        await docker("start", container["Id"])
        status = await docker("wait", container["Id"], timeout=PROBE_TIMEOUT_SECONDS)
        output = (await docker("logs", container["Id"])).decode(errors="replace")
    except APIError as e:
        result.message = explain_failure(str(e.explanation or e), driver)
        return result
    except RequestException as e:  # wait() timed out
        result.message = f"the GPU probe did not finish within {PROBE_TIMEOUT_SECONDS} s: {e}"
        return result
    finally:
        try:
            await docker("remove_container", container["Id"], v=True, force=True)
        except (APIError, NotFound):
            pass
    if status.get("StatusCode") != 0:
        result.message = f"nvidia-smi failed in the GPU probe ({image}): {output.strip()[-500:]}"
        return result
    result.gpus = gpus.parse_nvidia_smi(output)
    result.ok = True
    result.message = f"{len(result.gpus)} GPUs found through the Docker engine (probe image {image})"
    return result


async def probe_image(spawner):
    """An image the engine already has: configured, the hub container's own, ``$MLHUB_HUB_IMAGE``, the workspace image."""
    candidates = [spawner.gpu_probe_image]
    if spawner.hub_container:
        try:
            candidates.append((await spawner.docker("inspect_container", spawner.hub_container))["Image"])
        except (APIError, NotFound):
            pass
    candidates += [os.environ.get("MLHUB_HUB_IMAGE"), spawner.default_image()]
    for image in filter(None, candidates):
        try:
            await spawner.docker("inspect_image", image)
        except APIError:  # ImageNotFound included
            continue
        return image
    return None


class Discovery:
    """The cached result for one engine, one probe at a time (concurrent callers share it)."""

    def __init__(self):
        self.result = None
        self._task = None

    async def get(self, spawner, refresh=False):
        """The last result; probes first if there is none or ``refresh`` (joining a probe under way)."""
        if self._task is None and (refresh or self.result is None):
            self._task = asyncio.ensure_future(self._probe(spawner))
            self._task.add_done_callback(self._finished)
        if self._task is not None:
            return await asyncio.shield(self._task)
        return self.result

    def _finished(self, task):
        self._task = None

    async def _probe(self, spawner):
        image = await probe_image(spawner)
        if image is None:
            result = Result(
                probed_at=time.time(),
                message="no image to probe for GPUs is on the Docker engine (the probe never pulls one); "
                "set c.MLHubDockerSpawner.gpu_probe_image",
            )
        else:
            result = await run_probe(
                spawner.docker, spawner.client, image, spawner.hub_name, spawner.gpu_driver
            )
        found = ", ".join(f"{g.describe()} ({g.uuid})" for g in result.gpus)
        (spawner.log.info if result.ok else spawner.log.warning)(
            "GPU discovery: %s%s", result.message, f": {found}" if found else ""
        )
        self.result = result
        return result
