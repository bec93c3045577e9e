"""The typed form of a detector family: scales, layer rows, head, loss and post-processing, as plain frozen data.

A family (YOLOv8, YOLO11, YOLO26) is one :class:`FamilySpec` in :mod:`raytrain.models.families`; the builder
(:mod:`raytrain.models.detector`) runs its rows through a block table, and everything that lists or recognises
models (``model=`` names, the CLI help, the converter, checkpoint checks, tests) reads
:mod:`raytrain.models.registry`. Every per-scale rule sits in the row it changes (:class:`OnScales`), not in code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scale:
    """Multipliers turning a family's base rows (written for width 1.0) into one model size."""

    depth: float  # repeats of a block are scaled by this (rounded, at least 1) when the row has more than one
    width: float  # channels are scaled by this, after capping at max_channels, rounded up to a multiple of 8
    max_channels: int

    def channels(self, base: int) -> int:
        """Scaled channel count of a row written for width 1.0."""
        return math.ceil(min(base, self.max_channels) * self.width / 8) * 8

    def repeats(self, base: int) -> int:
        """Scaled repeat count (a row with one repeat keeps one)."""
        return max(round(base * self.depth), 1) if base > 1 else base


@dataclass(frozen=True)
class OnScales:
    """A block argument that is True on some scales only (e.g. YOLO11's C3k inner blocks on m, l and x)."""

    scales: str  # the scale letters it is True on, e.g. "mlx"

    def on(self, scale: str) -> bool:
        return scale in self.scales


@dataclass(frozen=True)
class Layer:
    """One row of a layer graph.

    Attributes:
        src: the input: -1 (the previous layer) or a tuple of layer indices (-1 allowed) for Concat and Detect.
        block: a name of the builder's block table ("Conv", "C2f", "C3k2", "SPPF", "C2PSA", "Upsample", "Concat",
            "Detect").
        channels: output channels at width 1.0 (scaled per model); 0 for blocks whose width follows their inputs.
        repeats: inner repeats at depth 1.0 (scaled per model).
        args: the block's keyword arguments; an :class:`OnScales` value resolves per scale.
    """

    src: int | tuple[int, ...]
    block: str
    channels: int = 0
    repeats: int = 1
    args: Mapping[str, Any] = field(default_factory=dict)

    def resolved_args(self, scale: str) -> dict[str, Any]:
        """The keyword arguments for one scale."""
        return {k: v.on(scale) if isinstance(v, OnScales) else v for k, v in self.args.items()}


@dataclass(frozen=True)
class HeadSpec:
    """The Detect head of a family.

    Attributes:
        reg_max: bins of the distribution per box side (16: DFL; 1: four raw distances, no DFL).
        class_branch: "conv" (two 3x3 Convs, YOLOv8) or "depthwise" (depthwise 3x3 + 1x1, twice: YOLO11, YOLO26).
        one_to_one: a second, one-to-one branch (YOLO26): a copy of the head at init, trained on detached features,
            whose top-k output needs no NMS.
        box_bias: the initial bias of the box branch's last conv (2.0 in Ultralytics 8.4).
    """

    reg_max: int = 16
    class_branch: str = "conv"
    one_to_one: bool = False
    box_bias: float = 2.0


@dataclass(frozen=True)
class LossSpec:
    """How a family is trained.

    Attributes:
        topk: positives per object in the (one-to-many) task-aligned assignment.
        one_to_one_topk: YOLO26's one-to-one branch: candidates per object before keeping one (0: no such branch).
        o2m_start, o2m_end: YOLO26's weight of the one-to-many loss, linear over the epochs from start to end; the
            one-to-one loss weighs ``1 - o2m``.
        min_box_side: assignment widens ground-truth sides shorter than this (pixels) when picking candidate
            anchors, so small objects get positives (Ultralytics 8.4 does it for every family).
    """

    topk: int = 10
    one_to_one_topk: int = 0
    o2m_start: float = 0.8
    o2m_end: float = 0.1
    min_box_side: float = 16.0


@dataclass(frozen=True)
class FamilySpec:
    """A detector family: what ``model=<name><scale>`` builds, trains and how its outputs are post-processed.

    Attributes:
        name: the prefix of its model names ("yolov8", "yolo11", "yolo26").
        title: how people write it ("YOLOv8").
        scales: scale letter -> :class:`Scale`.
        layers: the layer graph; the last row is the Detect head.
        head: the head's :class:`HeadSpec`.
        loss: the training loss's :class:`LossSpec`.
        strides: output strides of the three head inputs.
    """

    name: str
    title: str
    scales: Mapping[str, Scale]
    layers: tuple[Layer, ...]
    head: HeadSpec
    loss: LossSpec
    strides: tuple[int, ...] = (8, 16, 32)

    @property
    def archs(self) -> tuple[str, ...]:
        """Its model names, smallest first: ``yolo11n`` ... ``yolo11x``."""
        return tuple(f"{self.name}{s}" for s in self.scales)

    @property
    def detect_index(self) -> int:
        """Index of the Detect layer in ``model.model`` (``freeze=N`` counts layers before it)."""
        return len(self.layers) - 1

    @property
    def end2end(self) -> bool:
        """Whether the model has an NMS-free one-to-one branch (``nms=False`` uses it)."""
        return self.head.one_to_one
