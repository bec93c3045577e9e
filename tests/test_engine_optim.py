"""The optimizer side of the engine (:mod:`raytrain.engine.optim`, the table in :mod:`raytrain.optimizers`):
8.4's auto rule, parameter groups, accumulation and weight-decay scaling, warmup and the LR/momentum schedule, the
time= re-plan, frozen layers. Hand-checked numbers, no Ray."""

from __future__ import annotations

import pytest
from model_helpers import Tiny
from torch import nn

from raytrain.config import ConfigError
from raytrain.engine import optim
from raytrain.optimizers import OPTIMIZERS, OptimizerChoice, choose_optimizer


def test_auto_optimizer_follows_ultralytics_84_rule():
    short = choose_optimizer("auto", lr0=0.01, momentum=0.937, warmup_bias_lr=0.1, nc=3, iterations=500)
    assert (short.name, short.lr0, short.momentum, short.warmup_bias_lr) == ("AdamW", 0.001429, 0.9, 0.0)
    assert "nc=3" in short.reason and short.requested == "auto" and short.iterations == 500
    assert choose_optimizer("auto", lr0=0.01, momentum=0.937, warmup_bias_lr=0.1, nc=80,
                            iterations=10_000).lr0 == round(0.01 / 84, 6)
    long = choose_optimizer("auto", lr0=0.02, momentum=0.937, warmup_bias_lr=0.1, nc=80, iterations=10_001)
    assert (long.name, long.lr0, long.momentum, long.warmup_bias_lr) == ("MuSGD", 0.01, 0.9, 0.0)  # 8.4: bias lr 0
    kept = choose_optimizer("Adam", lr0=0.003, momentum=0.95, warmup_bias_lr=0.1, nc=3, iterations=1)
    assert (kept.name, kept.lr0, kept.momentum, kept.warmup_bias_lr) == ("Adam", 0.003, 0.95, 0.1)
    assert OptimizerChoice.from_dict(long.to_dict()) == long


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "MuSGD"])
def test_three_parameter_groups(name):
    model = Tiny()
    model.conv.weight.requires_grad_(False)  # frozen parameters are left out
    opt = optim.build_optimizer(model, name, momentum=0.9, weight_decay=5e-4)
    groups = opt.param_groups
    assert [g["name"] for g in groups] == ["weight", "norm", "bias"]
    assert [len(g["params"]) for g in groups] == [1, 1, 2]  # head.weight | bn.weight | bn.bias, head.bias
    assert groups[0]["params"][0] is model.head.weight and groups[1]["params"][0] is model.bn.weight
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 0.0]
    assert all(g["lr"] == 0.0 and g["lr_scale"] == 1.0 and "initial_lr" not in g for g in groups)  # schedule sets lr
    if OPTIMIZERS[name].momentum == "betas":
        assert groups[0]["betas"] == (0.9, 0.999)
    else:
        assert groups[0]["momentum"] == 0.9 and groups[0].get("nesterov", False) == (name == "SGD")


class TinyDetector(nn.Module):
    """``model.0`` a conv, ``model.1`` a "Detect" layer with a class branch ``cv3`` and a box branch ``cv2``."""

    def __init__(self) -> None:
        super().__init__()
        head = nn.Module()
        head.cv2 = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        head.cv3 = nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
        self.model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)), head)


def test_musgd_groups_muon_and_class_branches():
    groups = optim.param_groups(TinyDetector(), muon=True)
    by = {(g.kind, g.lr_scale): g.names for g in groups}
    assert [(g.kind, g.lr_scale) for g in groups] == [(k, s) for k in ("weight", "norm", "bias", "muon")
                                                       for s in (3.0, 1.0)]
    assert by[("muon", 1.0)] == ["model.0.0.weight", "model.1.cv2.0.weight"]  # 4-D: muon, before bias/norm rules
    assert by[("muon", 3.0)] == ["model.1.cv3.0.weight"]
    assert by[("bias", 3.0)] == ["model.1.cv3.0.bias", "model.1.cv3.1.bias"]
    assert by[("norm", 3.0)] == ["model.1.cv3.1.weight"] and by[("weight", 1.0)] == []
    opt = optim.build_optimizer(TinyDetector(), "musgd", momentum=0.9, weight_decay=1e-3)
    assert [(g["name"], g["muon"], g["weight_decay"]) for g in opt.param_groups][-2:] == [("muon", True, 1e-3)] * 2
    assert {g["weight_decay"] for g in opt.param_groups if g["name"] in ("norm", "bias")} == {0.0}


def test_unknown_optimizer_name():
    with pytest.raises(ConfigError, match="Did you mean MuSGD"):
        optim.build_optimizer(Tiny(), "MuSDG", momentum=0.9, weight_decay=0)
    with pytest.raises(ValueError, match="resolved first"):
        optim.build_optimizer(Tiny(), "auto", momentum=0.9, weight_decay=0)


