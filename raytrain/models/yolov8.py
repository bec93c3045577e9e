"""The YOLOv8 detector: backbone, PAN neck and Detect head as one indexable layer list, built by scale.

The layer table mirrors Ultralytics' ``yolov8.yaml`` so ``model.model[i]`` is the same layer as theirs for
i in 0..22, state_dict keys are identical (``model.0.conv.weight`` ... ``model.22.dfl.conv.weight``), and
``freeze=N`` freezes the same layers.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from raytrain.config import ConfigError
from raytrain.models.blocks import SPPF, C2f, Concat, Conv
from raytrain.models.head import Detect, decode_predictions

STRIDES = (8, 16, 32)
REG_MAX = 16


@dataclass(frozen=True)
class Scale:
    """Multipliers turning the base table into one model size."""

    depth: float  # repeats of each C2f are scaled by this (rounded, at least 1)
    width: float  # channels are scaled by this (rounded up to a multiple of 8)
    max_channels: int  # channels are capped at this before scaling by width


SCALES: dict[str, Scale] = {
    "yolov8n": Scale(0.33, 0.25, 1024),
    "yolov8s": Scale(0.33, 0.50, 1024),
    "yolov8m": Scale(0.67, 0.75, 768),
    "yolov8l": Scale(1.00, 1.00, 512),
    "yolov8x": Scale(1.00, 1.25, 512),
}

# (inputs, repeats, block, channels, extra args): inputs are layer indices, -1 = the previous layer.
# channels is the base (scale l = 1.0) width; "Detect" takes its channels from its inputs.
LAYERS: tuple[tuple[int | tuple[int, ...], int, str, int, tuple], ...] = (
    # backbone
    (-1, 1, "Conv", 64, (3, 2)),  # 0  P1/2
    (-1, 1, "Conv", 128, (3, 2)),  # 1  P2/4
    (-1, 3, "C2f", 128, (True,)),  # 2
    (-1, 1, "Conv", 256, (3, 2)),  # 3  P3/8
    (-1, 6, "C2f", 256, (True,)),  # 4
    (-1, 1, "Conv", 512, (3, 2)),  # 5  P4/16
    (-1, 6, "C2f", 512, (True,)),  # 6
    (-1, 1, "Conv", 1024, (3, 2)),  # 7  P5/32
    (-1, 3, "C2f", 1024, (True,)),  # 8
    (-1, 1, "SPPF", 1024, (5,)),  # 9
    # PAN neck
    (-1, 1, "Upsample", 0, ()),  # 10
    ((-1, 6), 1, "Concat", 0, ()),  # 11 cat backbone P4
    (-1, 3, "C2f", 512, ()),  # 12
    (-1, 1, "Upsample", 0, ()),  # 13
    ((-1, 4), 1, "Concat", 0, ()),  # 14 cat backbone P3
    (-1, 3, "C2f", 256, ()),  # 15 (P3/8 out)
    (-1, 1, "Conv", 256, (3, 2)),  # 16
    ((-1, 12), 1, "Concat", 0, ()),  # 17 cat head P4
    (-1, 3, "C2f", 512, ()),  # 18 (P4/16 out)
    (-1, 1, "Conv", 512, (3, 2)),  # 19
    ((-1, 9), 1, "Concat", 0, ()),  # 20 cat head P5
    (-1, 3, "C2f", 1024, ()),  # 21 (P5/32 out)
    ((15, 18, 21), 1, "Detect", 0, ()),  # 22
)


def _channels(base: int, scale: Scale) -> int:
    """Scaled channel count: capped at max_channels, times width, rounded up to a multiple of 8."""
    return math.ceil(min(base, scale.max_channels) * scale.width / 8) * 8


def _repeats(base: int, scale: Scale) -> int:
    return max(round(base * scale.depth), 1) if base > 1 else base


def _build_layers(scale: Scale, nc: int) -> tuple[list[nn.Module], list[int | tuple[int, ...]]]:
    """Instantiate the layer table for one scale; returns the layers and each layer's inputs."""
    channels = [3]  # output channels of each layer so far; channels[-1] is the previous layer's
    layers: list[nn.Module] = []
    sources: list[int | tuple[int, ...]] = []
    for src, repeats, kind, base, extra in LAYERS:
        c_in = channels[-1] if src == -1 else None
        if kind == "Conv":
            c_out = _channels(base, scale)
            layer: nn.Module = Conv(c_in, c_out, *extra)
        elif kind == "C2f":
            c_out = _channels(base, scale)
            layer = C2f(c_in, c_out, _repeats(repeats, scale), *extra)
        elif kind == "SPPF":
            c_out = _channels(base, scale)
            layer = SPPF(c_in, c_out, *extra)
        elif kind == "Upsample":
            c_out = c_in
            layer = nn.Upsample(scale_factor=2.0, mode="nearest")
        elif kind == "Concat":
            c_out = sum(channels[-1] if j == -1 else channels[j + 1] for j in src)
            layer = Concat()
        else:  # Detect
            c_out = 0
            layer = Detect(nc, [channels[j + 1] for j in src], STRIDES, REG_MAX)
        layers.append(layer)
        sources.append(src)
        channels.append(c_out)
    return layers, sources


