"""GPU inventory and allocation (pure core, plus the ``nvidia-smi`` probe).

The GPUs in use are whatever the ``mlhub.gpus`` labels of this hub's live containers say, so the
picture survives hub restarts and needs no database. :func:`allocate` turns a request (a count,
explicit ids or ``all``) into concrete GPU ids, exclusively unless sharing is allowed.
"""

import shutil
import subprocess
from dataclasses import dataclass

from .options import OptionsError


@dataclass(frozen=True)
class GPU:
    id: str  # the index Docker's DeviceIDs and NVIDIA_VISIBLE_DEVICES use
    uuid: str = ""
    name: str = ""
    memory_mb: int = 0


def inventory_from_ids(ids):
    """GPUs named in configuration (``gpu_ids`` / ``$GPU_IDS``), e.g. for a remote engine."""
    if isinstance(ids, str):
        ids = [part for part in ids.replace(" ", "").split(",") if part]
    gpus = []
    for gpu_id in ids:
        if not str(gpu_id).isdigit():
            raise ValueError(f"GPU id {gpu_id!r} is not an index (0, 1, ...)")
        gpus.append(GPU(str(gpu_id)))
    if len({g.id for g in gpus}) != len(gpus):
        raise ValueError(f"GPU ids repeat: {ids!r}")
    return gpus


def parse_nvidia_smi(text):
    """Parse ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 4 and fields[0].isdigit():
            memory = int(fields[3]) if fields[3].isdigit() else 0
            gpus.append(GPU(fields[0], fields[1], fields[2], memory))
    return gpus


def probe_nvidia_smi(timeout=10):
    """The GPUs ``nvidia-smi`` sees from the hub's host, or ``[]`` where there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(query, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(result.stdout)


def gpus_in_use(containers, exclude=None):
    """``{gpu id: [container names]}`` from the ``mlhub.gpus`` labels of live containers."""
    used = {}
    for name, label in containers:
        if name == exclude or not label:
            continue
        for gpu_id in label.split(","):
            used.setdefault(gpu_id, []).append(name)
    return used


def allocate(request, inventory, in_use, sharing=False, prefer=()):
    """Concrete GPU ids for ``request`` (``""``, a count, ``"device=0,2"`` or ``"all"``).

    ``in_use`` maps ids to the containers holding them; ``prefer`` lists ids this workspace had
    before, so that a restart keeps its GPUs when they are still free.
    """
    if not request:
        return []
    ids = [g.id for g in inventory]
    free = [i for i in ids if sharing or i not in in_use]
    if request == "all":
        wanted = ids
    elif request.isdigit():
        count = int(request)
        ordered = [i for i in prefer if i in free] + [i for i in free if i not in prefer]
        if count > len(ordered):
            raise OptionsError("gpus", f"{count} GPUs requested, {len(free)} free (of {len(ids)})")
        return sorted(ordered[:count], key=int)
    else:
        wanted = request.removeprefix("device=").split(",")
    unknown = [i for i in wanted if i not in ids]
    if unknown:
        raise OptionsError(
            "gpus", f"no GPU {', '.join(unknown)} on this engine (GPUs: {', '.join(ids) or 'none'})"
        )
    busy = [i for i in wanted if i not in free]
    if busy:
        raise OptionsError("gpus", f"GPU {', '.join(busy)} in use by another workspace ({len(free)} free)")
    return sorted(wanted, key=int)
