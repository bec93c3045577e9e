"""YOLOv8's detection loss: task-aligned assignment, then BCE classification, CIoU box and distribution focal losses.

Behaviour matches Ultralytics' ``v8DetectionLoss`` (YOLOv8), so the gains ``box``, ``cls``, ``dfl`` and the
assigner's ``topk``, ``alpha``, ``beta`` transfer. Box formats: ``xyxy`` corners, ``xywh`` centre + size, ``*_n``
normalised to [0, 1] by the input's width/height, ``ltrb`` distances from an anchor point to the four box edges.
Boxes are compared with the predictions in grid units (pixels / stride), the assigner works in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raytrain.assign import bbox_ciou, task_aligned_assign
from raytrain.models.head import bbox2dist, dist2bbox, make_anchors
from raytrain.ops import xywh2xyxy

__all__ = ["DetectionLoss", "bbox_ciou", "distribution_focal_loss", "expected_distances", "pad_targets"]


def pad_targets(targets: torch.Tensor, batch_size: int,
                img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch targets as rows to a padded per-image layout, in input pixels.

    Args:
        targets: ``(N, 6)`` rows ``[batch_idx, cls, x, y, w, h]`` with ``xywh_n`` boxes relative to the network
            input; rows may come in any order.
        batch_size: number of images B; every ``batch_idx`` must be in ``[0, B)``.
        img_hw: network input size (H, W) in pixels.

    Returns:
        ``gt_labels`` (B, M) int64, ``gt_bboxes`` (B, M, 4) ``xyxy`` pixels and ``mask_gt`` (B, M) bool (False on
        padding rows, which hold zeros), with M the largest number of boxes in one image (0 without targets).
        Within an image, boxes keep their order in ``targets``.
    """
    device = targets.device
    image, order = torch.sort(targets[:, 0].long(), stable=True)
    rows = targets[order]
    # searchsorted on the sorted image indices rather than bincount/scatter_add: deterministic on CUDA too.
    images = torch.arange(batch_size, device=device)
    first_row = torch.searchsorted(image, images)  # (B,) index of each image's first row
    counts = torch.searchsorted(image, images, right=True) - first_row  # (B,)
    max_gts = 0
    if rows.shape[0]:
        max_gts, lowest, highest = torch.stack((counts.max(), image[0], image[-1])).tolist()  # the one host sync
        if lowest < 0 or highest >= batch_size:
            raise ValueError(f"targets hold batch_idx in [{lowest}, {highest}] but the batch has {batch_size} images")
    slot = torch.arange(rows.shape[0], device=device) - first_row[image]  # position within its image
    height, width = img_hw
    scale = rows.new_tensor([width, height, width, height])
    gt_labels = torch.zeros(batch_size, max_gts, dtype=torch.long, device=device)
    gt_bboxes = torch.zeros(batch_size, max_gts, 4, dtype=targets.dtype, device=device)
    gt_labels[image, slot] = rows[:, 1].long()
    gt_bboxes[image, slot] = xywh2xyxy(rows[:, 2:6] * scale)
    mask_gt = torch.arange(max_gts, device=device) < counts[:, None]
    return gt_labels, gt_bboxes, mask_gt


def expected_distances(dist_logits: torch.Tensor) -> torch.Tensor:
    """``ltrb`` distances as the expectation of a softmax over the DFL bins 0..reg_max-1.

    Args:
        dist_logits: ``(..., 4, reg_max)`` logits per box side (left, top, right, bottom).

    Returns:
        ``(..., 4)`` distances in grid units, each in [0, reg_max - 1].
    """
    bins = torch.arange(dist_logits.shape[-1], dtype=dist_logits.dtype, device=dist_logits.device)
    return dist_logits.softmax(-1) @ bins


