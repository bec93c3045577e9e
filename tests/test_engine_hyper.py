"""Hyperparameters that change while a run trains (raytrain.engine.hyper), without Ray: a PBT exploit (one run
continues another's full state with its own new values) and schedule replay (``schedule=``, epoch by epoch).
A tiny dataset (8 train, 4 val images of 32 px), so each run takes a few seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from raytrain import keys
from raytrain.config import ConfigError, make_config
from raytrain.engine.hyper import MUTABLE, apply_values, read_schedule, values_at, write_schedule
from raytrain.engine.loop import EpochReport, run_epochs
from raytrain.engine.optim import scaled_weight_decay
from raytrain.engine.setup import setup_rank
from raytrain.engine.state import initial_state


def worker(tiny_data: Path, save_dir: Path, **overrides):
    from raytrain.data import resolve_data

    # batch 4 of nbs 8: 2 batches per optimizer step, so weight decay is scaled by 4 * 2 / 8 = 1.
    args = {"data": str(tiny_data), "imgsz": 32, "batch": 4, "nbs": 8, "workers": 0, "device": "cpu",
            "optimizer": "SGD", "warmup_epochs": 0, "close_mosaic": 0, "plots": False, "val": False,
            "project": str(save_dir.parent), "name": save_dir.name, "epochs": 3, "lrf": 0.01, **overrides}
    cfg = make_config(args)
    return setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=save_dir)


class Sink:
    """A report sink that keeps every report and a copy of each epoch's state folder."""

    def __init__(self, keep: Path) -> None:
        self.reports: list[EpochReport] = []
        self.keep = keep

    def __call__(self, report: EpochReport) -> None:
        copy = self.keep / f"epoch{int(report.metrics[keys.EPOCH])}"
        shutil.copytree(report.state_dir, copy)
        self.reports.append(EpochReport(report.metrics, copy, report.changed, report.stop))


def linear(epoch0: int, epochs: int = 3, lrf: float = 0.01) -> float:
    return (1 - epoch0 / epochs) * (1 - lrf) + lrf


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW", "MuSGD"])
def test_exploit_continues_the_sources_full_state_with_its_own_hyperparameters(tiny_data, tmp_path, optimizer):
    source = worker(tiny_data, tmp_path / "trial_00001", optimizer=optimizer, lr0=0.01, momentum=0.9,
                    weight_decay=0.0005, box=7.5, mixup=0.0, fliplr=0.5)
    sink = Sink(tmp_path)
    source_state = initial_state(source)
    source_state.schedule_epochs = 3
    run_epochs(source, source_state, sink)
    state_after_1 = sink.reports[0].state_dir

    weak = worker(tiny_data, tmp_path / "trial_00002", optimizer=optimizer, lr0=0.02, momentum=0.8,
                  weight_decay=0.001, box=3.0, mixup=0.5, fliplr=0.2, seed=7)
    state = initial_state(weak, state_after_1)
    assert (state.epoch, len(state.history), state.continued_from) == (1, 1, "trial_00001")

    # Everything that matters is the source's after epoch 1: weights, EMA, optimizer state, epoch.
    from raytrain.models.checkpoint import load_checkpoint

    saved = load_checkpoint(state_after_1 / "state.pt")
    for name, tensor in weak.model.state_dict().items():
        assert torch.equal(tensor, saved["model"][name]), name
    for name, tensor in weak.ema.ema.state_dict().items():
        assert torch.equal(tensor, saved["ema"][name]), name
    assert weak.ema.updates == saved["ema_updates"] > 0
    moments = weak.optimizer.state_dict()["state"]
    assert moments and moments.keys() == saved["optimizer"]["state"].keys()
    for index, entry in moments.items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(saved["optimizer"]["state"][index][key]))

    # ... and the hyperparameters are its own: momentum and weight decay back in the groups the load overwrote.
    groups = weak.optimizer.param_groups
    if optimizer == "AdamW":
        assert [g["betas"] for g in groups] == [(0.8, 0.999)] * 3
    else:  # SGD's 3 groups, MuSGD's 8 (muon and the 3x class branches)
        assert [g["momentum"] for g in groups] == [0.8] * (8 if optimizer == "MuSGD" else 3)
    decayed = [("weight", 0.001), *([("muon", 0.001)] if optimizer == "MuSGD" else [])]  # 4 * 2 / 8 = scale 1
    assert scaled_weight_decay(0.001, 4, 2, 8) == 0.001
    assert sorted({(g["name"], g["weight_decay"]) for g in groups}) == sorted([*decayed, ("norm", 0.0), ("bias", 0.0)])
    assert (weak.lr_schedule.lr0, weak.loss_fn.box, weak.train_loader.dataset.hyp.mixup) == (0.02, 3.0, 0.5)

    later = Sink(tmp_path / "weak")
    (tmp_path / "weak").mkdir()
    run_epochs(weak, state, later)
    rows = [r.metrics for r in later.reports]
    assert [int(r[keys.EPOCH]) for r in rows] == [2, 3]  # epoch continued, not restarted
    # The new lr0 follows the run's linear decay from its position (epoch 2 is 0-based 1), with no warmup restart.
    assert rows[0]["lr/pg0"] == pytest.approx(0.02 * linear(1)) and rows[1]["lr/pg0"] == pytest.approx(0.02 * linear(2))
    # Trackers see the exploit on its first epoch only.
    assert (rows[0]["pbt/exploit"], rows[0]["pbt/exploited_from"]) == (1.0, 1.0) and "pbt/exploit" not in rows[1]