class DetectionModel(nn.Module):
    """YOLOv8 detector. ``model`` is an ``nn.Sequential`` of 23 layers (0-21 backbone and neck, 22 = Detect).

    The model predicts raw maps (``model(x)``, for the loss and for inference alike); decoding them into boxes and
    scores is a separate step, ``model.decode(maps)``; suppression a third (:func:`raytrain.ops.non_max_suppression`)::

        with torch.no_grad():
            detections = non_max_suppression(model.decode(model.eval()(images)))

    Attributes:
        arch: the scale name, e.g. "yolov8n".
        nc: number of classes.
        reg_max: DFL bins per box side (16).
        stride: tensor([8., 16., 32.]), the output strides (a plain attribute, not in the state_dict).
        names: class names (list of nc strings; "0", "1", ... until set from the dataset or a checkpoint).
        model: the layers, ``model[i]`` for i in 0..22.
    """

    def __init__(self, arch: str, nc: int) -> None:
        super().__init__()
        if arch not in SCALES:
            raise unknown_arch_error(arch)
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise ConfigError(f"nc={nc!r} is not allowed: the number of classes must be a positive integer.")
        self.arch = arch
        self.nc = nc
        self.reg_max = REG_MAX
        self.stride = torch.tensor(STRIDES, dtype=torch.float32)
        self.names = [str(i) for i in range(nc)]
        layers, self.sources = _build_layers(SCALES[arch], nc)
        self.model = nn.Sequential(*layers)
        # Outputs later layers read again (skip connections and the head's inputs), kept during forward.
        self._kept = {j for src in self.sources if isinstance(src, tuple) for j in src if j != -1}
        self.head.init_bias()

    @property
    def head(self) -> Detect:
        """The Detect head (``model[22]``)."""
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W), float in [0, 1], H and W multiples of 32 -> the raw per-level maps.

        The output is the same in train and eval mode (the mode only changes BatchNorm): inference is
        ``model.decode(model(x))``, the loss takes ``model(x)`` as it is.

        Returns:
            List of 3 tensors (B, 4 * reg_max + nc, H/s, W/s) for s in (8, 16, 32): DFL box logits, then class logits.
        """
        kept: dict[int, torch.Tensor] = {}
        for i, (layer, src) in enumerate(zip(self.model, self.sources, strict=True)):
            if src != -1:
                x = [x if j == -1 else kept[j] for j in src]
            x = layer(x)
            if i in self._kept:
                kept[i] = x
        return x

    def decode(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw maps from :meth:`forward` -> (B, 4 + nc, A), A = sum(H/s * W/s): rows are x_center, y_center, width,
        height in input pixels, then the nc sigmoid class scores (see :func:`decode_predictions`)."""
        return decode_predictions(maps, self.head.strides, self.reg_max)

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


def unknown_arch_error(arch: str) -> ConfigError:
    """The error for a model name that is not a YOLOv8 scale, with a suggestion."""
    close = difflib.get_close_matches(str(arch), list(SCALES), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ConfigError(f"model={arch!r} is not a known architecture: use one of {', '.join(SCALES)}.{hint}")


def build_model(name: str = "yolov8n", nc: int = 80) -> DetectionModel:
    """A randomly initialised YOLOv8 detector (YOLOv8 BN settings and head bias prior).

    Args:
        name: scale, one of yolov8n/s/m/l/x (a trailing ".yaml" is accepted: "yolov8n.yaml").
        nc: number of classes (from the dataset).

    Returns:
        The model, in train mode, float32 on the CPU.
    """
    arch = name[: -len(".yaml")] if isinstance(name, str) and name.endswith(".yaml") else name
    return DetectionModel(arch, nc)
