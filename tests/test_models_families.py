"""Every registered family against Ultralytics 8.4.190, the reference: parameter counts, layer layout, converted
outputs (raw maps, decoded boxes, YOLO26's NMS-free top-k), the loss of each family (YOLO26 at two points of its
one-to-many schedule) and the assignment with the small-object rule; plus a smoke test per architecture.

Parity tests need the ``ultralytics`` package (installed with ``--no-deps`` by ``.ci/run``) and skip without it;
everything else derives from the registry and runs everywhere.
"""

from __future__ import annotations

import os
import types

import pytest
import torch
from torch import nn

from raytrain.config import ConfigError, make_config
from raytrain.loss import DetectionLoss, EndToEndLoss, build_loss
from raytrain.models import ARCHS, FAMILIES, build_model, check_arch, family_of, list_models
from raytrain.models.convert import infer_arch, model_from_ultralytics
from raytrain.models.head import top_k_detections

# Ultralytics 8.4.190's model summaries at nc=80 (its yolo11.yaml / yolo26.yaml / YOLOv8 docs).
PARAMS_AT_80 = {
    "yolov8n": 3_157_200, "yolov8s": 11_166_560, "yolov8m": 25_902_640, "yolov8l": 43_691_520, "yolov8x": 68_229_648,
    "yolo11n": 2_624_080, "yolo11s": 9_458_752, "yolo11m": 20_114_688, "yolo11l": 25_372_160, "yolo11x": 56_966_176,
    "yolo26n": 2_572_280, "yolo26s": 10_009_784, "yolo26m": 21_896_248, "yolo26l": 26_299_704, "yolo26x": 58_993_368,
}
PARITY_ARCHS = ("yolov8n", "yolo11n", "yolo11m", "yolo26n", "yolo26s")


def test_the_registry_lists_every_family_and_scale():
    assert list(FAMILIES) == ["yolov8", "yolo11", "yolo26"]
    assert set(ARCHS) == set(PARAMS_AT_80) and list_models("yolo26") == [f"yolo26{s}" for s in "nsmlx"]
    assert [FAMILIES[f].detect_index for f in FAMILIES] == [22, 23, 23]
    assert [FAMILIES[f].head.reg_max for f in FAMILIES] == [16, 16, 1]
    assert [FAMILIES[f].end2end for f in FAMILIES] == [False, False, True]
    assert family_of("yolo11s").title == "YOLO11" and check_arch("yolo26n.yaml") == "yolo26n"


def test_unknown_names_fail_with_a_suggestion_before_anything_is_built():
    with pytest.raises(ConfigError, match="Did you mean yolov8n") as e:
        make_config({"model": "yolov8nn"})
    assert "YOLO11 (yolo11n/s/m/l/x)" in str(e.value)
    with pytest.raises(ConfigError, match="yolov9n"):
        make_config({"model": "yolov9n"})
    assert make_config({}).model == "yolo26n"  # Ultralytics 8.4's default


def test_an_unknown_block_is_an_error_not_a_head():
    from raytrain.models.detector import build_layers
    from raytrain.models.spec import Layer

    family = FAMILIES["yolov8"]
    broken = type(family)(**{**family.__dict__, "layers": (*family.layers[:3], Layer(-1, "C9000", 64))})
    with pytest.raises(ValueError, match="layer 3: unknown block 'C9000'"):
        build_layers(broken, "n", 2)


@pytest.mark.parametrize("arch", list(PARAMS_AT_80))
def test_parameter_counts_match_ultralytics(arch):
    with torch.device("meta"):  # counts only: no memory for the x models
        model = build_model(arch, nc=80)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_AT_80[arch]
    assert model.arch == arch and model.family == family_of(arch).name


