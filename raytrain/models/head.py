"""The decoupled anchor-free YOLOv8 head (``Detect``), inference decoding (:func:`decode_predictions`) and the pure
anchor/box helpers the loss shares.

Box formats: ``xyxy`` corners, ``xywh`` centre + size, ``ltrb`` distances from an anchor point to the left, top,
right and bottom box edges. Anchor points and distances are in units of the feature-map grid (stride units) unless
multiplied by the stride tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raytrain.models.blocks import Conv


def make_anchors(feats: Sequence[torch.Tensor], strides: Sequence[float] | torch.Tensor,
                 offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points at grid-cell centres of every level, in grid units, and the stride of each.

    Args:
        feats: per-level feature maps (B, C, H_i, W_i); only their shapes, dtype and device are used.
        strides: the stride of each level, e.g. (8, 16, 32).
        offset: position of the point inside its cell (0.5 = centre).

    Returns:
        anchor_points (A, 2) as (x, y) = (col + offset, row + offset), level after level, row-major;
        stride_tensor (A, 1). ``A = sum(H_i * W_i)``. Multiply the points by the strides for input pixels.
    """
    points, stride_rows = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for feat, stride in zip(feats, strides, strict=True):
        h, w = feat.shape[-2:]
        xs = torch.arange(w, device=device, dtype=dtype) + offset
        ys = torch.arange(h, device=device, dtype=dtype) + offset
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), dim=-1).view(-1, 2))
        stride_rows.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_rows)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Boxes from ``ltrb`` distances to anchor points.

    Args:
        distance: (..., 4, ...) distances (left, top, right, bottom) along ``dim``.
        anchor_points: (x, y) points broadcastable to ``distance`` with 2 along ``dim``, e.g. (A, 2) with
            distance (B, A, 4) and dim=-1, or (1, 2, A) with distance (B, 4, A) and dim=1.
        xywh: return ``xywh`` (centre, size) if True, else ``xyxy``.
        dim: the coordinate dimension.

    Returns:
        Boxes shaped like ``distance``, in the same units as the inputs.
    """
    lt, rb = distance.chunk(2, dim)
    top_left = anchor_points - lt
    bottom_right = anchor_points + rb
    if xywh:
        return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim)
    return torch.cat((top_left, bottom_right), dim)


def bbox2dist(anchor_points: torch.Tensor, bbox_xyxy: torch.Tensor, reg_max: float) -> torch.Tensor:
    """``ltrb`` distances from anchor points to box edges, clamped to ``[0, reg_max - 0.01]`` (DFL targets).

    As in Ultralytics' ``BboxLoss``, pass the largest representable distance: ``reg_max - 1`` (15 for the 16 DFL
    bins of YOLOv8), so that every target falls strictly inside the last bin pair.

    Args:
        anchor_points: (A, 2) or (..., A, 2) points (x, y), in grid units.
        bbox_xyxy: (..., A, 4) boxes in the same units.
        reg_max: the largest distance, e.g. 15 (= ``model.reg_max - 1``).

    Returns:
        (..., A, 4) distances (left, top, right, bottom).
    """
    top_left, bottom_right = bbox_xyxy.chunk(2, -1)
    return torch.cat((anchor_points - top_left, bottom_right - anchor_points), -1).clamp_(0, reg_max - 0.01)


def dfl_expectation(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distribution focal loss integral: per box side, the expected bin of a softmax over ``reg_max`` bins.

    Args:
        box_logits: (B, 4 * reg_max, A) logits, side after side (left, top, right, bottom), bins inside a side.
        reg_max: DFL bins per side.

    Returns:
        (B, 4, A) expected distances in grid units, each in [0, reg_max - 1].
    """
    b, _, a = box_logits.shape
    probs = box_logits.view(b, 4, reg_max, a).transpose(2, 1).softmax(1)  # (B, reg_max, 4, A)
    # A 1x1 convolution with weights 0..reg_max-1, as Ultralytics' DFL computes it, so the sums are identical.
    bins = torch.arange(reg_max, dtype=probs.dtype, device=probs.device).view(1, reg_max, 1, 1)
    return F.conv2d(probs, bins).view(b, 4, a)


