"""Image augmentations that move boxes with the image: pure functions of their inputs and an ``np.random.Generator``.

Images are ``(h, w, 3)`` uint8 RGB arrays; boxes are ``(n, 4)`` float ``xyxy`` in pixels of the image they go with,
and class ids ``(n,)`` travel beside them. No function here touches global random state or its inputs in place.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PAD_VALUE = 114  # grey used for letterbox and affine borders, as in YOLO


def resize_long_side(img: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(h, w, 3)`` so its longer side is ``size`` pixels, keeping the aspect ratio (area filter when
    shrinking, bilinear when enlarging)."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return img
    new_w, new_h = max(1, round(w * r)), max(1, round(h * r))
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)


def letterbox(
    img: np.ndarray, new_shape: int | tuple[int, int], *, scaleup: bool = True, color: int = PAD_VALUE
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping the aspect ratio, then pad to ``new_shape`` with ``color``, centring the image.

    Args:
        img: ``(h0, w0, 3)`` image.
        new_shape: target ``(H, W)``, or one int for a square.
        scaleup: allow enlarging (False only shrinks, as for validation at a larger size).
        color: padding grey level.

    Returns:
        ``(out, (gain_h, gain_w), (pad_w, pad_h))``: ``out`` is ``(H, W, 3)``; original pixels map to output pixels
        exactly as ``x = x0 * gain_w + pad_w`` and ``y = y0 * gain_h + pad_h`` (the gains are the realised
        per-axis ratios after rounding the resized size to whole pixels; pads are whole pixels, left/top).
    """
    out_h, out_w = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    h0, w0 = img.shape[:2]
    (new_h, new_w), gains, (left, top) = letterbox_geometry((h0, w0), (out_h, out_w), scaleup=scaleup)
    if (new_w, new_h) != (w0, h0):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA if new_w < w0 else cv2.INTER_LINEAR)
    img = cv2.copyMakeBorder(img, top, out_h - new_h - top, left, out_w - new_w - left, cv2.BORDER_CONSTANT,
                             value=(color, color, color))
    return img, gains, (left, top)


