"""Stopping rules of a tune experiment and the status file they record their decisions in.

ASHA (:func:`make_scheduler`) compares trials at epoch rungs, ranking ties by validation loss (:func:`break_ties`);
the patience stopper (:func:`make_patience_stopper`) stops a trial that stopped improving. Tune does not say why it
stopped a trial, so each rule writes its reason to ``trial_status.yaml`` (:class:`StatusFile`), and
:func:`classify_end` turns that into the trial's ``end``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from raytrain.files import atomic_write
from raytrain.keys import EPOCH, TRAIN_LOSS_KEYS, VAL_LOSS_KEYS
from raytrain.tuning.experiment import read_status
from raytrain.tuning.space import TuneSpec


class StatusFile:
    """``trial_status.yaml``, written by the driver: each trial's name, parameters, run folder and end.

    The scheduler, the stopper and the callback each hold one (they are pickled separately by Tune, so they share
    the file, not memory). The driver is single-threaded, so read-modify-write is safe; the write is atomic.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def read(self) -> dict[str, dict[str, Any]]:
        return read_status(Path(self.path))

    def update(self, trial_id: str, **fields: Any) -> None:
        data = self.read()
        data.setdefault(trial_id, {}).update(fields)
        atomic_write(self.path, yaml.safe_dump(data, sort_keys=False))

    def mark_stopped(self, trial_id: str, reason: str, epoch: int) -> None:
        """Record why a trial is being stopped early (the first reason wins)."""
        if not self.read().get(trial_id, {}).get("stopped_by"):
            self.update(trial_id, stopped_by=reason, stopped_at_epoch=epoch)


def planned_epochs(config: Mapping[str, Any], base_epochs: int) -> int:
    """The epochs a trial trains for: its sampled ``epochs``, else the fixed one."""
    return int(config.get("epochs", base_epochs))


def make_scheduler(spec: TuneSpec, status: StatusFile) -> Any:
    """ASHA on the reported ``epoch`` (rungs count epochs), recording which trials it cut; PBT; or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if spec.scheduler == "none":
        return FIFOScheduler()
    if spec.scheduler == "pbt":  # exploits are recorded next to the status file, in the experiment folder
        from raytrain.tuning.pbt import make_pbt

        return make_pbt(spec, Path(status.path).parent)
    base_epochs = spec.base_config.epochs

    metric, mode = spec.metric, spec.mode

    class EpochASHA(ASHAScheduler):
        """ASHA that ranks ties by validation loss and writes ``asha-stopped`` for the trials it cuts short."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, break_ties(result, metric, mode))
            epoch = int(result.get(EPOCH, 0))
            if decision == TrialScheduler.STOP and epoch < planned_epochs(trial.config, base_epochs):
                status.mark_stopped(trial.trial_id, "asha-stopped", epoch)
            return decision

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
            super().on_trial_complete(tune_controller, trial, break_ties(result, metric, mode))

    return EpochASHA(time_attr=EPOCH, max_t=spec.max_epochs, grace_period=spec.grace_period,
                     reduction_factor=spec.reduction_factor)


TIE_BREAK = 1e-9  # per unit of validation loss: far below any real difference in mAP over a validation set


def break_ties(result: dict[str, Any], metric: str, mode: str) -> dict[str, Any]:
    """``result`` with the metric nudged by the validation loss, for ASHA's ranking only.

    In a trial's first epochs mAP and fitness are exactly 0 for most trials. ASHA stops a trial only when it is
    strictly below the rung's cutoff, so when the cutoff is 0 every tied trial goes on and the early rungs cut
    nothing (measured by ``bench/tune_efficiency.py``). Among equal metrics, the lower validation loss ranks higher.
    Loss metrics and results without validation losses are left as they are.
    """
    value, losses = result.get(metric), [result.get(k) for k in VAL_LOSS_KEYS]
    if value is None or metric in VAL_LOSS_KEYS or metric in TRAIN_LOSS_KEYS or None in losses:
        return result
    nudge = TIE_BREAK * float(sum(losses))
    return {**result, metric: float(value) - nudge if mode == "max" else float(value) + nudge}


def make_patience_stopper(spec: TuneSpec, status: StatusFile) -> Any:
    """A Tune Stopper: stop a trial after ``patience`` epochs without improving the metric (None when off)."""
    if not spec.patience:
        return None
    from ray.tune.stopper import Stopper

    metric, mode, patience, base_epochs = spec.metric, spec.mode, spec.patience, spec.base_config.epochs

    class PatienceStopper(Stopper):
        """Per trial: best metric and its epoch; stop when ``epoch - best_epoch >= patience``.

        The best value and epoch live in the status file, not in memory: a resumed experiment restores this object
        as it was pickled at the start, and the count must go on from where the interrupted run left it.
        """

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            value, epoch = result.get(metric), int(result.get(EPOCH, 0))
            if value is None or not epoch:
                return False
            entry = status.read().get(trial_id, {})
            best = (entry["patience_best"], entry["patience_best_epoch"]) if "patience_best_epoch" in entry else None
            better = best is None or (value > best[0] if mode == "max" else value < best[0])
            if better:
                best = (float(value), epoch)
                status.update(trial_id, patience_best=best[0], patience_best_epoch=epoch)
            stop = epoch - best[1] >= patience
            if stop and epoch < planned_epochs(result.get("config", {}), base_epochs):
                status.mark_stopped(trial_id, "patience-stopped", epoch)
            return stop

        def stop_all(self) -> bool:
            return False

    return PatienceStopper()


def classify_end(stopped_by: str | None, epochs_run: int, epochs_planned: int, over_budget: bool) -> str:
    """How a trial that ended without an error ended (Tune itself does not say why it stopped one).

    Args:
        stopped_by: what the scheduler or the patience stopper recorded when it stopped the trial, if anything.
        epochs_run: the last epoch the trial reported.
        epochs_planned: the trial's own epochs.
        over_budget: whether the experiment's ``time_budget_s`` had run out when the trial ended.
    """
    if stopped_by:
        return stopped_by
    if epochs_run < epochs_planned and over_budget:
        return "time-budget"
    return "completed"


__all__ = ["TIE_BREAK", "StatusFile", "break_ties", "classify_end", "make_patience_stopper", "make_scheduler",
           "planned_epochs"]
