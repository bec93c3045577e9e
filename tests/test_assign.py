"""Task-aligned assigner and CIoU on tiny hand-checked cases (pixels, ``xyxy`` boxes)."""

from __future__ import annotations

import math

import pytest
import torch

from raytrain.assign import bbox_ciou, candidates_in_gts, task_aligned_assign

GT = [0.0, 0, 24, 16]  # 24 x 16 box, centre (12, 8), aspect 3:2
# A 4 x 2 grid of stride-8 anchor centres, row-major: x = 4, 12, 20, 28 at y = 4, then the same at y = 12.
ANCHORS = torch.tensor([[4.0, 4], [12, 4], [20, 4], [28, 4], [4, 12], [12, 12], [20, 12], [28, 12]])


def test_ciou_hand_values():
    boxes1 = torch.tensor([GT, GT, GT, [0, 0, 2, 2], [0, 0, 2, 2]])
    boxes2 = torch.tensor([
        GT,                   # identical: 1
        [8, 0, 32, 16],       # same size shifted by 8: IoU 256/512, centre dist^2 64, enclosing diag^2 32^2+16^2
        [-3, -2, 27, 18],     # same centre and aspect, 1.25x: IoU 384/600; enclosing = this box, no centre offset
        [0, 0, 4, 2],         # square vs 2:1 (aspect term), IoU 4/8, centre dist^2 1, enclosing diag^2 20
        [3, 3, 4, 4],         # disjoint: IoU 0, centre dist^2 2 * 2.5^2 = 12.5, enclosing diag^2 32
    ])
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2  # 0.0419565
    expected = [1.0, 0.5 - 64 / 1280, 0.64, 0.5 - 1 / 20 - v * v / (1 - 0.5 + v), -12.5 / 32]
    assert bbox_ciou(boxes1, boxes2).tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[3] == pytest.approx(0.4467519, abs=1e-7)
    # Symmetric, and broadcasting gives the pairwise matrix.
    assert torch.allclose(bbox_ciou(boxes2, boxes1), bbox_ciou(boxes1, boxes2))
    pairwise = bbox_ciou(boxes1[:, None], boxes2[None])
    assert pairwise.shape == (5, 5)
    assert torch.allclose(pairwise.diagonal(), bbox_ciou(boxes1, boxes2))


def test_ciou_loss_matches_torchvision_values_and_gradients():
    complete_box_iou_loss = pytest.importorskip("torchvision.ops").complete_box_iou_loss
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen, dtype=torch.float64) * 50
    boxes1 = torch.cat((xy, xy + 1 + torch.rand(200, 2, generator=gen, dtype=torch.float64) * 30), 1)
    xy = xy + torch.randn(200, 2, generator=gen, dtype=torch.float64) * 10
    boxes2 = torch.cat((xy, xy + 1 + torch.rand(200, 2, generator=gen, dtype=torch.float64) * 30), 1)
    ours_in, ref_in = boxes1.clone().requires_grad_(), boxes1.clone().requires_grad_()
    ours = 1 - bbox_ciou(ours_in, boxes2)
    ref = complete_box_iou_loss(ref_in, boxes2, reduction="none")
    assert (ours < 1).any() and (ours > 1).any()  # overlapping and disjoint pairs both present
    assert torch.allclose(ours, ref, atol=1e-6)
    ours.sum().backward()
    ref.sum().backward()
    assert torch.allclose(ours_in.grad, ref_in.grad, atol=1e-6)


def test_candidates_are_strictly_inside():
    gt = torch.tensor([[[0.0, 0, 24, 16], [4, 4, 12, 12]]])  # the second box has anchor (4, 4) on its corner
    inside = candidates_in_gts(ANCHORS, gt)
    assert inside.shape == (1, 2, 8)
    assert inside[0, 0].tolist() == [True, True, True, False, True, True, True, False]
    assert not inside[0, 1].any()  # (4, 4), (12, 4), (4, 12), (12, 12) all lie on its edges


