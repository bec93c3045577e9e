"""Task-aligned label assignment (TOOD, as used by YOLOv8) and the Complete IoU it ranks anchors by.

Every function is pure and vectorised over the batch, the ground truths and the anchors (no Python loop per image or
per box). Box formats: ``xyxy`` = (x1, y1, x2, y2) corners. The assigner works in input pixels.

The behaviour matches Ultralytics 8.4's ``TaskAlignedAssigner`` (candidates are anchor centres strictly inside a
ground-truth box widened to at least 16 px, CIoU clamped at 0 as the overlap, top-k on
``score**alpha * overlap**beta``, an anchor claimed by several boxes goes to the one it overlaps most, an optional
second top-k), so hyperparameters tuned there transfer.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def bbox_ciou(box1_xyxy: torch.Tensor, box2_xyxy: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired boxes (Zheng et al., "Distance-IoU Loss: Faster and Better Learning for Bounding Box
    Regression", AAAI 2020, https://arxiv.org/abs/1911.08287).

    ``CIoU = IoU - rho^2 / c^2 - alpha * v`` with ``rho`` the distance between the box centres, ``c`` the diagonal
    of the smallest enclosing box, ``v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2`` the aspect-ratio
    inconsistency and ``alpha = v / (1 - IoU + v)``, which (as in the paper's reference code, torchvision and
    Ultralytics) is a constant for the gradient. ``eps`` is added to the heights, the union and ``c^2`` exactly where
    YOLOv8 adds it, so values agree with it to float rounding. ``1 - bbox_ciou`` is the CIoU loss
    (``torchvision.ops.complete_box_iou_loss``).

    Args:
        box1_xyxy: ``(..., 4)`` boxes x1, y1, x2, y2.
        box2_xyxy: ``(..., 4)`` boxes in the same units, broadcastable against ``box1_xyxy``.
        eps: numerical guard against empty boxes.

    Returns:
        ``(...)`` CIoU (at most 1, negative for distant boxes), in the inputs' broadcast shape without the last
        dimension.
    """
    b1_x1, b1_y1, b1_x2, b1_y2 = box1_xyxy.unbind(-1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2_xyxy.unbind(-1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter_w = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(min=0)
    inter_h = (torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)).clamp(min=0)
    inter = inter_w * inter_h
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    enclosing_w = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)
    enclosing_h = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    diagonal2 = enclosing_w.pow(2) + enclosing_h.pow(2) + eps
    # Squared distance between centres: ((x1 + x2) / 2 - (x1' + x2') / 2)^2 summed over x and y.
    centre_dist2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist2 / diagonal2 + v * alpha)


class Assignment(NamedTuple):
    """Per-anchor training targets from :func:`task_aligned_assign` (B images, A anchors, nc classes).

    Attributes:
        labels: ``(B, A)`` int64 class of the assigned ground truth; meaningful only where ``fg_mask``.
        bboxes: ``(B, A, 4)`` ``xyxy`` box of the assigned ground truth, in the units of ``gt_bboxes`` (pixels);
            meaningful only where ``fg_mask``.
        scores: ``(B, A, nc)`` soft classification targets: one-hot class times the normalised alignment metric,
            0 for background anchors.
        fg_mask: ``(B, A)`` bool, True for anchors assigned to a ground truth (positives).
        gt_idx: ``(B, A)`` int64 index of the assigned ground truth in the padded ``(B, M)`` layout; meaningful only
            where ``fg_mask``.
    """

    labels: torch.Tensor
    bboxes: torch.Tensor
    scores: torch.Tensor
    fg_mask: torch.Tensor
    gt_idx: torch.Tensor


def widen_small_boxes(gt_bboxes: torch.Tensor, min_side: float) -> torch.Tensor:
    """``xyxy`` boxes whose width or height is under ``min_side`` widened to it about their centre (each side on its
    own); other boxes unchanged. Ultralytics 8.4 picks candidate anchors inside these, so an object smaller than the
    coarser strides still covers anchor centres."""
    centre = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2
    half = ((gt_bboxes[..., 2:] - gt_bboxes[..., :2]).clamp(min=min_side)) / 2
    return torch.cat((centre - half, centre + half), dim=-1)


