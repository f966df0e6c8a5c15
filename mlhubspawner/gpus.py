"""GPU inventory and allocation (pure core).

The inventory comes from ``nvidia-smi`` run *through the engine* (see
:mod:`mlhubspawner.docker.gpu_discovery`), or from configuration. A GPU is named by its UUID wherever
it is stored or handed to the engine (DeviceIDs, ``NVIDIA_VISIBLE_DEVICES``, the ``mlhub.gpus`` label):
indices change across reboots and driver updates, UUIDs do not. Users may still ask for indices.

The GPUs in use are whatever the ``mlhub.gpus`` labels of this hub's live containers say, so the
picture survives hub restarts and needs no database. :func:`allocate` turns a request (a count,
explicit ids or ``all``) into concrete GPU ids, exclusively unless sharing is allowed.
"""

import re
from dataclasses import dataclass

from .options import OptionsError

#: what the probe runs (``docker run --gpus all <image> nvidia-smi ...``)
QUERY_FIELDS = "index,uuid,name,memory.total"
NVIDIA_SMI_QUERY = ("nvidia-smi", f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader,nounits")

_UUID = re.compile(r"^GPU-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class GPU:
    index: str  # as nvidia-smi numbers it with every GPU visible ("" when configured by UUID)
    uuid: str = ""
    name: str = ""
    memory_mb: int = 0

    @property
    def id(self):
        """What the engine is given and labels hold: the UUID when known, else the index."""
        return self.uuid or self.index

    def matches(self, ref):
        """Whether ``ref`` (an index or a UUID, any case) names this GPU."""
        ref = str(ref)
        return bool(ref) and (ref == self.index or (bool(self.uuid) and ref.lower() == self.uuid.lower()))

    def describe(self):
        """``GPU 0: NVIDIA A100-SXM4-40GB, 40 GB`` (what users see)."""
        text = f"GPU {self.index}" if self.index else self.uuid
        if self.name:
            text += f": {self.name}"
        if self.memory_mb:
            text += f", {self.memory_mb / 1024:g} GB"
        return text

    def as_dict(self):
        return {
            "id": self.id,
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_mb": self.memory_mb,
            "label": self.describe(),
        }


def _sort_key(gpu):
    return (0, int(gpu.index), "") if gpu.index.isdigit() else (1, 0, gpu.uuid)


def inventory_from_ids(ids):
    """GPUs named in configuration (``gpu_ids`` / ``$GPU_IDS``): indices (``0,1``) or UUIDs (``GPU-…``)."""
    if isinstance(ids, str):
        ids = [part for part in ids.replace(" ", "").split(",") if part]
    gpus = []
    for gpu_id in map(str, ids):
        if gpu_id.isdigit():
            gpus.append(GPU(gpu_id))
        elif _UUID.match(gpu_id):
            gpus.append(GPU("", "GPU-" + gpu_id[4:].lower()))
        else:
            raise ValueError(f"GPU id {gpu_id!r} is neither an index (0, 1, ...) nor a UUID (GPU-…)")
    if len({g.id for g in gpus}) != len(gpus):
        raise ValueError(f"GPU ids repeat: {ids!r}")
    return gpus


def parse_nvidia_smi(text):
    """Parse ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``.

    Lines that are not GPUs (``No devices were found``, warnings) are skipped; GPUs come back in
    index order.
    """
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 4 and fields[0].isdigit() and _UUID.match(fields[1]):
            memory = int(fields[3]) if fields[3].isdigit() else 0
            gpus.append(GPU(fields[0], "GPU-" + fields[1][4:].lower(), fields[2], memory))
    return sorted(gpus, key=_sort_key)


def resolve(ref, inventory):
    """The GPU of ``inventory`` that ``ref`` (index or UUID) names, or None."""
    return next((g for g in inventory if g.matches(ref)), None)


def gpus_in_use(containers, inventory=()):
    """``{gpu id: [holders]}`` from ``(holder, mlhub.gpus label)`` pairs of live containers.

    Labels name GPUs by UUID (or, written by earlier versions, by index): both map to the GPU's
    ``id``. A label naming no GPU of the inventory is kept as it is (still held by someone).
    """
    used = {}
    for holder, label in containers:
        if not label:
            continue
        for ref in label.split(","):
            gpu = resolve(ref, inventory)
            used.setdefault(gpu.id if gpu else ref, []).append(holder)
    return used


def allocate(request, inventory, in_use, sharing=False, prefer=()):
    """Concrete GPU ids for ``request`` (``""``, a count, ``"device=0,GPU-…"`` or ``"all"``).

    ``in_use`` maps GPU ids to their holders (:func:`gpus_in_use`); ``prefer`` lists the GPUs this
    workspace had before (ids or indices), so that a restart keeps its GPUs when they are still
    free. The result is in index order.
    """
    if not request:
        return []
    ordered = sorted(inventory, key=_sort_key)
    free = [g for g in ordered if sharing or g.id not in in_use]
    if request == "all":
        wanted = ordered
    elif request.isdigit():
        count = int(request)
        preferred = [g for g in free if any(g.matches(ref) for ref in prefer)]
        candidates = preferred + [g for g in free if g not in preferred]
        if count > len(candidates):
            raise OptionsError("gpus", f"{count} GPUs requested, {len(free)} free (of {len(ordered)})")
        return [g.id for g in sorted(candidates[:count], key=_sort_key)]
    else:
        refs = request.removeprefix("device=").split(",")
        unknown = [ref for ref in refs if resolve(ref, ordered) is None]
        if unknown:
            known = ", ".join(g.index or g.uuid for g in ordered) or "none"
            raise OptionsError("gpus", f"no GPU {', '.join(unknown)} on this engine (GPUs: {known})")
        wanted = [resolve(ref, ordered) for ref in refs]
        if len(set(wanted)) != len(wanted):
            raise OptionsError("gpus", f"GPU ids repeat: {request.removeprefix('device=')}")
    busy = [g.index or g.uuid for g in wanted if g not in free]
    if busy:
        raise OptionsError("gpus", f"GPU {', '.join(busy)} in use by another workspace ({len(free)} free)")
    return [g.id for g in sorted(wanted, key=_sort_key)]


def status(inventory, in_use):
    """Per GPU, for the form and the admin page: its description, whether free, and who holds it."""
    return [
        dict(gpu.as_dict(), free=gpu.id not in in_use, holders=sorted(in_use.get(gpu.id, [])))
        for gpu in sorted(inventory, key=_sort_key)
    ]
