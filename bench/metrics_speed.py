"""Time DetectionMetrics: 500 images x 100 detections (20 ground-truth boxes, 10 classes per image).

Run: ``python bench/metrics_speed.py``. Prints milliseconds for update() (matching) and compute() (AP, P/R).
"""

from __future__ import annotations

import time

import numpy as np

from raytrain.metrics import DetectionMetrics


def scene(rng: np.random.Generator, n_gt: int = 20, n_det: int = 100, nc: int = 10) -> tuple:
    """One 640x480 image: ground truth and detections, most of the GT found with jitter, the rest random."""
    wh = rng.uniform(10, 150, (n_gt, 2))
    xy = rng.uniform(0, (640, 480), (n_gt, 2))
    gt = np.concatenate((xy, xy + wh), 1)
    gt_cls = rng.integers(0, nc, n_gt)
    found = rng.random(n_gt) < 0.8
    jitter = rng.normal(0, 0.08, (found.sum(), 4)) * np.tile(wh[found], 2)
    n_fp = n_det - found.sum()
    fp_wh = rng.uniform(10, 150, (n_fp, 2))
    fp_xy = rng.uniform(0, (640, 480), (n_fp, 2))
    boxes = np.concatenate((gt[found] + jitter, np.concatenate((fp_xy, fp_xy + fp_wh), 1)))
    cls = np.concatenate((gt_cls[found], rng.integers(0, nc, n_fp)))
    pred = np.concatenate((boxes, rng.random((n_det, 1)), cls[:, None]), 1)
    return pred, gt_cls, gt


def main(n_images: int = 500) -> None:
    rng = np.random.default_rng(0)
    scenes = [scene(rng) for _ in range(n_images)]
    metrics = DetectionMetrics(10, [str(i) for i in range(10)])
    start = time.perf_counter()
    for image in scenes:
        metrics.update(*image)
    matched = time.perf_counter()
    result = metrics.compute()
    done = time.perf_counter()
    print(f"{n_images} images x 100 detections: update {1e3 * (matched - start):.1f} ms "
          f"({1e3 * (matched - start) / n_images:.3f} ms/image), compute {1e3 * (done - matched):.1f} ms")
    print({k: round(v, 4) for k, v in result.items()})


if __name__ == "__main__":
    main()
