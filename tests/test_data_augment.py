"""Augmentation box math checked against hand-computed results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytrain.data import augment as A
from raytrain.ops import scale_boxes


class FixedRng:
    """Stands in for np.random.Generator: ``uniform`` returns its upper bound, or the queued values."""

    def __init__(self, values: list | None = None) -> None:
        self.values = list(values or [])

    def uniform(self, lo, hi, size=None):
        if self.values:
            return np.asarray(self.values.pop(0), dtype=float)
        return hi if size is None else np.full(size, hi, float)


def test_letterbox_exact_gain_and_padding():
    img = np.full((20, 40, 3), 7, np.uint8)  # h=20, w=40 -> gain 1.6 -> 32 x 64, 16 rows of padding on top
    out, (gain_h, gain_w), (pad_w, pad_h) = A.letterbox(img, 64)
    assert out.shape == (64, 64, 3)
    assert (gain_h, gain_w, pad_w, pad_h) == (1.6, 1.6, 0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all() and (out[16:48] == 7).all()
    # x_in = x0 * gain_w + pad_w: the original point (10, 5) lands at (16, 24).
    assert (10 * gain_w + pad_w, 5 * gain_h + pad_h) == (16, 24)

    small, gains, pads = A.letterbox(img, 64, scaleup=False)
    assert gains == (1.0, 1.0) and pads == (12, 22) and (small[22:42, 12:52] == 7).all()


def test_letterbox_round_trip_through_scale_boxes():
    img = np.zeros((30, 70, 3), np.uint8)  # gain 64/70; the height rounds to 27 pixels
    out, (gain_h, gain_w), (pad_w, pad_h) = A.letterbox(img, 64)
    assert out.shape == (64, 64, 3) and (pad_w, pad_h) == (0, 18)
    assert gain_h == pytest.approx(27 / 30) and gain_w == pytest.approx(64 / 70)
    box0 = np.array([[7.0, 3.0, 63.0, 29.0]])  # original pixels
    box_in = box0 * [gain_w, gain_h, gain_w, gain_h] + [pad_w, pad_h, pad_w, pad_h]
    back = scale_boxes(torch.tensor(box_in), ((gain_h, gain_w), (pad_w, pad_h)), (30, 70))
    np.testing.assert_allclose(back.numpy(), box0, atol=1e-9)


def test_box_format_conversions():
    boxes = A.xywhn_to_xyxy(np.array([[0.5, 0.25, 0.2, 0.1]]), 100, 40, pad_w=3, pad_h=4)
    np.testing.assert_allclose(boxes, [[43, 12, 63, 16]])
    np.testing.assert_allclose(A.xyxy_to_xywhn(np.array([[40, 8, 60, 12]]), 100, 40), [[0.5, 0.25, 0.2, 0.1]])


def test_flips_move_boxes_and_pixels():
    img = np.zeros((50, 100, 3), np.uint8)
    img[25, 15] = 255
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    out, moved = A.flip_lr(img, boxes)
    np.testing.assert_array_equal(moved, [[70, 20, 90, 40]])
    assert out[25, 84, 0] == 255  # x -> W - 1 - x for pixel indices
    out, moved = A.flip_ud(img, boxes)
    np.testing.assert_array_equal(moved, [[10, 10, 30, 30]])
    assert out[24, 15, 0] == 255
    np.testing.assert_array_equal(boxes, [[10, 20, 30, 40]])  # inputs untouched


def test_transform_boxes_known_matrices():
    box = np.array([[1.0, 2.0, 3.0, 4.0]])
    scale_shift = np.array([[2.0, 0, 5], [0, 2.0, 7], [0, 0, 1]])
    np.testing.assert_allclose(A.transform_boxes(box, scale_shift), [[7, 11, 11, 15]])
    rot90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # (x, y) -> (-y, x)
    np.testing.assert_allclose(A.transform_boxes(box, rot90), [[-4, 1, -2, 3]], atol=1e-12)


def test_random_affine_known_scale_and_translation():
    img = np.zeros((100, 100, 3), np.uint8)
    img[45:55, 45:55] = 200
    boxes = np.array([[40.0, 40.0, 60.0, 60.0], [0.0, 0.0, 2.0, 2.0]])
    # Upper bounds drawn: scale 1 + 0.5 = 1.5, centre shift 0.6 * 100 = 60 -> x' = 1.5 * (x - 50) + 60.
    out, moved, keep = A.random_affine(img, boxes, FixedRng(), (100, 100), translate=0.1, scale=0.5)
    np.testing.assert_allclose(moved, [[45, 45, 75, 75]])
    assert keep.tolist() == [True, False]  # the second box leaves the image
    assert out[60, 60, 0] == 200 and out[50, 50, 0] == 0


def test_random_affine_identity_keeps_image_and_boxes():
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    boxes = np.array([[5.0, 6.0, 20.0, 30.0]])
    out, moved, keep = A.random_affine(img, boxes, np.random.default_rng(1), (48, 64))
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(moved, boxes)
    assert keep.tolist() == [True]


def test_box_candidates_filter():
    before = np.array([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 100], [0, 0, 300, 3]])
    after = np.array([[0.0, 0, 10, 10], [0, 0, 10, 1.5], [0, 0, 100, 5], [0, 0, 300, 2.5]])
    # kept; too thin (< 2 px); only 5% of its area left; aspect ratio 120 > 100
    assert A.box_candidates(before, after).tolist() == [True, False, False, False]


def test_mosaic4_places_tiles_and_boxes_around_the_centre():
    tiles = [(np.full((32, 64, 3), v, np.uint8), np.array([float(i)]), box)
             for i, (v, box) in enumerate([(10, [[20.0, 4, 30, 10]]), (20, [[0.0, 0, 64, 32]]),
                                           (30, [[10.0, 0, 20, 5]]), (40, [[1.0, 1, 2, 2]])])]
    canvas, cls, boxes = A.mosaic4([(t[0], t[1], np.array(t[2])) for t in tiles], 64, FixedRng([[40, 50]]))
    # Centre (yc, xc) = (40, 50). Tile 0's bottom-right corner sits at the centre and its left 14 columns fall off
    # the canvas: shift (-14, +8). Tile 1 starts at (50, 8); tile 2 at (-14, 40); tile 3 at (50, 40).
    assert canvas.shape == (128, 128, 3)
    assert [canvas[20, 20, 0], canvas[20, 60, 0], canvas[50, 20, 0], canvas[50, 60, 0]] == [10, 20, 30, 40]
    assert canvas[100, 100, 0] == 114 and canvas[4, 4, 0] == 114
    assert cls.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(boxes, [[6, 12, 16, 18], [50, 8, 114, 40], [0, 40, 6, 45], [51, 41, 52, 42]])


def test_hsv_and_mixup_are_pure_and_seeded():
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    copy = img.copy()
    assert A.augment_hsv(img, np.random.default_rng(0), hgain=0, sgain=0, vgain=0) is img
    a = A.augment_hsv(img, np.random.default_rng(5), hgain=0.015, sgain=0.7, vgain=0.4)
    b = A.augment_hsv(img, np.random.default_rng(5), hgain=0.015, sgain=0.7, vgain=0.4)
    c = A.augment_hsv(img, np.random.default_rng(6), hgain=0.015, sgain=0.7, vgain=0.4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape and a.dtype == np.uint8 and not np.array_equal(a, c)
    np.testing.assert_array_equal(img, copy)
    mixed = A.mixup(np.zeros_like(img), np.full_like(img, 200), np.random.default_rng(0))
    assert 60 < mixed.mean() < 140 and (mixed == mixed[0, 0]).all()


def test_resize_long_side():
    assert A.resize_long_side(np.zeros((30, 60, 3), np.uint8), 32).shape == (16, 32, 3)
    assert A.resize_long_side(np.zeros((10, 5, 3), np.uint8), 40).shape == (40, 20, 3)
