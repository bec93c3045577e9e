"""Stopping rules without Ray's controller: ASHA's tie-break, the patience rule, the time budget, end labels."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tuning_helpers import TRAIN, space

from raytrain.tuning.experiment import STATUS_FILE, read_status
from raytrain.tuning.space import load_space
from raytrain.tuning.status import make_status_callback
from raytrain.tuning.stopping import (
    StatusFile,
    break_ties,
    classify_end,
    make_patience_stopper,
    make_scheduler,
)
from raytrain.tuning.trial import TrialJob


def test_asha_ranks_tied_early_metrics_by_validation_loss(tmp_path: Path):
    """At epoch 1 every trial's mAP is 0: without a tie-break ASHA's cutoff is 0 and nothing is ever cut."""
    from ray.tune.schedulers import TrialScheduler

    def result(fitness, loss, epoch=1):
        return {"epoch": epoch, "fitness": fitness, "val/box_loss": loss, "val/cls_loss": 1.0, "val/dfl_loss": 1.0}

    assert break_ties(result(0.0, 2.0), "fitness", "max")["fitness"] < break_ties(result(0.0, 1.0), "fitness", "max")[
        "fitness"] < 0.0 + 1e-12
    assert break_ties(result(0.25, 2.0), "fitness", "max")["fitness"] == pytest.approx(0.25, abs=1e-7)
    loss_metric = result(0.0, 2.0)
    assert break_ties(loss_metric, "val/box_loss", "min") is loss_metric  # a loss objective is left alone
    assert break_ties({"epoch": 1, "fitness": 0.0}, "fitness", "max") == {"epoch": 1, "fitness": 0.0}  # val=False

    status = StatusFile(tmp_path / STATUS_FILE)
    spec = load_space(space(tmp_path, metric="fitness", mode="max", grace_period=1, reduction_factor=2,
                            train={**TRAIN, "epochs": 4}))
    asha = make_scheduler(spec, status)
    asha.set_search_properties("fitness", "max")  # as TuneConfig(metric=, mode=) does
    trials = [SimpleNamespace(trial_id=t, config={}) for t in "abcd"]
    for trial in trials:
        asha.on_trial_add(None, trial)
    decisions = {t.trial_id: asha.on_trial_result(None, t, result(0.0, loss))
                 for t, loss in zip(trials, [3.0, 1.0, 2.0, 4.0], strict=True)}
    # a is alone at the rung when it reports (ASHA lets the first through); d is worst of four: cut
    assert decisions["a"] == TrialScheduler.CONTINUE and decisions["d"] == TrialScheduler.STOP
    assert read_status(tmp_path / STATUS_FILE)["d"] == {"stopped_by": "asha-stopped", "stopped_at_epoch": 1}


def test_patience_stopper_labels_only_early_stops(tmp_path: Path):
    status = StatusFile(tmp_path / STATUS_FILE)
    stopper = make_patience_stopper(load_space(space(tmp_path, patience=2, train={**TRAIN, "epochs": 6})), status)
    losses = {1: 3.0, 2: 2.0, 3: 2.5, 4: 2.1}  # best at epoch 2; epochs 3 and 4 do not improve (mode min)
    decisions = [stopper("a", {"epoch": e, "train/box_loss": v, "config": {}}) for e, v in losses.items()]
    assert decisions == [False, False, False, True]
    assert read_status(tmp_path / STATUS_FILE)["a"] == {"patience_best": 2.0, "patience_best_epoch": 2,
                                                        "stopped_by": "patience-stopped", "stopped_at_epoch": 4}
    # The same rule firing at the trial's own last epoch is a normal completion, not an early stop.
    assert stopper("b", {"epoch": 1, "train/box_loss": 1.0, "config": {"epochs": 3}}) is False
    assert stopper("b", {"epoch": 3, "train/box_loss": 1.5, "config": {"epochs": 3}}) is True
    assert "stopped_by" not in read_status(tmp_path / STATUS_FILE)["b"]


def test_patience_count_survives_a_resumed_experiment(tmp_path: Path):
    """Tune restores the stopper as pickled at the start; the count goes on from the status file."""
    status = StatusFile(tmp_path / STATUS_FILE)
    spec = load_space(space(tmp_path, patience=3, train={**TRAIN, "epochs": 10}))
    before = make_patience_stopper(spec, status)
    assert [before("a", {"epoch": e, "train/box_loss": v, "config": {}}) for e, v in [(1, 2.0), (2, 2.5)]] == \
        [False, False]
    after = make_patience_stopper(spec, status)  # the driver was killed; `resume=True` builds a fresh one
    assert after("a", {"epoch": 3, "train/box_loss": 2.4, "config": {}}) is False
    assert after("a", {"epoch": 4, "train/box_loss": 2.2, "config": {}}) is True  # 3 epochs since epoch 1
    assert read_status(tmp_path / STATUS_FILE)["a"]["stopped_at_epoch"] == 4
    assert make_patience_stopper(load_space(space(tmp_path)), status) is None  # no patience: no stopper


def test_time_budget_marks_the_trials_it_interrupted(tmp_path: Path):
    spec = load_space(space(tmp_path, time_budget_s=10))
    status = StatusFile(tmp_path / STATUS_FILE)
    job = TrialJob(train={}, param_names=("box",), experiment="t", experiment_dir=str(tmp_path),
                   train_storage=str(tmp_path / "_train"), wandb_project="p", wandb_mode="disabled")
    callback = make_status_callback(spec, status, job)
    callback.setup()
    status.update("a", end="running")
    status.update("b", end="completed")
    trials = [SimpleNamespace(trial_id=i, last_result={"epoch": 2}, config={}, local_path=None) for i in "ab"]
    callback.on_experiment_end(trials)  # within the budget (e.g. Ctrl-C): unfinished trials stay resumable
    assert read_status(tmp_path / STATUS_FILE)["a"]["end"] == "running"
    callback.started -= 9.9  # a Ctrl-C just before the budget ran out: still resumable, not "time-budget"
    callback.on_experiment_end(trials)
    assert read_status(tmp_path / STATUS_FILE)["a"]["end"] == "running"
    callback.started -= 1.1  # the budget ran out
    callback.on_experiment_end(trials)
    ends = {k: (v["end"], v.get("epochs_run")) for k, v in read_status(tmp_path / STATUS_FILE).items()}
    assert ends == {"a": ("time-budget", 2), "b": ("completed", None)}


def test_budget_is_spent_when_tunes_own_timeout_fires(tmp_path: Path):
    """Tune calls the callback's setup() before its TimeoutStopper's first stop_all() starts Tune's clock, so the
    callback sees the budget spent whenever Tune stops the experiment for it: no safety factor is needed."""
    from ray.tune.stopper import TimeoutStopper

    job = TrialJob(train={}, param_names=("box",), experiment="t", experiment_dir=str(tmp_path),
                   train_storage=str(tmp_path / "_train"), wandb_project="p", wandb_mode="disabled")
    callback = make_status_callback(load_space(space(tmp_path, time_budget_s=0.3)), StatusFile(tmp_path / "s"), job)
    callback.setup()  # the order of ray/tune/tune.py: runner.setup_experiments(), then runner.step() ...
    stopper = TimeoutStopper(0.3)
    assert not callback.budget_spent()
    while not stopper.stop_all():  # ... whose _stop_experiment_if_needed() asks the stopper every step
        time.sleep(0.01)
    assert callback.budget_spent()
    unlimited = make_status_callback(load_space(space(tmp_path)), StatusFile(tmp_path / "s"), job)
    unlimited.setup()
    assert not unlimited.budget_spent()


def test_end_labels():
    assert classify_end("asha-stopped", 1, 5, over_budget=False) == "asha-stopped"
    assert classify_end("patience-stopped", 3, 5, over_budget=True) == "patience-stopped"  # the first reason wins
    assert classify_end(None, 5, 5, over_budget=True) == "completed"
    assert classify_end(None, 2, 5, over_budget=True) == "time-budget"
    assert classify_end(None, 2, 5, over_budget=False) == "completed"  # Tune ended it at its own last report


def test_a_one_worker_trials_fatal_error_reaches_the_status_from_its_last_report(tmp_path: Path):
    """A one-worker trial on another node writes fatal_error.txt there; the driver takes the reason from the trial's
    last report to Tune instead."""
    from raytrain.keys import FATAL_ERROR

    status = StatusFile(tmp_path / STATUS_FILE)
    job = TrialJob(train={}, param_names=("box",), experiment="t", experiment_dir=str(tmp_path),
                   train_storage=str(tmp_path / "_train"), wandb_project="p", wandb_mode="disabled")
    callback = make_status_callback(load_space(space(tmp_path)), status, job)
    trial = SimpleNamespace(trial_id="a_00001", last_result={"fitness": float("nan"), FATAL_ERROR: "model=x.pt: gone"},
                            config={}, local_path=None)
    callback.on_trial_complete(0, [trial], trial)
    record = read_status(tmp_path / STATUS_FILE)["a_00001"]
    assert (record["end"], record["error"], record["epochs_run"]) == ("error", "model=x.pt: gone", 0)
