"""What a Ray cluster can place: its node types (from the autoscaler's config) or its nodes, and whether it can grow.

A fresh autoscaling cluster (``ray up cluster.yaml``) has a CPU head and no GPU node: the GPUs appear only when
something asks for them. Capacity is therefore judged from the node types the autoscaler may start (how many of each,
what one node offers), not from the nodes alive now; a cluster that cannot grow is judged from its nodes.

The arithmetic is pure (:func:`per_node`, :func:`check_fits`, :func:`max_placeable`, :func:`max_gpus`) and tested
on hand-made shapes; :func:`read_cluster_shape` reads the running Ray (the Ray-internal reads are in
:mod:`raytrain.cluster.compat`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError

EPS = 1e-9  # resource amounts are floats (0.25 GPU): compare with a little slack


@dataclass(frozen=True)
class NodeType:
    """One kind of node: what one node offers and how many of them the cluster may hold (None: no limit)."""

    name: str
    resources: Mapping[str, float]
    max_nodes: int | None
    head: bool = False  # the head node: not counted against the autoscaler's cap on worker nodes


@dataclass(frozen=True)
class ClusterShape:
    """The node types a task can be placed on.

    ``can_grow``: an autoscaler may start nodes (their types and counts are in ``node_types``), so a request that fits
    a type waits for its node instead of failing. ``max_nodes``: the autoscaler's cap on worker nodes of all types
    together (``max_workers`` of the cluster config; None: no cap). ``source``: where the shape was read, for messages.
    """

    node_types: tuple[NodeType, ...]
    can_grow: bool = False
    max_nodes: int | None = None
    source: str = "the cluster's nodes"

    @classmethod
    def fixed(cls, resources: Mapping[str, float], source: str = "the given resources") -> ClusterShape:
        """One node offering ``resources`` (what ``ray.cluster_resources()`` returns, seen as one machine)."""
        return cls((NodeType("node", dict(resources), 1),), source=source)

    @property
    def totals(self) -> dict[str, float]:
        """Every resource summed over the most nodes of every type (``inf`` where a type has no limit)."""
        out: dict[str, float] = {}
        for t in self.node_types:
            count = math.inf if t.max_nodes is None else t.max_nodes
            for key, value in t.resources.items():
                out[key] = out.get(key, 0.0) + (value * count if value else 0.0)
        return out


def per_node(offer: Mapping[str, float], request: Mapping[str, float]) -> int:
    """How many ``request`` bundles one node offering ``offer`` holds at once (0: none fits).

    >>> per_node({"CPU": 4, "GPU": 1}, {"CPU": 2, "GPU": 1})
    1
    """
    counts = [math.floor((offer.get(key, 0.0) + EPS) / amount) for key, amount in request.items() if amount > 0]
    return min(counts) if counts else 1_000_000  # a request of nothing (a token) fits anywhere, many times


def fitting_types(shape: ClusterShape, request: Mapping[str, float]) -> list[NodeType]:
    """The node types one ``request`` fits on."""
    return [t for t in shape.node_types if per_node(t.resources, request) >= 1 and t.max_nodes != 0]


def check_fits(shape: ClusterShape, request: Mapping[str, float], what: str) -> None:
    """Refuse a ``request`` (one worker's resources) that no node type can hold, in one line naming each type and
    what it offers. ``what`` says whose request it is (``"one training worker"``)."""
    if fitting_types(shape, request):
        return
    offers = "; ".join(f"{t.name} offers {format_resources(t.resources)}" for t in shape.node_types) or "no nodes"
    raise ConfigError(f"{what} needs {format_resources(request)}, which no node type of {shape.source} holds: "
                      f"{offers}.")


def max_placeable(shape: ClusterShape, request: Mapping[str, float]) -> int | None:
    """The most ``request`` bundles the cluster can hold at once, counting whole nodes (None: no limit).

    Types with the most bundles per node are counted first when the cluster caps its nodes (``max_nodes``).
    """
    slots = sorted(((per_node(t.resources, request), t.max_nodes, t.head) for t in shape.node_types),
                   key=lambda slot: slot[0], reverse=True)
    total, nodes_left = 0, shape.max_nodes if shape.can_grow else None
    for each, count, head in slots:
        if each < 1 or count == 0:
            continue
        if not head and nodes_left is not None:
            count = nodes_left if count is None else min(count, nodes_left)
            nodes_left -= count
        if count is None:
            return None
        total += each * count
    return total


def max_gpus(shape: ClusterShape) -> int:
    """The whole GPUs the cluster has, or can add within its node caps (a type without a limit: a large number)."""
    gpus = max_placeable(shape, {"GPU": 1.0})
    return 1_000_000 if gpus is None else gpus


def format_resources(resources: Mapping[str, float]) -> str:
    """``{CPU: 4, GPU: 1, memory: 11.2 GiB}``: memory in GiB, other amounts as they are."""
    def amount(key: str, value: float) -> str:
        return f"{value / 2**30:.3g} GiB" if key in ("memory", "object_store_memory") else f"{value:g}"

    shown = {k: v for k, v in resources.items() if not k.startswith("node:") and k != "object_store_memory"}
    return "{" + ", ".join(f"{k}: {amount(k, v)}" for k, v in shown.items()) + "}"


# ------------------------------------------------------------------------------------------------- from configs
def shape_from_autoscaling_config(config: Mapping[str, Any], source: str = "the autoscaler's config") -> ClusterShape:
    """The shape an autoscaling config describes (``cluster.yaml``, or the head's ``ray_bootstrap_config.yaml``).

    The head type holds exactly one node; a worker type up to its ``max_workers`` (default: the cluster's). A type
    without ``resources`` (Ray fills them in from the cloud's instance catalogue) offers nothing we can count.
    """
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cluster_max = config.get("max_workers")
    node_types = []
    for name, body in types.items():
        resources = {k: float(v) for k, v in (body.get("resources") or {}).items()}
        count = 1 if name == head else body.get("max_workers", cluster_max)
        node_types.append(NodeType(name, resources, None if count is None else int(count), head=name == head))
    grows = any(t.name != head and (t.max_nodes is None or t.max_nodes > 0) for t in node_types)
    return ClusterShape(tuple(node_types), can_grow=grows,
                        max_nodes=None if cluster_max is None else int(cluster_max), source=source)


def shape_from_node_groups(groups: Sequence[tuple[str, Mapping[str, float], int]],
                           source: str = "Ray's cluster config") -> ClusterShape:
    """The shape from Ray's own cluster config (autoscaler v2, KubeRay): ``(name, resources, max_count)`` per node
    group; a max_count of -1 means no limit."""
    node_types = tuple(NodeType(name, dict(resources), None if count == -1 else int(count))
                       for name, resources, count in groups)
    grows = any(t.max_nodes is None or t.max_nodes > 0 for t in node_types)
    return ClusterShape(node_types, can_grow=grows, source=source)


def shape_from_nodes(nodes: Sequence[Mapping[str, Any]]) -> ClusterShape:
    """The shape of a cluster that cannot grow: its alive nodes (``ray.nodes()``), alike nodes as one type."""
    groups: dict[tuple, int] = {}
    for node in nodes:
        if node.get("Alive"):
            resources = {k: float(v) for k, v in node.get("Resources", {}).items() if not k.startswith("node:")}
            key = tuple(sorted(resources.items()))
            groups[key] = groups.get(key, 0) + 1
    node_types = tuple(NodeType(f"{count} node(s) of this kind" if count > 1 else "a node", dict(key), count)
                       for key, count in groups.items())
    return ClusterShape(node_types, source="the cluster's nodes (no autoscaler config on this machine: run the command "
                                           "on the head, e.g. with ray job submit, to plan from node types)")


def read_cluster_shape() -> ClusterShape:
    """The running Ray's shape: Ray's cluster config (autoscaler v2 / KubeRay), else the autoscaler's config file
    on this machine (the head, where ``ray job submit`` runs the command), else the alive nodes."""
    import ray
    import yaml

    from raytrain.cluster import compat

    groups = compat.cluster_config_node_groups()
    if groups:
        return shape_from_node_groups(groups)
    path = compat.autoscaling_config_file(ray.get_runtime_context().gcs_address)
    if path is not None:
        config = yaml.safe_load(Path(path).read_text()) or {}
        shape = shape_from_autoscaling_config(config, source=f"the autoscaler's config {path}")
        if shape.can_grow:
            return shape
    return shape_from_nodes(ray.nodes())


__all__ = ["ClusterShape", "NodeType", "check_fits", "fitting_types", "format_resources", "max_gpus",
           "max_placeable", "per_node", "read_cluster_shape", "shape_from_autoscaling_config",
           "shape_from_node_groups", "shape_from_nodes"]
