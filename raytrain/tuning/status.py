"""Driver-side bookkeeping of each trial: the status callback (start, retries, how it ended) and W&B finishing.

Tune does not record why a trial ended; :func:`make_status_callback` writes it to ``trial_status.yaml`` (with the
stopping rules' reasons, see :mod:`raytrain.tuning.stopping`). A trial that Tune stopped had its processes killed
before its rank-0 worker could finish its W&B run; :func:`finish_wandb_run` writes that run's epochs and end from
the driver.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH
from raytrain.tuning.experiment import read_result_json
from raytrain.tuning.space import TuneSpec
from raytrain.tuning.stopping import StatusFile, classify_end, planned_epochs
from raytrain.tuning.trial import TrialJob, trial_name, trial_save_dir, wandb_id

LOGGER = logging.getLogger("raytrain")
EPOCH_METRIC_GROUPS = ("fitness", "metrics", "train", "val", "lr", "time")  # key prefixes of fit's epoch metrics


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
            status.update(trial.trial_id, name=trial_name(trial),
                          params={k: trial.config[k] for k in names if k in trial.config},
                          epochs=planned_epochs(trial.config, base_epochs), end="running",
                          save_dir=str(trial_save_dir(job, trial_name(trial))))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, end="running", retries=status.read().get(trial.trial_id, {})
                          .get("retries", 0) + 1)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epoch = int((trial.last_result or {}).get(EPOCH, 0))
            end = classify_end(status.read().get(trial.trial_id, {}).get("stopped_by"), epoch,
                               planned_epochs(trial.config, base_epochs), self.budget_spent())
            status.update(trial.trial_id, end=end, epochs_run=epoch)
            if end != "completed":  # Tune killed its processes: the worker never finished its W&B run
                finish_wandb_run(job, trial, end)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            # The time budget ends the experiment without completing the trials it interrupts.
            if not self.budget_spent():
                return  # a Ctrl-C leaves unfinished trials "running": resume=True continues them
            records = status.read()
            for trial in trials:
                if records.get(trial.trial_id, {}).get("end") == "running":
                    status.update(trial.trial_id, end="time-budget",
                                  epochs_run=int((trial.last_result or {}).get(EPOCH, 0)))
                    finish_wandb_run(job, trial, "time-budget")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, end="error", error=str(getattr(trial, "error_file", "") or ""))
            finish_wandb_run(job, trial, "error")

    return TrialStatusCallback()


def finish_wandb_run(job: TrialJob, trial: Any, end: str) -> None:
    """Write a stopped trial's epochs and how it ended to its W&B run, from the driver.

    When ASHA, the patience rule or the time budget stops a trial, Tune kills the trial's processes: the rank-0
    worker never finishes its W&B run, and an offline run loses the records W&B still buffered. The driver resumes
    the same run id (so it stays one run per trial), logs the epochs Tune received and a summary with ``end``.
    """
    from raytrain.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode(job.wandb_mode)
    if mode == "disabled":
        return
    try:
        import wandb  # noqa: F401  (only to skip quietly when W&B is not installed)
    except ImportError:
        return
    name = trial_name(trial)
    save_dir = trial_save_dir(job, name)
    rows = read_result_json(Path(trial.local_path) / "result.json") if trial.local_path else []
    if trial.last_result and not any(r.get(EPOCH) == trial.last_result.get(EPOCH) for r in rows):
        rows.append(trial.last_result)
    before = set((save_dir / "wandb").glob("*run-*"))
    try:
        run = resume_trial_wandb_run(job, trial, save_dir, mode)
        for row in rows:
            metrics = {k: v for k, v in row.items() if k.split("/")[0] in EPOCH_METRIC_GROUPS
                       and isinstance(v, (int, float))}
            run.log(metrics, step=int(row[EPOCH]))
        run.summary.update({"end": end, "epochs_run": int(rows[-1][EPOCH]) if rows else 0})
        run.finish()
    except Exception as e:  # W&B problems must never fail the experiment
        LOGGER.warning("W&B: could not finish the run of %s (%s): %s", name, end, e)
        # A failed init leaves a run folder with no records: remove it so `wandb sync` sees only real runs.
        for folder in set((save_dir / "wandb").glob("*run-*")) - before:
            if folder.is_dir() and not any(f.stat().st_size for f in folder.glob("*.wandb")):
                shutil.rmtree(folder, ignore_errors=True)


def resume_trial_wandb_run(job: TrialJob, trial: Any, save_dir: Path, mode: str) -> Any:
    """``wandb.init`` resuming a trial's run (same id, group and name), the searched parameters at the config's top
    level so W&B's parallel-coordinates and importance panels see them. (To move into ``raytrain.tracking``.)"""
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=job.wandb_project, entity=job.train.get("wandb_entity"), group=job.experiment,
                      name=trial_name(trial), id=wandb_id(job.experiment, trial.trial_id), resume="allow",
                      dir=str(save_dir), config={k: trial.config[k] for k in job.param_names if k in trial.config},
                      mode=mode, reinit="finish_previous")


__all__ = ["finish_wandb_run", "make_status_callback", "resume_trial_wandb_run"]
