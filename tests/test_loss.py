"""DetectionLoss on tiny hand-checked inputs, plus gradients, autocast and (optionally) parity with Ultralytics."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F

from raytrain.loss import DetectionLoss, distribution_focal_loss, expected_distances, pad_targets
from raytrain.ops import box_iou


def _random_batch(seed: int, batch: int = 3, nc: int = 4, hw: tuple[int, int] = (64, 96), boxes: int = 20,
                  reg_max: int = 16) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Three-level outputs (strides 8, 16, 32) and targets; the last image has no box."""
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    preds = []
    for s in (8, 16, 32):
        p = torch.randn(batch, 4 * reg_max + nc, h // s, w // s, generator=gen)
        p[:, 4 * reg_max:] -= 3  # class logits near YOLOv8's prior: most anchors confidently background
        preds.append(p)
    wh = torch.rand(boxes, 2, generator=gen) * 0.6 + 0.02
    xy = torch.rand(boxes, 2, generator=gen) * (1 - wh) + wh / 2
    image = torch.randint(0, batch - 1, (boxes, 1), generator=gen).float()
    cls = torch.randint(0, nc, (boxes, 1), generator=gen).float()
    return preds, torch.cat((image, cls, xy, wh), 1)


def test_pad_targets_layout():
    # Rows out of image order; image 1 has no box; image 2 has two (their order is kept).
    targets = torch.tensor([[2, 1, 0.5, 0.5, 0.5, 0.25], [0, 3, 0.25, 0.5, 0.5, 1.0], [2, 0, 0.75, 0.25, 0.5, 0.5]])
    labels, boxes, mask = pad_targets(targets, 3, (32, 64))
    assert mask.tolist() == [[True, False], [False, False], [True, True]]
    assert labels.tolist() == [[3, 0], [0, 0], [1, 0]]
    assert boxes[0, 0].tolist() == [0, 0, 32, 32]  # x 16 +- 16, y 16 +- 16 (pixels)
    assert boxes[2].tolist() == [[16, 12, 48, 20], [32, 0, 64, 16]]
    assert not boxes[~mask].any()
    labels, boxes, mask = pad_targets(targets[:0], 2, (32, 64))
    assert labels.shape == (2, 0) and boxes.shape == (2, 0, 4) and mask.shape == (2, 0)
    with pytest.raises(ValueError, match="batch_idx"):
        pad_targets(targets, 2, (32, 64))  # image index 2 in a batch of 2
    with pytest.raises(ValueError, match="batch_idx"):
        pad_targets(targets - torch.tensor([3.0, 0, 0, 0, 0, 0]), 3, (32, 64))  # negative image index


def test_dfl_hand_values():
    # Probabilities (1, 1, 2, 1) / 5 over 4 bins: -log p = (ln 5, ln 5, ln 2.5, ln 5).
    logits = torch.tensor([0.0, 0, math.log(2), 0]).expand(4, 4)
    target = torch.tensor([2.25, 1.0, 3.5, -1.0])
    expected = [
        0.75 * math.log(2.5) + 0.25 * math.log(5),  # between bins 2 and 3: 1.0896
        math.log(5),  # exactly on bin 1
        0.01 * math.log(2.5) + 0.99 * math.log(5),  # clamped to 3 - 0.01 so that a right bin exists
        math.log(5),  # clamped to 0
    ]
    assert distribution_focal_loss(logits, target).tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(1.089578, abs=1e-6)


def test_expected_distances():
    uniform = torch.zeros(2, 4 * 16)
    assert torch.allclose(expected_distances(uniform, 16), torch.full((2, 4), 7.5))
    peaked = F.one_hot(torch.tensor([0, 3, 9, 15]), 16).float().flatten() * 50
    assert torch.allclose(expected_distances(peaked, 16), torch.tensor([0.0, 3, 9, 15]))


def test_hand_checked_loss():
    # One 2 x 2 level (stride 8, 16 x 16 input), reg_max 4, one class, all logits 0, one box over the whole image.
    # Each side's distance is the mean bin 1.5, so the anchor at grid (0.5, 0.5) predicts [-1, -1, 2, 2] against the
    # box [0, 0, 2, 2]: IoU 4/9, centre distance^2 0.5, enclosing diagonal^2 18, both square: CIoU = 4/9 - 1/36 =
    # 5/12, and the same for every anchor by symmetry. All 4 anchors are candidates with equal metrics, so all are
    # positive with target score 5/12 (best CIoU 5/12): target_scores_sum = 5/3.
    #   cls: BCE(0, t) = ln 2 for any t: 4 ln 2 / (5/3) = 1.6636, x 0.5
    #   box: sum of (1 - 5/12) * 5/12 / (5/3) = 7/12, x 7.5
    #   dfl: uniform logits give -log p = ln 4 for every bin: ln 4, x 1.5
    loss = DetectionLoss(nc=1, strides=(8,), reg_max=4)
    preds = [torch.zeros(1, 4 * 4 + 1, 2, 2, requires_grad=True)]
    targets = torch.tensor([[0, 0, 0.5, 0.5, 1, 1]])
    total, parts = loss(preds, targets, (16, 16))
    expected = [7.5 * 7 / 12, 0.5 * 12 * math.log(2) / 5, 1.5 * math.log(4)]
    assert parts.tolist() == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(sum(expected), rel=1e-5)
    assert total.dtype == parts.dtype == torch.float32 and not parts.requires_grad and total.ndim == 0

    # A second image without boxes only adds 4 background anchors to the cls sum, and the total is x batch size.
    total2, parts2 = loss([torch.zeros(2, 17, 2, 2)], targets, (16, 16))
    expected[1] = 0.5 * 8 * math.log(2) / (5 / 3)
    assert parts2.tolist() == pytest.approx(expected, rel=1e-5)
    assert total2.item() == pytest.approx(2 * sum(expected), rel=1e-5)


def test_empty_batch_has_only_a_background_cls_loss():
    preds, _ = _random_batch(0)
    preds = [p.requires_grad_() for p in preds]
    total, parts = DetectionLoss(nc=4)(preds, torch.zeros(0, 6), (64, 96))
    assert parts[0] == 0 and parts[2] == 0
    cls_logits = torch.cat([p[:, 64:].flatten() for p in preds])
    # Against all-zero targets BCE is softplus(logit); the normaliser is clamped to 1.
    assert parts[1].item() == pytest.approx(0.5 * F.softplus(cls_logits).sum().item(), rel=1e-5)
    assert total.item() == pytest.approx(3 * parts.sum().item(), rel=1e-6)
    total.backward()  # every map still gets a gradient (zero for the box logits): DDP needs all outputs used
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in preds)
    assert all(p.grad[:, :64].abs().sum() == 0 and p.grad[:, 64:].abs().sum() > 0 for p in preds)


