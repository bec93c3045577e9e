"""The YOLOv8 detector in detail: Ultralytics layer layout, raw-map outputs, decoding, fuse (every family's counts and
parity with Ultralytics: test_models_families.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from raytrain.config import ConfigError
from raytrain.models import DetectionModel, bbox2dist, build_model, dist2bbox, make_anchors
from raytrain.models.blocks import SPPF, C2f, Concat, Conv
from raytrain.models.head import DFL, Detect, decode_predictions, expected_distances
from raytrain.models.spec import HeadSpec

# Ultralytics' reported parameter counts for the 80-class models (YOLOv8 README / model summaries).
PARAMS_AT_80 = {"yolov8n": 3_157_200, "yolov8s": 11_166_560, "yolov8m": 25_902_640, "yolov8l": 43_691_520,
                "yolov8x": 68_229_648}


@pytest.fixture(scope="module")
def nano() -> DetectionModel:
    torch.manual_seed(0)
    return build_model("yolov8n", nc=3)


@pytest.mark.parametrize("arch", list(PARAMS_AT_80))
def test_parameter_counts_match_ultralytics(arch):
    model = build_model(arch, nc=80)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_AT_80[arch]
    # The DFL projection is the only frozen parameter (16 weights), as in Ultralytics.
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 16


def test_layer_list_and_keys_follow_ultralytics(nano):
    kinds = [type(m) for m in nano.model]
    assert len(kinds) == 23
    assert kinds[:10] == [Conv, Conv, C2f, Conv, C2f, Conv, C2f, Conv, C2f, SPPF]
    assert kinds[10:13] == [nn.Upsample, Concat, C2f] and kinds[16:18] == [Conv, Concat] and kinds[22] is Detect
    keys = nano.state_dict().keys()
    assert len(keys) == 355
    for key in ("model.0.conv.weight", "model.0.bn.running_var", "model.2.m.0.cv1.conv.weight",
                "model.9.cv2.conv.weight", "model.22.cv2.0.0.conv.weight", "model.22.cv3.2.2.bias",
                "model.22.dfl.conv.weight"):
        assert key in keys
    assert all(k.startswith("model.") for k in keys)  # stride is an attribute, not a buffer
    # yolov8n: width 0.25 -> stem 16 filters; depth 0.33 -> C2f repeats 1, 2, 2, 1.
    assert nano.model[0].conv.weight.shape == (16, 3, 3, 3)
    assert [len(nano.model[i].m) for i in (2, 4, 6, 8)] == [1, 2, 2, 1]
    assert nano.model[2].m[0].add and not nano.model[12].m[0].add  # residuals in the backbone only
    assert nano.arch == "yolov8n" and nano.nc == 3 and nano.reg_max == 16
    assert nano.stride.tolist() == [8.0, 16.0, 32.0]


def test_batchnorm_settings_are_yolov8s(nano):
    bns = [m for m in nano.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.eps == 1e-3 and bn.momentum == 0.03 for bn in bns)


@pytest.mark.parametrize("size", [64, 128])
def test_output_shapes_train_and_eval(nano, size):
    x = torch.rand(2, 3, size, size + 32)
    map_shapes = [(2, 64 + 3, size // s, (size + 32) // s) for s in (8, 16, 32)]
    for training in (True, False):  # the same kind of output in both modes: raw maps
        nano.train(training)
        with torch.no_grad():
            outs = nano(x)
        assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == map_shapes
    decoded = nano.decode(outs)
    anchors = sum((size // s) * ((size + 32) // s) for s in (8, 16, 32))
    assert decoded.shape == (2, 4 + 3, anchors)
    scores = decoded[:, 4:]
    assert scores.min() >= 0 and scores.max() <= 1
    nano.train()


def test_class_count_comes_from_the_argument():
    model = build_model("yolov8n", nc=7)
    assert model.model[22].cv3[0][2].out_channels == 7 and len(model.names) == 7
    assert model(torch.rand(1, 3, 64, 64))[0].shape[1] == 64 + 7


def test_bad_names_and_class_counts_are_clear_errors():
    with pytest.raises(ConfigError, match="Did you mean yolov8n"):
        build_model("yolov8nn")
    with pytest.raises(ConfigError, match="nc=0"):
        build_model("yolov8n", nc=0)
    assert build_model("yolov8n.yaml", nc=1).arch == "yolov8n"


def test_head_bias_initialisation():
    model = build_model("yolov8s", nc=80)
    head = model.model[22]
    for level, stride in enumerate((8, 16, 32)):
        assert torch.all(head.cv2[level][2].bias == 2.0)  # Ultralytics 8.4's box prior
        expected = math.log(5 / 80 / (640 / stride) ** 2)  # -11.537 at stride 8, -8.764 at stride 32
        assert torch.allclose(head.cv3[level][2].bias, torch.full((80,), expected))
    assert head.cv3[0][2].bias[0].item() == pytest.approx(-11.5366, abs=1e-4)
    assert head.cv3[2][2].bias[0].item() == pytest.approx(-8.7640, abs=1e-4)


def test_make_anchors_hand_checked():
    feats = [torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 1, 1)]
    points, strides = make_anchors(feats, (8, 16))
    assert points.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    assert strides.squeeze(1).tolist() == [8.0] * 6 + [16.0]
    points0, _ = make_anchors(feats, (8, 16), offset=0.0)
    assert points0[4].tolist() == [1.0, 1.0]


def test_dist2bbox_and_bbox2dist_hand_checked():
    point = torch.tensor([[10.0, 20.0]])
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert dist2bbox(ltrb, point, xywh=False).tolist() == [[9.0, 18.0, 13.0, 24.0]]
    assert dist2bbox(ltrb, point, xywh=True).tolist() == [[11.0, 21.0, 4.0, 6.0]]
    assert torch.equal(bbox2dist(point, torch.tensor([[9.0, 18.0, 13.0, 24.0]]), 15), ltrb)
    # Channel-first layout, as the head uses it: (B, 4, A) distances with (1, 2, A) points.
    assert dist2bbox(ltrb.t()[None], point.t()[None], xywh=True, dim=1)[0, :, 0].tolist() == [11.0, 21.0, 4.0, 6.0]
    # Targets are clamped into [0, reg_max - 0.01] so they stay inside the last DFL bin pair.
    far = bbox2dist(point, torch.tensor([[-100.0, 30.0, 40.0, 50.0]]), 15)
    assert far.tolist() == [[pytest.approx(14.99), 0.0, pytest.approx(14.99), pytest.approx(14.99)]]


def test_dfl_takes_the_expected_bin():
    logits = torch.full((1, 4 * 16), -1e4)
    for side, bin_ in enumerate((0, 3, 7, 15)):
        logits[0, side * 16 + bin_] = 1e4
    assert expected_distances(logits, 16)[0].tolist() == [0.0, 3.0, 7.0, 15.0]
    half = torch.full((1, 64), -1e4)
    half[0, [2, 3, 16, 17, 32, 33, 48, 49]] = 0.0  # equal mass on bins 2 and 3 (and 0, 1 for the others)
    assert expected_distances(half, 16)[0].tolist() == [2.5, 0.5, 0.5, 0.5]
    # reg_max=1 (YOLO26): the four values are the distances themselves, no softmax.
    assert expected_distances(torch.tensor([[1.0, 2.5, -0.5, 3.0]]), 1)[0].tolist() == [1.0, 2.5, -0.5, 3.0]
    # The module holds Ultralytics' fixed projection 0..15 (for key-for-key conversion); nothing reads it.
    assert DFL(16).conv.weight.flatten().tolist() == list(range(16))


def test_head_decode_hand_checked():
    head = Detect(nc=2, ch=(8, 8, 8), strides=(8, 16, 32), spec=HeadSpec(reg_max=16))
    sizes = [(2, 2), (1, 1), (1, 1)]  # a 16 x 16 input: strides 8, 16, 32 (the last two levels are 1 x 1)
    outs = [torch.full((1, 64 + 2, h, w), -1e4) for h, w in sizes]
    # Level 0, cell (row 1, col 0), anchor (0.5, 1.5): distances l, t, r, b = 0, 1, 2, 0.5 grid units.
    for side, bins in enumerate(((0,), (1,), (2,), (0, 1))):
        for b in bins:
            outs[0][0, side * 16 + b, 1, 0] = 0.0
    outs[0][0, 64:, 1, 0] = torch.tensor([0.0, 2.0])  # class logits
    decoded = decode_predictions(outs, head.strides, head.reg_max)
    assert decoded.shape == (1, 6, 4 + 1 + 1)
    box = decoded[0, :, 2]  # anchors are row-major: cell (1, 0) is the third
    # xyxy in grid units: (0.5, 0.5, 2.5, 2.0) -> xywh (1.5, 1.25, 2, 1.5) -> times stride 8.
    assert box[:4].tolist() == pytest.approx([12.0, 10.0, 16.0, 12.0])
    assert box[4:].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2.0))])


def test_decode_is_a_pure_step_of_the_maps(nano):
    """``model.decode`` depends on the maps alone: not on the module's mode, not on an earlier call's shapes."""
    nano.eval()
    with torch.no_grad():
        small, large = nano(torch.rand(1, 3, 64, 96)), nano(torch.rand(1, 3, 128, 64))
    first = nano.decode(small)
    nano.decode(large)  # another input size in between (anchors are not cached on the model)
    nano.train()
    assert torch.equal(nano.decode(small), first)
    assert torch.equal(decode_predictions(small, (8, 16, 32), 16), first)
    # Anchor (row 0, col 0) of level 0 sits at input pixel (4, 4): its box centre is at most reg_max - 1 = 15 grid
    # units (x 8 pixels) from it on each side.
    centre = first[0, :2, 0]
    assert ((centre - 4).abs() <= 15 * 8).all() and first.shape == (1, 4 + 3, 8 * 12 + 4 * 6 + 2 * 3)


def test_fuse_gives_the_same_output():
    torch.manual_seed(1)
    model = build_model("yolov8n", nc=4)
    with torch.no_grad():  # non-trivial BN statistics, otherwise folding is nearly the identity
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    model.eval()
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        before = model.decode(model(x))
        model.fuse()
        after = model.decode(model(x))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max().item() < 1e-3  # pixel boxes up to ~100 and scores
    assert torch.allclose(before[:, 4:], after[:, 4:], atol=1e-5)


def test_public_api_and_copies():
    import copy

    import raytrain

    model = raytrain.build_model("yolov8n", nc=2)  # lazily mapped to raytrain.models
    assert isinstance(model, DetectionModel) and raytrain.load_model.__module__ == "raytrain.models.checkpoint"
    ema = copy.deepcopy(model).eval()  # what an EMA does
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ema(x), model.eval()(x), strict=True))
        assert torch.equal(ema.decode(ema(x)), model.decode(model(x)))
