"""The epoch loop without Ray (raytrain.engine.loop): patience, best/last selection, close_mosaic, the time= re-plan,
resume from a state folder at the right epoch with the same learning rate, EMA and weights, callback order, and the
fallback from last.pt. A tiny dataset (8 train, 4 val images of 32 px), so each run takes a few seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from raytrain import keys
from raytrain.config import make_config
from raytrain.engine import loop
from raytrain.engine.callbacks import EVENTS
from raytrain.engine.loop import EpochReport, early_stop, run_epochs
from raytrain.engine.results import read_results_csv
from raytrain.engine.setup import setup_rank
from raytrain.engine.state import RunState, checkpoint_dict, initial_state


def worker(tiny_data: Path, save_dir: Path, callbacks=None, **overrides):
    from raytrain.data import resolve_data

    args = {"data": str(tiny_data), "model": "yolov8n", "imgsz": 32, "batch": 4, "nbs": 4, "workers": 0,
            "device": "cpu", "optimizer": "SGD", "warmup_epochs": 0.5, "close_mosaic": 0, "plots": False,
            "project": str(save_dir), "epochs": 3, **overrides}
    cfg = make_config(args)
    return setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=save_dir,
                       callbacks=callbacks)


class Sink:
    """A report sink that keeps every report and a copy of each epoch's state folder."""

    def __init__(self, keep: Path) -> None:
        self.reports: list[EpochReport] = []
        self.keep = keep

    def __call__(self, report: EpochReport) -> None:
        assert report.state_dir is not None and report.state_dir.is_dir()
        copy = self.keep / f"epoch{int(report.metrics[keys.EPOCH])}"
        shutil.copytree(report.state_dir, copy)
        self.reports.append(EpochReport(report.metrics, copy, report.changed, report.stop))


def test_patience_stops_and_best_and_last_are_chosen_by_fitness(tiny_data, tmp_path, monkeypatch):
    fitness = iter([0.1, 0.3, 0.2, 0.25, 0.9])  # best at epoch 2; patience 2 stops after epoch 4
    monkeypatch.setattr(loop, "epoch_fitness", lambda metrics, key, weights=None: next(fitness))
    setup = worker(tiny_data, tmp_path / "run", epochs=10, patience=2)
    sink = Sink(tmp_path)
    state = run_epochs(setup, initial_state(setup), sink)
    assert [int(r.metrics["epoch"]) for r in sink.reports] == [1, 2, 3, 4]
    assert [r.stop for r in sink.reports] == [False, False, False, True]
    assert (state.epoch, state.best_epoch, state.best_fitness) == (4, 2, 0.3)
    assert [r["fitness"] for r in state.history] == [0.1, 0.3, 0.2, 0.25]
    assert [r["epoch"] for r in read_results_csv(tmp_path / "run" / "results.csv")] == [1, 2, 3, 4]
    from raytrain.models import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "weights" / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "run" / "weights" / "last.pt")["epoch"] == 4
    for report in sink.reports:  # every report holds exactly the documented keys
        assert set(report.metrics) == set(keys.epoch_keys(setup.loss_fn.names))
    assert tmp_path / "run" / "weights" / "best.pt" in sink.reports[1].changed  # improved at epoch 2
    assert tmp_path / "run" / "weights" / "best.pt" not in sink.reports[2].changed


def test_close_mosaic_turns_mosaic_off_for_the_last_epochs(tiny_data, tmp_path):
    setup = worker(tiny_data, tmp_path / "run", epochs=4, close_mosaic=2)
    calls = []
    set_epoch = setup.train_loader.set_epoch
    setup.train_loader.set_epoch = lambda epoch, mosaic=True: (calls.append((epoch, mosaic)), set_epoch(epoch, mosaic))
    run_epochs(setup, initial_state(setup), Sink(tmp_path))
    assert calls == [(1, True), (2, True), (3, False), (4, False)]


def test_time_limit_replans_the_schedule(tiny_data, tmp_path, monkeypatch):
    """time=: after each epoch rank 0 re-plans how many epochs fit; the LR schedule then spans that many."""
    import raytrain.engine.optim

    monkeypatch.setattr(raytrain.engine.optim, "epochs_within_time", lambda hours, elapsed, done: 2)
    setup = worker(tiny_data, tmp_path / "run", epochs=50, time=0.001, lrf=0.1, warmup_epochs=0)
    sink = Sink(tmp_path)
    state = run_epochs(setup, initial_state(setup), sink)
    assert state.schedule_epochs == 2 and [int(r.metrics["epoch"]) for r in sink.reports] == [1, 2]
    assert sink.reports[-1].stop
    # Linear decay over the re-planned 2 epochs: epoch 2 (0-based 1) trains at lr0 * (1 - 1/2 * (1 - lrf)) = 0.01 * 0.55
    # (over the planned 50 it would be 0.01 * 0.982).
    assert sink.reports[-1].metrics["lr/pg0"] == pytest.approx(0.01 * 0.55)