def test_total_is_gain_weighted_sum_times_batch_size():
    preds, targets = _random_batch(1)
    _, unit = DetectionLoss(nc=4, box=1, cls=1, dfl=1)(preds, targets, (64, 96))
    total, parts = DetectionLoss(nc=4, box=2.0, cls=3.0, dfl=0.25)(preds, targets, (64, 96))
    assert (unit > 0).all()
    assert torch.allclose(parts, unit * torch.tensor([2.0, 3.0, 0.25]))
    assert total.item() == pytest.approx(3 * parts.sum().item(), rel=1e-6)
    # Defaults are YOLOv8's gains.
    _, default = DetectionLoss(nc=4)(preds, targets, (64, 96))
    assert torch.allclose(default, unit * torch.tensor([7.5, 0.5, 1.5]))


def test_target_row_order_does_not_matter():
    preds, targets = _random_batch(2)
    total, parts = DetectionLoss(nc=4)(preds, targets, (64, 96))
    shuffled = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))]
    total_shuffled, parts_shuffled = DetectionLoss(nc=4)(preds, shuffled, (64, 96))
    assert torch.allclose(parts, parts_shuffled, rtol=1e-5)


def test_gradients_reach_every_output_map():
    preds, targets = _random_batch(3)
    preds = [p.requires_grad_() for p in preds]
    total, _ = DetectionLoss(nc=4)(preds, targets, (64, 96))
    total.backward()
    for p in preds:
        assert torch.isfinite(p.grad).all()
        assert p.grad[:, 64:].abs().sum() > 0  # class logits: every anchor is a positive or a negative
    # Box logits get gradient where there are positives: at least the finest level, where most boxes land.
    assert preds[0].grad[:, :64].abs().sum() > 0


