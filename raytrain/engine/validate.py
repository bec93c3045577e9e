"""Validation: ``evaluate`` (model + loader -> COCO metrics), used by training on every rank and ``raytrain val``.

Matching happens in the original image frame: detections and ground truth are both mapped back through the
letterbox (``scale_boxes``, clipped to the image), which is also the frame of ``predictions.json``, so the metrics
printed here are what pycocotools computes from that file against the original labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raytrain.keys import DFL_LOSS_NAMES, val_loss_keys
from raytrain.metrics import DetectionMetrics
from raytrain.ops import scale_boxes, xywh2xyxy

LOGGER = logging.getLogger("raytrain")


@dataclass
class ValResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: ``metrics/precision(B)``, ``metrics/recall(B)``, ``metrics/mAP50(B)``, ``metrics/mAP50-95(B)``,
            plus ``val/<name>`` for each of ``loss_fn.names`` (box, cls, dfl or l1) when a loss function was given.
        per_class: one row per class with ground truth (see :meth:`DetectionMetrics.per_class`).
        predictions: COCO-format detections (``image_id``, ``category_id``, ``bbox`` x, y, w, h in original
            pixels, ``score``) when asked for, else None.
        speed: milliseconds per image for ``preprocess``, ``inference``, ``loss`` and ``postprocess``.
    """

    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    predictions: list[dict[str, Any]] | None
    speed: dict[str, float]


def image_id(im_file: str) -> int | str:
    """COCO ``image_id`` of an image file: its stem, as an int when it is numeric (``000000000009.jpg`` -> 9)."""
    stem = Path(im_file).stem
    return int(stem) if stem.isnumeric() else stem


