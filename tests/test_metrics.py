"""COCO-exact AP: agreement with pycocotools' COCOeval on generated scenes, and tiny hand-checked cases."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from raytrain.metrics import IOU_THRESHOLDS, DetectionMetrics, fitness, iou_matrix, match_detections

Image = tuple[np.ndarray, np.ndarray, np.ndarray]  # pred (n, 6), gt_cls (m,), gt_xyxy (m, 4)
W, H = 640, 480


def _coco_eval(images: list[Image], nc: int) -> tuple[float, float, dict[int, float]]:
    """mAP50-95, mAP50 and per-class AP50-95 from pycocotools on the same predictions and ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, results = [], []
    for image_id, (pred, gt_cls, gt_xyxy) in enumerate(images):
        for c, (x1, y1, x2, y2) in zip(gt_cls, gt_xyxy, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for x1, y1, x2, y2, score, c in pred:
            results.append({"image_id": image_id, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i, "width": W, "height": H} for i in range(len(images))],
                      "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in range(nc)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area 'all', maxDets 100
    per_class = {c: float(precision[:, :, c].mean()) for c in range(nc) if (precision[:, :, c] > -1).all()}
    return float(evaluator.stats[0]), float(evaluator.stats[1]), per_class


def _ours(images: list[Image], nc: int) -> tuple[dict[str, float], DetectionMetrics]:
    metrics = DetectionMetrics(nc, [f"c{i}" for i in range(nc)])
    for pred, gt_cls, gt_xyxy in images:
        metrics.update(pred, gt_cls, gt_xyxy)
    return metrics.compute(), metrics


def _random_boxes(rng: np.random.Generator, n: int, region: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = region
    wh = rng.uniform(8, 0.5 * min(x1 - x0, y1 - y0), (n, 2))
    xy = rng.uniform((x0, y0), (x1, y1), (n, 2)) - wh / 2
    return np.clip(np.concatenate((xy, xy + wh), 1), 0, (W, H, W, H))


def _scene(rng: np.random.Generator, nc: int, n_gt: int, n_fp: int, *, crowded: bool = False,
           gt_classes: int | None = None, pred_only_class: int | None = None, p_missed: float = 0.2) -> Image:
    """One image: ground truth, jittered detections of most of it (some with a wrong class) and false positives."""
    region = (200, 150, 330, 260) if crowded else (0, 0, W, H)
    gt_xyxy = _random_boxes(rng, n_gt, region)
    gt_cls = rng.integers(0, gt_classes or nc, n_gt)
    found = rng.random(n_gt) > p_missed
    size = gt_xyxy[found, 2:] - gt_xyxy[found, :2]
    jitter = rng.normal(0, 0.08, (found.sum(), 4)) * np.tile(size, 2)
    tp_boxes = gt_xyxy[found] + jitter
    tp_cls = np.where(rng.random(found.sum()) < 0.1, rng.integers(0, nc, found.sum()), gt_cls[found])
    fp_boxes = _random_boxes(rng, n_fp, region)
    fp_cls = rng.integers(0, nc, n_fp)
    if pred_only_class is not None:
        fp_cls[: n_fp // 3] = pred_only_class
    boxes = np.concatenate((tp_boxes, fp_boxes))
    cls = np.concatenate((tp_cls, fp_cls))
    scores = np.concatenate((rng.uniform(0.3, 1.0, len(tp_boxes)), rng.uniform(0.0, 0.8, n_fp)))
    pred = np.concatenate((boxes, scores[:, None], cls[:, None]), 1)
    return pred, gt_cls, gt_xyxy


SCENARIOS = {
    "several_images_and_classes": dict(nc=5, images=[dict(n_gt=6, n_fp=8)] * 12),
    "crowded": dict(nc=3, images=[dict(n_gt=40, n_fp=60, crowded=True)] * 4),
    "images_without_ground_truth": dict(nc=4, images=[dict(n_gt=5, n_fp=5), dict(n_gt=0, n_fp=7)] * 5),
    "images_without_predictions": dict(nc=4, images=[dict(n_gt=5, n_fp=5), dict(n_gt=4, n_fp=0, p_missed=1.0)] * 5),
    # Class 3 has ground truth but never a detection (the predictions use classes 0-2 only via nc=3 below).
    "class_with_gt_but_no_predictions": dict(nc=4, pred_nc=3, images=[dict(n_gt=8, n_fp=6)] * 8),
    # Class 4 only ever appears in predictions: COCO leaves it out of the mean.
    "predicted_class_absent_from_gt": dict(nc=5, images=[dict(n_gt=6, n_fp=9, gt_classes=4, pred_only_class=4)] * 8),
    # 150 detections of one class in one image: only the top 100 count, as with COCOeval's maxDets=100.
    "more_than_100_detections_per_class": dict(nc=1, images=[dict(n_gt=30, n_fp=150), dict(n_gt=10, n_fp=20)]),
}


def _build(name: str, seed: int = 0) -> tuple[list[Image], int]:
    spec = SCENARIOS[name]
    rng = np.random.default_rng(seed)
    nc, pred_nc = spec["nc"], spec.get("pred_nc", spec["nc"])
    images = []
    for kwargs in spec["images"]:
        if pred_nc < nc:  # ground truth over all nc classes, detections over the first pred_nc only
            pred, gt_cls, gt_xyxy = _scene(rng, pred_nc, **kwargs)
            gt_cls = np.where(rng.random(len(gt_cls)) < 0.25, nc - 1, gt_cls)
            pred[:, 5] = np.minimum(pred[:, 5], pred_nc - 1)
            images.append((pred, gt_cls, gt_xyxy))
        else:
            images.append(_scene(rng, nc, **kwargs))
    return images, nc


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_map_agrees_with_pycocotools(name):
    for seed in range(2):
        images, nc = _build(name, seed)
        ours, metrics = _ours(images, nc)
        coco_map, coco_map50, coco_per_class = _coco_eval(images, nc)
        assert ours["metrics/mAP50-95(B)"] == pytest.approx(coco_map, abs=0.002)
        assert ours["metrics/mAP50(B)"] == pytest.approx(coco_map50, abs=0.002)
        per_class = {row["class"]: row["mAP50-95"] for row in metrics.per_class()}
        assert per_class.keys() == coco_per_class.keys()
        for c, ap in coco_per_class.items():
            assert per_class[c] == pytest.approx(ap, abs=0.002)
        assert 0 < coco_map < 1  # the scene is neither trivial nor hopeless


def test_detection_cap_is_per_image_and_class_like_coco():
    images, nc = _build("more_than_100_detections_per_class")
    coco_map = _coco_eval(images, nc)[0]
    capped, uncapped = DetectionMetrics(nc, ["a"]), DetectionMetrics(nc, ["a"], max_det=1000)
    for image in images:
        capped.update(*image)
        uncapped.update(*image)
    assert capped.compute()["metrics/mAP50-95(B)"] == pytest.approx(coco_map, abs=1e-9)
    assert uncapped.compute()["metrics/mAP50-95(B)"] != pytest.approx(coco_map, abs=1e-4)


def test_all_predictions_empty_gives_zero_and_no_ground_truth_gives_zero():
    gt_xyxy = np.array([[10.0, 10, 50, 50]])
    metrics = DetectionMetrics(2, ["a", "b"])
    metrics.update(np.zeros((0, 6)), np.array([0]), gt_xyxy)
    assert metrics.compute() == dict.fromkeys(metrics.compute(), 0.0)
    assert metrics.per_class()[0]["instances"] == 1 and metrics.per_class()[0]["mAP50"] == 0
    metrics = DetectionMetrics(2, ["a", "b"])
    metrics.update(np.array([[10.0, 10, 50, 50, 0.9, 0]]), np.zeros(0), np.zeros((0, 4)))
    assert set(metrics.compute().values()) == {0.0} and metrics.per_class() == []


def test_one_perfect_detection_is_ap_one():
    metrics = DetectionMetrics(1, ["a"])
    metrics.update(np.array([[10.0, 20, 110, 220, 0.9, 0]]), np.array([0]), np.array([[10.0, 20, 110, 220]]))
    result = metrics.compute()
    assert result == pytest.approx({"metrics/precision(B)": 1.0, "metrics/recall(B)": 1.0, "metrics/mAP50(B)": 1.0,
                                    "metrics/mAP50-95(B)": 1.0, "metrics/f1(B)": 1.0})


def test_false_positive_above_true_positive_halves_ap():
    # Sorted by score: FP, TP. Recall [0, 1], precision [0, 1/2] -> envelope 1/2 at every recall point.
    gt = np.array([[10.0, 10, 50, 50]])
    pred = np.array([[10.0, 10, 50, 50, 0.8, 0], [200, 200, 240, 240, 0.9, 0]])
    metrics = DetectionMetrics(1, ["a"])
    metrics.update(pred, np.array([0]), gt)
    assert metrics.compute()["metrics/mAP50(B)"] == pytest.approx(0.5)
    assert metrics.compute()["metrics/mAP50-95(B)"] == pytest.approx(0.5)


def test_tp_fp_tp_hand_ap():
    # Two GT; TP (0.9), FP (0.8), TP (0.7): recall [.5, .5, 1], precision [1, .5, 2/3], envelope [1, 2/3, 2/3].
    # 51 recall points in [0, 0.5] read 1, the 50 in (0.5, 1] read 2/3.
    gt = np.array([[0.0, 0, 40, 40], [100, 100, 140, 140]])
    pred = np.array([[0.0, 0, 40, 40, 0.9, 0], [300, 300, 340, 340, 0.8, 0], [100, 100, 140, 140, 0.7, 0]])
    metrics = DetectionMetrics(1, ["a"])
    metrics.update(pred, np.array([0, 0]), gt)
    assert metrics.compute()["metrics/mAP50(B)"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_iou_thresholds_and_class_awareness():
    # IoU 0.72: a true positive at 0.50..0.70 (5 of 10 thresholds) only. The same box with the wrong class is a FP.
    gt = np.array([[0.0, 0, 10, 10]])
    metrics = DetectionMetrics(2, ["a", "b"])
    metrics.update(np.array([[0.0, 0, 10, 7.2, 0.9, 0]]), np.array([0]), gt)
    result = metrics.compute()
    assert result["metrics/mAP50(B)"] == pytest.approx(1.0) and result["metrics/mAP50-95(B)"] == pytest.approx(0.5)
    tp = match_detections(np.array([[0.0, 0, 10, 7.2]]), np.array([1]), gt, np.array([0]))
    assert not tp.any()


def _sequential_match(pred_xyxy, pred_cls, gt_xyxy, gt_cls):
    """COCOeval's evaluateImg matching loop, written plainly: one detection at a time, one threshold at a time."""
    iou = iou_matrix(pred_xyxy, gt_xyxy)
    tp = np.zeros((len(pred_xyxy), len(IOU_THRESHOLDS)), dtype=bool)
    for ti, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(gt_xyxy), dtype=bool)
        for di in range(len(pred_xyxy)):
            best, match = min(threshold, 1 - 1e-10), -1
            for gi in range(len(gt_xyxy)):
                if taken[gi] or gt_cls[gi] != pred_cls[di] or iou[di, gi] < best:
                    continue
                best, match = iou[di, gi], gi
            if match >= 0:
                taken[match] = tp[di, ti] = True
    return tp


def test_round_matching_equals_the_sequential_loop():
    rng = np.random.default_rng(3)
    for trial in range(60):
        crowded = trial % 2 == 0
        pred, gt_cls, gt_xyxy = _scene(rng, 3, n_gt=int(rng.integers(0, 30)), n_fp=int(rng.integers(0, 40)),
                                       crowded=crowded)
        if trial % 3 == 0 and len(gt_xyxy):  # exact duplicates: IoU ties between boxes
            gt_xyxy = np.concatenate((gt_xyxy, gt_xyxy[:3]))
            gt_cls = np.concatenate((gt_cls, gt_cls[:3]))
        pred = pred[np.argsort(-pred[:, 4], kind="mergesort")]
        args = (pred[:, :4], pred[:, 5].astype(int), gt_xyxy, gt_cls.astype(int))
        assert np.array_equal(match_detections(*args), _sequential_match(*args)), trial


def test_greedy_matching_takes_highest_iou_unmatched_gt():
    # Detection 0 (higher score) overlaps GT 0 (IoU 0.6) and GT 1 (IoU 0.9): it takes GT 1. Detection 1 overlaps
    # GT 1 only: at 0.5 it is a FP, because GT 1 is taken (Ultralytics' IoU-sorted matching would differ).
    gt = np.array([[0.0, 0, 10, 10], [0.0, 0, 10, 10.0]])
    gt[0] = [0.0, 0, 10, 6]  # IoU with [0, 0, 10, 10] = 0.6
    pred = np.array([[0.0, 0, 10, 9], [0.0, 0, 10, 8]])  # IoU with GT 1: 0.9 and 0.8; with GT 0: 6/9 and 0.75
    tp = match_detections(pred, np.array([0, 0]), gt, np.array([0, 0]), np.array([0.5, 0.7, 0.85]))
    assert tp.tolist() == [[True, True, True], [True, True, False]]


def test_iou_tie_goes_to_the_last_ground_truth_like_coco():
    # Detection 0 overlaps GT 0 and GT 1 with exactly the same IoU (90 / 110): COCOeval keeps the last, GT 1, which
    # leaves GT 0 for detection 1 (IoU 80 / 120 with GT 0, 60 / 140 with GT 1). Taking the first would make it a FP.
    gt_xyxy = np.array([[0.0, 0, 10, 10], [2, 0, 12, 10]])
    pred = np.array([[1.0, 0, 11, 10, 0.9, 0], [-2, 0, 8, 10, 0.8, 0]])
    tp = match_detections(pred[:, :4], np.array([0, 0]), gt_xyxy, np.array([0, 0]), np.array([0.5]))
    assert tp.tolist() == [[True], [True]]
    image = (pred, np.array([0, 0]), gt_xyxy)
    ours, _ = _ours([image], 1)
    assert ours["metrics/mAP50(B)"] == pytest.approx(_coco_eval([image], 1)[1], abs=1e-12)
    assert ours["metrics/mAP50(B)"] == pytest.approx(1.0)


def test_operating_point_precision_recall():
    # 2 GT; detections TP 0.9, FP 0.6, TP 0.3: the best F1 is at conf 0.3 with P 2/3, R 1 (F1 0.8) vs
    # conf 0.9 with P 1, R 0.5 (F1 0.67); smoothing moves the chosen conf slightly but not the plateau values much.
    gt = np.array([[0.0, 0, 40, 40], [100, 100, 140, 140]])
    pred = np.array([[0.0, 0, 40, 40, 0.9, 0], [300, 300, 340, 340, 0.6, 0], [100, 100, 140, 140, 0.3, 0]])
    metrics = DetectionMetrics(1, ["a"])
    metrics.update(pred, np.array([0, 0]), gt)
    stats = metrics.stats()
    assert stats.conf < 0.35
    assert stats.recall[0] == pytest.approx(1.0, abs=0.05) and stats.precision[0] == pytest.approx(2 / 3, abs=0.05)


def test_per_class_rows_and_merge():
    images, nc = _build("several_images_and_classes")
    whole, metrics = _ours(images, nc)
    first, second = DetectionMetrics(nc, list("abcde")), DetectionMetrics(nc, list("abcde"))
    for i, image in enumerate(images):
        (first if i < 5 else second).update(*image)
    first.merge([second])
    assert first.compute() == pytest.approx(whole)
    rows = metrics.per_class()
    assert [r["class"] for r in rows] == sorted(r["class"] for r in rows)
    assert sum(r["instances"] for r in rows) == sum(len(g) for _, g, _ in images)
    assert set(rows[0]) == {"class", "name", "images", "instances", "precision", "recall", "mAP50", "mAP50-95"}
    assert rows[0]["name"] == f"c{rows[0]['class']}"


def test_fitness_keys():
    result = {"metrics/precision(B)": 0.1, "metrics/recall(B)": 0.2, "metrics/mAP50(B)": 0.3,
              "metrics/mAP50-95(B)": 0.4}
    assert fitness(result) == 0.4
    assert [fitness(result, k) for k in ("precision", "recall", "mAP50")] == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="mAP50-95"):
        fitness(result, "map")


def test_speed_sanity_many_detections():
    """Not a timing assertion (see bench/metrics_speed.py): 100 images x 100 detections must simply work."""
    rng = np.random.default_rng(1)
    metrics = DetectionMetrics(10, [str(i) for i in range(10)])
    for _ in range(100):
        metrics.update(*_scene(rng, 10, n_gt=20, n_fp=85))
    result = metrics.compute()
    assert 0 < result["metrics/mAP50-95(B)"] < result["metrics/mAP50(B)"] < 1