def test_optimising_logits_lowers_the_loss():
    # The soft targets follow the predictions, so single parts may rise for a while (box and dfl weights grow as
    # the scores do); the total falls and the best-scoring anchor ends up predicting the box.
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(1, 4 * 16 + 2, 4, 4) * 0.1)  # one 4 x 4 level, stride 8, two classes
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.5, 0.6]])  # xyxy pixels [4.8, 6.4, 20.8, 25.6] on a 32 x 32 input
    loss = DetectionLoss(nc=2, strides=(8,))
    optimizer = torch.optim.Adam([logits], lr=0.1)
    totals = []
    for _ in range(40):
        total, _ = loss([logits], targets, (32, 32))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.3 * totals[0], totals
    flat = logits.detach().flatten(2)[0].T  # (16 anchors, 66)
    best = flat[:, 64 + 1].argmax()
    assert flat[best, 64 + 1] > flat[:, 64].max() + 1  # class 1 clearly above class 0 (soft targets: not near 1)
    anchor = torch.tensor([best % 4 + 0.5, best // 4 + 0.5])
    ltrb = expected_distances(flat[best, :64], 16)
    box = torch.cat((anchor - ltrb[:2], anchor + ltrb[2:])) * 8
    assert box_iou(box[None], torch.tensor([[4.8, 6.4, 20.8, 25.6]])).item() > 0.8


def test_autocast_computes_in_float32():
    preds, targets = _random_batch(4)
    half = [p.bfloat16() for p in preds]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = DetectionLoss(nc=4)(half, targets, (64, 96))
    reference, reference_parts = DetectionLoss(nc=4)([p.float() for p in half], targets, (64, 96))
    assert total.dtype == parts.dtype == torch.float32
    assert torch.allclose(parts, reference_parts, rtol=1e-5)


def test_rejects_outputs_that_do_not_fit():
    preds, targets = _random_batch(5)
    with pytest.raises(ValueError, match="expected 3 output maps"):
        DetectionLoss(nc=4)(preds[:2], targets, (64, 96))
    with pytest.raises(ValueError, match="nc 3"):
        DetectionLoss(nc=3)(preds, targets, (64, 96))


def test_fits_the_model_and_reaches_every_parameter():
    from raytrain.models import build_model

    model = build_model("yolov8n", nc=3).train()
    loss = DetectionLoss(model.nc, strides=tuple(model.stride.tolist()), reg_max=model.reg_max)
    targets = torch.tensor([[0, 2, 0.5, 0.5, 0.4, 0.6]])
    total, parts = loss(model(torch.rand(1, 3, 64, 64)), targets, (64, 64))
    total.backward()
    assert torch.isfinite(parts).all() and (parts > 0).all()
    # DDP without find_unused_parameters needs a gradient for every trainable parameter, on every step.
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # Validation computes its loss on the same kind of output, from the eval-mode forward.
    with torch.no_grad():
        _, val_parts = loss(model.eval()(torch.rand(1, 3, 64, 64)), targets, (64, 64))
    assert torch.isfinite(val_parts).all() and (val_parts > 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    preds, targets = _random_batch(6)
    cpu_total, cpu_parts = DetectionLoss(nc=4)(preds, targets, (64, 96))
    with torch.autocast("cuda", dtype=torch.float16):
        total, parts = DetectionLoss(nc=4)([p.cuda() for p in preds], targets.cuda(), (64, 96))
    assert total.dtype == torch.float32 and parts.device.type == "cuda"
    assert torch.allclose(parts.cpu(), cpu_parts, rtol=1e-4)


def _ultralytics_loss(nc: int):
    """Ultralytics' v8DetectionLoss for a stand-in model (only what its constructor reads)."""
    from ultralytics.utils.loss import v8DetectionLoss

    head = types.SimpleNamespace(stride=torch.tensor([8.0, 16, 32]), nc=nc, reg_max=16)
    model = torch.nn.Module()
    model.anchor = torch.nn.Parameter(torch.zeros(1))  # the constructor reads the device of the first parameter
    model.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    model.model = [head]
    return v8DetectionLoss(model)  # 8.4 widens boxes under 16 px when picking candidates, as DetectionLoss does


@pytest.mark.parametrize("seed", range(3))
def test_matches_ultralytics(seed):
    pytest.importorskip("ultralytics")
    preds, targets = _random_batch(seed, boxes=60)
    preds = [p.requires_grad_() for p in preds]
    total, parts = DetectionLoss(nc=4)(preds, targets, (64, 96))
    ours_grads = torch.autograd.grad(total, preds)

    criterion = _ultralytics_loss(4)
    targets = targets[targets[:, 0].argsort(stable=True)]  # Ultralytics 8.4 needs rows grouped by image, as collated
    batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:]}
    if hasattr(criterion, "parse_output"):  # 8.4 takes a dict of flattened outputs
        flat = torch.cat([p.flatten(2) for p in preds], 2)
        their_total, their_parts = criterion({"boxes": flat[:, :64], "scores": flat[:, 64:], "feats": preds}, batch)
    else:
        their_total, their_parts = criterion(preds, batch)
    if isinstance(their_parts, dict):
        their_parts = torch.stack(list(their_parts.values()))
    their_grads = torch.autograd.grad(their_total.sum(), preds)
    assert torch.allclose(parts, their_parts, rtol=1e-5)
    assert total.item() == pytest.approx(their_total.sum().item(), rel=1e-5)
    for ours, theirs in zip(ours_grads, their_grads, strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * theirs.abs().max().item())
