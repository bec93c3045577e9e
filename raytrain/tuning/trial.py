"""The trial function: one training run per trial, prepared like ``raytrain fit`` prepares its runs.

A trial plans its run with :func:`raytrain.train.plan.prepare_run` (so its folder is an ordinary run folder), then
trains in one of two ways:

- **In the trial** (one worker per trial, the default): the Ray-free loop runs right here, in the Tune trial's own
  process, which holds the trial's CPUs and GPU (share). Each epoch it reports its metrics and its state folder to Tune
  as a checkpoint; Tune restores a failed or resumed trial from it, and reuses trial processes between trials, so a
  trial starts in seconds. ASHA's stop ends the trial inside its report (nothing is killed).
- **With Ray Train** (``resources.workers`` > 1): a ``TorchTrainer`` with its own workers (DDP across GPUs and
  nodes), reporting to Tune through ``TuneReportCallback``; the trial process itself reserves almost nothing.

Names are stable (the trial's number), so a retried or resumed trial finds its own checkpoints and tracker runs. An
error no retry can fix (a :class:`~raytrain.config.ConfigError`) ends the trial once: its message goes to
``fatal_error.txt`` in the trial folder and the driver marks the trial ``error``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain.config import Config, ConfigError

LOGGER = logging.getLogger("raytrain")
TRAIN_FOLDER = "_train"  # the Ray Train runs (checkpoints) of multi-worker trials, inside the experiment folder
TRIALS_FOLDER = "trials"  # the trials' run folders (weights, results.csv, tracker files)
WARMUP_END = "warmup_end_epoch"  # reported with each epoch's metrics: the (fractional) epoch the warmup ends at
STARTUP_FILE = "startup.json"  # in a trial folder: when each stage of the trial's start-up ended (wall clock)
CHECKPOINT_KEYS = ("model", "pretrained")  # searchable arguments that can name a checkpoint file
# fit's own patience is off in a trial: tune's patience stopper applies the rule and labels the trial.
NO_FIT_PATIENCE = 10**6


@dataclass(frozen=True)
class TrialJob:
    """Everything a trial function needs besides its sampled parameters (small, picklable, paths absolute)."""

    train: Config  # the fixed training arguments, resolved once on the driver; a trial replaces what it samples
    param_names: tuple[str, ...]
    experiment: str  # experiment name: the tracker group
    experiment_dir: str  # absolute: where trial run folders go
    train_storage: str  # absolute path or URI: where multi-worker trials' Train runs keep checkpoints
    wandb_project: str
    wandb_mode: str
    tune_storage: str = ""  # absolute path or URI: Tune's experiment folder (trial_x/checkpoint_* of one-worker trials)
    metric: str = "fitness"  # the experiment's objective (a fatal trial reports it as NaN: see _record_fatal)
    workers: int = 1  # training workers per trial: 1 trains in the trial itself, more start a TorchTrainer
    resources: dict[str, float] = field(default_factory=dict)  # what the trial process reserves
    tracking: dict[str, Any] = field(default_factory=dict)  # from raytrain.tracking.start_experiment
    # Searched model=/pretrained= files as the space names them -> absolute, resolved on the driver: Ray Tune runs
    # each trial in its own folder, where a relative path names nothing.
    checkpoints: dict[str, str] = field(default_factory=dict)
    # The driver's Ray node: a one-worker trial (or a multi-worker trial's rank 0) elsewhere stages its run files in
    # its checkpoints, for raytrain.cluster.sync.TrialFolderMirror to copy into its run folder on the driver's
    # machine ('' = the trial's own node).
    driver_node: str = ""
    # What the trial measures of its model before training and the constraints it checks then
    # (raytrain.tuning.objectives.DeploySpec), or None when no objective or constraint needs a measurement.
    deploy: Any = None
    # The GPUs a trial plans its run with (fit's device plan), decided on the driver from the node types: a trial
    # placed before the autoscaler's GPU nodes joined would otherwise count none and train on CPUs. None: ask Ray.
    gpus_available: int | None = None


def trial_name(trial: Any) -> str:
    """``trial_00003``: a Tune trial's number within the experiment (names its folders and its tracker runs)."""
    return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


def trial_save_dir(job: TrialJob, name: str) -> Path:
    """The run folder of the trial called ``name``."""
    return Path(job.experiment_dir) / TRIALS_FOLDER / name


def trial_overrides(job: TrialJob, name: str) -> dict[str, Any]:
    """Arguments tune sets on every trial's config: its run folder, workers, W&B settings, no fit-side patience."""
    return {"project": str(Path(job.experiment_dir) / TRIALS_FOLDER), "name": name, "exist_ok": True,
            "num_workers": job.workers, "patience": NO_FIT_PATIENCE, "wandb_project": job.wandb_project,
            "wandb_mode": job.wandb_mode, "resume": False}


def trial_config(job: TrialJob, params: dict[str, Any], name: str) -> Any:
    """The trial's Config: the fixed arguments, its sampled values (searched files made absolute) and tune's own."""
    sampled = {k: job.checkpoints.get(v, v) if k in CHECKPOINT_KEYS and isinstance(v, str) else v
               for k, v in params.items()}
    return job.train.replace(**{**sampled, **trial_overrides(job, name)})


