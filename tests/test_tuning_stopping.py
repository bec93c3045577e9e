"""Stopping rules without Ray's controller: ASHA's rungs (warmup, ties, losers), the patience rule, the time budget,
end labels."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from tuning_helpers import TRAIN, space

from raytrain.config import make_config
from raytrain.tuning.experiment import STATUS_FILE, read_status
from raytrain.tuning.space import load_space
from raytrain.tuning.status import make_status_callback
from raytrain.tuning.stopping import (
    RungRule,
    StatusFile,
    asha_rungs,
    classify_end,
    make_patience_stopper,
    make_scheduler,
)
from raytrain.tuning.trial import WARMUP_END, TrialJob


def feed(rule: RungRule, histories: dict[str, list[float]], warmups: dict[str, float] | None = None,
         ) -> dict[str, tuple[int, str | None]]:
    """Each trial's history epoch by epoch, trials interleaved (epoch 1 of all, then 2, ...) as two-at-a-time trials
    roughly are; returns per trial the last epoch it trained and why it stopped (None: it ran to its end)."""
    out: dict[str, tuple[int, str | None]] = {t: (len(h), None) for t, h in histories.items()}
    for epoch in range(1, max(len(h) for h in histories.values()) + 1):
        for trial, history in histories.items():
            if epoch > len(history) or out[trial][1] is not None:
                continue
            reason = rule.judge(trial, epoch, history[epoch - 1], (warmups or {}).get(trial, 0.0))
            if reason:
                out[trial] = (epoch, reason)
    return out


def test_rungs_are_ray_s_and_the_dry_run_s():
    from raytrain.tuning.dryrun import asha_rungs as printed

    for grace, max_t, rf in [(1, 9, 3), (10, 100, 3), (1, 5, 2), (2, 16, 2)]:
        assert asha_rungs(grace, max_t, rf) == printed(grace, max_t, rf)
    assert asha_rungs(1, 9, 3) == [1, 3, 9] and asha_rungs(10, 100, 3) == [10, 30, 90]


def test_a_clear_loser_is_cut_with_its_reason():
    rule = RungRule([1, 3, 9], 3, "max")
    ends = feed(rule, {"a": [0.05, 0.10, 0.12, 0.20], "b": [0.06, 0.11, 0.13, 0.21], "c": [0.04, 0.08, 0.09, 0.10],
                       "d": [0.01, 0.02, 0.03, 0.04]})
    # Rung 1: a and b go on (a first alone; b above a), c trails the cut-off (between a and b) by 0.014 > the
    # 0.005 floor: cut. d (0.01) trails it too.
    assert ends["a"] == (4, None) and ends["b"] == (4, None)
    # cut-off of [0.05, 0.06] at the 2/3 quantile: 0.05 + 2/3 * 0.01 = 0.0567; c is 0.04
    assert ends["c"] == (1, "stopped at rung 1 (epoch 1): 0.04 < cut-off 0.05667")
    assert ends["d"][0] == 1 and ends["d"][1].startswith("stopped at rung 1 (epoch 1): 0.01 < cut-off")


def test_a_tie_is_deferred_to_the_next_rung():
    """At epoch 1 everyone is at 0 or 1e-4: nobody is cut there; at rung 3 the metric separates them."""
    rule = RungRule([1, 3, 9], 3, "max")
    ends = feed(rule, {"a": [1e-4, 0.02, 0.10, 0.2], "b": [0.0, 0.03, 0.12, 0.2], "c": [0.0, 0.01, 0.02, 0.03],
                       "d": [1e-4, 0.01, 0.10, 0.2]})
    assert rule.recorded[1] == {"a": 1e-4, "b": 0.0, "c": 0.0, "d": 1e-4}  # judged and recorded, none cut
    assert ends["c"] == (3, "stopped at rung 3 (epoch 3): 0.02 < cut-off 0.1133")
    # d at rung 3 (0.10) is below the cut-off of a, b, c (0.1067) by 0.0067: less than 10 % of it, a tie: kept.
    assert ends["a"] == ends["b"] == ends["d"] == (4, None)
    # A relative margin too: at 0.5 a trial 0.03 behind is within 10 %, one 0.06 behind is not.
    rule = RungRule([1], 2, "max")
    assert rule.judge("a", 1, 0.50) is None and rule.judge("b", 1, 0.47) is None
    assert rule.judge("c", 1, 0.42) == "stopped at rung 1 (epoch 1): 0.42 < cut-off 0.485"


def test_a_warmup_trial_is_not_judged_before_its_warmup_ends():
    """w warms up for 3.1 epochs: its 0s at epochs 1-3 neither stop it nor enter rung 1's or 3's cut-off; it is
    judged at epoch 4 against rung 3, and cut there if it still trails clearly."""
    rule = RungRule([1, 3, 9], 3, "max")
    histories = {"a": [0.05, 0.08, 0.10, 0.12, 0.13], "b": [0.06, 0.09, 0.11, 0.13, 0.14],
                 "w": [0.0, 0.0, 0.0, 0.11, 0.20], "v": [0.0, 0.0, 0.0, 0.01, 0.02]}
    ends = feed(rule, histories, warmups={"w": 3.1, "v": 3.1})
    assert "w" not in rule.recorded[1] and rule.recorded[3]["w"] == 0.11  # its epoch-4 value, at rung 3
    assert ends["w"] == (5, None)
    assert ends["v"] == (4, "stopped at rung 3 (epoch 4): 0.01 < cut-off 0.11")  # of a, b and w
    # The same histories without the warmup: both are cut at rung 1 (0 trails a and b by over 0.005).
    ends = feed(RungRule([1, 3, 9], 3, "max"), histories)
    assert ends["w"][0] == ends["v"][0] == 1


def test_a_loss_objective_stops_the_highest():
    rule = RungRule([1], 3, "min")
    assert rule.judge("a", 1, 2.0) is None and rule.judge("b", 1, 1.0) is None
    assert rule.judge("c", 1, 3.0) == "stopped at rung 1 (epoch 1): 3 > cut-off 1.333"
    assert rule.judge("d", 1, float("nan")) is None and "d" not in rule.recorded[1]


def test_scheduler_stops_through_tune_and_records_why(tmp_path: Path):
    from ray.tune.schedulers import TrialScheduler

    status = StatusFile(tmp_path / STATUS_FILE)
    spec = load_space(space(tmp_path, metric="fitness", mode="max", grace_period=1, reduction_factor=2,
                            train={**TRAIN, "epochs": 4, "warmup_epochs": 0.0}))
    asha = make_scheduler(spec, status)
    trials = [SimpleNamespace(trial_id=t, config={}) for t in "abcd"]
    for trial in trials:
        asha.on_trial_add(None, trial)
    warm = {"epoch": 1, "fitness": 0.0, WARMUP_END: 1.5}  # d reports its warmup: not judged at epoch 1
    decisions = {t.trial_id: asha.on_trial_result(None, t, {"epoch": 1, "fitness": v} if t.trial_id != "d" else warm)
                 for t, v in zip(trials, [0.2, 0.3, 0.1, 0.0], strict=True)}
    assert decisions == {"a": TrialScheduler.CONTINUE, "b": TrialScheduler.CONTINUE, "c": TrialScheduler.STOP,
                         "d": TrialScheduler.CONTINUE}
    reason = "stopped at rung 1 (epoch 1): 0.1 < cut-off 0.25"
    assert read_status(tmp_path / STATUS_FILE)["c"] == {"stopped_by": "asha-stopped", "stopped_at_epoch": 1,
                                                        "stop_reason": reason}
    # a sampled warmup_epochs, when the trial reports none (a multi-worker trial): d is judged at epoch 2, rung 2
    e = SimpleNamespace(trial_id="e", config={"warmup_epochs": 2.0})
    assert asha.on_trial_result(None, e, {"epoch": 1, "fitness": 0.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, e, {"epoch": 2, "fitness": 0.0}) == TrialScheduler.CONTINUE  # first at rung 2
    assert asha.on_trial_result(None, trials[0], {"epoch": 2, "fitness": 0.3}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, e, {"epoch": 3, "fitness": 0.0}) == TrialScheduler.CONTINUE  # rung 2 judged
    # Cut at its own last epoch, a trial is let finish (Tune would kill it while it saves): not an early stop.
    last = SimpleNamespace(trial_id="f", config={"epochs": 1})
    asha.on_trial_add(None, last)
    assert asha.on_trial_result(None, last, {"epoch": 1, "fitness": 0.0}) == TrialScheduler.CONTINUE
    assert "f" not in read_status(tmp_path / STATUS_FILE)


def test_patience_stopper_labels_only_early_stops(tmp_path: Path):
    status = StatusFile(tmp_path / STATUS_FILE)
    stopper = make_patience_stopper(load_space(space(tmp_path, patience=2, train={**TRAIN, "epochs": 6})), status)
    losses = {1: 3.0, 2: 2.0, 3: 2.5, 4: 2.1}  # best at epoch 2; epochs 3 and 4 do not improve (mode min)
    decisions = [stopper("a", {"epoch": e, "train/box_loss": v, "config": {}}) for e, v in losses.items()]
    assert decisions == [False, False, False, True]
    assert read_status(tmp_path / STATUS_FILE)["a"] == {
        "patience_best": 2.0, "patience_best_epoch": 2, "stopped_by": "patience-stopped", "stopped_at_epoch": 4,
        "stop_reason": "stopped by patience at epoch 4: best 2 at epoch 2, none better in the 2 epochs since"}
    # At the trial's own last epoch the rule lets it finish (its weights and tracker runs): a normal completion.
    assert stopper("b", {"epoch": 1, "train/box_loss": 1.0, "config": {"epochs": 3}}) is False
    assert stopper("b", {"epoch": 3, "train/box_loss": 1.5, "config": {"epochs": 3}}) is False
    assert "stopped_by" not in read_status(tmp_path / STATUS_FILE)["b"]
    # A trial in warmup (3.1 epochs): its flat epochs 1-3 do not count; its best is its epoch 4.
    flat = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.01, 5: 0.0, 6: 0.0}
    stopper = make_patience_stopper(load_space(space(tmp_path, patience=2, metric="fitness", mode="max",
                                                     train={**TRAIN, "epochs": 9})), status)
    decisions = [stopper("w", {"epoch": e, "fitness": v, WARMUP_END: 3.1, "config": {}}) for e, v in flat.items()]
    assert decisions == [False, False, False, False, False, True]
    assert read_status(tmp_path / STATUS_FILE)["w"]["patience_best_epoch"] == 4


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
    job = TrialJob(train=make_config(), param_names=("box",), experiment="t", experiment_dir=str(tmp_path),
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

    job = TrialJob(train=make_config(), param_names=("box",), experiment="t", experiment_dir=str(tmp_path),
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
    job = TrialJob(train=make_config(), param_names=("box",), experiment="t", experiment_dir=str(tmp_path),
                   train_storage=str(tmp_path / "_train"), wandb_project="p", wandb_mode="disabled")
    callback = make_status_callback(load_space(space(tmp_path)), status, job)
    trial = SimpleNamespace(trial_id="a_00001", last_result={"fitness": float("nan"), FATAL_ERROR: "model=x.pt: gone"},
                            config={}, local_path=None)
    callback.on_trial_complete(0, [trial], trial)
    record = read_status(tmp_path / STATUS_FILE)["a_00001"]
    assert (record["end"], record["error"], record["epochs_run"]) == ("error", "model=x.pt: gone", 0)