def test_yolo11_and_yolo26_layers_follow_their_tables():
    from raytrain.models.attention import C2PSA, C3k2
    from raytrain.models.blocks import C3, SPPF, Bottleneck

    v11n, v11m = build_model("yolo11n", 3), build_model("yolo11m", 3)
    assert len(v11n.model) == 24 and isinstance(v11n.model[10], C2PSA) and isinstance(v11n.model[2], C3k2)
    # C3k inner blocks on m/l/x only (the per-scale rule in the row), Bottlenecks (e=0.5, residual) on n/s.
    assert isinstance(v11n.model[2].m[0], Bottleneck) and v11n.model[2].m[0].add and v11n.model[13].m[0].add
    assert isinstance(v11m.model[2].m[0], C3) and isinstance(v11n.model[22].m[0], C3)
    attention = v11n.model[10].m[0].attn
    # yolo11n layer 10: 256 channels, halves of 128 -> 2 heads of 64, key_dim = head_dim / 2
    assert (attention.num_heads, attention.head_dim, attention.key_dim) == (2, 64, 32)
    v26 = build_model("yolo26n", 3)
    sppf = v26.model[9]
    assert isinstance(sppf, SPPF) and sppf.add and sppf.n == 3 and isinstance(sppf.cv1.act, nn.Identity)
    assert not v11n.model[9].add and isinstance(v11n.model[9].cv1.act, nn.SiLU)
    assert isinstance(v26.model[22].m[0][1].attn, nn.Module) and len(v26.model[22].m) == 1  # Bottleneck + PSABlock
    head = v26.head
    assert head.reg_max == 1 and not hasattr(head, "dfl") and head.one_to_one
    assert all(torch.equal(a, b) for a, b in zip(head.cv2.state_dict().values(),
                                                 head.one2one_cv2.state_dict().values(), strict=True))


@pytest.mark.parametrize("arch", [f"{f}n" for f in FAMILIES])
def test_smoke_forward_loss_backward(arch):
    torch.manual_seed(0)
    model = build_model(arch, nc=2)
    raw = model(torch.rand(2, 3, 64, 64))
    maps = raw["one2many"] if isinstance(raw, dict) else raw
    assert [tuple(m.shape) for m in maps] == [(2, 4 * model.reg_max + 2, 64 // s, 64 // s) for s in (8, 16, 32)]
    loss = build_loss(model.spec, 2)
    assert isinstance(loss, EndToEndLoss if model.end2end else DetectionLoss)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 0, 0.3, 0.6, 0.2, 0.2]])
    total, parts = loss.at_epoch(1, 3)(raw, targets, (64, 64))
    total.backward()
    assert torch.isfinite(total) and parts.shape == (3,)
    assert loss.names[2] == ("l1_loss" if arch == "yolo26n" else "dfl_loss")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)  # every trainable tensor gets a gradient (DDP needs it)
    model.eval()
    with torch.no_grad():
        dets = model.detect(model(torch.rand(1, 3, 64, 64)), conf=0.0, max_det=50)
    assert dets[0].shape[1] == 6 and len(dets[0]) <= 50


def test_yolo26_one_to_many_weight_follows_the_epoch():
    loss = build_loss(FAMILIES["yolo26"], 3)
    weights = [loss.at_epoch(e, 10).o2m for e in (1, 4, 10)]
    assert weights == pytest.approx([0.8, 0.8 - 0.7 * 3 / 9, 0.1])  # linear from 0.8 to 0.1 over the epochs
    assert loss.at_epoch(1, 1).o2m == pytest.approx(0.8)  # a one-epoch run
    with pytest.raises(ValueError, match="one-to-one head"):
        loss([torch.zeros(1, 7, 8, 8)] * 3, torch.zeros(0, 6), (64, 64))


def test_nms_false_needs_a_one_to_one_head():
    model = build_model("yolo11n", 2).eval()
    with torch.no_grad(), pytest.raises(ConfigError, match="only YOLO26"):
        model.detect(model(torch.rand(1, 3, 64, 64)), nms=False)


def test_top_k_hand_checked():
    # Two anchors, three classes: anchor 0 scores (0.9, 0.8, 0.1), anchor 1 (0.2, 0.3, 0.7).
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
    decoded = torch.cat((boxes, scores), 1).t()[None]  # (1, 7, 2)
    top = top_k_detections(decoded, max_det=3)[0]
    # Both anchors kept (k=min(3, 2)), then the best 2 (anchor, class) pairs: (0, 0) 0.9 and (0, 1) 0.8.
    assert top.tolist() == [[0, 0, 10, 10, pytest.approx(0.9), 0], [0, 0, 10, 10, pytest.approx(0.8), 1]]