def test_a_run_resumed_from_its_own_state_is_not_an_exploit(tiny_data, tmp_path):
    setup = worker(tiny_data, tmp_path / "run", epochs=1, weight_decay=0.002)
    sink = Sink(tmp_path)
    run_epochs(setup, initial_state(setup), sink)
    again = worker(tiny_data, tmp_path / "run", epochs=2, weight_decay=0.002)
    state = initial_state(again, sink.reports[0].state_dir)
    assert state.continued_from == "" and again.optimizer.param_groups[0]["weight_decay"] == 0.002


def test_replay_applies_the_schedule_epoch_by_epoch(tiny_data, tmp_path):
    schedule = write_schedule(tmp_path / "best_schedule.yaml", {
        1: {"lr0": 0.01, "box": 7.5, "mixup": 0.0, "weight_decay": 0.0005},
        2: {"lr0": 0.02, "box": 2.0, "mixup": 0.5, "weight_decay": 0.001},
        3: {"lr0": 0.02, "box": 2.0, "mixup": 0.5, "weight_decay": 0.001}}, header="trial_00002 of x")
    setup = worker(tiny_data, tmp_path / "run", schedule=str(schedule), lr0=0.5, box=1.0)
    seen = []
    setup.callbacks = {"on_train_epoch_start": [lambda s: seen.append((
        setup.lr_schedule.lr0, setup.loss_fn.box, setup.train_loader.dataset.hyp.mixup,
        setup.optimizer.param_groups[0]["weight_decay"]))]}
    sink = Sink(tmp_path)
    run_epochs(setup, initial_state(setup), sink)
    assert seen == [(0.01, 7.5, 0.0, 0.0005), (0.02, 2.0, 0.5, 0.001), (0.02, 2.0, 0.5, 0.001)]
    rows = [r.metrics for r in sink.reports]
    # lr per epoch: that epoch's lr0 at the linear schedule's position (0-based epoch e: 1 - e/3 * 0.99).
    assert [r["lr/pg0"] for r in rows] == pytest.approx([0.01 * 1, 0.02 * linear(1), 0.02 * linear(2)])
    assert [r["hyp/box"] for r in rows] == [7.5, 2.0, 2.0]

    # A run resumed after epoch 2 gets epoch 3's values back (the worker was built with lr0=0.5, box=1).
    resumed = worker(tiny_data, tmp_path / "run", schedule=str(schedule), lr0=0.5, box=1.0)
    later = Sink(tmp_path / "later")
    (tmp_path / "later").mkdir()
    run_epochs(resumed, initial_state(resumed, sink.reports[1].state_dir), later)
    assert later.reports[0].metrics["lr/pg0"] == pytest.approx(rows[2]["lr/pg0"])
    assert resumed.loss_fn.box == 2.0