def _one_gt_case() -> dict[str, torch.Tensor]:
    """One class-1 box and 8 anchors; per-anchor predictions chosen so CIoU and metrics are easy by hand."""
    shifted, scaled_down, scaled_up, far = [8, 0, 32, 16], [3, 2, 21, 14], [-3, -2, 27, 18], [100, 100, 124, 116]
    boxes = [scaled_up, scaled_down, shifted, GT, scaled_up, far, GT, GT]
    class1 = [1.0, 0.64, 1.0, 1.0, 0.25, 1.0, 1e-4, 1.0]
    scores = torch.stack((torch.full((8,), 0.5), torch.tensor(class1)), dim=1)
    return dict(pd_scores=scores[None], pd_bboxes=torch.tensor(boxes, dtype=torch.float32)[None],
                anchor_points=ANCHORS, gt_labels=torch.tensor([[1]]), gt_bboxes=torch.tensor([[GT]]),
                mask_gt=torch.tensor([[True]]))


def test_one_gt_hand_checked_assignment():
    # Candidates (centre strictly inside [0, 24] x [0, 16]): anchors 0, 1, 2, 4, 5, 6; anchors 3 and 7 (x = 28) are
    # outside even though their predictions are perfect. Metric = score^0.5 * CIoU^6:
    #   a0: 1 * 0.64^6 = 0.0687   a1: 0.8 * 0.5625^6 = 0.0253   a2: 1 * 0.45^6 = 0.0083
    #   a4: 0.5 * 0.64^6 = 0.0344   a5: CIoU < 0 -> 0   a6: 0.01 * 1^6 = 0.01 (perfect box, hopeless score)
    # Top 3: a0, a4, a1. Best metric 0.64^6, best CIoU among positives 0.64, so targets = metric / 0.64^6 * 0.64.
    out = task_aligned_assign(**_one_gt_case(), topk=3)
    assert out.fg_mask[0].tolist() == [True, True, False, False, True, False, False, False]
    expected = torch.zeros(8, 2)
    expected[[0, 4, 1], 1] = torch.tensor([0.64, 0.5 * 0.64, 0.8 * (0.5625 / 0.64) ** 6 * 0.64])  # a1: 0.2360
    assert torch.allclose(out.scores[0], expected, atol=1e-6)
    assert out.labels[0, out.fg_mask[0]].tolist() == [1, 1, 1]
    assert torch.equal(out.bboxes[0, out.fg_mask[0]], torch.tensor([GT] * 3))
    assert out.gt_idx[0].tolist() == [0] * 8

    # With the default top-10, every candidate with a positive metric is positive, and so is a5 (metric 0): top-k
    # runs over all anchors, as in YOLOv8, and a5 is a candidate. Its target score is 0. Now a6 (CIoU 1) is positive,
    # so the box's best CIoU is 1: targets = metric / 0.64^6, e.g. a0 -> 1, a6 -> 0.01 / 0.64^6 = 0.1455.
    out = task_aligned_assign(**_one_gt_case())
    assert out.fg_mask[0].tolist() == [True, True, True, False, True, True, True, False]
    assert out.scores[0, 5].tolist() == [0, 0]
    assert out.scores[0, [0, 6], 1].tolist() == pytest.approx([1.0, 0.01 / 0.64**6], rel=1e-5)


def test_padding_rows_and_images_without_boxes_are_ignored():
    case = _one_gt_case()
    # Image 1 has no boxes: its only row is padding, filled with a box that would otherwise cover every anchor.
    batch = dict(pd_scores=case["pd_scores"].repeat(2, 1, 1), pd_bboxes=case["pd_bboxes"].repeat(2, 1, 1),
                 anchor_points=ANCHORS, gt_labels=torch.tensor([[1], [0]]),
                 gt_bboxes=torch.tensor([[GT], [[0.0, 0, 40, 40]]]), mask_gt=torch.tensor([[True], [False]]))
    out = task_aligned_assign(**batch, topk=3)
    single = task_aligned_assign(**case, topk=3)
    assert torch.equal(out.fg_mask[0], single.fg_mask[0]) and torch.equal(out.scores[0], single.scores[0])
    assert not out.fg_mask[1].any() and not out.scores[1].any()


