"""The decoupled anchor-free Detect head of every family, inference decoding (:func:`decode_predictions`), the
NMS-free top-k of one-to-one heads (:func:`top_k_detections`) and the pure anchor/box helpers the loss shares.

Box formats: ``xyxy`` corners, ``xywh`` centre + size, ``ltrb`` distances from an anchor point to the left, top,
right and bottom box edges. Anchor points and distances are in units of the feature-map grid (stride units) unless
multiplied by the stride tensor.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from raytrain.models.blocks import Conv, depthwise_conv
from raytrain.models.spec import HeadSpec


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


def bbox2dist(anchor_points: torch.Tensor, bbox_xyxy: torch.Tensor, reg_max: float | None) -> torch.Tensor:
    """``ltrb`` distances from anchor points to box edges, clamped to ``[0, reg_max - 0.01]`` (DFL targets; with
    ``reg_max=None`` not clamped, the targets of a head that regresses raw distances).

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
    dist = torch.cat((anchor_points - top_left, bottom_right - anchor_points), -1)
    return dist if reg_max is None else dist.clamp_(0, reg_max - 0.01)


def expected_distances(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Per box side, the distance the head predicts: the expected bin of a softmax over ``reg_max`` bins (DFL,
    YOLOv8/YOLO11), or the raw value when ``reg_max == 1`` (YOLO26 regresses the four distances directly).

    The one place the DFL integral is written; decoding and the loss both call it.

    Args:
        box_logits: (..., 4 * reg_max) logits, side after side (left, top, right, bottom), bins inside a side.
        reg_max: bins per side.

    Returns:
        (..., 4) distances in grid units (each in [0, reg_max - 1] when reg_max > 1).
    """
    if reg_max == 1:
        return box_logits
    sides = box_logits.unflatten(-1, (4, reg_max))
    bins = torch.arange(reg_max, dtype=sides.dtype, device=sides.device)
    return sides.softmax(-1) @ bins


def flatten_maps(maps: Sequence[torch.Tensor], reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level maps (B, 4 * reg_max + nc, H_i, W_i) -> box logits (B, A, 4 * reg_max) and class logits (B, A, nc),
    anchors level after level, row-major."""
    batch = maps[0].shape[0]
    flat = torch.cat([m.reshape(batch, m.shape[1], -1) for m in maps], dim=2).transpose(1, 2)  # (B, A, C)
    return flat.split((4 * reg_max, flat.shape[2] - 4 * reg_max), dim=2)


def decode_predictions(maps: Sequence[torch.Tensor], strides: Sequence[float], reg_max: int,
                       xywh: bool = True) -> torch.Tensor:
    """The detector's raw per-level maps -> boxes and scores per anchor: the inference decoding.

    Args:
        maps: per level (B, 4 * reg_max + nc, H_i, W_i), box logits first (one branch of the head's output).
        strides: the stride of each level, e.g. (8, 16, 32).
        reg_max: bins per box side (1: raw distances).
        xywh: boxes as centre + size (what NMS takes) or, if False, corners (the one-to-one top-k path).

    Returns:
        (B, 4 + nc, A), ``A = sum(H_i * W_i)`` (level after level, row-major): boxes in input pixels, then the nc
        sigmoid class scores. This is what :func:`raytrain.ops.non_max_suppression` takes.
    """
    box_logits, cls_logits = flatten_maps(maps, reg_max)
    anchor_points, stride_tensor = make_anchors(maps, strides, 0.5)
    boxes = dist2bbox(expected_distances(box_logits, reg_max), anchor_points, xywh=xywh)  # (B, A, 4) grid units
    return torch.cat((boxes * stride_tensor, cls_logits.sigmoid()), dim=2).transpose(1, 2)


def top_k_detections(decoded_xyxy: torch.Tensor, max_det: int = 300) -> torch.Tensor:
    """NMS-free selection for a one-to-one head (YOLO26 ``nms=False``): the ``max_det`` best (anchor, class) pairs.

    First the ``max_det`` anchors with the highest best-class score, then the ``max_det`` highest scores among their
    (anchor, class) pairs, so one anchor may yield several classes, as in Ultralytics 8.4.

    Args:
        decoded_xyxy: (B, 4 + nc, A) from :func:`decode_predictions` with ``xywh=False``.
        max_det: detections per image (fewer when there are fewer anchors).

    Returns:
        (B, k, 6) rows ``[x1, y1, x2, y2, score, cls]``, score-descending, ``k = min(max_det, A)``.
    """
    preds = decoded_xyxy.transpose(1, 2)  # (B, A, 4 + nc)
    boxes, scores = preds[..., :4], preds[..., 4:]
    k = min(max_det, scores.shape[1])
    nc = scores.shape[2]
    anchors = scores.amax(dim=-1).topk(k, dim=1).indices  # (B, k)
    scores = scores.gather(1, anchors[..., None].expand(-1, -1, nc))  # (B, k, nc)
    best, flat = scores.flatten(1).topk(k, dim=1)  # (B, k)
    anchor = anchors.gather(1, flat // nc)
    picked = boxes.gather(1, anchor[..., None].expand(-1, -1, 4))
    return torch.cat((picked, best[..., None], (flat % nc)[..., None].to(best.dtype)), dim=-1)


class DFL(nn.Module):
    """The DFL integral as a module: holds Ultralytics' fixed 1x1 convolution (weights 0..reg_max-1, never trained)
    so the state_dict key ``dfl.conv.weight`` exists and Ultralytics weights convert key for key.

    Decoding does not read the weight (:func:`expected_distances` builds the same bins), so nothing depends on a
    module's state.
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)


def _class_branch(kind: str, c_in: int, c_mid: int, nc: int) -> nn.Sequential:
    """One level's class branch: two 3x3 Convs (``"conv"``, YOLOv8) or depthwise 3x3 + 1x1 twice (``"depthwise"``)."""
    if kind == "conv":
        return nn.Sequential(Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, nc, 1))
    if kind == "depthwise":
        return nn.Sequential(nn.Sequential(depthwise_conv(c_in, c_in, 3), Conv(c_in, c_mid, 1)),
                             nn.Sequential(depthwise_conv(c_mid, c_mid, 3), Conv(c_mid, c_mid, 1)),
                             nn.Conv2d(c_mid, nc, 1))
    raise ValueError(f"unknown class branch {kind!r}: use 'conv' or 'depthwise'")


class Detect(nn.Module):
    """Decoupled head: per level, a box branch (``cv2``: 4 * reg_max logits) and a class branch (``cv3``); with
    ``one_to_one``, a second pair (``one2one_cv2``, ``one2one_cv3``), a copy at init, fed detached features in training
    so its loss does not reach the backbone.

    ``forward`` returns raw per-level maps in train and eval mode alike: a list of maps (B, 4 * reg_max + nc, H, W),
    or for a one-to-one head ``{"one2many": maps, "one2one": maps}``. Decoding and selection are separate steps.

    Args:
        nc: number of classes.
        ch: input channels of each level (P3, P4, P5).
        strides: stride of each level.
        spec: the family's :class:`raytrain.models.spec.HeadSpec`.
    """

    def __init__(self, nc: int, ch: Sequence[int], strides: Sequence[int], spec: HeadSpec) -> None:
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = spec.reg_max
        self.box_bias = spec.box_bias
        self.no = nc + 4 * self.reg_max  # outputs per anchor
        self.strides = tuple(float(s) for s in strides)
        box_ch = max(16, ch[0] // 4, 4 * self.reg_max)
        cls_ch = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, box_ch, 3), Conv(box_ch, box_ch, 3), nn.Conv2d(box_ch, 4 * self.reg_max, 1))
            for c in ch
        )
        self.cv3 = nn.ModuleList(_class_branch(spec.class_branch, c, cls_ch, nc) for c in ch)
        if self.reg_max > 1:
            self.dfl = DFL(self.reg_max)
        self.one_to_one = spec.one_to_one
        if spec.one_to_one:
            self.one2one_cv2 = copy.deepcopy(self.cv2)
            self.one2one_cv3 = copy.deepcopy(self.cv3)

    def branches(self) -> list[tuple[nn.ModuleList, nn.ModuleList]]:
        """The (box, class) branch pairs: one-to-many first, then one-to-one if the head has it."""
        pairs = [(self.cv2, self.cv3)]
        if self.one_to_one:
            pairs.append((self.one2one_cv2, self.one2one_cv3))
        return pairs

    @torch.no_grad()
    def init_bias(self, imgsz: int = 640) -> None:
        """Ultralytics 8.4's prior, on every branch: box logits ``box_bias`` (2.0); class logits
        ``log(5 / nc / (imgsz / s) ** 2)``, about 5 objects per image spread over the level's cells, so early
        training is not swamped by the easy negatives."""
        for box_head, cls_head in self.branches():
            for box_branch, cls_branch, stride in zip(box_head, cls_head, self.strides, strict=True):
                box_branch[-1].bias.fill_(self.box_bias)
                cls_branch[-1].bias.fill_(math.log(5 / self.nc / (imgsz / stride) ** 2))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | dict[str, list[torch.Tensor]]:
        """Per-level features (B, ch_i, H/s_i, W/s_i) -> per-level maps (B, 4 * reg_max + nc, H/s_i, W/s_i), box
        logits first, whatever ``self.training`` is; a dict of both branches' maps for a one-to-one head."""
        one2many = [torch.cat((self.cv2[i](x), self.cv3[i](x)), dim=1) for i, x in enumerate(xs)]
        if not self.one_to_one:
            return one2many
        detached = [x.detach() for x in xs] if self.training else xs
        one2one = [torch.cat((self.one2one_cv2[i](x), self.one2one_cv3[i](x)), dim=1) for i, x in enumerate(detached)]
        return {"one2many": one2many, "one2one": one2one}