def test_schedule_files_read_back_and_apply_sparse_epochs(tmp_path):
    path = write_schedule(tmp_path / "s.yaml", {1: {"lr0": 0.01, "mixup": 0.1}, 4: {"lr0": 0.02}})
    schedule = read_schedule(path)
    assert schedule == {1: {"lr0": 0.01, "mixup": 0.1}, 4: {"lr0": 0.02}}
    assert values_at(schedule, 3) == {"lr0": 0.01, "mixup": 0.1}
    assert values_at(schedule, 9) == {"lr0": 0.02, "mixup": 0.1}
    assert values_at({2: {"box": 1.0}}, 1) == {}
    assert {"lr0", "momentum", "weight_decay", "mosaic", "mixup", "box", "cls", "dfl"} <= set(MUTABLE)
    assert not {"imgsz", "batch", "optimizer", "epochs", "model", "warmup_epochs"} & set(MUTABLE)


@pytest.mark.parametrize(("body", "message"), [
    ("epochs:\n  1: {imgsz: 64}\n", r"epochs\.1\.imgsz: only hyperparameters that can change"),
    ("epochs:\n  0: {lr0: 0.1}\n", r"epochs\.0: epochs are integers from 1"),
    ("epochs:\n  1: {lr0: high}\n", r"epochs\.1\.lr0: expected a number"),
    ("lr0: 0.1\n", r"epochs: expected a mapping"),
    ("epochs:\n  1: {lr0: 0.01}\n  2: {mixup: 1.5}\n", r"epochs\.2: mixup=1\.5 is not allowed"),
])
def test_bad_schedule_files_fail_naming_the_entry(tmp_path, body, message):
    (tmp_path / "s.yaml").write_text(body)
    with pytest.raises(ConfigError, match=message):
        make_config({"schedule": str(tmp_path / "s.yaml"), "optimizer": "SGD"})


def test_schedule_path_is_made_absolute_and_auto_optimizer_is_refused(tmp_path, monkeypatch):
    write_schedule(tmp_path / "s.yaml", {1: {"lr0": 0.01}})
    monkeypatch.chdir(tmp_path)
    cfg = make_config({"schedule": "s.yaml", "optimizer": "SGD"})
    assert cfg.schedule == str(tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match=r"schedule=.*lr0, which optimizer=auto would ignore"):
        make_config({"schedule": "s.yaml"})
    with pytest.raises(ConfigError, match=r"schedule=.*missing\.yaml"):
        make_config({"schedule": "missing.yaml", "optimizer": "SGD"})


def test_apply_values_refuses_structural_keys(tiny_data, tmp_path):
    setup = worker(tiny_data, tmp_path / "run")
    with pytest.raises(ConfigError, match="imgsz cannot change while a run trains"):
        apply_values(setup, {"imgsz": 64})
    assert apply_values(setup, {"lr0": 0.01, "cls": 0.5}) == {}  # unchanged values: nothing to do


def test_a_trial_killed_right_after_an_exploit_resumes_with_the_exploited_state_and_new_values(tiny_data, tmp_path):
    """Tune restarts a failed trial from its latest checkpoint with its current config: right after an exploit those
    are the source's state and the new values. The retried run ends exactly where an unbroken one does."""
    source = worker(tiny_data, tmp_path / "trial_00001", lr0=0.01)
    sink = Sink(tmp_path)
    run_epochs(source, initial_state(source), sink)
    exploited = sink.reports[0].state_dir  # the source's state after epoch 1
    new = {"lr0": 0.02, "box": 3.0, "momentum": 0.8}

    unbroken = worker(tiny_data, tmp_path / "trial_00002", **new)
    run_epochs(unbroken, initial_state(unbroken, exploited), lambda report: None)

    killed = worker(tiny_data, tmp_path / "trial_00002", **new)

    def die(state):
        if state.epoch == 2 and state.batch == 0:
            raise KeyboardInterrupt("killed during the first epoch after the exploit")

    killed.callbacks = {"on_train_batch_end": [die]}
    with pytest.raises(KeyboardInterrupt):
        run_epochs(killed, initial_state(killed, exploited), lambda report: None)

    retried = worker(tiny_data, tmp_path / "trial_00002", **new)
    state = initial_state(retried, exploited)
    assert (state.epoch, state.continued_from) == (1, "trial_00001")
    assert (retried.lr_schedule.lr0, retried.loss_fn.box) == (0.02, 3.0)
    rows = []
    run_epochs(retried, state, lambda report: rows.append(report.metrics))
    assert [int(r[keys.EPOCH]) for r in rows] == [2, 3] and rows[0]["pbt/exploit"] == 1.0
    for a, b in zip(retried.model.state_dict().values(), unbroken.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
