"""The built-in ``shapes`` dataset: coloured geometric shapes on textured, noisy backgrounds, generated offline.

It is generated deterministically (fixed seeds) on first use into ``<datasets>/shapes`` (see
:func:`raytrain.data.common.datasets_dir`), atomically (built in a temporary folder, then renamed) and under a
file lock, so concurrent processes neither generate it twice nor see half of it. Later uses reuse it. It is small
(500 train / 100 val JPEGs of 128-192 px, six classes) so a CPU can generate it in a few seconds and a YOLOv8n can
learn it in minutes, but not trivial: random colours, sizes, rotations, partial overlaps and clutter.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from raytrain.data.common import DatasetError, datasets_dir

LOGGER = logging.getLogger("raytrain")

NAMES = ("circle", "square", "triangle", "star", "hexagon", "cross")
SPLIT_SIZES = {"train": 500, "val": 100}
SIDES = (128, 160, 192)  # image heights and widths are drawn from these
VERSION = "1"  # bump when the generator changes: an old copy is then regenerated
SEED = 20240617


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """``(k, 2)`` vertices of a shape of circumradius ``r`` centred at ``(cx, cy)``, rotated by ``angle`` rad."""
    if kind == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        rad = np.full(4, r)
    elif kind == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        rad = np.full(3, r)
    elif kind == "hexagon":
        t = angle + np.arange(6) * np.pi / 3
        rad = np.full(6, r)
    elif kind == "star":
        t = angle + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    elif kind == "cross":  # a plus sign: 12 vertices, arms a third of its width
        a = r / math.sqrt(1 + 1 / 9)  # half-length so that the arm tips' corners lie on the circle
        b = a / 3
        pts = np.array([(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a),
                        (-b, -a), (-b, -b), (-a, -b), (-a, b), (-b, b), (-b, a)])
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return pts @ rot.T + (cx, cy)
    else:
        raise ValueError(kind)
    return np.stack((cx + rad * np.cos(t), cy + rad * np.sin(t)), 1)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field plus gradient, clutter lines and pixel noise: ``(h, w, 3)`` uint8."""
    coarse = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(0, 255, 3)
    mix = rng.uniform(0.3, 0.8)
    img = np.clip(base * (1 - mix) + field * mix, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 6)):  # thin clutter lines
        p1, p2 = rng.integers(0, (w, h), 2), rng.integers(0, (w, h), 2)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color, int(rng.integers(1, 3)),
                 cv2.LINE_AA)
    return img


def _add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(2, 14)
    noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
    if rng.random() < 0.3:
        noisy = cv2.GaussianBlur(noisy, (3, 3), 0)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def draw_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random image and its labels.

    Returns:
        ``(img, labels)``: ``img`` ``(h, w, 3)`` uint8 RGB; ``labels`` ``(n, 5)`` float32 ``[cls, x, y, w, h]``
        xywh_n, one per shape, boxes tight around the drawn pixels.
    """
    h, w = (int(v) for v in rng.choice(SIDES, 2))
    img = _background(rng, h, w)
    boxes: list[np.ndarray] = []
    labels = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(20):
            cls = int(rng.integers(len(NAMES)))
            r = rng.uniform(0.07, 0.22) * min(h, w)
            cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            if cls == 0:
                box = np.array([cx - r, cy - r, cx + r, cy + r])
            else:
                pts = _polygon(NAMES[cls], cx, cy, r, rng.uniform(0, 2 * np.pi))
                box = np.concatenate((pts.min(0), pts.max(0)))
            if all(_iou(box, b) < 0.25 for b in boxes):
                break
        else:
            continue
        region = img[int(box[1]):int(box[3]) + 1, int(box[0]):int(box[2]) + 1].reshape(-1, 3).mean(0)
        for _attempt in range(10):  # a colour that stands out from the background under it
            color = rng.integers(0, 256, 3)
            if np.abs(color - region).sum() > 150:
                break
        color_t = tuple(int(c) for c in color)
        if cls == 0:
            cv2.circle(img, (round(cx * 16), round(cy * 16)), round(r * 16), color_t, -1, cv2.LINE_AA, shift=4)
        else:
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color_t, cv2.LINE_AA, shift=4)
        boxes.append(box)
        labels.append([cls, (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h,
                       (box[2] - box[0]) / w, (box[3] - box[1]) / h])
    img = _add_noise(img, rng)
    return img, np.asarray(labels, np.float32).reshape(-1, 5)


def generate(root: Path, seed: int = SEED, sizes: dict[str, int] | None = None) -> Path:
    """Write the dataset into a new folder ``root`` (images/, labels/, data.yaml); return the YAML path.

    The same ``seed`` and ``sizes`` give the same files, whatever the order or process that writes them.
    """
    sizes = sizes or SPLIT_SIZES
    for split_id, (split, count) in enumerate(sizes.items()):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            img, labels = draw_image(np.random.default_rng([seed, split_id, i]))
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            rows = "".join(f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in labels)
            (root / "labels" / split / f"{stem}.txt").write_text(rows)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(NAMES))
    splits = "\n".join(f"{s}: images/{s}" for s in sizes)
    (root / "data.yaml").write_text(
        f"# raytrain built-in 'shapes' dataset, generator version {VERSION}, seed {seed}\n"
        f"path: .\n{splits}\nnames:\n{names}\n")
    (root / "VERSION").write_text(VERSION + "\n")
    return root / "data.yaml"


def _complete(root: Path) -> bool:
    try:
        return (root / "data.yaml").is_file() and (root / "VERSION").read_text().strip() == VERSION
    except OSError:
        return False


def ensure_shapes(root: Path | None = None) -> Path:
    """The YAML of the shapes dataset, generating it first when absent or from an older generator version.

    Args:
        root: where the dataset lives (default ``<datasets>/shapes``).

    Raises:
        DatasetError: the datasets folder cannot be written.
    """
    from filelock import FileLock

    root = Path(root) if root is not None else datasets_dir() / "shapes"
    if _complete(root):
        return root / "data.yaml"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root.parent / f".{root.name}.lock"), timeout=600):
            if _complete(root):  # another process generated it while we waited
                return root / "data.yaml"
            for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by a killed generator; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
            start = time.perf_counter()
            LOGGER.info("Generating the built-in 'shapes' dataset in %s ...", root)
            try:
                generate(tmp)
                if root.exists():  # an older version or a leftover: move it away, then replace
                    old = root.parent / f".{root.name}.old-{os.getpid()}"
                    os.replace(root, old)
                    shutil.rmtree(old, ignore_errors=True)
                os.replace(tmp, root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            LOGGER.info("Generated 'shapes' (%s) in %.1f s.", ", ".join(f"{n} {s}" for s, n in SPLIT_SIZES.items()),
                        time.perf_counter() - start)
    except OSError as e:
        raise DatasetError(f"cannot write the 'shapes' dataset to {root} ({e}); set RAYTRAIN_DATASETS to a "
                           f"writable folder.") from e
    return root / "data.yaml"