def coco_detections(det: torch.Tensor, im_file: str) -> list[dict[str, Any]]:
    """COCO result dicts for one image's ``(n, 6)`` detections ``[x1, y1, x2, y2, score, cls]`` (original pixels).

    Boxes are rounded to 0.001 pixel; scores are kept exact, since rounding them would create ties that COCOeval
    orders differently from the unrounded scores our own metrics saw.
    """
    xyxy = det[:, :4].tolist()
    return [
        {"image_id": image_id(im_file), "category_id": int(c),
         "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)], "score": s}
        for (x1, y1, x2, y2), s, c in zip(xyxy, det[:, 4].tolist(), det[:, 5].tolist(), strict=True)
    ]


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def _gt_in_original_frame(targets: torch.Tensor, index: int, input_hw: tuple[int, int],
                          ratio_pad: Any, ori_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes ``(m,)`` and ``xyxy`` boxes ``(m, 4)`` in original pixels of batch image ``index``."""
    rows = targets[targets[:, 0] == index]
    h, w = input_hw
    boxes = xywh2xyxy(rows[:, 2:6]) * rows.new_tensor([w, h, w, h])
    return rows[:, 1], scale_boxes(boxes, ratio_pad, ori_shape)


def _gather(metrics: DetectionMetrics, losses: torch.Tensor,
            predictions: list | None) -> tuple[DetectionMetrics, torch.Tensor, list | None]:
    """Every rank's images, summed losses and predictions, when ``torch.distributed`` runs with several ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics, losses, predictions
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (metrics, losses, predictions))
    merged = DetectionMetrics(metrics.nc, metrics.names, metrics.max_det)
    merged.merge(rank_metrics for rank_metrics, _, _ in gathered)
    total = sum((rank_losses for _, rank_losses, _ in gathered), torch.zeros_like(losses))
    all_predictions = None if predictions is None else [p for _, _, preds in gathered for p in preds]
    return merged, total, all_predictions


def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device | str,
    names: Sequence[str] | Mapping[int, str],
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    loss_fn: Any = None,
    save_json: bool = False,
    nms: bool | None = None,
) -> ValResult:
    """Run the model over a loader, detect (decode, then NMS or top-k), map to the original images and compute COCO
    metrics.

    Called on every rank with a sharded loader during training: when ``torch.distributed`` is initialised, the
    per-image matches (and losses and predictions) are gathered so every rank returns the global metrics. The
    model runs in eval mode (BatchNorm statistics are used, never updated); its modules' modes are restored
    afterwards. One forward pass per batch serves the metrics and the loss.

    Args:
        model: ``model(imgs)`` returns the raw output (what ``loss_fn`` takes) and ``model.detect(raw, conf=,
            iou=, max_det=, nms=, multi_label=)`` the detections per image, as a raytrain ``DetectionModel`` does (a
            DDP wrapper is unwrapped). Any object with those two calls works (an exported-model runner): when it is
            not an ``nn.Module``, it is fed float32 and no train/eval mode is touched.
        loader: batches as in the data contract (``img`` uint8 (B, 3, H, W), ``targets`` (N, 6) ``[batch_idx, cls,
            xywh_n]``, ``im_files``, ``ori_shapes``, ``ratio_pads``; images flagged in an optional ``padded`` list
            are rank-balancing repeats and are not scored).
        device: where the model lives.
        names: class names (list or {id: name}); ``len(names)`` is the number of classes.
        conf: NMS confidence threshold (0.001 for mAP).
        iou: NMS IoU threshold.
        max_det: detections kept per image (AP then counts the top 100 per image and class, as COCO).
        loss_fn: ``loss_fn(raw, targets, img_hw) -> (total, parts (3,))`` to also report val losses (named by
            ``loss_fn.names``).
        save_json: also return COCO-format ``predictions``.
        nms: Ultralytics 8.4's ``nms=``: unset, NMS on the one-to-many head; False, YOLO26's one-to-one top-k.

    Returns:
        A :class:`ValResult`.
    """
    model = _unwrap(model)
    if not callable(getattr(model, "detect", None)):
        raise TypeError(f"evaluate needs a model with detect(raw, ...) (raw output -> detections per image); "
                        f"{type(model).__name__} has none.")
    device = torch.device(device)
    is_module = isinstance(model, nn.Module)
    dtype = next(model.parameters()).dtype if is_module else torch.float32  # e.g. a half model on a GPU
    # Modes restored exactly afterwards (frozen BatchNorm may differ from the root).
    modes = {m: m.training for m in model.modules()} if is_module else {}
    if is_module:
        model.eval()
    metrics = DetectionMetrics(len(names), names)
    predictions: list[dict[str, Any]] | None = [] if save_json else None
    losses = torch.zeros(4)  # box, cls, dfl sums, and the number of batches
    seconds = dict.fromkeys(("preprocess", "inference", "loss", "postprocess"), 0.0)
    images = 0
    try:
        with torch.no_grad():
            for batch in loader:
                t0 = time.perf_counter()
                imgs = batch["img"].to(device, non_blocking=True).to(dtype) / 255
                targets = batch["targets"].to(device)
                t1 = time.perf_counter()
                raw = model(imgs)
                t2 = time.perf_counter()
                if loss_fn is not None:
                    _, parts = loss_fn(raw, targets, tuple(imgs.shape[2:]))
                    losses += torch.cat((parts.detach().float().cpu(), torch.ones(1)))
                t3 = time.perf_counter()
                dets = model.detect(raw, conf=conf, iou=iou, max_det=max_det, nms=nms, multi_label=True)
                targets = targets.cpu()
                padded = batch.get("padded") or [False] * len(dets)
                for i, det in enumerate(dets):
                    if padded[i]:  # a repeat the sharded sampler added so ranks get equal batches: not scored
                        continue
                    ori_shape, ratio_pad = tuple(batch["ori_shapes"][i]), batch["ratio_pads"][i]
                    det = det.float().cpu()
                    det[:, :4] = scale_boxes(det[:, :4], ratio_pad, ori_shape)
                    gt_cls, gt_xyxy = _gt_in_original_frame(targets, i, tuple(imgs.shape[2:]), ratio_pad, ori_shape)
                    metrics.update(det, gt_cls, gt_xyxy)
                    if predictions is not None:
                        predictions += coco_detections(det, batch["im_files"][i])
                t4 = time.perf_counter()
                images += len(dets)
                for key, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    seconds[key] += dt
    finally:
        for m, mode in modes.items():
            m.training = mode
    metrics, losses, predictions = _gather(metrics, losses, predictions)
    result = metrics.compute()
    if loss_fn is not None:
        mean = losses[:3] / losses[3].clamp(min=1)
        names = getattr(loss_fn, "names", DFL_LOSS_NAMES)  # a plain function: YOLOv8's three parts
        result.update({key: float(v) for key, v in zip(val_loss_keys(names), mean, strict=True)})
    speed = {key: 1e3 * s / max(images, 1) for key, s in seconds.items()}
    return ValResult(result, metrics.per_class(), predictions, speed)


def format_table(metrics: Mapping[str, float], per_class: Sequence[Mapping[str, Any]], images: int,
                 verbose: bool = True) -> str:
    """The Ultralytics-style table: class, images, instances, P, R, mAP50, mAP50-95, totals first."""
    header = f"{'Class':>20}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"
    row = "{:>20}{:>11}{:>11}{:>11.3f}{:>11.3f}{:>11.3f}{:>11.3f}"
    instances = sum(r["instances"] for r in per_class)
    lines = [header, row.format("all", images, instances, metrics["metrics/precision(B)"],
                                metrics["metrics/recall(B)"], metrics["metrics/mAP50(B)"],
                                metrics["metrics/mAP50-95(B)"])]
    if verbose:
        lines += [row.format(str(r["name"])[:20], r["images"], r["instances"], r["precision"], r["recall"],
                             r["mAP50"], r["mAP50-95"]) for r in per_class]
    return "\n".join(lines)