def test_accumulation_and_weight_decay_scaling():
    assert optim.accumulate_steps(64, 16) == 4
    assert optim.accumulate_steps(64, 24) == 3  # round(2.67)
    assert optim.accumulate_steps(64, 128) == 1
    assert optim.scaled_weight_decay(0.0005, 16, 4, 64) == pytest.approx(0.0005)
    assert optim.scaled_weight_decay(0.0005, 24, 3, 64) == pytest.approx(0.0005 * 72 / 64)


@pytest.mark.parametrize(("warmup_epochs", "epochs", "batches", "iterations"), [
    (3, 100, 10, 30),  # the old 100-iteration floor made this 100
    (3, 100, 50, 150),
    (0.5, 100, 20, 10),  # old: 100
    (3, 2, 40, 40),  # min(3, epochs - 1) = 1 epoch: the last epoch is never warmup
    (3, 1, 40, 0),  # a 1-epoch run has no warmup (old: 100)
    (0, 100, 50, 0),
    (2.5, 10, 3, 8),  # round(7.5) = 8 (round half to even, as numpy)
])
def test_warmup_iterations(warmup_epochs, epochs, batches, iterations):
    assert optim.warmup_iterations(warmup_epochs, epochs, batches) == iterations


def test_lr_factor_linear_and_cosine_hand_values():
    assert optim.lr_factor(0, 10, 0.01) == pytest.approx(1.0)
    assert optim.lr_factor(2, 10, 0.01) == pytest.approx(0.802)  # 0.8 * 0.99 + 0.01
    assert optim.lr_factor(5, 10, 0.01) == pytest.approx(0.505)
    assert optim.lr_factor(10, 10, 0.01) == pytest.approx(0.01)  # ends at lr0 * lrf
    assert optim.lr_factor(0, 10, 0.01, cos=True) == pytest.approx(1.0)
    assert optim.lr_factor(5, 10, 0.01, cos=True) == pytest.approx(0.505)
    assert optim.lr_factor(2.5, 10, 0.01, cos=True) == pytest.approx(0.855017, abs=1e-6)  # (1-cos(pi/4))/2
    assert optim.lr_factor(10, 10, 0.2, cos=True) == pytest.approx(0.2)


def _schedule(**kw):
    base = dict(lr0=0.01, lrf=0.01, epochs=10, cos=False, warmup_iters=100, warmup_bias_lr=0.1,
                warmup_momentum=0.8, momentum=0.937, nbs=64, batch=16)
    return optim.LRSchedule(**{**base, **kw})


def test_warmup_hand_values():
    s = _schedule()
    assert s.lr("bias", 0, 0) == pytest.approx(0.1)  # bias starts at warmup_bias_lr
    assert s.lr("weight", 0, 0) == 0.0  # others from 0
    assert s.lr("bias", 50, 0) == pytest.approx(0.055)  # 0.1 + 0.5 * (0.01 - 0.1)
    assert s.lr("norm", 50, 0) == pytest.approx(0.005)
    assert s.lr("weight", 75, 1) == pytest.approx(0.75 * 0.01 * 0.901)  # target follows the epoch's lr
    assert s.momentum_at(0) == pytest.approx(0.8)
    assert s.momentum_at(50) == pytest.approx(0.8685)
    assert s.momentum_at(100) == pytest.approx(0.937)
    assert [s.accumulate(i) for i in (0, 25, 50, 99, 100, 500)] == [1, 2, 2, 4, 4, 4]  # 1 -> nbs / batch
    # the warmup ramps to the whole accumulate count (round(64 / 24) = 3), not to nbs / batch = 2.67, as 8.4 does
    assert _schedule(batch=24).accumulate(99) == 3
    # after warmup every group follows lr0 * lr_factor(epoch)
    assert s.lr("bias", 300, 3) == pytest.approx(0.01 * 0.703)
    assert _schedule(cos=True).lr("weight", 300, 5) == pytest.approx(0.00505)


def test_apply_schedule_sets_groups():
    model = Tiny()
    opt = optim.build_optimizer(model, "SGD", momentum=0.937, weight_decay=0)
    optim.apply_lr_schedule(opt, _schedule(), 50, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.005, 0.055])
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8685)
    assert optim.current_lrs(opt) == pytest.approx({"lr/pg0": 0.005, "lr/pg1": 0.005, "lr/pg2": 0.055})
    optim.apply_lr_schedule(opt, _schedule(), 1000, 9)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.01 * 0.109)
    assert opt.param_groups[2]["momentum"] == pytest.approx(0.937)


