"""Unit tests of the training engine's pure parts: optimizer groups, LR/momentum schedule, EMA, accumulation,
results.csv, callbacks, W&B mode, AutoBatch's fit, device planning. Hand-checked numbers, no Ray."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from raytrain.config import ConfigError
from raytrain.engine import optim
from raytrain.engine.autobatch import fit_batch_size
from raytrain.engine.callbacks import EVENTS, TrainState, check_callbacks, run_callbacks
from raytrain.engine.devices import check_local_gpu_ids, parse_gpu_ids, per_worker_batch, plan_devices
from raytrain.engine.ema import ModelEMA, ema_decay, ema_update_
from raytrain.engine.loop import early_stop
from raytrain.engine.results import COLUMNS, plot_results, read_results_csv, write_results_csv
from raytrain.engine.train import train_one_epoch
from raytrain.optimizers import OPTIMIZERS, OptimizerChoice, choose_optimizer


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


# ------------------------------------------------------------------------------------------------------ optimizer
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
    return optim.Schedule(**{**base, **kw})


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
    optim.apply_schedule(opt, _schedule(), 50, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.005, 0.055])
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8685)
    assert optim.current_lrs(opt) == pytest.approx({"lr/pg0": 0.005, "lr/pg1": 0.005, "lr/pg2": 0.055})
    optim.apply_schedule(opt, _schedule(), 1000, 9)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.01 * 0.109)
    assert opt.param_groups[2]["momentum"] == pytest.approx(0.937)


def test_apply_schedule_class_branches_at_3x():
    opt = optim.build_optimizer(TinyDetector(), "MuSGD", momentum=0.937, weight_decay=0)
    optim.apply_schedule(opt, _schedule(), 50, 0)  # halfway through warmup
    lrs = {(g["name"], g["lr_scale"]): g["lr"] for g in opt.param_groups}
    assert lrs[("bias", 3.0)] == pytest.approx(0.1 + 0.5 * (0.03 - 0.1))  # from warmup_bias_lr towards 3 * lr0
    assert lrs[("muon", 3.0)] == pytest.approx(0.015) and lrs[("muon", 1.0)] == pytest.approx(0.005)
    assert optim.current_lrs(opt) == pytest.approx({"lr/pg0": 0.005, "lr/pg1": 0.005, "lr/pg2": 0.055})
    optim.apply_schedule(opt, _schedule(), 1000, 9)
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


# ------------------------------------------------------------------------------------------------------------ EMA
def test_ema_decay_and_update():
    assert ema_decay(0) == 0.0
    assert ema_decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert ema_decay(100_000) == pytest.approx(0.9999, abs=1e-9)
    ema_state = {"w": torch.tensor([0.0, 0.0]), "n": torch.tensor(1)}
    ema_update_(ema_state, {"w": torch.tensor([2.0, 4.0]), "n": torch.tensor(7)}, 0.5)
    assert ema_state["w"].tolist() == [1.0, 2.0] and ema_state["n"].item() == 7


def test_model_ema_follows_model():
    model = Tiny()
    ema = ModelEMA(model)
    assert not any(p.requires_grad for p in ema.ema.parameters()) and not ema.ema.training
    with torch.no_grad():
        model.head.bias.fill_(1.0)
    before = ema.ema.head.bias.clone()
    ema.update(model)
    d = ema_decay(1)
    assert ema.updates == 1
    assert ema.ema.head.bias == pytest.approx(before * d + (1 - d) * 1.0)


# ------------------------------------------------------------------------------------------------ one epoch, accum
def _loader(n, batch=1):
    return [{"img": torch.randint(0, 255, (batch, 3, 8, 8), dtype=torch.uint8), "targets": torch.zeros(0, 6)}
            for _ in range(n)]


def _loss(preds, targets, img_hw):
    parts = torch.stack([preds.pow(2).mean(), preds.abs().mean(), preds.mean().abs()])
    return parts.sum() * preds.shape[0], parts.detach()


def test_train_one_epoch_accumulates_to_nbs():
    model = Tiny()
    opt = optim.build_optimizer(model, "SGD", momentum=0.9, weight_decay=0)
    steps = []
    original = opt.step
    opt.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    sched = _schedule(warmup_iters=0, nbs=4, batch=1)  # accumulate 4 batches per step
    result = train_one_epoch(model, _loader(10), opt, _loss, device=torch.device("cpu"), epoch=0, schedule=sched,
                             ema=ema, scaler=scaler)
    assert len(steps) == 2 and result.last_step == 7  # steps after batches 3 and 7
    assert ema.updates == 2 and result.batches == 10 and result.images == 10
    assert result.losses.shape == (3,) and torch.isfinite(result.losses).all()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    # the next epoch continues the count: its first step comes 4 iterations after the last one
    result = train_one_epoch(model, _loader(3), opt, _loss, device=torch.device("cpu"), epoch=1, schedule=sched,
                             ema=ema, scaler=scaler, iteration=10, last_step=result.last_step)
    assert len(steps) == 3 and result.last_step == 11


def test_early_stop():
    assert not early_stop(5, 1, 5)
    assert early_stop(6, 1, 5)


# -------------------------------------------------------------------------------------------------- results files
def test_results_csv_rewrites_whole_history(tmp_path):
    rows = [{"epoch": e, "time": 10.0 * e, **{c: 0.1 * e for c in COLUMNS[2:]}} for e in (1, 2, 3)]
    path = write_results_csv(tmp_path / "results.csv", rows)
    text = path.read_text().splitlines()
    assert text[0].split(",") == list(COLUMNS) and len(text) == 4
    back = read_results_csv(path)
    assert [r["epoch"] for r in back] == [1, 2, 3] and back[2]["metrics/mAP50(B)"] == pytest.approx(0.3)
    write_results_csv(path, rows[:2])  # after a restart from epoch 2: no duplicated rows
    assert [r["epoch"] for r in read_results_csv(path)] == [1, 2]
    png = plot_results(path)
    assert png.name == "results.png" and png.stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------------ callbacks
def on_epoch(state):  # module level: picklable
    return state.epoch


def test_callbacks_checked_and_frozen():
    checked = check_callbacks({"on_fit_epoch_end": on_epoch, "on_train_start": [on_epoch]})
    assert checked == {"on_fit_epoch_end": [on_epoch], "on_train_start": [on_epoch]}
    pickle.dumps(checked)
    with pytest.raises(ConfigError, match="Did you mean on_fit_epoch_end"):
        check_callbacks({"on_fit_epoch_ends": on_epoch})
    with pytest.raises(ConfigError, match="cannot be pickled"):
        check_callbacks({"on_train_end": lambda s: None})
    with pytest.raises(ConfigError, match="not callable"):
        check_callbacks({"on_train_end": [3]})
    seen = []
    run_callbacks({"on_fit_epoch_end": [seen.append]}, "on_fit_epoch_end", epoch=2, epochs=3, save_dir=None,
                  last=None, best=None, metrics={"fitness": 0.5})
    (state,) = seen
    assert isinstance(state, TrainState) and state.epoch == 2 and state.metrics["fitness"] == 0.5
    with pytest.raises(TypeError):
        state.metrics["fitness"] = 1.0
    with pytest.raises(AttributeError):
        state.epoch = 3
    assert EVENTS[0] == "on_train_start" and EVENTS[-1] == "on_train_end"


# ------------------------------------------------------------------------------------------- AutoBatch, devices
def test_fit_batch_size():
    sizes = [1, 2, 4, 8, 16]
    assert fit_batch_size(sizes, [100 + 10 * b for b in sizes], 1000, 0.6) == 50
    assert fit_batch_size(sizes, [100 + 10 * b for b in sizes], 1e6, 0.6) == 1024  # capped
    assert fit_batch_size(sizes, [900 + 10 * b for b in sizes], 1000, 0.6) == 1  # at least 1


def test_plan_devices_and_batch_split():
    cpu = plan_devices("cpu", None, 4)
    assert (cpu.accelerator, cpu.num_workers, cpu.note) == ("cpu", 1, "")
    assert plan_devices("cpu", 3, 0).num_workers == 3
    assert (plan_devices("0", None, 2).accelerator, plan_devices("0", None, 2).num_workers) == ("cuda", 1)
    assert plan_devices("0,1", None, 2).num_workers == 2
    assert plan_devices("", None, 4).num_workers == 4
    assert plan_devices("", None, 0).accelerator == "cpu"
    assert plan_devices("0", 8, 16).num_workers == 8  # cluster: num_workers wins
    with pytest.raises(ConfigError, match="device=0,1: asks for GPU 0,1, but there is no GPU here"):
        plan_devices("0,1", None, 0)  # never a silent CPU run
    with pytest.raises(ConfigError, match="device=7: GPU 7 does not exist; this machine has GPUs 0, 1"):
        check_local_gpu_ids("7", 2)
    with pytest.raises(ConfigError, match="this machine has no CUDA GPU"):
        check_local_gpu_ids("0", 0)
    check_local_gpu_ids("1", 2)
    check_local_gpu_ids("cpu", 0)
    mps = plan_devices("mps", 2, 0)
    assert (mps.accelerator, mps.num_workers) == ("mps", 1) and mps.note
    with pytest.raises(ConfigError, match="Ray sees 1 GPU"):
        plan_devices("0,1", None, 1)
    assert parse_gpu_ids("cuda:1") == [1] and parse_gpu_ids("0, 2") == [0, 2] and parse_gpu_ids("") is None
    with pytest.raises(ConfigError):
        parse_gpu_ids("gpu")
    assert per_worker_batch(16, 2) == 8
    with pytest.raises(ConfigError, match="does not divide between 3 workers"):
        per_worker_batch(16, 3)


# ------------------------------------------------------------------------------- one rank's setup, without Ray
def test_make_worker_trains_one_epoch_without_ray(tmp_path):
    pytest.importorskip("raytrain.loss")
    from raytrain.config import make_config
    from raytrain.data import resolve_data
    from raytrain.engine.train import make_worker
    from raytrain.train.plan import resolve_config

    cfg = resolve_config(make_config({"data": "shapes", "imgsz": 64, "fraction": 0.04, "batch": 4, "workers": 0,
                                      "device": "cpu", "project": str(tmp_path), "optimizer": "SGD",
                                      "freeze": 3, "nbs": 4}), gpus_available=0)
    w = make_worker(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=tmp_path)
    assert w.global_batch == 4 and w.names[0] == "circle" and len(w.train_loader) == 5
    assert [g["name"] for g in w.optimizer.param_groups] == ["weight", "norm", "bias"]
    assert not any(p.requires_grad for p in w.model.model[0].parameters())  # freeze=3
    # 3 warmup epochs of 5 batches, no 100-iteration floor (8.4); nbs=4: a step per batch, so the epoch's steps
    # after the first (at warmup lr 0) change the weights
    assert w.schedule.warmup_iters == 15 and w.schedule.accumulate(0) == w.schedule.accumulate(1000) == 1
    before = w.model.model[3].conv.weight.detach().clone()
    frozen = w.model.model[0].conv.weight.detach().clone()
    w.train_loader.set_epoch(1)
    result = train_one_epoch(w.model, w.train_loader, w.optimizer, w.loss_fn, device=w.device, epoch=0,
                             schedule=w.schedule, ema=w.ema, scaler=w.scaler)
    assert result.batches == 5 and result.images == 20 and torch.isfinite(result.losses).all()
    assert (result.losses > 0).all() and w.ema.updates == result.last_step + 1 > 0
    assert not torch.equal(before, w.model.model[3].conv.weight) and torch.equal(frozen, w.model.model[0].conv.weight)


def test_pretrained_transfers_matching_tensors(tmp_path, caplog):
    from raytrain.config import make_config
    from raytrain.engine.train import model_for
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    source = build_model("yolov8n", nc=80)
    path = save_checkpoint(tmp_path / "coco.pt", make_checkpoint(source, [str(i) for i in range(80)]))
    with caplog.at_level("INFO", logger="raytrain"):
        model = model_for(make_config({"model": "yolov8n", "pretrained": str(path)}), nc=6)
    (line,) = [r.getMessage() for r in caplog.records if "Transferred" in r.getMessage()]
    copied, total = map(int, line.split()[1].split("/"))
    assert 0 < copied < total == len(model.state_dict())  # all but the class-output convolutions
    assert torch.equal(model.model[0].conv.weight, source.model[0].conv.weight)
    from_ckpt = model_for(make_config({"model": str(path)}), nc=80)  # model=CKPT: arch and weights from the file
    assert torch.equal(from_ckpt.model[22].cv3[0][2].weight, source.model[22].cv3[0][2].weight)


def test_a_checkpoint_missing_where_the_run_trains_is_a_config_error(tmp_path):
    """The driver opened it; a worker that cannot see it fails once (ConfigError), naming the key and what to do."""
    from raytrain.config import make_config
    from raytrain.engine.train import model_for

    for key, args in [("model", {"model": str(tmp_path / "gone.pt")}),
                      ("pretrained", {"model": "yolov8n", "pretrained": str(tmp_path / "gone.pt")})]:
        with pytest.raises(ConfigError, match=f"^{key}=.*gone.pt: not found on .*storage all nodes mount"):
            model_for(make_config(args), nc=6)
