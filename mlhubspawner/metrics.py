"""ML Hub's own Prometheus series on the hub's ``/hub/metrics`` (JupyterHub's registry).

GPU series are a snapshot, replaced whenever the hub looks at its GPUs (hub start, each GPU
workspace's start and stop, the form, the admin page):

- ``mlhub_gpus_total{hub}``: GPUs workspaces may use (Kubernetes: the schedulable nodes' allocatable);
- ``mlhub_gpus_allocated{hub,user}``: GPUs each user's running workspaces hold;
- ``mlhub_gpu_allocated{hub,index,uuid,name}`` (Docker): 1 while a GPU is held, else 0.
"""

import threading

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily


def gpu_snapshot(status):
    """The series of one Docker hub from :func:`mlhubspawner.gpus.status` (pure)."""
    per_user = {}
    for gpu in status:
        for holder in gpu["holders"]:
            user = holder.split("/", 1)[0]
            per_user[user] = per_user.get(user, 0) + 1
    return {
        "total": len(status),
        "per_user": per_user,
        "gpus": [(gpu["index"], gpu["uuid"], gpu["name"], 0 if gpu["free"] else 1) for gpu in status],
    }


class GPUCollector:
    """Collects the last snapshot of every hub in this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._snapshots = {}

    def observe(self, hub_name, snapshot):
        with self._lock:
            self._snapshots[hub_name] = snapshot

    def collect(self):
        with self._lock:
            snapshots = dict(self._snapshots)
        total = GaugeMetricFamily("mlhub_gpus_total", "GPUs ML Hub workspaces may use", labels=["hub"])
        allocated = GaugeMetricFamily(
            "mlhub_gpus_allocated", "GPUs held by a user's running workspaces", labels=["hub", "user"]
        )
        each = GaugeMetricFamily(
            "mlhub_gpu_allocated",
            "1 while a workspace holds this GPU",
            labels=["hub", "index", "uuid", "name"],
        )
        for hub_name, snapshot in sorted(snapshots.items()):
            total.add_metric([hub_name], snapshot["total"])
            for user, count in sorted(snapshot["per_user"].items()):
                allocated.add_metric([hub_name, user], count)
            for index, uuid, name, held in snapshot["gpus"]:
                each.add_metric([hub_name, index, uuid, name], held)
        return [total, allocated, each]


GPUS = GPUCollector()
REGISTRY.register(GPUS)


def observe_gpus(hub_name, status):
    """Replace the GPU series of ``hub_name`` with :func:`mlhubspawner.gpus.status` output (Docker)."""
    GPUS.observe(hub_name, gpu_snapshot(status))


def observe_gpu_counts(hub_name, total, per_user):
    """Replace the GPU series of ``hub_name`` with counts (Kubernetes: no per-GPU series)."""
    GPUS.observe(hub_name, {"total": total, "per_user": dict(per_user), "gpus": []})