def trial_tracking(job: TrialJob, trial_id: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's tracker identity: the experiment as group, a stable run id, the searched values first-class."""
    from raytrain.train.plan import trial_run_id

    return {"group": job.experiment, "name": name, "run_id": trial_run_id(job.experiment, trial_id),
            "params": params, **job.tracking}


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's trial function (see the module docstring)."""
    marks = {"entered": time.time()}
    import ray.tune

    from raytrain.cluster.storage import join_storage
    from raytrain.train.plan import FATAL_FILE, prepare_run
    from raytrain.train.worker import setup_worker_logging

    marks["imported"] = time.time()
    setup_worker_logging(0)
    context = ray.tune.get_context()
    trial_id, name = context.get_trial_id(), context.get_trial_name()
    params = {k: config[k] for k in job.param_names if k in config}
    save_dir = trial_save_dir(job, name)
    (save_dir / FATAL_FILE).unlink(missing_ok=True)  # an earlier attempt's
    try:
        cfg = trial_config(job, params, name)
        plan = prepare_run(cfg, gpus_available=job.gpus_available, save_dir=save_dir, run_name=name,
                           storage_path=job.train_storage,
                           tracking=trial_tracking(job, trial_id, name, params), resolved=True,
                           states=join_storage(job.tune_storage, name) if job.workers == 1 else None)
    except ConfigError as e:  # the same for every attempt: end the trial once (the driver marks it "error")
        _record_fatal(save_dir, str(e), job.metric)
        return
    marks["planned"] = time.time()
    measured = _measure_before_training(plan, job)
    if measured is None:  # ended: infeasible, or an error no retry can fix
        return
    if job.workers > 1:
        _train_with_ray_train(plan, job.metric, job.driver_node, measured)
    else:
        from raytrain.cluster.sync import current_node_id

        _train_in_trial(plan, marks, job.metric,
                        TuneReport(save_dir, job.driver_node not in ("", current_node_id()), measured))


def _measure_before_training(plan: Any, job: TrialJob) -> dict[str, float] | None:
    """The trial's measured values (latency, params, GFLOPs: :mod:`raytrain.tuning.measure`), reported with every
    epoch; None when the trial ended here: its model breaks a constraint (one report with the reason, the trial is
    ``infeasible`` and trains no epoch), or the measurement hit an error no retry can fix."""
    deploy = job.deploy
    if deploy is None or not deploy.measured:
        return {}
    import ray.tune

    from raytrain.keys import EPOCH, INFEASIBLE
    from raytrain.tuning.measure import measure_model

    device = _trial_device(plan.devices.accelerator) if job.workers == 1 else "cpu"
    where = (plan.cfg.model, plan.data.nc, plan.cfg.imgsz, deploy, device, job.experiment_dir)
    try:
        measured = measure_model(*where, latency=False)  # the size first: a model too big is not timed
        if not deploy.violations(measured):
            measured = measure_model(*where)
    except ConfigError as e:
        _record_fatal(plan.save_dir, str(e), job.metric)
        return None
    reasons = deploy.violations(measured)
    if not reasons:
        return measured
    reason = "; ".join(reasons)
    LOGGER.info("%s is infeasible before training (%s): it ends without training.", plan.save_dir.name, reason)
    ray.tune.report({EPOCH: 0, **deploy.untrained_report(measured), **measured, INFEASIBLE: reason})
    return None


def _record_fatal(save_dir: Path, message: str, metric: str, written: bool = False) -> None:
    """End a trial on an error no retry can fix: its one-line reason in the trial folder (``written``: already there,
    by Ray Train's controller) for the driver, and one report to Tune with the objective as NaN, which Tune
    requires of a trial's result, ASHA and the patience rule ignore, and Optuna records as a failed trial."""
    import ray.tune

    from raytrain.files import atomic_write
    from raytrain.keys import FATAL_ERROR
    from raytrain.train.plan import FATAL_FILE

    if not written:
        LOGGER.error("%s", message)
        atomic_write(save_dir / FATAL_FILE, message)
    ray.tune.report({metric: float("nan"), FATAL_ERROR: message})


# ------------------------------------------------------------------------------------------- in the trial itself
def _train_in_trial(plan: Any, marks: dict[str, float], metric: str, report: TuneReport) -> None:
    """The loop in this process: restore from Tune's checkpoint, report each epoch (metrics + state) to Tune."""
    import ray.tune

    from raytrain.engine.loop import run_epochs
    from raytrain.engine.setup import setup_rank
    from raytrain.engine.state import initial_state
    from raytrain.tracking import open_loggers
    from raytrain.train.worker import no_retry_message

    trackers = setup = None
    try:
        try:
            setup = setup_rank(plan.cfg, plan.data, device=_trial_device(plan.devices.accelerator),
                            save_dir=plan.save_dir, callbacks={"on_train_batch_end": [StartupMarks(marks)]},
                            choice=plan.optimizer)
            marks["worker_ready"] = time.time()
            # for ASHA and patience
            report.warmup_end = setup.lr_schedule.warmup_iters / max(len(setup.train_loader), 1)
            checkpoint = ray.tune.get_checkpoint()
            if checkpoint is None:
                state = initial_state(setup)
            else:
                with checkpoint.as_directory() as folder:
                    state = initial_state(setup, Path(folder))
        except ConfigError as e:
            _record_fatal(plan.save_dir, str(e), metric)
            return
        except Exception as e:  # set-up is deterministic: a retry would fail the same way
            _record_fatal(plan.save_dir, no_retry_message(e, "while setting up"), metric)
            return
        trackers = open_loggers(plan.cfg.loggers, plan.tracking, plan.cfg.to_dict(), done_epochs=state.epoch)
        if report.measured:  # the model's latency and size, measured before training: the trial's summary
            trackers.log_summary(dict(report.measured))
        try:
            run_epochs(setup, state, report, trackers=trackers)
        except ConfigError as e:
            _record_fatal(plan.save_dir, str(e), metric)
        except Exception as e:
            if setup.ema.updates > 0:  # after a step: a fault, Tune retries it from the last epoch
                raise
            _record_fatal(plan.save_dir, no_retry_message(e, "before the first optimizer step"), metric)
    finally:  # also when Tune stops the trial inside its report (SystemExit): the process serves the next trial
        if trackers is not None:
            trackers.finish()
        setup = trackers = None
        _release_memory()


class TuneReport:
    """The loop's report sink in a trial: metrics and the state folder (as Tune's checkpoint) to Tune; with ``stage``
    (the trial is not on the driver's node) its run files too, for the driver's
    :class:`raytrain.cluster.sync.TrialFolderMirror`."""

    def __init__(self, save_dir: Path, stage: bool, measured: dict[str, float] | None = None) -> None:
        self.save_dir, self.stage = Path(save_dir), stage
        self.measured = dict(measured or {})  # reported with every epoch (the objectives need them in each result)
        self.warmup_end: float | None = None  # the epoch the warmup ends at, once the worker is built

    def __call__(self, report: Any) -> None:
        import ray.tune

        if self.stage:
            from raytrain.cluster.sync import stage_run_files, trial_run_files

            stage_run_files(self.save_dir, trial_run_files(self.save_dir, report.changed), report.state_dir)
        metrics = report.metrics if self.warmup_end is None else {**report.metrics, WARMUP_END: self.warmup_end}
        ray.tune.report({**metrics, **self.measured},
                        checkpoint=ray.tune.Checkpoint.from_directory(report.state_dir))


class StartupMarks:
    """A batch-end callback that records when the trial's first batch ended, with the earlier start-up marks, in the
    trial folder's ``startup.json`` (read by ``bench/trial_overhead.py``)."""

    def __init__(self, marks: dict[str, float]) -> None:
        self.marks = marks

    def __call__(self, state: Any) -> None:
        if "first_step" in self.marks:
            return
        import json
        import os

        import psutil

        from raytrain.files import atomic_write

        self.marks.update(first_step=time.time(), process_started=psutil.Process(os.getpid()).create_time(),
                          pid=os.getpid())
        atomic_write(state.save_dir / STARTUP_FILE, json.dumps(self.marks))


def _trial_device(accelerator: str) -> Any:
    import torch

    # Tune gave this process its GPU (share) through CUDA_VISIBLE_DEVICES: it is cuda:0 here.
    return torch.device("cuda:0" if accelerator == "cuda" else accelerator)


def _release_memory() -> None:
    """Free what a finished or stopped trial held, so the reused process starts the next trial clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ with Ray Train
def _train_with_ray_train(plan: Any, metric: str, driver_node: str, measured: dict[str, float]) -> None:
    """A ``TorchTrainer`` (several workers, DDP) reporting to Tune; raises what fails the run (Tune retries it).
    A rank 0 away from the tune driver's node stages its run files in its checkpoints, whose paths reach the driver
    with the results (``TrialFolderMirror.on_trial_result`` copies them in)."""
    from raytrain.train.fit import build_trainer
    from raytrain.train.plan import fatal_error

    result = build_trainer(plan, ray_callbacks=[_report_to_tune_callback(measured)],
                           driver_node=driver_node or None).fit()
    if getattr(result, "error", None) is not None:
        raise result.error
    message = fatal_error(plan.save_dir)
    if message is not None:
        _record_fatal(plan.save_dir, message, metric, written=True)


def _report_to_tune_callback(measured: dict[str, float]) -> Any:
    """Ray Train's ``TuneReportCallback``, minus fatal-error reports (they carry no metric, and Tune would reject
    them); those reach the driver through the trial folder (see ``record_fatal_error_callback``). Rank 0's metrics
    get the trial's ``measured`` values."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from raytrain.keys import FATAL_ERROR

    class ReportToTune(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and FATAL_ERROR in metrics[0]:
                return
            if metrics and measured:
                metrics = [{**metrics[0], **measured}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    return ReportToTune()


__all__ = ["TrialJob", "run_trial", "trial_name", "trial_overrides", "trial_save_dir", "trial_tracking"]