def distribution_focal_loss(dist_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020, https://arxiv.org/abs/2006.04388).

    A target distance ``y`` between bins ``i = floor(y)`` and ``i + 1`` is the two-point distribution
    ``(i + 1 - y, y - i)``; the loss is the cross-entropy against it:
    ``-(i + 1 - y) * log p_i - (y - i) * log p_{i+1}``. Targets are clamped to ``[0, reg_max - 1 - 0.01]`` so the
    right bin exists.

    Args:
        dist_logits: ``(..., reg_max)`` logits over the bins.
        target: ``(...)`` distances in grid units.

    Returns:
        ``(...)`` loss per distance.
    """
    reg_max = dist_logits.shape[-1]
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.long()
    weight_left = left + 1 - target
    log_probs = dist_logits.log_softmax(-1)
    log_left = log_probs.gather(-1, left[..., None]).squeeze(-1)
    log_right = log_probs.gather(-1, (left + 1)[..., None]).squeeze(-1)
    return -(log_left * weight_left + log_right * (1 - weight_left))


@dataclass(frozen=True)
class DetectionLoss:
    """YOLOv8's training loss, a callable with no per-call state (safe to share, pickle and call under DDP).

    Per batch: decode each anchor's DFL logits to a box; assign anchors to the targets with
    :func:`raytrain.assign.task_aligned_assign` (on detached scores and boxes); then, with ``S`` the sum of the soft
    class targets (at least 1), ``l_cls = sum BCE(class logits, soft targets) / S`` over all anchors and classes,
    ``l_box = sum w * (1 - CIoU) / S`` and ``l_dfl = sum w * DFL / S`` over the positive anchors, where ``w`` is
    the anchor's soft target.

    Attributes:
        nc: number of classes.
        strides: stride of each output level, in the order of the model's outputs.
        reg_max: DFL bins per box side.
        box: gain of the CIoU box loss.
        cls: gain of the BCE classification loss.
        dfl: gain of the distribution focal loss.
        topk: positives per ground-truth box at most (assigner).
        alpha: exponent of the class score in the assigner's alignment metric.
        beta: exponent of the CIoU in the assigner's alignment metric.
    """

    nc: int
    strides: Sequence[float] = (8, 16, 32)
    reg_max: int = 16
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0

    def __call__(self, preds: Sequence[torch.Tensor], targets: torch.Tensor,
                 img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one batch, computed in float32 even under autocast.

        Args:
            preds: the model's train-mode outputs, one ``(B, 4 * reg_max + nc, H / s, W / s)`` map per stride,
                box (DFL) logits first, then class logits.
            targets: ``(N, 6)`` rows ``[batch_idx, cls, x, y, w, h]`` with ``xywh_n`` boxes relative to the input.
            img_hw: network input size (H, W) in pixels.

        Returns:
            ``total``: scalar float32 ``(box * l_box + cls * l_cls + dfl * l_dfl) * B`` to backpropagate;
            ``parts``: detached float32 ``(3,)`` = ``[box * l_box, cls * l_cls, dfl * l_dfl]`` for logging.
        """
        self._check(preds)
        with torch.autocast(preds[0].device.type, enabled=False):
            return self._loss([p.float() for p in preds], targets.to(preds[0].device, torch.float32), img_hw)

    def _check(self, preds: Sequence[torch.Tensor]) -> None:
        """Clear errors for outputs that do not fit this loss (wrong mode, class count or number of levels)."""
        channels = 4 * self.reg_max + self.nc
        if len(preds) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} output maps (strides {tuple(self.strides)}), got "
                             f"{len(preds)}; is the model in train mode?")
        for p in preds:
            if p.ndim != 4 or p.shape[1] != channels:
                raise ValueError(f"expected maps (B, {channels}, H, W) = 4 * reg_max {self.reg_max} + nc {self.nc} "
                                 f"channels, got {tuple(p.shape)}")

    def _loss(self, preds: list[torch.Tensor], targets: torch.Tensor,
              img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`__call__` on float32 inputs with autocast off."""
        batch_size = preds[0].shape[0]
        flat = torch.cat([p.flatten(2) for p in preds], dim=2)  # (B, C, A)
        box_logits, cls_logits = flat.transpose(1, 2).contiguous().split((4 * self.reg_max, self.nc), dim=2)
        dist_logits = box_logits.view(batch_size, -1, 4, self.reg_max)  # (B, A, 4, reg_max)
        anchor_points, stride_tensor = make_anchors(preds, self.strides, 0.5)  # (A, 2), (A, 1) grid units
        pred_bboxes = dist2bbox(expected_distances(dist_logits), anchor_points, xywh=False)  # (B, A, 4) grid xyxy

        gt_labels, gt_bboxes, mask_gt = pad_targets(targets, batch_size, img_hw)
        assigned = task_aligned_assign(
            cls_logits.detach().sigmoid(), pred_bboxes.detach() * stride_tensor, anchor_points * stride_tensor,
            gt_labels, gt_bboxes, mask_gt, topk=self.topk, alpha=self.alpha, beta=self.beta,
        )
        # Normalising by the sum of the soft targets (at least 1) keeps the scale independent of the object count.
        target_scores_sum = assigned.scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, assigned.scores, reduction="sum")
        loss_box, loss_dfl = self._box_losses(dist_logits, pred_bboxes, anchor_points,
                                              assigned.bboxes / stride_tensor, assigned.scores.sum(-1),
                                              assigned.fg_mask)
        parts = torch.stack((self.box * loss_box, self.cls * loss_cls, self.dfl * loss_dfl)) / target_scores_sum
        return parts.sum() * batch_size, parts.detach()

    def _box_losses(self, dist_logits: torch.Tensor, pred_bboxes: torch.Tensor, anchor_points: torch.Tensor,
                    target_bboxes: torch.Tensor, weight: torch.Tensor,
                    fg_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sums (not yet normalised) of ``1 - CIoU`` and of the DFL over the positive anchors.

        The positives' selection stays in the graph even when there are none, so every output map always receives a
        (possibly zero) gradient, which DDP needs.

        Args:
            dist_logits: ``(B, A, 4, reg_max)`` DFL logits.
            pred_bboxes: ``(B, A, 4)`` decoded ``xyxy`` boxes in grid units.
            anchor_points: ``(A, 2)`` anchor centres in grid units.
            target_bboxes: ``(B, A, 4)`` assigned ``xyxy`` boxes in grid units.
            weight: ``(B, A)`` sum of each anchor's soft class targets.
            fg_mask: ``(B, A)`` bool positives.

        Returns:
            ``(sum of weight * (1 - CIoU), sum of weight * mean DFL over the 4 sides)``, both scalars.
        """
        image, anchor = fg_mask.nonzero(as_tuple=True)
        weight = weight[image, anchor]
        target = target_bboxes[image, anchor]  # (P, 4)
        ciou = bbox_ciou(pred_bboxes[image, anchor], target)
        target_ltrb = bbox2dist(anchor_points[anchor], target, self.reg_max - 1)  # (P, 4)
        dfl = distribution_focal_loss(dist_logits[image, anchor], target_ltrb).mean(-1)
        return ((1 - ciou) * weight).sum(), (dfl * weight).sum()
