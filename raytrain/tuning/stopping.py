"""Stopping rules of a tune experiment and the status file they record their decisions in.

ASHA (:func:`make_scheduler`, the rule in :class:`RungRule`) compares trials at epoch rungs; a trial still in its
warmup is judged at its first epoch after it, and a trial within a margin of the cut-off is kept (a rung whose metric
does not separate trials cuts nothing). The patience stopper (:func:`make_patience_stopper`) stops a trial that stopped
improving after its warmup. Tune does not say why it stopped a trial, so each rule writes its reason to
``trial_status.yaml`` (:class:`StatusFile`), and :func:`classify_end` turns that into the trial's ``end``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from raytrain.files import atomic_write
from raytrain.keys import EPOCH
from raytrain.tuning.experiment import read_status
from raytrain.tuning.space import TuneSpec
from raytrain.tuning.trial import WARMUP_END


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

    def mark_stopped(self, trial_id: str, rule: str, epoch: int, reason: str | None = None) -> None:
        """Record which rule stops a trial early, at which epoch and why, in words (the first rule wins)."""
        if not self.read().get(trial_id, {}).get("stopped_by"):
            fields = {"stop_reason": reason} if reason else {}
            self.update(trial_id, stopped_by=rule, stopped_at_epoch=epoch, **fields)


def warmup_end(result: Mapping[str, Any], config: Mapping[str, Any], base: Mapping[str, Any]) -> float:
    """The epoch a trial's warmup ends at: as the trial reported it, else its ``warmup_epochs`` (sampled or fixed).

    A trial that trains in the Tune process reports the exact value (its warmup counts iterations, and the length of
    an epoch in iterations is known only where the data is); a multi-worker trial does not, hence the fallback.
    """
    if isinstance(result.get(WARMUP_END), (int, float)):
        return float(result[WARMUP_END])
    return float(config.get("warmup_epochs", base.get("warmup_epochs", 0.0)) or 0.0)


def planned_epochs(config: Mapping[str, Any], base_epochs: int) -> int:
    """The epochs a trial trains for: its sampled ``epochs``, else the fixed one."""
    return int(config.get("epochs", base_epochs))


def asha_rungs(grace_period: int, max_t: int, reduction_factor: float) -> list[float]:
    """The epochs at which ASHA compares trials, as Ray 2.60's ``_Bracket`` spaces them (``min_t * rf**k``).

    The same as ``raytrain.tuning.dryrun.asha_rungs``, which prints them (it cannot import this module: cycle).
    """
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [grace_period * reduction_factor**k for k in range(count)]


TIE_MARGIN = 0.1  # a loser must trail the cut-off by 10 % of it ...
TIE_FLOOR = 0.005  # ... and by at least this much (fitness is mAP50-95: half a point); else it is a tie, kept


class RungRule:
    """Asynchronous successive halving on epoch rungs (Ray's ASHA, one bracket), with two guards.

    At each rung the cut-off is the ``1 - 1 / reduction_factor`` quantile of the values the trials that reached it
    earlier recorded there (a trial first at a rung always goes on). Unlike Ray's ASHA:

    * a trial is not judged at a rung it reaches during its warmup (its learning rate is still rising, so its metric
      understates it); it is judged at its first epoch after the warmup, against that rung's cut-off;
    * a trial below the cut-off by less than ``max(TIE_FLOOR, TIE_MARGIN * |cut-off|)`` goes on: a rung whose
      metric does not separate trials (at epoch 1 fitness is often 0 or 1e-4 for most) defers the decision to the
      next rung instead of cutting by what is, there, a coin toss. Its value is recorded all the same.

    Plain data, no Ray: Tune pickles the scheduler holding it, and the tests feed it hand-made histories.
    """

    def __init__(self, rungs: list[float], reduction_factor: float, mode: str, *, margin: float = TIE_MARGIN,
                 floor: float = TIE_FLOOR) -> None:
        self.rungs, self.mode, self.margin, self.floor = sorted(rungs), mode, margin, floor
        self.quantile = (1 - 1 / reduction_factor) * 100 if mode == "max" else 100 / reduction_factor
        self.recorded: dict[float, dict[str, float]] = {r: {} for r in self.rungs}

    def cutoff(self, rung: float) -> float | None:
        """The value a trial must reach at ``rung`` (None while no trial has been judged there)."""
        values = list(self.recorded[rung].values())
        return float(np.nanpercentile(values, self.quantile)) if values else None

    def judge(self, trial_id: str, epoch: int, value: float, warmup_end: float = 0.0) -> str | None:
        """Called after each epoch; returns why the trial stops here (``stopped at rung 3 ...``), or None to go on.

        Args:
            trial_id: the trial.
            epoch: the epoch just trained (from 1).
            value: the trial's metric after it.
            warmup_end: the (fractional) epoch its warmup ends at; rungs before it wait.
        """
        judged = max((r for r in self.rungs if trial_id in self.recorded[r]), default=0)
        passed = [r for r in self.rungs if judged < r <= epoch]
        if not passed or epoch < warmup_end or not np.isfinite(value):
            return None
        rung = passed[-1]  # the highest rung reached and not yet judged (lower ones were passed in warmup)
        cut = self.cutoff(rung)
        self.recorded[rung][trial_id] = float(value)
        if cut is None:
            return None
        behind = cut - value if self.mode == "max" else value - cut
        if behind <= max(self.floor, self.margin * abs(cut)):
            return None
        sign = "<" if self.mode == "max" else ">"
        return f"stopped at rung {rung:g} (epoch {epoch}): {value:.4g} {sign} cut-off {cut:.4g}"


def make_scheduler(spec: TuneSpec, status: StatusFile) -> Any:
    """ASHA on the reported ``epoch`` (rungs count epochs) by :class:`RungRule`, recording which trials it cut and
    why; PBT; or FIFO."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    if spec.scheduler == "none":
        return FIFOScheduler()
    if spec.scheduler == "pbt":  # exploits are recorded next to the status file, in the experiment folder
        from raytrain.tuning.pbt import make_pbt

        return make_pbt(spec, Path(status.path).parent)
    base = spec.base_config.to_dict()
    rule = RungRule(asha_rungs(spec.grace_period, spec.max_epochs, spec.reduction_factor), spec.reduction_factor,
                    spec.mode)
    metric = spec.metric

    class EpochASHA(FIFOScheduler):
        """Tune's side of :class:`RungRule`: it sees every result and stops the trials the rule cuts."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            value, epoch = result.get(metric), int(result.get(EPOCH, 0))
            if value is None or not epoch:
                return TrialScheduler.CONTINUE
            reason = rule.judge(trial.trial_id, epoch, float(value), warmup_end(result, trial.config, base))
            # At its own last epoch a trial is let finish: stopped there, Tune would kill it while it writes its
            # weights and closes its tracker runs (a completed trial's are not re-closed by the driver).
            if reason is None or epoch >= planned_epochs(trial.config, base["epochs"]):
                return TrialScheduler.CONTINUE
            status.mark_stopped(trial.trial_id, "asha-stopped", epoch, reason)
            return TrialScheduler.STOP

        def debug_string(self) -> str:
            return "ASHA rungs " + ", ".join(f"{r:g}: cut-off {rule.cutoff(r)}" for r in rule.rungs)

    return EpochASHA()


def make_patience_stopper(spec: TuneSpec, status: StatusFile) -> Any:
    """A Tune Stopper: stop a trial after ``patience`` epochs without improving the metric (None when off)."""
    if not spec.patience:
        return None
    from ray.tune.stopper import Stopper

    metric, mode, patience, base = spec.metric, spec.mode, spec.patience, spec.base_config.to_dict()

    class PatienceStopper(Stopper):
        """Per trial: best metric and its epoch after the warmup; stop when ``epoch - best_epoch >= patience``.

        The best value and epoch live in the status file, not in memory: a resumed experiment restores this object
        as it was pickled at the start, and the count must go on from where the interrupted run left it.
        """

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            value, epoch = result.get(metric), int(result.get(EPOCH, 0))
            if value is None or not epoch or epoch < warmup_end(result, result.get("config", {}), base):
                return False  # a warmup's epochs do not count: its metric can stay at 0 for all of them
            entry = status.read().get(trial_id, {})
            best = (entry["patience_best"], entry["patience_best_epoch"]) if "patience_best_epoch" in entry else None
            better = best is None or (value > best[0] if mode == "max" else value < best[0])
            if better:
                best = (float(value), epoch)
                status.update(trial_id, patience_best=best[0], patience_best_epoch=epoch)
            # Not at the trial's last epoch: it finishes by itself there (see EpochASHA).
            stop = epoch - best[1] >= patience and epoch < planned_epochs(result.get("config", {}), base["epochs"])
            if stop:
                status.mark_stopped(trial_id, "patience-stopped", epoch,
                                    f"stopped by patience at epoch {epoch}: best {best[0]:.4g} at epoch {best[1]}, "
                                    f"none better in the {patience} epochs since")
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


__all__ = ["TIE_FLOOR", "TIE_MARGIN", "RungRule", "StatusFile", "asha_rungs", "classify_end",
           "make_patience_stopper", "make_scheduler", "planned_epochs", "warmup_end"]
