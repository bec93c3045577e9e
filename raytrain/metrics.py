"""Detection metrics that agree with pycocotools' COCOeval (bbox, area 'all'), plus an operating-point P/R.

What is COCO-exact (checked against ``pycocotools`` in ``tests/test_metrics.py``):

- matching is per image and per class, greedy by descending score (stable sort, like COCOeval's mergesort), at
  each IoU threshold 0.50:0.05:0.95 separately: a detection takes the still-unmatched ground-truth box of its class
  with the highest IoU, if that IoU is >= the threshold;
- at most ``max_det`` detections per image *and class* take part (COCOeval's ``maxDets=100`` for AP is applied to
  each (image, category) pair when ``useCats=1``); the NMS default ``max_det=300`` is a different, per-image cap;
- AP is the mean over 101 recall points (0:0.01:1) of the interpolated precision envelope;
- classes with no ground truth are left out of the mean (COCOeval's -1); classes with ground truth and no
  detections count with AP 0.

Precision and recall are reported at one operating point, like Ultralytics: for each class with ground truth the
precision and recall at IoU 0.5 are interpolated on a grid of 1000 confidences, the class-mean F1 curve is smoothed
with a box filter (10% of the grid) and the confidence with the highest smoothed F1 is used for every class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Exactly COCOeval's thresholds (np.linspace, so the float values match bit for bit).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
METRIC_KEYS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")
F1_KEY = "metrics/f1(B)"  # beside P and R; not an Ultralytics results.csv column
_FITNESS_KEYS = {
    "mAP50-95": "metrics/mAP50-95(B)",
    "mAP50": "metrics/mAP50(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "f1": F1_KEY,
}


def _np(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def iou_matrix(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """COCO IoU ``(N, M)`` of ``(N, 4)`` and ``(M, 4)`` ``xyxy`` boxes in float64 (0 where the union is empty)."""
    lt = np.maximum(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])
    rb = np.minimum(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area1 = np.clip(boxes1_xyxy[:, 2:] - boxes1_xyxy[:, :2], 0, None).prod(-1)
    area2 = np.clip(boxes2_xyxy[:, 2:] - boxes2_xyxy[:, :2], 0, None).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_detections(
    pred_xyxy: np.ndarray,
    pred_cls: np.ndarray,
    gt_xyxy: np.ndarray,
    gt_cls: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """COCO greedy matching of one image's detections, at every IoU threshold at once.

    The result is COCOeval's: detections (sorted by descending score) are taken in turn, and each takes the still
    unmatched ground-truth box of its class with the highest IoU (the last one on a tie), if that IoU is >= the
    threshold. Classes never interact, so all classes are matched together (IoU across classes is masked out).

    Instead of one step per detection, the matching runs in rounds vectorised over thresholds, detections and ground
    truth: every unresolved detection proposes its best available box, and a proposal is committed when no
    higher-scoring unresolved detection could still take that box (availability only shrinks, so the sequential
    algorithm would make the same choice). The best unresolved detection always commits, and in practice a few
    rounds resolve an image; ``tests/test_metrics.py`` checks the result against the sequential loop.

    Args:
        pred_xyxy: ``(N, 4)`` detection boxes, sorted by descending score.
        pred_cls: ``(N,)`` detection classes.
        gt_xyxy: ``(M, 4)`` ground-truth boxes, same pixel frame.
        gt_cls: ``(M,)`` ground-truth classes.
        iou_thresholds: ``(T,)`` thresholds.

    Returns:
        ``(N, T)`` bool: True where the detection is a true positive at that threshold.
    """
    n, t = len(pred_xyxy), len(iou_thresholds)
    tp = np.zeros((n, t), dtype=bool)
    if n == 0 or len(gt_xyxy) == 0:
        return tp
    iou = iou_matrix(pred_xyxy, gt_xyxy)
    iou[pred_cls[:, None] != gt_cls[None, :]] = -1.0
    thresholds = np.minimum(iou_thresholds, 1 - 1e-10)  # COCOeval's cap
    # Only detections and boxes that can match at the lowest threshold take part.
    reachable = iou >= thresholds.min()
    rows, cols = np.flatnonzero(reachable.any(1)), np.flatnonzero(reachable.any(0))
    if len(rows) == 0:
        return tp
    iou = iou[np.ix_(rows, cols)]  # (D, G), detections still in score order
    d, g = iou.shape
    available = iou[None] >= thresholds[:, None, None]  # (T, D, G)
    open_ = np.ones((t, d), dtype=bool)  # not yet matched, and may still find a box
    det_index = np.arange(d)[None, :]
    t_index = np.arange(t)[:, None]
    while True:
        open_ &= available.any(2)  # a detection with no box left is a false positive
        if not open_.any():
            break
        contest = available & open_[:, :, None]
        # Highest-IoU available box per open detection; the last one on a tie, like COCOeval.
        best = g - 1 - np.where(contest, iou[None], -1.0)[:, :, ::-1].argmax(2)  # (T, D)
        # The highest-scoring open detection that can still take each box (d when none can).
        first = np.where(contest.any(1), contest.argmax(1), d)  # (T, G)
        commit = open_ & (first[t_index, best] == det_index)
        ts, ds = np.nonzero(commit)
        tp[rows[ds], ts] = True
        open_[ts, ds] = False
        available[ts, :, best[ts, ds]] = False  # the box is taken for every detection at that threshold
    return tp


def _cap_per_class(pred_cls: np.ndarray, max_det: int) -> np.ndarray:
    """Mask keeping the first ``max_det`` detections of each class (detections sorted by descending score)."""
    order = np.argsort(pred_cls, kind="stable")
    sorted_cls = pred_cls[order]
    rank = np.empty(len(pred_cls), dtype=np.int64)
    rank[order] = np.arange(len(pred_cls)) - np.searchsorted(sorted_cls, sorted_cls, side="left")
    return rank < max_det


def _smooth(y: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Box-filter ``y`` over ``fraction`` of its length, padding the ends with the end values."""
    width = round(len(y) * fraction * 2) // 2 + 1  # odd
    padded = np.concatenate((np.full(width // 2, y[0]), y, np.full(width // 2, y[-1])))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


@dataclass
class ClassStats:
    """Per-class results for the classes with ground truth (``classes``), all arrays aligned with it."""

    classes: np.ndarray  # (K,) class ids with at least one ground-truth box
    ap: np.ndarray  # (K, T) AP at each IoU threshold
    precision: np.ndarray  # (K,) at the operating point
    recall: np.ndarray  # (K,) at the operating point
    instances: np.ndarray  # (K,) ground-truth boxes
    images: np.ndarray  # (K,) images holding at least one ground-truth box of the class
    conf: float  # the operating-point confidence


def _average_precision(tp: np.ndarray, n_gt: int) -> np.ndarray:
    """COCO AP ``(T,)`` of one class from its score-sorted ``(k, T)`` true-positive flags and ``n_gt`` boxes."""
    k, t = tp.shape
    if k == 0:
        return np.zeros(t)
    tps = np.cumsum(tp, 0, dtype=np.float64)
    fps = np.cumsum(~tp, 0, dtype=np.float64)
    recall = tps / n_gt
    precision = tps / (tps + fps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1], axis=0)[::-1]  # the envelope, right to left
    ap = np.empty(t)
    for j in range(t):
        idx = np.searchsorted(recall[:, j], RECALL_THRESHOLDS, side="left")
        ap[j] = np.where(idx < k, precision[np.minimum(idx, k - 1), j], 0.0).mean()
    return ap


def _pr_curves(tp50: np.ndarray, conf: np.ndarray, n_gt: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of one class at IoU 0.5 on a confidence ``grid``, from score-sorted detections."""
    if len(conf) == 0:
        return np.zeros_like(grid), np.zeros_like(grid)
    tps = np.cumsum(tp50, dtype=np.float64)
    recall = tps / n_gt
    precision = tps / np.arange(1, len(tps) + 1)
    # np.interp needs increasing x: negate the (descending) confidences.
    return (np.interp(-grid, -conf, precision, left=1.0), np.interp(-grid, -conf, recall, left=0.0))


def class_stats(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, gt_cls: np.ndarray, gt_images: np.ndarray, nc: int
) -> ClassStats:
    """AP and operating-point P/R per class from the matched detections of all images.

    Args:
        tp: ``(N, T)`` bool true-positive flags of every kept detection, images concatenated in order.
        conf: ``(N,)`` scores.
        pred_cls: ``(N,)`` classes.
        gt_cls: ``(M,)`` classes of every ground-truth box.
        gt_images: ``(M,)`` image index of every ground-truth box.
        nc: number of classes.
    """
    order = np.argsort(-conf, kind="mergesort")  # stable, like COCOeval: ties keep image order
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    instances = np.bincount(gt_cls, minlength=nc)
    pairs = np.unique(np.stack((gt_cls, gt_images)), axis=1) if len(gt_cls) else np.zeros((2, 0), dtype=np.int64)
    images = np.bincount(pairs[0], minlength=nc)
    classes = np.flatnonzero(instances)
    grid = np.linspace(0, 1, 1000)
    ap = np.zeros((len(classes), tp.shape[1]))
    p_curve, r_curve = np.zeros((len(classes), len(grid))), np.zeros((len(classes), len(grid)))
    for i, c in enumerate(classes):
        mine = pred_cls == c
        ap[i] = _average_precision(tp[mine], instances[c])
        p_curve[i], r_curve[i] = _pr_curves(tp[mine, 0], conf[mine], instances[c], grid)
    if len(classes):
        f1 = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
        best = int(_smooth(f1.mean(0)).argmax())
    else:
        best = 0
    return ClassStats(classes, ap, p_curve[:, best], r_curve[:, best], instances[classes], images[classes],
                      float(grid[best]))


class DetectionMetrics:
    """Accumulates per-image matches; computes COCO mAP50, mAP50-95 and operating-point precision/recall.

    Args:
        nc: number of classes.
        names: class names, a list or a {class id: name} mapping.
        max_det: detections per image *and class* that count (highest scores first), COCOeval's ``maxDets=100``
            for AP, which COCOeval applies per (image, category). Use a larger value to score every detection.

    Example::

        metrics = DetectionMetrics(nc=2, names=["cat", "dog"])
        metrics.update(pred, gt_cls, gt_xyxy)  # once per image
        metrics.compute()  # {"metrics/precision(B)": ..., "metrics/mAP50-95(B)": ...}
    """

    def __init__(self, nc: int, names: Sequence[str] | Mapping[int, str], max_det: int = 100) -> None:
        self.nc = nc
        self.names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
        self.max_det = max_det
        self.tp: list[np.ndarray] = []  # per image (n, T) bool
        self.conf: list[np.ndarray] = []  # per image (n,)
        self.pred_cls: list[np.ndarray] = []  # per image (n,)
        self.gt_cls: list[np.ndarray] = []  # per image (m,)

    @property
    def num_images(self) -> int:
        return len(self.gt_cls)

    def update(self, pred: Any, gt_cls: Any, gt_xyxy: Any) -> None:
        """Match one image's detections to its ground truth and keep the result.

        Args:
            pred: ``(n, 6)`` rows ``[x1, y1, x2, y2, score, cls]`` (tensor or array), e.g. one image's NMS output.
            gt_cls: ``(m,)`` ground-truth classes.
            gt_xyxy: ``(m, 4)`` ground-truth boxes ``xyxy`` in the same pixel frame as ``pred``.
        """
        pred = _np(pred, np.float64).reshape(-1, 6)
        gt_cls = _np(gt_cls, np.float64).reshape(-1).astype(np.int64)
        gt_xyxy = _np(gt_xyxy, np.float64).reshape(-1, 4)
        pred = pred[np.argsort(-pred[:, 4], kind="mergesort")]
        pred_cls = pred[:, 5].astype(np.int64)
        keep = _cap_per_class(pred_cls, self.max_det)
        pred, pred_cls = pred[keep], pred_cls[keep]
        self.tp.append(match_detections(pred[:, :4], pred_cls, gt_xyxy, gt_cls))
        self.conf.append(pred[:, 4])
        self.pred_cls.append(pred_cls)
        self.gt_cls.append(gt_cls)

    def merge(self, others: Iterable[DetectionMetrics]) -> None:
        """Append the images of other accumulators (e.g. gathered from other ranks), in order."""
        for other in others:
            self.tp += other.tp
            self.conf += other.conf
            self.pred_cls += other.pred_cls
            self.gt_cls += other.gt_cls

    def stats(self) -> ClassStats:
        """Per-class AP and operating-point P/R over every image so far."""
        t = len(IOU_THRESHOLDS)
        n_gt = [len(g) for g in self.gt_cls]
        return class_stats(
            tp=np.concatenate(self.tp) if self.tp else np.zeros((0, t), dtype=bool),
            conf=np.concatenate(self.conf) if self.conf else np.zeros(0),
            pred_cls=np.concatenate(self.pred_cls) if self.pred_cls else np.zeros(0, dtype=np.int64),
            gt_cls=np.concatenate(self.gt_cls) if self.gt_cls else np.zeros(0, dtype=np.int64),
            gt_images=np.repeat(np.arange(len(n_gt)), n_gt),
            nc=self.nc,
        )

    def compute(self) -> dict[str, float]:
        """Means over the classes with ground truth (all 0.0 when there is none).

        Returns:
            ``metrics/precision(B)``, ``metrics/recall(B)`` (at the max-F1 operating point), ``metrics/mAP50(B)``
            and ``metrics/mAP50-95(B)`` (COCO AP at IoU 0.5 and averaged over 0.50:0.05:0.95), and
            ``metrics/f1(B)``: the class mean of each class's F1 at the same operating point (not the F1 of the mean
            P and R, so one class with no detections pulls it down as it pulls down P and R).
        """
        s = self.stats()
        if len(s.classes) == 0:
            return dict.fromkeys((*METRIC_KEYS, F1_KEY), 0.0)
        f1 = 2 * s.precision * s.recall / (s.precision + s.recall + 1e-16)
        values = (s.precision.mean(), s.recall.mean(), s.ap[:, 0].mean(), s.ap.mean(), f1.mean())
        return {key: float(v) for key, v in zip((*METRIC_KEYS, F1_KEY), values, strict=True)}

    def per_class(self) -> list[dict[str, Any]]:
        """One dict per class with ground truth, by class id: ``class``, ``name``, ``images``, ``instances``,
        ``precision``, ``recall``, ``mAP50``, ``mAP50-95``."""
        s = self.stats()
        return [
            {
                "class": int(c),
                "name": self.names.get(int(c), str(c)),
                "images": int(s.images[i]),
                "instances": int(s.instances[i]),
                "precision": float(s.precision[i]),
                "recall": float(s.recall[i]),
                "mAP50": float(s.ap[i, 0]),
                "mAP50-95": float(s.ap[i].mean()),
            }
            for i, c in enumerate(s.classes)
        ]


def fitness(metrics: Mapping[str, float], key: str = "mAP50-95",
            weights: Mapping[str, float] | None = None) -> float:
    """The single number that picks ``best.pt`` and drives early stopping and tuning (higher is better).

    Args:
        metrics: a dict holding the ``metrics/...(B)`` keys of :meth:`DetectionMetrics.compute`.
        key: ``mAP50-95``, ``mAP50``, ``precision``, ``recall`` or ``f1`` (the Config field ``fitness``).
        weights: the Config field ``fitness_weights`` (``{"mAP50-95": 0.9, "mAP50": 0.1}``): when given, the
            weighted sum of those metrics replaces ``key``. A metric missing from ``metrics`` counts as 0 (an epoch
            validated before ``f1`` was reported).
    """
    if weights:
        unknown = [k for k in weights if k not in _FITNESS_KEYS]
        if unknown:
            raise ValueError(f"fitness_weights key {unknown[0]!r} is not one of {', '.join(_FITNESS_KEYS)}")
        return float(sum(float(w) * float(metrics.get(_FITNESS_KEYS[k], 0.0)) for k, w in weights.items()))
    if key not in _FITNESS_KEYS:
        raise ValueError(f"fitness key {key!r} is not one of {', '.join(_FITNESS_KEYS)}")
    return float(metrics[_FITNESS_KEYS[key]])
