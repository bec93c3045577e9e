"""The detector of every registered family: a layer graph run from a block table, ending in a Detect head.

``build_model("yolo11s", nc)`` reads the family's rows (:mod:`raytrain.models.families`) and instantiates each through
:data:`BLOCKS`; an unknown block is an error. ``model.model[i]`` is the same layer as Ultralytics' for every ``i``,
so state_dict keys are identical and ``freeze=N`` freezes the same layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from raytrain.config import ConfigError
from raytrain.models.attention import C2PSA, C3k2
from raytrain.models.blocks import SPPF, C2f, Concat, Conv
from raytrain.models.head import Detect, decode_predictions, top_k_detections
from raytrain.models.registry import check_arch, family_of, scale_of
from raytrain.models.spec import FamilySpec, Layer, Scale
from raytrain.ops import non_max_suppression

RawOutput = list[torch.Tensor] | dict[str, list[torch.Tensor]]


def _sized(make: Callable[..., nn.Module], *, repeated: bool) -> Callable[..., tuple[nn.Module, int]]:
    """A block whose width is the row's channels scaled per model (and, if ``repeated``, whose depth too)."""

    def build(row: Layer, scale: Scale, c_in: int, args: dict[str, Any]) -> tuple[nn.Module, int]:
        c_out = scale.channels(row.channels)
        if repeated:
            return make(c_in, c_out, scale.repeats(row.repeats), **args), c_out
        return make(c_in, c_out, **args), c_out

    return build


# Block name -> builder(row, scale, input channels, args) -> (module, output channels). Concat and Detect, which
# read several inputs, are built by the graph walker itself.
BLOCKS: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "Conv": _sized(Conv, repeated=False),
    "SPPF": _sized(SPPF, repeated=False),
    "C2f": _sized(C2f, repeated=True),
    "C3k2": _sized(C3k2, repeated=True),
    "C2PSA": _sized(C2PSA, repeated=True),
    "Upsample": lambda row, scale, c_in, args: (nn.Upsample(scale_factor=2.0, mode="nearest"), c_in),
}


def build_layers(family: FamilySpec, scale: str, nc: int) -> tuple[list[nn.Module], list[int | tuple[int, ...]]]:
    """Instantiate a family's rows for one scale; returns the layers and each layer's inputs."""
    size = family.scales[scale]
    channels = [3]  # output channels of each layer so far; channels[-1] is the previous layer's
    layers: list[nn.Module] = []
    for index, row in enumerate(family.layers):
        sources = (row.src,) if isinstance(row.src, int) else row.src
        c_ins = [channels[-1] if j == -1 else channels[j + 1] for j in sources]
        if row.block == "Concat":
            layer, c_out = Concat(), sum(c_ins)
        elif row.block == "Detect":
            layer, c_out = Detect(nc, c_ins, family.strides, family.head), 0
        elif row.block in BLOCKS:
            layer, c_out = BLOCKS[row.block](row, size, c_ins[0], row.resolved_args(scale))
        else:
            raise ValueError(f"{family.title} layer {index}: unknown block {row.block!r} (known: "
                             f"{', '.join([*BLOCKS, 'Concat', 'Detect'])})")
        layers.append(layer)
        channels.append(c_out)
    return layers, [row.src for row in family.layers]


