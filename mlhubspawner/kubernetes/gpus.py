"""GPUs on Kubernetes: what the cluster can schedule, by pool, and what this hub's workspaces hold (pure).

A pool is one extended resource (``nvidia.com/gpu``, a MIG slice such as ``nvidia.com/mig-1g.5gb``) of one
GPU product, the node label ``nvidia.com/gpu.product`` that GPU Feature Discovery sets (``""`` without it).
Its size is the sum of ``status.allocatable[<resource>]`` over the nodes a workspace can be scheduled on
(Ready, not cordoned); a pod gets its GPUs from one node, so the largest allocatable on one node bounds a
single request. Nothing here does I/O: the spawner lists the nodes and pods and hands their API dicts in.
"""

import re
from dataclasses import dataclass

from .. import naming
from ..options import gpu_type_name
from ..policy import GPUType, GPUTypes
from .objects import GPU_PRODUCT_LABEL, is_valid_label_value

PRODUCT_LABEL = GPU_PRODUCT_LABEL
_COUNT = re.compile(r"^\s*(\d+)\s*$")
_DONE_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class GPUPool:
    """GPUs of one resource and product over the schedulable nodes."""

    resource: str
    product: str = ""
    total: int = 0  # allocatable, summed over the nodes
    per_node: int = 0  # the most on one node: the most one workspace can get
    nodes: int = 0
    memory_mb: int = 0  # per GPU (label <resource>.memory, MiB); 0: unknown

    @property
    def type(self):
        """The ``gpu_type`` option that asks for this pool."""
        return gpu_type_name(self.resource, self.product)


def count(quantity):
    """An extended resource's quantity (a whole number: ``"4"``, or an int) as an int; else 0."""
    if isinstance(quantity, bool):
        return 0
    if isinstance(quantity, int):
        return max(0, quantity)
    match = _COUNT.match(quantity) if isinstance(quantity, str) else None
    return int(match.group(1)) if match else 0


def _items(node_list):
    if isinstance(node_list, dict):
        return node_list.get("items") or []
    return list(node_list or [])


def is_schedulable(node):
    """Whether new pods can land on ``node``: Ready and not cordoned (``spec.unschedulable``)."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _product(node):
    product = ((node.get("metadata") or {}).get("labels") or {}).get(PRODUCT_LABEL, "")
    # an API server only stores valid label values; anything else never reaches a node selector
    return product if product and is_valid_label_value(product) else ""


def node_products(node_list):
    """``{node name: product}`` of the schedulable nodes."""
    return {
        (n.get("metadata") or {}).get("name"): _product(n) for n in _items(node_list) if is_schedulable(n)
    }


def gpu_pools(node_list, resource_names):
    """The pools of ``resource_names`` (in that order, then by product) on the schedulable nodes.

    ``node_list``: a NodeList or its items, as API dicts. Pools with no allocatable GPU are left out.
    """
    found = {}
    for node in _items(node_list):
        if not is_schedulable(node):
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        labels = (node.get("metadata") or {}).get("labels") or {}
        product = _product(node)
        for resource in resource_names:
            n = count(allocatable.get(resource))
            if n <= 0:
                continue
            pool = found.setdefault(
                (resource, product), {"total": 0, "per_node": 0, "nodes": 0, "memory": []}
            )
            pool["total"] += n
            pool["per_node"] = max(pool["per_node"], n)
            pool["nodes"] += 1
            memory = count(labels.get(f"{resource}.memory"))
            if memory:
                pool["memory"].append(memory)
    order = {r: i for i, r in enumerate(resource_names)}
    return tuple(
        GPUPool(
            resource,
            product,
            p["total"],
            p["per_node"],
            p["nodes"],
            min(p["memory"]) if len(p["memory"]) == p["nodes"] else 0,
        )
        for (resource, product), p in sorted(found.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    )


def gpu_types(pools, resource_names):
    """The GPU types offered: ``""`` (the first resource, any product), each resource, each pool with a product.

    ``max_count`` of each is the most one node gives (0 when there is none).
    """

    def most(resource, product=None):
        return max(
            (p.per_node for p in pools if p.resource == resource and product in (None, p.product)), default=0
        )

    types = [GPUType("", resource_names[0], "", most(resource_names[0]))]
    types += [GPUType(r, r, "", most(r)) for r in resource_names if most(r) or r == resource_names[0]]
    types += [GPUType(p.type, p.resource, p.product, p.per_node) for p in pools if p.product]
    return GPUTypes(types)


def unknown_gpu_types(resource_names):
    """The types when the nodes cannot be read: the configured resources, of unknown size."""
    return GPUTypes([GPUType("", resource_names[0]), *(GPUType(r, r) for r in resource_names)])


def held_gpus(pods, resource_names, products):
    """``{(resource, product): GPUs}`` that live ``pods`` (API dicts: this hub's workspaces) hold.

    A scheduled pod counts in the pool of its node (``products``: :func:`node_products`; pods on other
    nodes are not in any pool), a pending one in the product of its node selector (``""`` without one).
    """
    held = {}
    for pod in pods:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if status.get("phase") in _DONE_PHASES:
            continue
        node = spec.get("nodeName")
        if node:
            if node not in products:
                continue
            product = products[node]
        else:
            product = (spec.get("nodeSelector") or {}).get(PRODUCT_LABEL, "")
        for container in spec.get("containers") or []:
            limits = (container.get("resources") or {}).get("limits") or {}
            for resource in resource_names:
                n = count(limits.get(resource))
                if n:
                    held[(resource, product)] = held.get((resource, product), 0) + n
    return held


def held_by_user(pods, resource_names):
    """``{user: GPUs}`` that live ``pods`` (this hub's workspaces) hold, by their ``mlhub.user`` annotation."""
    per_user = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in _DONE_PHASES:
            continue
        user = ((pod.get("metadata") or {}).get("annotations") or {}).get(naming.LABEL_USER)
        for container in (pod.get("spec") or {}).get("containers") or []:
            limits = (container.get("resources") or {}).get("limits") or {}
            n = sum(count(limits.get(resource)) for resource in resource_names)
            if n and user:
                per_user[user] = per_user.get(user, 0) + n
    return per_user


def pool_status(pools, held):
    """The form's view of each pool: a dict with ``"kind": "pool"``, its type, sizes and how many are free."""
    return [
        {
            "kind": "pool",
            "type": p.type,
            "resource": p.resource,
            "product": p.product,
            "memory_mb": p.memory_mb,
            "total": p.total,
            "free": max(0, p.total - held.get((p.resource, p.product), 0)),
            "per_node": p.per_node,
            "nodes": p.nodes,
        }
        for p in pools
    ]