def candidates_in_gts(anchor_points: torch.Tensor, gt_bboxes: torch.Tensor, eps: float = 1e-9,
                      min_side: float = 0.0) -> torch.Tensor:
    """Which anchor points lie strictly inside which ground-truth boxes (by more than ``eps`` from every edge).

    Args:
        anchor_points: ``(A, 2)`` anchor centres (x, y).
        gt_bboxes: ``(B, M, 4)`` ``xyxy`` boxes in the same units.
        eps: margin; a centre exactly on an edge is not inside.
        min_side: test against the boxes widened to at least this side (:func:`widen_small_boxes`); 0 = as they are.

    Returns:
        ``(B, M, A)`` bool.
    """
    if min_side > 0:
        gt_bboxes = widen_small_boxes(gt_bboxes, min_side)
    x, y = anchor_points[:, 0], anchor_points[:, 1]  # (A,)
    x1, y1, x2, y2 = (side[..., None] for side in gt_bboxes.unbind(-1))  # (B, M, 1) each
    # Four (B, M, A) comparisons rather than one (B, M, A, 4) tensor of margins: a quarter of the memory traffic.
    inside = (x - x1) > eps
    inside &= (y - y1) > eps
    inside &= (x2 - x) > eps
    inside &= (y2 - y) > eps
    return inside


