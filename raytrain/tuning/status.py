"""Driver-side bookkeeping of each trial: the status callback (start, retries, how it ended) and its trackers' end.

Tune does not record why a trial ended; :func:`make_status_callback` writes it to ``trial_status.yaml`` (with the
stopping rules' reasons, see :mod:`raytrain.tuning.stopping`, and a trial's own fatal error). A trial that Tune
stopped may not have finished its tracker runs; :func:`finish_trial_trackers` closes them from the driver.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH, FATAL_ERROR, INFEASIBLE
from raytrain.train.plan import fatal_error
from raytrain.tuning.experiment import read_result_json
from raytrain.tuning.space import TuneSpec
from raytrain.tuning.stopping import StatusFile, classify_end, planned_epochs
from raytrain.tuning.trial import TrialJob, trial_name, trial_save_dir

LOGGER = logging.getLogger("raytrain")


def make_status_callback(spec: TuneSpec, status: StatusFile, job: TrialJob) -> Any:
    """A Tune Callback on the driver that records each trial's start and how it ended."""
    from ray.tune import Callback

    base_epochs, budget = spec.base_config.epochs, spec.time_budget_s
    names = job.param_names

    class TrialStatusCallback(Callback):
        def setup(self, **info: Any) -> None:
            # Tune calls setup() before its first step, and its TimeoutStopper starts its own clock at its first
            # stop_all() inside that step (ray/tune/stopper/timeout.py, Ray 2.60): this clock starts first, so
            # when Tune ends the experiment on time_budget_s, budget_spent() is already true.
            self.started = time.monotonic()

        def budget_spent(self) -> bool:
            """Whether the experiment's ``time_budget_s`` has run out (False without a budget)."""
            return budget is not None and time.monotonic() - self.started >= budget

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, name=trial_name(trial), started_at=time.time(),
                          params={k: trial.config[k] for k in names if k in trial.config},
                          epochs=planned_epochs(trial.config, base_epochs), end="running",
                          save_dir=str(trial_save_dir(job, trial_name(trial))))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, end="running", retries=status.read().get(trial.trial_id, {})
                          .get("retries", 0) + 1)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epoch = int((trial.last_result or {}).get(EPOCH, 0))
            # The trial folder's file (a multi-worker trial's controller writes it on this node), or the last report
            # of a one-worker trial, which may have trained on another node.
            fatal = fatal_error(trial_save_dir(job, trial_name(trial))) or (trial.last_result or {}).get(FATAL_ERROR)
            if fatal is not None:  # ended itself on an error no retry can fix: once, with its reason
                status.update(trial.trial_id, end="error", error=fatal, epochs_run=epoch)
                finish_trial_trackers(job, trial, "error")
                return
            infeasible = (trial.last_result or {}).get(INFEASIBLE)
            if infeasible:  # its model broke a constraint: it ended before training (no tracker run was opened)
                status.update(trial.trial_id, end="infeasible", error=str(infeasible), epochs_run=0)
                return
            end = classify_end(status.read().get(trial.trial_id, {}).get("stopped_by"), epoch,
                               planned_epochs(trial.config, base_epochs), self.budget_spent())
            status.update(trial.trial_id, end=end, epochs_run=epoch)
            if end != "completed":  # stopped by Tune: close its tracker runs with the end
                finish_trial_trackers(job, trial, end)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            records = status.read()
            known = {trial.trial_id for trial in trials}
            for trial_id, record in records.items():  # started before a killed driver's last saved state
                if record.get("end") == "running" and trial_id not in known:
                    status.update(trial_id, end="lost")
            # The time budget ends the experiment without completing the trials it interrupts.
            if not self.budget_spent():
                return  # a Ctrl-C leaves unfinished trials "running": resume=True continues them
            for trial in trials:
                if records.get(trial.trial_id, {}).get("end") == "running":
                    status.update(trial.trial_id, end="time-budget",
                                  epochs_run=int((trial.last_result or {}).get(EPOCH, 0)))
                    finish_trial_trackers(job, trial, "time-budget")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, end="error", error=str(getattr(trial, "error_file", "") or ""))
            finish_trial_trackers(job, trial, "error")

    return TrialStatusCallback()


def finish_trial_trackers(job: TrialJob, trial: Any, end: str) -> None:
    """Close a stopped trial's tracker runs from the driver, with the epochs Tune received and how it ended.

    A trial that trained with Ray Train had its processes killed when Tune stopped it: its rank-0 worker never
    finished its tracker runs (an offline W&B run loses what it still buffered). The driver resumes the same runs and
    logs what they lack (:func:`raytrain.tracking.finish_stopped_run`); runs a trial closed itself just get the end.
    """
    from raytrain.tracking import TrackerInfo, finish_stopped_run, resolve_wandb_mode
    from raytrain.tuning.trial import trial_tracking

    name = trial_name(trial)
    params = {k: trial.config[k] for k in job.param_names if k in trial.config}
    identity = trial_tracking(job, trial.trial_id, name, params)
    identity.setdefault("mlflow_uri", job.train.mlflow_uri)
    info = TrackerInfo(save_dir=trial_save_dir(job, name), project=job.wandb_project,
                       wandb_mode=resolve_wandb_mode(job.wandb_mode), wandb_entity=job.train.wandb_entity,
                       **identity)
    rows = read_result_json(Path(trial.local_path) / "result.json") if trial.local_path else []
    if trial.last_result and not any(r.get(EPOCH) == trial.last_result.get(EPOCH) for r in rows):
        rows.append(trial.last_result)
    finish_stopped_run(job.train.loggers, info, rows, end)


__all__ = ["finish_trial_trackers", "make_status_callback"]