def decode_predictions(maps: Sequence[torch.Tensor], strides: Sequence[float], reg_max: int) -> torch.Tensor:
    """The detector's raw per-level maps -> boxes and scores per anchor: YOLOv8's inference decoding.

    Args:
        maps: per level (B, 4 * reg_max + nc, H_i, W_i), box logits first (what ``DetectionModel.forward`` returns).
        strides: the stride of each level, e.g. (8, 16, 32).
        reg_max: DFL bins per box side.

    Returns:
        (B, 4 + nc, A), ``A = sum(H_i * W_i)`` (level after level, row-major): ``xywh`` boxes in input pixels, then
        the nc sigmoid class scores. This is what :func:`raytrain.ops.non_max_suppression` takes.
    """
    batch = maps[0].shape[0]
    flat = torch.cat([m.reshape(batch, m.shape[1], -1) for m in maps], dim=2)  # (B, 4 * reg_max + nc, A)
    box_logits, cls_logits = flat.split((4 * reg_max, flat.shape[1] - 4 * reg_max), dim=1)
    anchor_points, stride_tensor = make_anchors(maps, strides, 0.5)
    boxes = dist2bbox(dfl_expectation(box_logits, reg_max), anchor_points.t().unsqueeze(0), xywh=True, dim=1)
    return torch.cat((boxes * stride_tensor.t(), cls_logits.sigmoid()), dim=1)


class DFL(nn.Module):
    """The DFL integral as a module: holds Ultralytics' fixed 1x1 convolution (weights 0..reg_max-1, never trained)
    so the state_dict key ``dfl.conv.weight`` exists and Ultralytics weights convert key for key.

    Decoding does not read the weight (:func:`dfl_expectation` builds the same bins), so nothing depends on a
    module's state.
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4 * reg_max, A) logits -> (B, 4, A) expected distances in grid units."""
        return dfl_expectation(x, self.reg_max)


class Detect(nn.Module):
    """Decoupled head: per level, a box branch (``cv2``: 4 * reg_max DFL logits) and a class branch (``cv3``).

    ``forward`` returns the raw per-level maps in train and eval mode alike (the loss and validation take them);
    :func:`decode_predictions` turns them into boxes and scores.

    Args:
        nc: number of classes.
        ch: input channels of each level (P3, P4, P5).
        strides: stride of each level.
        reg_max: DFL bins per box side.
    """

    def __init__(self, nc: int, ch: Sequence[int], strides: Sequence[int] = (8, 16, 32), reg_max: int = 16) -> None:
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max  # outputs per anchor
        self.strides = tuple(float(s) for s in strides)
        box_ch = max(16, ch[0] // 4, 4 * reg_max)
        cls_ch = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, box_ch, 3), Conv(box_ch, box_ch, 3), nn.Conv2d(box_ch, 4 * reg_max, 1)) for c in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, cls_ch, 3), Conv(cls_ch, cls_ch, 3), nn.Conv2d(cls_ch, nc, 1)) for c in ch
        )
        self.dfl = DFL(reg_max)

    @torch.no_grad()
    def init_bias(self, imgsz: int = 640) -> None:
        """YOLOv8's prior: box logits 1.0; class logits ``log(5 / nc / (imgsz / s) ** 2)``, i.e. about 5 objects
        per image spread over the level's cells, so early training is not swamped by the easy negatives."""
        for box_branch, cls_branch, stride in zip(self.cv2, self.cv3, self.strides, strict=True):
            box_branch[-1].bias.fill_(1.0)
            cls_branch[-1].bias.fill_(math.log(5 / self.nc / (imgsz / stride) ** 2))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level features (B, ch_i, H/s_i, W/s_i) -> per-level maps (B, 4 * reg_max + nc, H/s_i, W/s_i), box
        logits first, whatever ``self.training`` is."""
        return [torch.cat((self.cv2[i](x), self.cv3[i](x)), dim=1) for i, x in enumerate(xs)]
