"""The detection losses of every family: task-aligned assignment, then BCE classification, CIoU box and a
box-distance term — distribution focal loss (YOLOv8, YOLO11) or an L1 on image-normalised distances (YOLO26, whose
head regresses the four distances directly) — and YOLO26's weighted sum of its one-to-many and one-to-one branches.

Behaviour matches Ultralytics 8.4's ``v8DetectionLoss`` and ``E2ELoss``, so the gains ``box``, ``cls``, ``dfl`` and
the assigner's ``topk``, ``alpha``, ``beta`` transfer. :func:`build_loss` picks the loss a family trains with. Box
formats: ``xyxy`` corners, ``xywh`` centre + size, ``*_n`` normalised to [0, 1] by the input's width/height, ``ltrb``
distances from an anchor point to the four box edges.
Boxes are compared with the predictions in grid units (pixels / stride), the assigner works in input pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from raytrain.assign import bbox_ciou, task_aligned_assign
from raytrain.models.head import bbox2dist, dist2bbox, expected_distances, flatten_maps, make_anchors
from raytrain.models.spec import FamilySpec
from raytrain.ops import xywh2xyxy

__all__ = ["DetectionLoss", "EndToEndLoss", "bbox_ciou", "build_loss", "distribution_focal_loss",
           "expected_distances", "pad_targets"]


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
    """One head branch's training loss, a callable with no per-call state (safe to share, pickle and call under DDP).

    Per batch: decode each anchor's box; assign anchors to the targets with
    :func:`raytrain.assign.task_aligned_assign` (on detached scores and boxes); then, with ``S`` the sum of the soft
    class targets (at least 1), ``l_cls = sum BCE(class logits, soft targets) / S`` over all anchors and classes,
    ``l_box = sum w * (1 - CIoU) / S`` and the distance term ``sum w * D / S`` over the positive anchors, where ``w``
    is the anchor's soft target and ``D`` the DFL (``reg_max > 1``) or, with ``reg_max == 1``, the mean L1 between the
    predicted and target ``ltrb`` distances, each divided by the input width (left, right) or height (top, bottom).

    Attributes:
        nc: number of classes.
        strides: stride of each output level, in the order of the model's outputs.
        reg_max: bins per box side (1: raw distances, L1 term).
        box: gain of the CIoU box loss.
        cls: gain of the BCE classification loss.
        dfl: gain of the distance term (DFL or L1; Ultralytics names both gains ``dfl``).
        topk: candidates per ground-truth box in the assignment.
        topk2: positives per box kept after resolving anchors claimed by several boxes (0: ``topk``); YOLO26's
            one-to-one branch keeps 1 of its 7.
        alpha: exponent of the class score in the assigner's alignment metric.
        beta: exponent of the CIoU in the assigner's alignment metric.
        min_box_side: ground-truth sides shorter than this (pixels) are widened to it when picking candidates.
    """

    nc: int
    strides: Sequence[float] = (8, 16, 32)
    reg_max: int = 16
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    topk: int = 10
    topk2: int = 0
    alpha: float = 0.5
    beta: float = 6.0
    min_box_side: float = 16.0

    @property
    def names(self) -> tuple[str, str, str]:
        """The loss parts, as Ultralytics names them (results.csv columns ``train/<name>``)."""
        return ("box_loss", "cls_loss", "dfl_loss" if self.reg_max > 1 else "l1_loss")

    def at_epoch(self, epoch: int, epochs: int) -> DetectionLoss:
        """The loss for ``epoch`` (from 1) of ``epochs``: the same (only YOLO26's branch weights depend on it)."""
        return self

    def __call__(self, preds: Sequence[torch.Tensor], targets: torch.Tensor,
                 img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one batch, computed in float32 even under autocast.

        Args:
            preds: one branch of the model's output, one ``(B, 4 * reg_max + nc, H / s, W / s)`` map per stride,
                box logits first, then class logits.
            targets: ``(N, 6)`` rows ``[batch_idx, cls, x, y, w, h]`` with ``xywh_n`` boxes relative to the input.
            img_hw: network input size (H, W) in pixels.

        Returns:
            ``total``: scalar float32 ``(box * l_box + cls * l_cls + dfl * l_dist) * B`` to backpropagate;
            ``parts``: detached float32 ``(3,)`` = ``[box * l_box, cls * l_cls, dfl * l_dist]`` for logging.
        """
        self._check(preds)
        with torch.autocast(preds[0].device.type, enabled=False):
            total, parts = self.unscaled([p.float() for p in preds], targets.to(preds[0].device, torch.float32),
                                         img_hw)
            return total * preds[0].shape[0], parts

    def _check(self, preds: Sequence[torch.Tensor]) -> None:
        """Clear errors for outputs that do not fit this loss (wrong branch, class count or number of levels)."""
        channels = 4 * self.reg_max + self.nc
        if isinstance(preds, dict) or len(preds) != len(self.strides):
            found = f"a dict of {sorted(preds)}" if isinstance(preds, dict) else f"{len(preds)} maps"
            raise ValueError(f"expected {len(self.strides)} output maps (strides {tuple(self.strides)}), got {found}; "
                             f"a model with a one-to-one branch trains with EndToEndLoss (build_loss).")
        for p in preds:
            if p.ndim != 4 or p.shape[1] != channels:
                raise ValueError(f"expected maps (B, {channels}, H, W) = 4 * reg_max {self.reg_max} + nc {self.nc} "
                                 f"channels, got {tuple(p.shape)}")

    def unscaled(self, preds: list[torch.Tensor], targets: torch.Tensor,
                 img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The gained parts' sum (not yet times the batch size) and the detached parts, on float32 inputs."""
        batch_size = preds[0].shape[0]
        box_logits, cls_logits = flatten_maps(preds, self.reg_max)  # (B, A, 4 * reg_max), (B, A, nc)
        anchor_points, stride_tensor = make_anchors(preds, self.strides, 0.5)  # (A, 2), (A, 1) grid units
        pred_dist = expected_distances(box_logits, self.reg_max)  # (B, A, 4) grid units
        pred_bboxes = dist2bbox(pred_dist, anchor_points, xywh=False)  # (B, A, 4) grid xyxy

        gt_labels, gt_bboxes, mask_gt = pad_targets(targets, batch_size, img_hw)
        assigned = task_aligned_assign(
            cls_logits.detach().sigmoid(), pred_bboxes.detach() * stride_tensor, anchor_points * stride_tensor,
            gt_labels, gt_bboxes, mask_gt, topk=self.topk, topk2=self.topk2 or self.topk, alpha=self.alpha,
            beta=self.beta, min_box_side=self.min_box_side,
        )
        # Normalising by the sum of the soft targets (at least 1) keeps the scale independent of the object count.
        target_scores_sum = assigned.scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, assigned.scores, reduction="sum")
        positives = _Positives(assigned.fg_mask, assigned.scores.sum(-1), assigned.bboxes / stride_tensor)
        loss_box = positives.ciou_loss(pred_bboxes)
        if self.reg_max > 1:
            loss_dist = positives.dfl_loss(box_logits.view(*box_logits.shape[:2], 4, self.reg_max), anchor_points,
                                           self.reg_max)
        else:
            loss_dist = positives.l1_loss(pred_dist, anchor_points, stride_tensor, img_hw)
        parts = torch.stack((self.box * loss_box, self.cls * loss_cls, self.dfl * loss_dist)) / target_scores_sum
        return parts.sum(), parts.detach()


@dataclass(frozen=True)
class _Positives:
    """The positive anchors of one assignment and their targets; the box terms are weighted sums over them.

    The positives' selection stays in the graph even when there are none, so every output map always receives a
    (possibly zero) gradient, which DDP needs.

    Attributes:
        fg_mask: ``(B, A)`` bool positives.
        weight: ``(B, A)`` sum of each anchor's soft class targets.
        target_bboxes: ``(B, A, 4)`` assigned ``xyxy`` boxes in grid units.
    """

    fg_mask: torch.Tensor
    weight: torch.Tensor
    target_bboxes: torch.Tensor

    def _index(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fg_mask.nonzero(as_tuple=True)

    def ciou_loss(self, pred_bboxes: torch.Tensor) -> torch.Tensor:
        """``sum of weight * (1 - CIoU)``; ``pred_bboxes`` ``(B, A, 4)`` decoded ``xyxy`` grid units."""
        image, anchor = self._index()
        ciou = bbox_ciou(pred_bboxes[image, anchor], self.target_bboxes[image, anchor])
        return ((1 - ciou) * self.weight[image, anchor]).sum()

    def dfl_loss(self, dist_logits: torch.Tensor, anchor_points: torch.Tensor, reg_max: int) -> torch.Tensor:
        """``sum of weight * mean DFL over the 4 sides``; ``dist_logits`` ``(B, A, 4, reg_max)``."""
        image, anchor = self._index()
        target_ltrb = bbox2dist(anchor_points[anchor], self.target_bboxes[image, anchor], reg_max - 1)  # (P, 4)
        dfl = distribution_focal_loss(dist_logits[image, anchor], target_ltrb).mean(-1)
        return (dfl * self.weight[image, anchor]).sum()

    def l1_loss(self, pred_dist: torch.Tensor, anchor_points: torch.Tensor, stride_tensor: torch.Tensor,
                img_hw: tuple[int, int]) -> torch.Tensor:
        """``sum of weight * mean L1`` between predicted and target ``ltrb`` distances (``(B, A, 4)`` grid units),
        both in input pixels divided by the input width (left, right) or height (top, bottom), as Ultralytics 8.4
        trains ``reg_max=1`` heads (unclamped targets: a raw distance has no upper bin)."""
        image, anchor = self._index()
        height, width = img_hw
        to_unit = pred_dist.new_tensor([width, height, width, height])
        strides = stride_tensor[anchor]  # (P, 1)
        target = bbox2dist(anchor_points[anchor], self.target_bboxes[image, anchor], None) * strides / to_unit
        pred = pred_dist[image, anchor] * strides / to_unit
        return (F.l1_loss(pred, target, reduction="none").mean(-1) * self.weight[image, anchor]).sum()


@dataclass(frozen=True)
class EndToEndLoss:
    """YOLO26's loss: ``o2m * L(one-to-many) + (1 - o2m) * L(one-to-one)``, as Ultralytics 8.4's ``E2ELoss``.

    The one-to-many branch is assigned as usual (top-k ``topk``); the one-to-one branch picks ``one_to_one_topk``
    candidates per object and keeps one, so its top-k output needs no NMS. ``o2m`` goes linearly from ``o2m_start``
    at the first epoch to ``o2m_end`` at the last: a pure function of (epoch, epochs), set per epoch with
    :meth:`at_epoch`, so a resumed run, a PBT exploit or a ``schedule=`` replay sees the same weights. The logged parts
    are the one-to-one branch's (box, cls, l1), as Ultralytics logs them.

    Attributes are :class:`DetectionLoss`'s, plus ``one_to_one_topk``, ``o2m_start``, ``o2m_end`` and the current
    ``epoch`` of ``epochs`` (from 1).
    """

    nc: int
    strides: Sequence[float] = (8, 16, 32)
    reg_max: int = 1
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    topk: int = 10
    one_to_one_topk: int = 7
    alpha: float = 0.5
    beta: float = 6.0
    min_box_side: float = 16.0
    o2m_start: float = 0.8
    o2m_end: float = 0.1
    epoch: int = 1
    epochs: int = 1

    @property
    def names(self) -> tuple[str, str, str]:
        return self.branch(one_to_one=True).names

    @property
    def o2m(self) -> float:
        """The one-to-many weight at ``epoch``: ``o2m_start`` at epoch 1, ``o2m_end`` at the last epoch."""
        progress = max(1 - (self.epoch - 1) / max(self.epochs - 1, 1), 0)
        return progress * (self.o2m_start - self.o2m_end) + self.o2m_end

    def at_epoch(self, epoch: int, epochs: int) -> EndToEndLoss:
        return dataclasses.replace(self, epoch=epoch, epochs=epochs)

    def branch(self, *, one_to_one: bool) -> DetectionLoss:
        """The :class:`DetectionLoss` of one branch."""
        return DetectionLoss(self.nc, self.strides, self.reg_max, self.box, self.cls, self.dfl,
                             topk=self.one_to_one_topk if one_to_one else self.topk, topk2=1 if one_to_one else 0,
                             alpha=self.alpha, beta=self.beta, min_box_side=self.min_box_side)

    def __call__(self, preds: dict[str, Sequence[torch.Tensor]], targets: torch.Tensor,
                 img_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``preds`` = ``{"one2many": maps, "one2one": maps}``; returns (weighted total times B, one-to-one parts)."""
        if not isinstance(preds, dict) or set(preds) != {"one2many", "one2one"}:
            raise ValueError("EndToEndLoss takes the output of a one-to-one head: {'one2many': maps, 'one2one': maps}")
        many, _ = self.branch(one_to_one=False)(preds["one2many"], targets, img_hw)
        one, parts = self.branch(one_to_one=True)(preds["one2one"], targets, img_hw)
        o2m = self.o2m
        return many * o2m + one * max(1 - o2m, 0), parts


def build_loss(family: FamilySpec, nc: int, hyp: Any = None) -> DetectionLoss | EndToEndLoss:
    """The loss ``family`` trains with, with the gains of ``hyp`` (a Config; Ultralytics' defaults when None)."""
    gains = {k: float(getattr(hyp, k)) for k in ("box", "cls", "dfl")} if hyp is not None else {}
    common = dict(nc=nc, strides=tuple(float(s) for s in family.strides), reg_max=family.head.reg_max,
                  topk=family.loss.topk, min_box_side=family.loss.min_box_side, **gains)
    if family.end2end:
        return EndToEndLoss(**common, one_to_one_topk=family.loss.one_to_one_topk, o2m_start=family.loss.o2m_start,
                            o2m_end=family.loss.o2m_end, epochs=int(getattr(hyp, "epochs", 1) or 1))
    return DetectionLoss(**common)
