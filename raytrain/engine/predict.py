"""Prediction: detect objects in an image, draw them, and the ``predictions.json`` rows (``raytrain predict``).

Images are read and letterboxed exactly as the validation split is (:mod:`raytrain.data.images`,
:func:`raytrain.data.augment.letterbox`), so a checkpoint predicts on a file what it scored on it in ``raytrain val``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raytrain.data.augment import letterbox
from raytrain.data.images import IMAGE_SUFFIXES
from raytrain.ops import scale_boxes

LOGGER = logging.getLogger("raytrain")


def list_images(source: str | Path) -> list[Path]:
    """The image files of ``source``: the file itself, or a folder's images (not recursive), sorted by name."""
    from raytrain.config import ConfigError

    path = Path(source).expanduser().resolve()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ConfigError(f"source={source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder.")
        return files
    raise ConfigError(f"source={source!r}: no such file or folder.")


def predict_image(model: nn.Module, image_rgb: np.ndarray, *, imgsz: int, device: torch.device,
                  conf: float = 0.25, iou: float = 0.7, max_det: int = 300, nms: bool | None = None) -> torch.Tensor:
    """Detections for one image.

    Args:
        model: eval-mode detector: ``model(x)`` returns the raw output, ``model.detect(raw, ...)`` the detections
            (a ``DetectionModel`` or an exported-model runner).
        image_rgb: ``(h0, w0, 3)`` uint8 RGB image.
        imgsz: network input size (the image is letterboxed into ``imgsz x imgsz``).
        device: where the model lives.
        conf: confidence threshold.
        iou: NMS IoU threshold.
        max_det: detections kept.
        nms: unset, NMS on the one-to-many head; False, YOLO26's NMS-free one-to-one top-k.

    Returns:
        ``(n, 6)`` rows ``[x1, y1, x2, y2, score, cls]``, ``xyxy`` in original pixels, on the CPU.
    """
    img, gain, pad = letterbox(image_rgb, imgsz)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(device).float() / 255
    with torch.no_grad():
        (det,) = model.detect(model(x), conf=conf, iou=iou, max_det=max_det, nms=nms)
    det = det.float().cpu()
    det[:, :4] = scale_boxes(det[:, :4], (gain, pad), image_rgb.shape[:2])
    return det


def class_color(cls: int) -> tuple[int, int, int]:
    """A fixed, distinct BGR colour per class id."""
    hue = (cls * 0.618033988749895) % 1.0  # golden-ratio steps spread the hues
    r, g, b = (int(255 * min(max(abs((hue * 6 + k) % 6 - 3) - 1, 0), 1)) for k in (0, 4, 2))
    return b, g, r


def draw_detections(image_bgr: np.ndarray, det: torch.Tensor, names: Mapping[int, str] | Sequence[str]) -> np.ndarray:
    """A copy of ``image_bgr`` (h, w, 3) with each ``[x1, y1, x2, y2, score, cls]`` row drawn as a labelled box."""
    import cv2

    names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    out = image_bgr.copy()
    thickness = max(1, round(sum(out.shape[:2]) / 600))
    for x1, y1, x2, y2, score, cls in det.tolist():
        color = class_color(int(cls))
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(out, p1, p2, color, thickness, cv2.LINE_AA)
        label = f"{names.get(int(cls), str(int(cls)))} {score:.2f}"
        scale = thickness / 3
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(thickness - 1, 1))
        top = p1[1] - h - base if p1[1] - h - base >= 0 else p1[1]  # above the box, or inside when at the top
        cv2.rectangle(out, (p1[0], top), (p1[0] + w, top + h + base), color, -1, cv2.LINE_AA)
        cv2.putText(out, label, (p1[0], top + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(thickness - 1, 1), cv2.LINE_AA)
    return out


def detections_json(file: Path, shape: tuple[int, int], det: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """One image's entry of ``predictions.json``: file, original size, detections (``xyxy`` original pixels)."""
    return {
        "file": str(file),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "detections": [
            {"xyxy": [round(v, 2) for v in row[:4]], "score": round(row[4], 5), "class": int(row[5]),
             "name": names[int(row[5])] if int(row[5]) < len(names) else str(int(row[5]))}
            for row in det.tolist()
        ],
    }