class DetectionModel(nn.Module):
    """A YOLO detector of any registered family. ``model`` is an ``nn.Sequential`` whose last layer is Detect.

    The model predicts raw maps (``model(x)``, for the loss and for inference alike); turning them into detections is
    a separate step, ``model.detect(raw)`` (decode, then NMS or, for ``nms=False`` on YOLO26, the one-to-one top-k)::

        with torch.no_grad():
            detections = model.detect(model.eval()(images))

    Attributes:
        arch: the model name, e.g. "yolo26n".
        family: the family's name, e.g. "yolo26" (``spec`` is its :class:`FamilySpec`).
        nc: number of classes.
        reg_max: bins per box side (16 with DFL, 1 for YOLO26).
        end2end: whether the head has the NMS-free one-to-one branch.
        stride: tensor([8., 16., 32.]), the output strides (a plain attribute, not in the state_dict).
        names: class names (list of nc strings; "0", "1", ... until set from the dataset or a checkpoint).
        model: the layers.
    """

    def __init__(self, arch: str, nc: int) -> None:
        super().__init__()
        self.arch = check_arch(arch)
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise ConfigError(f"nc={nc!r} is not allowed: the number of classes must be a positive integer.")
        self.spec = family_of(self.arch)
        self.family = self.spec.name
        self.nc = nc
        self.reg_max = self.spec.head.reg_max
        self.end2end = self.spec.end2end
        self.stride = torch.tensor(self.spec.strides, dtype=torch.float32)
        self.names = [str(i) for i in range(nc)]
        layers, self.sources = build_layers(self.spec, scale_of(self.arch), nc)
        self.model = nn.Sequential(*layers)
        # Outputs later layers read again (skip connections and the head's inputs), kept during forward.
        self._kept = {j for src in self.sources if isinstance(src, tuple) for j in src if j != -1}
        self.head.init_bias()

    @property
    def head(self) -> Detect:
        """The Detect head (the last layer)."""
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> RawOutput:
        """Images (B, 3, H, W), float in [0, 1], H and W multiples of 32 -> the raw per-level maps.

        The output is the same in train and eval mode (the mode only changes BatchNorm and detaches the one-to-one
        branch's inputs in training): inference is ``model.detect(model(x))``, the loss takes ``model(x)`` as it is.

        Returns:
            List of 3 tensors (B, 4 * reg_max + nc, H/s, W/s) for s in (8, 16, 32): box logits, then class logits;
            for a one-to-one head (YOLO26) ``{"one2many": [...], "one2one": [...]}``, two such lists.
        """
        kept: dict[int, torch.Tensor] = {}
        for i, (layer, src) in enumerate(zip(self.model, self.sources, strict=True)):
            if src != -1:
                x = [x if j == -1 else kept[j] for j in src]
            x = layer(x)
            if i in self._kept:
                kept[i] = x
        return x

    def decode(self, raw: RawOutput) -> torch.Tensor:
        """Raw output -> (B, 4 + nc, A) of the one-to-many branch, A = sum(H/s * W/s): rows are x_center, y_center,
        width, height in input pixels, then the nc sigmoid class scores (see :func:`decode_predictions`)."""
        maps = raw["one2many"] if isinstance(raw, dict) else raw
        return decode_predictions(maps, self.head.strides, self.reg_max)

    def detect(self, raw: RawOutput, *, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
               nms: bool | None = None, multi_label: bool = False) -> list[torch.Tensor]:
        """Detections per image from the raw output: rows ``[x1, y1, x2, y2, score, cls]`` in input pixels.

        ``nms`` as in Ultralytics 8.4: unset (or True) decodes the one-to-many branch and suppresses with NMS;
        False (YOLO26 only) takes the one-to-one branch's top ``max_det`` (anchor, class) pairs, no NMS. Either way
        detections under ``conf`` are dropped. ``multi_label`` keeps every class above ``conf`` of an anchor in NMS
        (validation does, as Ultralytics).
        """
        return detections_from_raw(raw, strides=self.head.strides, reg_max=self.reg_max, end2end=self.end2end,
                                   conf=conf, iou=iou, max_det=max_det, nms=nms, multi_label=multi_label)

    def fuse(self) -> DetectionModel:
        """Fold every BatchNorm into its convolution for faster inference (eval-mode outputs unchanged).

        The fused model's state_dict differs (no BN entries, conv biases added): fuse copies for inference only,
        never the model being trained or saved.
        """
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self

    def extra_repr(self) -> str:
        return f"arch={self.arch}, nc={self.nc}"


def detections_from_raw(raw: RawOutput, *, strides: Sequence[float], reg_max: int, end2end: bool, conf: float,
                        iou: float, max_det: int, nms: bool | None, multi_label: bool = False) -> list[torch.Tensor]:
    """:meth:`DetectionModel.detect` as a pure function of the raw output and the head's constants (exported-model
    runners share it)."""
    if nms is False:
        if not end2end:
            raise ConfigError("nms=False needs an NMS-free (one-to-one) head: only YOLO26 has one; leave nms unset.")
        top = top_k_detections(decode_predictions(raw["one2one"], strides, reg_max, xywh=False), max_det)
        return [rows[rows[:, 4] > conf] for rows in top]
    maps = raw["one2many"] if isinstance(raw, dict) else raw
    return non_max_suppression(decode_predictions(maps, strides, reg_max), conf, iou, max_det,
                               multi_label=multi_label)


def build_model(name: str = "yolo26n", nc: int = 80) -> DetectionModel:
    """A randomly initialised detector of a registered family (Ultralytics' BN settings and head bias prior).

    Args:
        name: a model name from :func:`raytrain.models.registry.list_models` (``yolov8n`` ... ``yolo26x``; a trailing
            ".yaml" is accepted: "yolo11n.yaml").
        nc: number of classes (from the dataset).

    Returns:
        The model, in train mode, float32 on the CPU.
    """
    return DetectionModel(name, nc)