def test_resume_from_a_state_folder_continues_exactly(tiny_data, tmp_path):
    """A run resumed after epoch 2 trains epoch 3 with the same learning rate, EMA and weights as the unbroken run."""
    whole = worker(tiny_data, tmp_path / "whole")
    sink = Sink(tmp_path / "whole-states")
    (tmp_path / "whole-states").mkdir()
    run_epochs(whole, initial_state(whole), sink)

    resumed = worker(tiny_data, tmp_path / "resumed")
    state = initial_state(resumed, sink.reports[1].state_dir)  # the state after epoch 2
    assert (state.epoch, len(state.history)) == (2, 2)
    later = Sink(tmp_path)
    state = run_epochs(resumed, state, later)
    assert [int(r.metrics["epoch"]) for r in later.reports] == [3] and state.epoch == 3
    for key in keys.LR_KEYS:
        assert later.reports[0].metrics[key] == pytest.approx(sink.reports[2].metrics[key])
    assert resumed.ema.updates == whole.ema.updates
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(resumed.ema.ema.state_dict().values(), whole.ema.ema.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    rows = read_results_csv(tmp_path / "resumed" / "results.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # history came back with the state


EVENT_LOG: list[tuple[str, int]] = []


def record_event(state) -> None:
    EVENT_LOG.append((state.event, state.epoch))


def test_callbacks_run_in_their_documented_order(tiny_data, tmp_path):
    EVENT_LOG.clear()
    setup = worker(tiny_data, tmp_path / "run", epochs=2, callbacks={e: [record_event] for e in EVENTS})
    run_epochs(setup, initial_state(setup), Sink(tmp_path))
    batches = len(setup.train_loader)
    epoch_events = ["on_train_epoch_start", *["on_train_batch_end"] * batches, "on_train_epoch_end",
                    "on_model_save", "on_fit_epoch_end"]
    assert [e for e, _ in EVENT_LOG] == ["on_train_start", *epoch_events, *epoch_events, "on_train_end"]
    assert [n for e, n in EVENT_LOG if e == "on_fit_epoch_end"] == [1, 2]


def test_restore_falls_back_to_last_pt_without_a_state_folder(tiny_data, tmp_path):
    """resume=last.pt when the saved states are gone: weights, EMA, epoch and history come from the run folder."""
    from raytrain.engine.ema import ModelEMA
    from raytrain.engine.results import write_results_csv
    from raytrain.models import build_model, save_checkpoint

    trained = build_model("yolov8n", nc=6)
    with torch.no_grad():
        trained.model[0].conv.weight.add_(1.0)
    names = [str(i) for i in range(6)]
    cfg = make_config({"epochs": 5})
    last = tmp_path / "run" / "weights" / "last.pt"
    save_checkpoint(last, checkpoint_dict(trained, ModelEMA(trained), names,
                                          state=RunState(epoch=2, best_fitness=0.5, best_epoch=1), cfg=cfg, metrics={}))
    save_checkpoint(last.with_name("best.pt"), checkpoint_dict(trained, ModelEMA(trained), names,
                                                               state=RunState(epoch=1, best_fitness=0.5), cfg=cfg,
                                                               metrics={}))
    rows = [{"epoch": e, "time": 10.0 * e, "metrics/mAP50(B)": 0.1 * e} for e in (1, 2, 3)]
    write_results_csv(tmp_path / "run" / "results.csv", rows)  # epoch 3 was written but never saved as a state
    setup = worker(tiny_data, tmp_path / "other", resume=str(last), epochs=5)
    restored = initial_state(setup)
    assert restored.epoch == 2 and restored.best_fitness == 0.5 and restored.best_epoch == 1
    assert restored.train_time == 20.0 and restored.schedule_epochs == 5
    assert [r["epoch"] for r in restored.history] == [1, 2]
    assert torch.equal(setup.model.model[0].conv.weight, trained.model[0].conv.weight)
    assert torch.equal(setup.ema.ema.model[0].conv.weight, trained.model[0].conv.weight)
    fresh = worker(tiny_data, tmp_path / "fresh")
    assert initial_state(fresh) == RunState(schedule_epochs=3)


def test_early_stop():
    assert not early_stop(5, 1, 5)
    assert early_stop(6, 1, 5)