def test_converter_recognises_every_architecture_from_its_keys():
    for arch in ("yolov8m", "yolo11m", "yolo11l", "yolo26m", "yolo26l", "yolo26x"):  # m and l stems are as wide
        with torch.device("meta"):
            state = build_model(arch, nc=5).state_dict()
        assert infer_arch(state) == (arch, 5)


# ---------------------------------------------------------------------------------------------- Ultralytics parity
@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory):
    """Ultralytics 8.4.190's model and loss modules, with its settings file kept out of the home and no network."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics_config")))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    from ultralytics.nn import tasks
    from ultralytics.utils import loss

    return types.SimpleNamespace(tasks=tasks, loss=loss)


def _reference(ultralytics, arch: str, nc: int) -> nn.Module:
    torch.manual_seed(0)
    model = ultralytics.tasks.DetectionModel(f"{arch}.yaml", nc=nc, verbose=False)
    with torch.no_grad():  # non-trivial BN statistics and biases, so a wrong mapping or eps shows
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("arch", PARITY_ARCHS)
def test_converted_outputs_equal_ultralytics(ultralytics, arch):
    reference = _reference(ultralytics, arch, 5).eval()
    ours = model_from_ultralytics(reference.state_dict()).eval()
    assert ours.arch == arch
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected, raw = reference(x)
        got_raw = ours(x)
        got = ours.decode(got_raw)
    theirs = raw.get("one2many", raw)
    maps = got_raw["one2many"] if isinstance(got_raw, dict) else got_raw
    flat = torch.cat([m.flatten(2) for m in maps], 2)
    assert torch.allclose(flat, torch.cat((theirs["boxes"], theirs["scores"]), 1), rtol=1e-4, atol=1e-4)
    assert got.shape == expected.shape == (2, 4 + 5, 8 * 12 + 4 * 6 + 2 * 3)
    scale = expected.abs().amax(dim=2, keepdim=True).clamp(min=1)  # pixels up to ~128, scores in [0, 1]
    assert ((got - expected).abs() / scale).max().item() <= 1e-4


@pytest.mark.parametrize("arch", ["yolo26n", "yolo26s"])
def test_nms_free_top_k_equals_ultralytics(ultralytics, arch):
    reference = _reference(ultralytics, arch, 5).eval()
    ours = model_from_ultralytics(reference.state_dict()).eval()
    reference.end2end = True  # Ultralytics' nms=False: the one-to-one head, (B, max_det, 6)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected, _ = reference(x)
        got = torch.stack(ours.detect(ours(x), conf=-1.0, max_det=300, nms=False))
    assert expected.shape == got.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 6)  # k = min(300, anchors)
    assert torch.allclose(got[..., 4:], expected[..., 4:], atol=1e-5)  # scores and classes, in order
    assert torch.allclose(got[..., :4], expected[..., :4], rtol=1e-4, atol=1e-3)  # xyxy input pixels


def _loss_batch() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    # Rows grouped by image, as collated; the third box is 4 x 5 px: widened to 16 px when picking candidates.
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [0, 2, 0.2, 0.3, 0.1, 0.1], [1, 0, 0.7, 0.6, 0.04, 0.08],
                            [1, 2, 0.4, 0.4, 0.5, 0.5]])
    return targets, {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:]}


def _loss_pair(ultralytics, arch: str, epoch: int, epochs: int = 10):
    """Ultralytics' model with its criterion at ``epoch`` of ``epochs``, our converted twin with our loss, and one
    batch: ``(reference, criterion, ours, loss, x, targets, batch)``."""
    reference = _reference(ultralytics, arch, 3).train()
    reference.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5, epochs=epochs)
    ours = model_from_ultralytics(reference.state_dict()).train()
    family = family_of(arch)
    if family.end2end:
        criterion = ultralytics.loss.E2ELoss(reference)
        criterion.updates = epoch - 2
        criterion.update()  # what Ultralytics' trainer has done by the start of this epoch
    else:
        criterion = ultralytics.loss.v8DetectionLoss(reference)
    targets, batch = _loss_batch()
    loss = build_loss(family, 3).at_epoch(epoch, epochs)
    return reference, criterion, ours, loss, torch.rand(2, 3, 64, 96), targets, batch


@pytest.mark.parametrize(("arch", "epoch"), [("yolov8n", 1), ("yolo11n", 1), ("yolo26n", 1), ("yolo26n", 7)])
def test_loss_equals_ultralytics(ultralytics, arch, epoch):
    reference, criterion, ours, loss, x, targets, batch = _loss_pair(ultralytics, arch, epoch)
    their_total, their_items = criterion(reference(x), batch)
    total, parts = loss(ours(x), targets, (64, 96))
    assert total.item() == pytest.approx(their_total.sum().item(), rel=1e-4)
    assert parts.tolist() == pytest.approx([float(v) for v in their_items.values()], rel=1e-4)
    assert tuple(k.split("_")[0] for k in their_items) == tuple(n.split("_")[0] for n in loss.names)


@pytest.mark.parametrize("arch", ["yolov8n", "yolo26n"])
def test_loss_gradients_equal_ultralytics(ultralytics, arch):
    """Equal losses are not enough: what trains is the gradient (a detach on one side only, say of the one-to-one
    branch's features, would leave the loss equal and the backbone's gradient not). Every parameter's gradient of one
    batch equals Ultralytics', to float32 rounding, wherever it is not itself rounding noise."""
    reference, criterion, ours, loss, x, targets, batch = _loss_pair(ultralytics, arch, 1)
    criterion(reference(x), batch)[0].sum().backward()
    loss(ours(x), targets, (64, 96))[0].backward()
    theirs = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    mine = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert set(mine) == set(theirs) and len(mine) > 100
    largest = max(g.abs().max().item() for g in theirs.values())
    compared = 0
    for name, g in theirs.items():
        scale = g.abs().max().item()
        if scale > 1e-6 * largest:  # below that, both sides are float32 noise around 0 (BN biases before a BN)
            assert (mine[name] - g).abs().max().item() <= 1e-4 * scale, name
            compared += 1
    assert compared > 0.8 * len(theirs)


