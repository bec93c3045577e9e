"""Box ops with hand-checked numbers: IoU, NMS (class-aware, max_det, conf), letterbox mapping."""

from __future__ import annotations

import pytest
import torch

from raytrain.ops import box_iou, clip_boxes, non_max_suppression, scale_boxes, xywh2xyxy, xyxy2xywh


def _pred(boxes_xyxy: list[list[float]], scores: list[list[float]]) -> torch.Tensor:
    """A (1, 4 + nc, A) eval-mode output from corner boxes and per-class scores, one row per anchor."""
    xywh = xyxy2xywh(torch.tensor(boxes_xyxy, dtype=torch.float32))
    return torch.cat((xywh, torch.tensor(scores, dtype=torch.float32)), dim=1).T[None]


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2], [2, 0, 6, 2]])
    iou = box_iou(a, b)
    expected = torch.tensor([[1 / 7, 0, 1, 0], [2 / 10, 0, 0.5, 1 / 3]])
    assert iou.shape == (2, 4)
    assert torch.allclose(iou, expected)
    # A degenerate (zero-area) pair has IoU 0, not NaN.
    zero = torch.tensor([[1.0, 1, 1, 1]])
    assert box_iou(zero, zero).item() == 0


def test_box_format_round_trip():
    xyxy = torch.tensor([[10.0, 20, 50, 80]])
    assert xyxy2xywh(xyxy).tolist() == [[30.0, 50, 40, 60]]
    assert torch.equal(xywh2xyxy(xyxy2xywh(xyxy)), xyxy)


def test_nms_is_class_aware():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [50, 50, 60, 60]]
    # Anchors 0 and 1 overlap (IoU 9/11 > 0.7) and share class 0: the lower score goes. Anchor 2 overlaps anchor 0
    # just as much but is class 1: it stays. Anchor 3 overlaps nothing.
    scores = [[0.9, 0.0], [0.8, 0.1], [0.1, 0.7], [0.6, 0.0]]
    (out,) = non_max_suppression(_pred(boxes, scores), conf=0.25, iou=0.7)
    assert out.shape == (3, 6)
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out[:, 5].tolist() == [0, 1, 0]
    assert torch.allclose(out[0, :4], torch.tensor([0.0, 0, 10, 10]))


def test_nms_conf_filter_and_max_det():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]
    scores = [[0.5], [0.9], [0.2], [0.7], [0.25]]
    (out,) = non_max_suppression(_pred(boxes, scores), conf=0.25, iou=0.7)
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.5])  # 0.25 is not strictly above conf
    (out,) = non_max_suppression(_pred(boxes, scores), conf=0.0, iou=0.7, max_det=2)
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.7])
    (empty,) = non_max_suppression(_pred(boxes, scores), conf=0.95)
    assert empty.shape == (0, 6)


def test_nms_multi_label_keeps_every_class_above_conf():
    pred = _pred([[0, 0, 10, 10]], [[0.6, 0.4, 0.1]])
    (single,) = non_max_suppression(pred, conf=0.2)
    (multi,) = non_max_suppression(pred, conf=0.2, multi_label=True)
    assert single[:, 5].tolist() == [0]
    assert multi[:, 5].tolist() == [0, 1] and multi[:, 4].tolist() == pytest.approx([0.6, 0.4])


def test_nms_batch_of_images():
    pred = torch.cat((_pred([[0, 0, 10, 10]], [[0.9]]), _pred([[0, 0, 10, 10]], [[0.1]])))
    out = non_max_suppression(pred, conf=0.25)
    assert [o.shape[0] for o in out] == [1, 0]


def test_letterbox_round_trip_hand_numbers():
    # Original 200 x 640 (h, w) letterboxed into 320 x 320: gain 0.5, resized 100 x 320, pad_h = (320 - 100) / 2.
    ori_shape = (200, 640)
    ratio_pad = ((0.5, 0.5), (0.0, 110.0))
    box0 = torch.tensor([[100.0, 40, 300, 180]])
    box_in = box0 * 0.5 + torch.tensor([0.0, 110, 0, 110])  # forward, as the batch contract defines it
    assert box_in.tolist() == [[50.0, 130, 150, 200]]
    assert torch.allclose(scale_boxes(box_in, ratio_pad, ori_shape), box0)


def test_scale_boxes_unequal_gains_and_clipping():
    # A rectangular resize (gain_h != gain_w) with padding on both axes.
    ori_shape, ratio_pad = (100, 200), ((0.4, 0.3), (2.0, 5.0))
    box0 = torch.tensor([[20.0, 10, 180, 90], [0, 0, 200, 100]])
    box_in = box0 * torch.tensor([0.3, 0.4, 0.3, 0.4]) + torch.tensor([2.0, 5, 2, 5])
    assert torch.allclose(scale_boxes(box_in, ratio_pad, ori_shape), box0, atol=1e-5)
    # A box reaching into the padding is clipped to the original image; the input is not modified.
    outside = torch.tensor([[0.0, 0, 70, 50]])
    mapped = scale_boxes(outside, ratio_pad, ori_shape)
    assert torch.allclose(mapped, torch.tensor([[0.0, 0, 200, 100]]))
    assert outside.tolist() == [[0.0, 0, 70, 50]]
    assert clip_boxes(torch.tensor([[-5.0, 3, 250, 120]]), (100, 200)).tolist() == [[0.0, 3, 200, 100]]


def test_scale_boxes_inverts_the_data_letterbox():
    import numpy as np

    from raytrain.data.augment import letterbox

    for h0, w0 in ((200, 640), (333, 517), (640, 90)):
        out, (gain_h, gain_w), (pad_w, pad_h) = letterbox(np.zeros((h0, w0, 3), np.uint8), 320)
        assert out.shape == (320, 320, 3)
        box0 = torch.tensor([[0.1 * w0, 0.2 * h0, 0.7 * w0, 0.9 * h0]], dtype=torch.float64)
        box_in = box0 * torch.tensor([gain_w, gain_h, gain_w, gain_h]) + torch.tensor([pad_w, pad_h, pad_w, pad_h])
        assert box_in.min() >= 0 and box_in.max() <= 320
        mapped = scale_boxes(box_in, ((gain_h, gain_w), (pad_w, pad_h)), (h0, w0))
        assert torch.allclose(mapped, box0, atol=1e-9)