def _alignment(pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, gt_labels: torch.Tensor, gt_bboxes: torch.Tensor,
               candidates: torch.Tensor, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment metric ``score**alpha * CIoU**beta`` and CIoU (clamped at 0), both ``(B, M, A)``, 0 off candidates.

    Only the candidate (image, box, anchor) triples are evaluated, so memory grows with the candidates, not B*M*A*4.
    """
    image, gt, anchor = candidates.nonzero(as_tuple=True)
    scores = pd_scores[image, anchor, gt_labels[image, gt]]
    overlap_values = bbox_ciou(gt_bboxes[image, gt], pd_bboxes[image, anchor]).clamp(min=0)
    overlaps = torch.zeros(candidates.shape, dtype=pd_bboxes.dtype, device=pd_bboxes.device)
    align_metric = torch.zeros(candidates.shape, dtype=pd_scores.dtype, device=pd_scores.device)
    overlaps[image, gt, anchor] = overlap_values
    align_metric[image, gt, anchor] = scores.pow(alpha) * overlap_values.pow(beta)
    return align_metric, overlaps


def _one_gt_per_anchor(mask_pos: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """Where an anchor is positive for several boxes, keep only the box with the highest overlap.

    As in YOLOv8 the winner is the arg-max of the overlaps over *all* boxes the anchor is a candidate of (first index
    on ties), which is almost always one of the boxes that selected it.

    Args:
        mask_pos: ``(B, M, A)`` bool positives.
        overlaps: ``(B, M, A)`` CIoU of each (box, anchor) pair, 0 off candidates.

    Returns:
        ``(B, M, A)`` bool with at most one True per anchor column.
    """
    claimed_by_several = mask_pos.sum(1, keepdim=True) > 1  # (B, 1, A)
    best = torch.zeros_like(mask_pos).scatter_(1, overlaps.argmax(1, keepdim=True), True)
    return torch.where(claimed_by_several, best, mask_pos)


def _background(pd_scores: torch.Tensor, gt_bboxes: torch.Tensor) -> Assignment:
    """The assignment of a batch without any ground truth: every anchor is background."""
    batch, num_anchors, _ = pd_scores.shape
    zeros_long = torch.zeros(batch, num_anchors, dtype=torch.long, device=pd_scores.device)
    bboxes = torch.zeros(batch, num_anchors, 4, dtype=gt_bboxes.dtype, device=pd_scores.device)
    return Assignment(zeros_long, bboxes, torch.zeros_like(pd_scores),
                      torch.zeros(batch, num_anchors, dtype=torch.bool, device=pd_scores.device), zeros_long.clone())


@torch.no_grad()
def task_aligned_assign(
    pd_scores: torch.Tensor,
    pd_bboxes: torch.Tensor,
    anchor_points: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_bboxes: torch.Tensor,
    mask_gt: torch.Tensor,
    *,
    topk: int = 10,
    topk2: int | None = None,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
    min_box_side: float = 16.0,
) -> Assignment:
    """Assign anchors to ground-truth boxes by task alignment (Feng et al., "TOOD: Task-aligned One-stage Object
    Detection", ICCV 2021, https://arxiv.org/abs/2108.07755), as YOLOv8 does.

    1. Candidates of a box: anchors whose centre is strictly inside it, the box widened to at least
       ``min_box_side`` per side (:func:`candidates_in_gts`; the small-object rule of Ultralytics 8.4).
    2. Alignment metric of a candidate: ``s**alpha * u**beta``, with ``s`` the predicted score of the box's class and
       ``u`` the CIoU of the predicted box with the box, clamped at 0; 0 for non-candidates.
    3. Each box takes the ``topk`` anchors with the highest metric; those that are candidates become its positives.
    4. An anchor positive for several boxes keeps the one it overlaps most (:func:`_one_gt_per_anchor`); with
       ``topk2 < topk``, each box then keeps only its ``topk2`` best aligned positives (YOLO26's one-to-one branch:
       one).
    5. Soft targets: for the positives of box ``g``, ``t = metric / max(metric over g's positives) *
       max(CIoU over g's positives)``, placed at the box's class; the best aligned anchor of a box gets that box's
       best CIoU.

    Args:
        pd_scores: ``(B, A, nc)`` predicted class probabilities (after sigmoid).
        pd_bboxes: ``(B, A, 4)`` predicted ``xyxy`` boxes in pixels.
        anchor_points: ``(A, 2)`` anchor centres (x, y) in pixels.
        gt_labels: ``(B, M)`` int64 class of each ground truth (padded layout).
        gt_bboxes: ``(B, M, 4)`` ``xyxy`` ground-truth boxes in pixels.
        mask_gt: ``(B, M)`` bool, False for padding rows (which are ignored whatever they hold).
        topk: positives per box at most.
        topk2: positives per box kept after step 4 (None: ``topk``).
        alpha: exponent of the score in the metric.
        beta: exponent of the overlap in the metric.
        eps: margin of the inside test and guard of the normalisation.
        min_box_side: ground-truth sides under this (pixels) are widened to it for the candidate test only.

    Returns:
        An :class:`Assignment`; ``scores`` has ``pd_scores``' dtype, ``bboxes`` ``gt_bboxes``' dtype.
    """
    batch, num_anchors, num_classes = pd_scores.shape
    if gt_bboxes.shape[1] == 0 or num_anchors == 0:
        return _background(pd_scores, gt_bboxes)
    candidates = candidates_in_gts(anchor_points, gt_bboxes, eps, min_box_side) & mask_gt.bool()[..., None]
    align_metric, overlaps = _alignment(pd_scores, pd_bboxes, gt_labels, gt_bboxes, candidates, alpha, beta)

    # Top-k over all anchors, as YOLOv8 does: when a box has fewer than k candidates with a positive metric, ties at
    # 0 may pick zero-metric candidates; they become positives with a target score (and loss weight) of 0.
    top = align_metric.topk(min(topk, num_anchors), dim=-1).indices  # (B, M, k)
    in_topk = torch.zeros_like(candidates).scatter_(-1, top, True)
    mask_pos = _one_gt_per_anchor(in_topk & candidates, overlaps)  # (B, M, A)
    if topk2 is not None and topk2 < topk:
        best = (align_metric * mask_pos).topk(min(topk2, num_anchors), dim=-1).indices
        mask_pos &= torch.zeros_like(mask_pos).scatter_(-1, best, True)

    fg_mask, gt_idx = mask_pos.to(torch.uint8).max(1)  # (B, A) each; gt_idx 0 for background (first maximum)
    fg_mask = fg_mask.bool()
    labels = gt_labels.long().gather(1, gt_idx)
    bboxes = gt_bboxes.gather(1, gt_idx[..., None].expand(-1, -1, 4))

    # In place: both (B, M, A) tensors are this call's own, and these are the largest tensors of the loss.
    align_metric.mul_(mask_pos)
    best_metric = align_metric.amax(-1, keepdim=True)  # (B, M, 1)
    best_overlap = overlaps.mul_(mask_pos).amax(-1, keepdim=True)  # (B, M, 1)
    norm_metric = align_metric.mul_(best_overlap).div_(best_metric + eps).amax(1)  # (B, A): one box per anchor
    target = (norm_metric * fg_mask).to(pd_scores.dtype)[..., None]  # (B, A, 1)
    scores = torch.zeros_like(pd_scores).scatter_(-1, labels[..., None], target)  # one-hot class x target
    return Assignment(labels, bboxes, scores, fg_mask, gt_idx)