def test_assignment_with_small_boxes_equals_ultralytics(ultralytics):
    from ultralytics.utils.tal import TaskAlignedAssigner

    from raytrain.assign import task_aligned_assign

    gen = torch.Generator().manual_seed(3)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    anchors = (torch.stack((xs, ys), -1).view(-1, 2) + 0.5) * 8  # 64 anchors of stride 8 on a 64 x 64 image
    xy = torch.rand(2, 6, 2, generator=gen) * 50
    gt = torch.cat((xy, xy + 2 + torch.rand(2, 6, 2, generator=gen) * 20), -1)  # many sides under 16 px
    pred_xy = anchors + torch.randn(2, 64, 2, generator=gen) * 3
    pred = torch.cat((pred_xy - 6, pred_xy + 6), -1)
    scores = torch.rand(2, 64, 3, generator=gen)
    labels = torch.randint(0, 3, (2, 6), generator=gen)
    mask = torch.arange(6) < torch.tensor([[6], [4]])
    for topk, topk2 in ((10, None), (7, 1)):
        ours = task_aligned_assign(scores, pred, anchors, labels, gt * mask[..., None], mask, topk=topk, topk2=topk2)
        ref = TaskAlignedAssigner(topk=topk, num_classes=3, alpha=0.5, beta=6.0, stride=[8, 16, 32], topk2=topk2)
        _, bboxes, target_scores, fg, _ = ref(scores, pred, anchors, labels[..., None].float(),
                                              gt * mask[..., None], mask[..., None].float())
        assert torch.equal(ours.fg_mask, fg) and ours.fg_mask.sum() > 0
        assert torch.allclose(ours.scores, target_scores, atol=1e-6)
        assert torch.allclose(ours.bboxes[fg], bboxes[fg])
    # Without the 16 px rule fewer anchors would be candidates: the rule is what makes the two agree.
    plain = task_aligned_assign(scores, pred, anchors, labels, gt * mask[..., None], mask, min_box_side=0.0)
    assert plain.fg_mask.sum() < ours.fg_mask.sum() or not torch.equal(plain.fg_mask, fg)