def test_batch_without_any_box():
    case = _one_gt_case()
    out = task_aligned_assign(case["pd_scores"], case["pd_bboxes"], ANCHORS, torch.zeros(1, 0, dtype=torch.long),
                              torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    assert out.fg_mask.shape == (1, 8) and not out.fg_mask.any()
    assert out.scores.shape == (1, 8, 2) and not out.scores.any()
    assert out.bboxes.shape == (1, 8, 4) and out.labels.shape == (1, 8)


def test_anchor_inside_two_boxes_goes_to_the_higher_ciou():
    # Five anchors on a row (x = 4 .. 36, y = 4); box A [0, 24] covers x = 4, 12, 20 (class 0), box B [8, 40]
    # covers x = 12, 20, 28, 36 (class 1). Anchors 0 and 1 predict exactly A, anchors 2-4 exactly B, all scores 0.5.
    # With top-4 both boxes take anchors 1 and 2: anchor 1 has CIoU 1 with A (and ~0.31 with B), so it stays with
    # A; anchor 2 the other way round. Every positive then has the best metric and CIoU 1 of its box: target 1.
    box_a, box_b = [0.0, 0, 24, 8], [8.0, 0, 40, 8]
    anchors = torch.tensor([[4.0, 4], [12, 4], [20, 4], [28, 4], [36, 4]])
    kwargs = dict(pd_scores=torch.full((1, 5, 2), 0.5), pd_bboxes=torch.tensor([[box_a] * 2 + [box_b] * 3]),
                  anchor_points=anchors, gt_labels=torch.tensor([[0, 1]]), gt_bboxes=torch.tensor([[box_a, box_b]]),
                  mask_gt=torch.tensor([[True, True]]))
    assert 0.3 < bbox_ciou(torch.tensor(box_a), torch.tensor(box_b)).item() < 0.32
    out = task_aligned_assign(**kwargs, topk=4)
    assert out.fg_mask[0].all()
    assert out.gt_idx[0].tolist() == [0, 0, 1, 1, 1]
    assert out.labels[0].tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(out.scores[0], torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1], [0, 1]]), atol=1e-6)
    assert torch.equal(out.bboxes[0], torch.tensor([box_a] * 2 + [box_b] * 3))
    # Box order does not matter.
    swapped = {**kwargs, "gt_labels": torch.tensor([[1, 0]]), "gt_bboxes": torch.tensor([[box_b, box_a]])}
    out_swapped = task_aligned_assign(**swapped, topk=4)
    assert out_swapped.gt_idx[0].tolist() == [1, 1, 0, 0, 0]
    assert torch.equal(out_swapped.scores, out.scores)


def test_many_boxes_each_anchor_gets_at_most_one():
    gen = torch.Generator().manual_seed(1)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    anchors = (torch.stack((xs, ys), -1).view(-1, 2) + 0.5) * 8  # 64 anchors on a 64 x 64 image
    xy = torch.rand(2, 30, 2, generator=gen) * 40
    gt = torch.cat((xy, xy + 8 + torch.rand(2, 30, 2, generator=gen) * 16), -1)
    pred_xy = anchors + torch.randn(2, 64, 2, generator=gen) * 4
    pred = torch.cat((pred_xy - 10, pred_xy + 10), -1)
    mask = torch.arange(30) < torch.tensor([[30], [17]])
    out = task_aligned_assign(torch.rand(2, 64, 3, generator=gen), pred, anchors,
                              torch.randint(0, 3, (2, 30), generator=gen), gt, mask)
    assert out.fg_mask.any(1).all()
    assert (out.scores > 0).sum(-1).le(1).all()  # one class per anchor
    assert (out.scores[~out.fg_mask] == 0).all() and out.scores.max() <= 1
    assert (out.gt_idx[1][out.fg_mask[1]] < 17).all()  # padding rows never win
    inside = candidates_in_gts(anchors, gt, min_side=16.0)  # (2, 30, 64): boxes widened to 16 px, as assigned
    assert inside.gather(1, out.gt_idx[:, None]).squeeze(1)[out.fg_mask].all()  # positives lie in their box
    counts = torch.zeros(2, 30, dtype=torch.long).scatter_add_(1, out.gt_idx, out.fg_mask.long())
    assert counts.max() <= 10  # top-k per box


def test_more_topk_than_anchors():
    out = task_aligned_assign(**_one_gt_case(), topk=100)
    assert out.fg_mask[0].tolist() == [True, True, True, False, True, True, True, False]