def test_apply_schedule_class_branches_at_3x():
    opt = optim.build_optimizer(TinyDetector(), "MuSGD", momentum=0.937, weight_decay=0)
    optim.apply_lr_schedule(opt, _schedule(), 50, 0)  # halfway through warmup
    lrs = {(g["name"], g["lr_scale"]): g["lr"] for g in opt.param_groups}
    assert lrs[("bias", 3.0)] == pytest.approx(0.1 + 0.5 * (0.03 - 0.1))  # from warmup_bias_lr towards 3 * lr0
    assert lrs[("muon", 3.0)] == pytest.approx(0.015) and lrs[("muon", 1.0)] == pytest.approx(0.005)
    assert optim.current_lrs(opt) == pytest.approx({"lr/pg0": 0.005, "lr/pg1": 0.005, "lr/pg2": 0.055})
    optim.apply_lr_schedule(opt, _schedule(), 1000, 9)
    assert [g["lr"] / g["lr_scale"] for g in opt.param_groups] == pytest.approx([0.01 * 0.109] * 8)
    assert {g["momentum"] for g in opt.param_groups} == {0.937}


def test_make_optimizer_momentum_target_as_84():
    from raytrain.config import make_config

    cfg = make_config({"momentum": 0.937, "warmup_epochs": 3, "epochs": 10, "weight_decay": 5e-4})
    musgd = choose_optimizer("auto", lr0=0.02, momentum=0.937, warmup_bias_lr=0.1, nc=80, iterations=20_000)
    opt, sched = optim.make_optimizer(TinyDetector(), cfg, musgd, batch=16, batches=10)
    assert sched.warmup_iters == 30 and sched.lr0 == 0.01 and sched.warmup_bias_lr == 0.0
    # built with auto's 0.9, but the warmup climbs to the momentum argument and stays there (8.4.190)
    assert opt.param_groups[-1]["momentum"] == 0.9 and sched.momentum == 0.937
    assert opt.param_groups[-1]["weight_decay"] == pytest.approx(5e-4)  # 16 * 4 images per step = nbs
    _, unwarmed = optim.make_optimizer(TinyDetector(), cfg.replace(warmup_epochs=0), musgd, batch=16, batches=10)
    assert unwarmed.momentum == 0.9
    adamw = choose_optimizer("auto", lr0=0.02, momentum=0.937, warmup_bias_lr=0.1, nc=80, iterations=10)
    opt, sched = optim.make_optimizer(TinyDetector(), cfg, adamw, batch=16, batches=10)
    assert sched.momentum == 0.9 and opt.param_groups[0]["betas"] == (0.9, 0.999)  # beta1 is not warmed up


def test_epochs_within_time():
    assert optim.epochs_within_time(1.0, 600, 2) == 12  # 300 s per epoch, 3000 s left
    assert optim.epochs_within_time(0.1, 300, 1) == 1  # the next epoch would overrun: stop now
    assert optim.epochs_within_time(0.1, 100, 1) == 3


def test_freeze_layers_always_freezes_dfl():
    from raytrain.models import build_model

    model = build_model("yolov8n", nc=3)
    frozen = optim.freeze_layers(model, 2)
    assert frozen and all(n.startswith(("model.0.", "model.1.")) or ".dfl" in n for n in frozen)
    assert any(".dfl" in n for n in frozen)
    assert all(p.requires_grad for p in model.model[2].parameters())
    only_dfl = optim.freeze_layers(build_model("yolov8n", nc=3), None)
    assert only_dfl and all(".dfl" in n for n in only_dfl)
    listed = optim.freeze_layers(build_model("yolov8n", nc=3), [3])
    assert any(n.startswith("model.3.") for n in listed) and not any(n.startswith("model.2.") for n in listed)


def test_fused_where_torch_has_it_and_the_same_update():
    """SGD, Adam and AdamW are built fused on a CPU (one kernel for every tensor; bench/optimizer_step.py), the others
    per tensor; a fused step is the per-tensor step up to float32 rounding."""
    import torch

    assert {n for n, s in OPTIMIZERS.items() if s.fused} == {"SGD", "Adam", "AdamW"}
    for name in OPTIMIZERS:
        built = optim.build_optimizer(Tiny(), name, momentum=0.9, weight_decay=5e-4)
        assert bool(built.defaults.get("fused")) == OPTIMIZERS[name].fused, name
    torch.manual_seed(0)
    model, twin = Tiny(), Tiny()
    twin.load_state_dict(model.state_dict())
    fused = optim.build_optimizer(model, "AdamW", momentum=0.9, weight_decay=5e-4)
    twin_of = {id(a): b for a, b in zip(model.parameters(), twin.parameters(), strict=True)}
    loop = torch.optim.AdamW([{**{k: v for k, v in g.items() if k not in ("params", "fused")},
                               "params": [twin_of[id(a)] for a in g["params"]]} for g in fused.param_groups])
    assert not loop.defaults.get("fused")
    for opt in (fused, loop):
        for g in opt.param_groups:
            g["lr"] = 0.01
    for _ in range(3):
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