def letterbox_geometry(shape: tuple[int, int], new_shape: tuple[int, int], *,
                       scaleup: bool = True) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int]]:
    """The numbers of :func:`letterbox` without touching pixels.

    Args:
        shape: ``(h0, w0)`` of the image.
        new_shape: ``(H, W)`` of the output.
        scaleup: allow enlarging.

    Returns:
        ``((new_h, new_w), (gain_h, gain_w), (pad_w, pad_h))``: the resized content size, the realised gains and the
        left/top padding.
    """
    (h0, w0), (out_h, out_w) = shape, new_shape
    r = min(out_h / h0, out_w / w0)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = min(out_w, max(1, round(w0 * r))), min(out_h, max(1, round(h0 * r)))
    return (new_h, new_w), (new_h / h0, new_w / w0), ((out_w - new_w) // 2, (out_h - new_h) // 2)


def xywhn_to_xyxy(xywh_n: np.ndarray, w: float, h: float, pad_w: float = 0.0, pad_h: float = 0.0) -> np.ndarray:
    """``(n, 4)`` normalised centre/size boxes -> ``(n, 4)`` corner boxes in pixels of a ``w`` x ``h`` image,
    shifted by ``(pad_w, pad_h)``."""
    x, y, bw, bh = (xywh_n[:, i].astype(np.float64) for i in range(4))
    return np.stack(((x - bw / 2) * w + pad_w, (y - bh / 2) * h + pad_h,
                     (x + bw / 2) * w + pad_w, (y + bh / 2) * h + pad_h), 1).reshape(-1, 4)


def xyxy_to_xywhn(boxes_xyxy: np.ndarray, w: float, h: float) -> np.ndarray:
    """``(n, 4)`` corner boxes in pixels of a ``w`` x ``h`` image -> ``(n, 4)`` float32 normalised xywh."""
    b = boxes_xyxy.astype(np.float64).reshape(-1, 4)
    return np.stack((((b[:, 0] + b[:, 2]) / 2) / w, ((b[:, 1] + b[:, 3]) / 2) / h,
                     (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h), 1).astype(np.float32)


def clip_boxes(boxes_xyxy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Corner boxes ``(n, 4)`` clipped to ``[0, w] x [0, h]`` (a new array)."""
    return np.stack((boxes_xyxy[:, 0].clip(0, w), boxes_xyxy[:, 1].clip(0, h),
                     boxes_xyxy[:, 2].clip(0, w), boxes_xyxy[:, 3].clip(0, h)), 1).reshape(-1, 4)


def flip_lr(img: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``x -> W - x`` (so ``x1' = W - x2``, ``x2' = W - x1``)."""
    w = img.shape[1]
    boxes = boxes_xyxy.copy()
    boxes[:, [0, 2]] = w - boxes_xyxy[:, [2, 0]]
    return np.ascontiguousarray(img[:, ::-1]), boxes


def flip_ud(img: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom: ``y -> H - y``."""
    h = img.shape[0]
    boxes = boxes_xyxy.copy()
    boxes[:, [1, 3]] = h - boxes_xyxy[:, [3, 1]]
    return np.ascontiguousarray(img[::-1]), boxes


def random_flip(img: np.ndarray, boxes_xyxy: np.ndarray, rng: np.random.Generator, *, fliplr: float,
                flipud: float) -> tuple[np.ndarray, np.ndarray]:
    """Flip up-down with probability ``flipud``, then left-right with probability ``fliplr``."""
    if rng.random() < flipud:
        img, boxes_xyxy = flip_ud(img, boxes_xyxy)
    if rng.random() < fliplr:
        img, boxes_xyxy = flip_lr(img, boxes_xyxy)
    return img, boxes_xyxy


def augment_hsv(img: np.ndarray, rng: np.random.Generator, *, hgain: float, sgain: float,
                vgain: float) -> np.ndarray:
    """Random hue shift and saturation/value gains (each ``1 +- gain``) applied through lookup tables."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def affine_matrix(in_shape: tuple[int, int], out_shape: tuple[int, int], *, degrees: float = 0.0,
                  translate: float = 0.0, scale: float = 0.0, shear: float = 0.0, perspective: float = 0.0,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
    """A random 3x3 homography: centre the input on the origin, perspective, rotate+scale, shear, then move to the
    output centre plus a random translation.

    Args:
        in_shape: ``(h, w)`` of the input image.
        out_shape: ``(H, W)`` of the output image.
        degrees, translate, scale, shear, perspective: ranges as in the hyperparameters: angle ``+-degrees``,
            scale ``1 +- scale``, shear ``+-shear`` degrees, output-centre shift ``+-translate`` of the output size.
        rng: random source; None gives the deterministic centring transform (used by tests).

    Returns:
        ``(M, s)``: the matrix mapping input pixels to output pixels, and the scale factor drawn.
    """
    u = rng.uniform if rng is not None else (lambda lo, hi: (lo + hi) / 2)
    h, w = in_shape
    out_h, out_w = out_shape
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = u(-perspective, perspective), u(-perspective, perspective)
    s = u(1 - scale, 1 + scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=u(-degrees, degrees), scale=s)
    shr = np.eye(3)
    shr[0, 1] = math.tan(math.radians(u(-shear, shear)))
    shr[1, 0] = math.tan(math.radians(u(-shear, shear)))
    move = np.eye(3)
    move[0, 2] = u(0.5 - translate, 0.5 + translate) * out_w
    move[1, 2] = u(0.5 - translate, 0.5 + translate) * out_h
    return move @ shr @ rot @ persp @ centre, s


def transform_boxes(boxes_xyxy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map corner boxes ``(n, 4)`` through a 3x3 homography; each result is the envelope of the 4 mapped corners."""
    n = len(boxes_xyxy)
    if not n:
        return np.zeros((0, 4), np.float64)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes_xyxy[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    mapped = corners @ matrix.T
    mapped = (mapped[:, :2] / mapped[:, 2:3]).reshape(n, 4, 2)
    return np.concatenate((mapped.min(1), mapped.max(1)), 1)


def box_candidates(before_xyxy: np.ndarray, after_xyxy: np.ndarray, *, wh_thr: float = 2.0, ar_thr: float = 100.0,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """``(n,)`` bool: boxes still worth training on after a transform.

    A box is kept when it is wider and taller than ``wh_thr`` pixels, its aspect ratio is below ``ar_thr``, and
    its area is more than ``area_thr`` of ``before_xyxy``'s area (pass ``before`` already scaled by the transform's
    scale so that only clipping counts).
    """
    w1, h1 = before_xyxy[:, 2] - before_xyxy[:, 0], before_xyxy[:, 3] - before_xyxy[:, 1]
    w2, h2 = after_xyxy[:, 2] - after_xyxy[:, 0], after_xyxy[:, 3] - after_xyxy[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def warp(img: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Apply a 3x3 homography to an image (affine when its last row is [0, 0, 1]), padding with grey."""
    out_h, out_w = out_shape
    border = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
    if matrix[2, 0] != 0 or matrix[2, 1] != 0:
        return cv2.warpPerspective(img, matrix, dsize=(out_w, out_h), borderValue=border)
    return cv2.warpAffine(img, matrix[:2], dsize=(out_w, out_h), borderValue=border)


def random_affine(img: np.ndarray, boxes_xyxy: np.ndarray, rng: np.random.Generator, out_shape: tuple[int, int], *,
                  degrees: float = 0.0, translate: float = 0.0, scale: float = 0.0, shear: float = 0.0,
                  perspective: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rotation, scale, shear, perspective and translation of an image and its boxes.

    Args:
        img: ``(h, w, 3)`` image (a 2x mosaic canvas or a letterboxed image).
        boxes_xyxy: ``(n, 4)`` boxes in ``img`` pixels.
        rng: random source.
        out_shape: ``(H, W)`` of the result; the input's centre lands on the output's centre (+- translation).

    Returns:
        ``(out, boxes, keep)``: ``out`` ``(H, W, 3)``; ``boxes`` ``(k, 4)`` xyxy output pixels, clipped, of the
        boxes that pass :func:`box_candidates`; ``keep`` ``(n,)`` bool selects them (apply it to the class ids).
    """
    matrix, s = affine_matrix(img.shape[:2], out_shape, degrees=degrees, translate=translate, scale=scale,
                              shear=shear, perspective=perspective, rng=rng)
    identity_shift = np.allclose(matrix, np.eye(3)) and img.shape[:2] == tuple(out_shape)
    out = img if identity_shift else warp(img, matrix, out_shape)
    moved = clip_boxes(transform_boxes(boxes_xyxy, matrix), *out_shape)
    keep = box_candidates(boxes_xyxy * s, moved, area_thr=0.1) if len(boxes_xyxy) else np.zeros(0, bool)
    return out, moved[keep], keep


def mosaic4(tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place 4 images around a random centre of a ``2*size`` square grey canvas (top-left, top-right, bottom-left,
    bottom-right), each touching the centre with one corner and cropped at the canvas edge.

    Args:
        tiles: 4 ``(img, cls (n,), boxes_xyxy (n, 4) in img pixels)``; images resized to a long side of ``size``.
        size: the output image size; the canvas is ``(2 * size, 2 * size)``.
        rng: random source for the centre, uniform in ``[size / 2, 3 * size / 2)`` on each axis.

    Returns:
        ``(canvas, cls (m,), boxes_xyxy (m, 4))``: boxes in canvas pixels, clipped to it (zero-size boxes are
        removed later by :func:`random_affine`'s candidate filter).
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic4 needs 4 tiles, got {len(tiles)}")
    s = size
    yc, xc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, 2))
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    all_cls, all_boxes = [], []
    for i, (img, cls, boxes) in enumerate(tiles):
        h, w = img.shape[:2]
        if i == 0:  # the tile's bottom-right corner at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:  # bottom-left corner at the centre
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:  # top-right corner at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, 2 * s)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # top-left corner at the centre
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(yc + h, 2 * s)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        shift = np.array([x1a - x1b, y1a - y1b, x1a - x1b, y1a - y1b], np.float64)
        all_cls.append(cls)
        all_boxes.append(boxes.reshape(-1, 4) + shift)
    boxes = clip_boxes(np.concatenate(all_boxes), 2 * s, 2 * s)
    return canvas, np.concatenate(all_cls), boxes


def mixup(img1: np.ndarray, img2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend two same-size images with a ratio drawn from Beta(32, 32) (about 0.5); keep both images' labels."""
    r = rng.beta(32.0, 32.0)
    return (img1.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).round().astype(np.uint8)
