"""The decoupled anchor-free YOLOv8 head (``Detect``) with DFL, and the pure anchor/box helpers the loss shares.

Box formats: ``xyxy`` corners, ``xywh`` centre + size, ``ltrb`` distances from an anchor point to the left, top,
right and bottom box edges. Anchor points and distances are in units of the feature-map grid (stride units) unless
multiplied by the stride tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
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


class DFL(nn.Module):
    """Distribution focal loss integral: the expected value of a softmax over ``reg_max`` bins per box side.

    A fixed 1x1 convolution with weights 0..reg_max-1 (kept as a non-trainable parameter, as in Ultralytics, so
    the state_dict key ``dfl.conv.weight`` exists).
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4 * reg_max, A) logits -> (B, 4, A) expected distances in grid units."""
        b, _, a = x.shape
        probs = x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)  # (B, reg_max, 4, A)
        return self.conv(probs).view(b, 4, a)


class Detect(nn.Module):
    """Decoupled head: per level, a box branch (``cv2``: 4 * reg_max DFL logits) and a class branch (``cv3``).

    Train mode returns the raw per-level maps for the loss; eval mode decodes them to boxes in input pixels.

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

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        """Per-level features (B, ch_i, H/s_i, W/s_i).

        Returns:
            Train mode: list of (B, 4 * reg_max + nc, H/s_i, W/s_i), box logits first.
            Eval mode: (B, 4 + nc, A) with xywh boxes in input pixels and sigmoid class scores.
        """
        outs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), dim=1) for i, x in enumerate(xs)]
        if self.training:
            return outs
        return self.decode(outs)

    def decode(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """Raw per-level maps (B, 4 * reg_max + nc, H_i, W_i) -> (B, 4 + nc, A): xywh pixels + sigmoid scores."""
        batch = outs[0].shape[0]
        flat = torch.cat([o.view(batch, self.no, -1) for o in outs], dim=2)  # (B, no, A)
        box_logits, cls_logits = flat.split((4 * self.reg_max, self.nc), dim=1)
        anchor_points, stride_tensor = make_anchors(outs, self.strides, 0.5)
        boxes = dist2bbox(self.dfl(box_logits), anchor_points.t().unsqueeze(0), xywh=True, dim=1)
        return torch.cat((boxes * stride_tensor.t(), cls_logits.sigmoid()), dim=1)
