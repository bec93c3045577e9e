"""Run a ``raytrain tune`` experiment: Ray Tune + Optuna (TPE) + ASHA + a patience rule, one ``fit`` per trial.

Each trial is a plain function run by the :class:`ray.tune.Tuner`; it builds a Ray Train ``TorchTrainer`` with
:func:`raytrain.ray_fit.build_trainer` (its own workers, one or several GPUs) and calls ``fit()``. Train reports every
epoch to Tune through ``TuneReportCallback``, so ASHA (on the reported ``epoch``) and the patience stopper can cut
weak trials. The trial function itself reserves almost nothing, and the number of concurrent trials is capped at
what the cluster can hold, because Tune does not count Train's workers.

Stable names make everything resumable: the experiment is ``project/name``; each trial's Train run is named after
its trial id under ``project/name/_train``, so a retried or resumed trial finds its own last checkpoint.
``resume=True`` calls ``Tuner.restore``: finished trials are kept, unfinished ones continue.

A stopped trial's Train workers are freed by Ray Train's cleaner, which needs the Ray dashboard (State API): the
CLI starts Ray with it, and :func:`check_dashboard` warns when it is missing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytrain.config import Config, ConfigError, make_config
from raytrain.tune.results import SPACE_FILE, STATUS_FILE, Experiment, read_result_json, read_status, summarize
from raytrain.tune.space import TuneSpec, load_space

LOGGER = logging.getLogger("raytrain")
# What the trial function itself reserves: no CPU (its Train workers reserve the real resources; even 0.01 CPU would
# keep a second 1-CPU trial off a 2-CPU machine). Tune needs a non-empty request, hence a token of memory.
TRIAL_RESOURCES = {"CPU": 0, "memory": 2**20}
TRAIN_FOLDER = "_train"  # the trials' Ray Train runs (checkpoints) inside the experiment folder
TRIALS_FOLDER = "trials"  # the trials' fit run folders (weights, results.csv, W&B files)
TRAINER_FACTORY = "raytrain.ray_fit:build_trainer"
EPOCH_METRIC_GROUPS = ("fitness", "metrics", "train", "val", "lr", "time")  # key prefixes of fit's epoch metrics


@dataclass
class TuneResult:
    """What :func:`tune` returns."""

    experiment_dir: Path
    best_config: Config | None  # the best trial's full training config (also in best.yaml)
    best_metric: float | None
    metric: str
    mode: str
    trials: list[dict[str, Any]] = field(default_factory=list)  # one row per trial, best first (as trials.csv)

    def dataframe(self) -> Any:
        """The trials table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.trials)


@dataclass(frozen=True)
class TrialJob:
    """Everything a trial function needs besides its sampled parameters (small, picklable, paths absolute)."""

    train: dict[str, Any]  # fixed, resolved training arguments
    param_names: tuple[str, ...]
    experiment: str  # experiment name: the W&B group
    experiment_dir: str  # absolute: where trial run folders go
    train_storage: str  # absolute path or URI: where the trials' Train runs keep checkpoints
    wandb_project: str
    wandb_mode: str
    trainer_factory: str = TRAINER_FACTORY  # "module:function" with build_trainer's signature


# ------------------------------------------------------------------------------------------------- trial function
def trial_overrides(job: TrialJob, trial_name: str) -> dict[str, Any]:
    """Arguments tune sets on every trial's config: its run folder, W&B settings, and no fit-side patience."""
    epochs_cap = 10**6  # fit's own patience off: tune's stopper applies the rule and labels the trial
    return {"project": str(Path(job.experiment_dir) / TRIALS_FOLDER), "name": trial_name, "exist_ok": True,
            "patience": epochs_cap, "wandb_project": job.wandb_project, "wandb_mode": job.wandb_mode,
            "resume": False}


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's trial function: one ``raytrain fit`` run as a Ray Train ``TorchTrainer``, reporting every epoch."""
    import importlib

    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    context = ray.tune.get_context()
    trial_id, trial_name = context.get_trial_id(), context.get_trial_name()
    params = {k: config[k] for k in job.param_names if k in config}
    cfg = make_config(job.train, params, trial_overrides(job, trial_name))
    module, _, name = job.trainer_factory.partition(":")
    build_trainer = getattr(importlib.import_module(module), name)
    trainer = build_trainer(
        cfg,
        run_name=trial_name,  # stable across retries and resume: Train finds its own snapshot
        storage_path=job.train_storage,
        save_dir=Path(cfg.project) / trial_name,
        ray_callbacks=[TuneReportCallback()],
        tracking={"group": job.experiment, "name": trial_name, "id": wandb_id(job.experiment, trial_id)},
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise result.error


def wandb_id(experiment: str, trial_id: str) -> str:
    """The W&B run id of a trial: stable, so a retried or resumed trial continues its W&B run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{experiment}-{trial_id}")[:64]


# ------------------------------------------------------------------------------------- end-of-trial bookkeeping
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
        tmp = Path(self.path).with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        os.replace(tmp, self.path)

    def mark_stopped(self, trial_id: str, reason: str, epoch: int) -> None:
        """Record why a trial is being stopped early (the first reason wins)."""
        if not self.read().get(trial_id, {}).get("stopped_by"):
            self.update(trial_id, stopped_by=reason, stopped_at_epoch=epoch)


def planned_epochs(config: Mapping[str, Any], base_epochs: int) -> int:
    """The epochs a trial trains for: its sampled ``epochs``, else the fixed one."""
    return int(config.get("epochs", base_epochs))


def make_scheduler(spec: TuneSpec, status: StatusFile) -> Any:
    """ASHA on the reported ``epoch`` (rungs count epochs), recording which trials it cut; or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if spec.scheduler == "none":
        return FIFOScheduler()
    base_epochs = spec.base_config.epochs

    metric, mode = spec.metric, spec.mode

    class EpochASHA(ASHAScheduler):
        """ASHA that ranks ties by validation loss and writes ``asha-stopped`` for the trials it cuts short."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, break_ties(result, metric, mode))
            epoch = int(result.get("epoch", 0))
            if decision == TrialScheduler.STOP and epoch < planned_epochs(trial.config, base_epochs):
                status.mark_stopped(trial.trial_id, "asha-stopped", epoch)
            return decision

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
            super().on_trial_complete(tune_controller, trial, break_ties(result, metric, mode))

    return EpochASHA(time_attr="epoch", max_t=spec.max_epochs, grace_period=spec.grace_period,
                     reduction_factor=spec.reduction_factor)


VAL_LOSSES = ("val/box_loss", "val/cls_loss", "val/dfl_loss")
TIE_BREAK = 1e-9  # per unit of validation loss: far below any real difference in mAP over a validation set


def break_ties(result: dict[str, Any], metric: str, mode: str) -> dict[str, Any]:
    """``result`` with the metric nudged by the validation loss, for ASHA's ranking only.

    In a trial's first epochs mAP and fitness are exactly 0 for most trials. ASHA stops a trial only when it is
    strictly below the rung's cutoff, so when the cutoff is 0 every tied trial goes on and the early rungs cut
    nothing (measured by ``bench/tune_efficiency.py``). Among equal metrics, the lower validation loss ranks higher.
    Loss metrics and results without validation losses are left as they are.
    """
    value, losses = result.get(metric), [result.get(k) for k in VAL_LOSSES]
    if value is None or metric in VAL_LOSSES or metric.startswith("train/") or None in losses:
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
            value, epoch = result.get(metric), int(result.get("epoch", 0))
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


def make_status_callback(spec: TuneSpec, status: StatusFile, job: TrialJob) -> Any:
    """A Tune Callback on the driver that records each trial's start and how it ended."""
    from ray.tune import Callback

    base_epochs, budget = spec.base_config.epochs, spec.time_budget_s
    names = job.param_names

    class TrialStatusCallback(Callback):
        def setup(self, **info: Any) -> None:
            self.started = time.monotonic()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, name=_trial_name(trial),
                          params={k: trial.config[k] for k in names if k in trial.config},
                          epochs=planned_epochs(trial.config, base_epochs), end="running",
                          save_dir=str(Path(job.experiment_dir) / TRIALS_FOLDER / _trial_name(trial)))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status.update(trial.trial_id, end="running", retries=status.read().get(trial.trial_id, {})
                          .get("retries", 0) + 1)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epoch = int((trial.last_result or {}).get("epoch", 0))
            over_budget = budget is not None and time.monotonic() - self.started >= budget * 0.98
            end = classify_end(status.read().get(trial.trial_id, {}).get("stopped_by"), epoch,
                               planned_epochs(trial.config, base_epochs), over_budget)
            status.update(trial.trial_id, end=end, epochs_run=epoch)
            if end != "completed":  # Tune killed its processes: the worker never finished its W&B run
                finish_wandb_run(job, trial, end)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            # The time budget ends the experiment without completing the trials it interrupts.
            if budget is None or time.monotonic() - self.started < budget * 0.98:
                return  # a Ctrl-C leaves unfinished trials "running": resume=True continues them
            records = status.read()
            for trial in trials:
                if records.get(trial.trial_id, {}).get("end") == "running":
                    status.update(trial.trial_id, end="time-budget",
                                  epochs_run=int((trial.last_result or {}).get("epoch", 0)))
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
        import wandb
    except ImportError:
        return
    name = _trial_name(trial)
    save_dir = Path(job.experiment_dir) / TRIALS_FOLDER / name
    rows = read_result_json(Path(trial.local_path) / "result.json") if trial.local_path else []
    if trial.last_result and not any(r.get("epoch") == trial.last_result.get("epoch") for r in rows):
        rows.append(trial.last_result)
    before = set((save_dir / "wandb").glob("*run-*"))
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=job.wandb_project, entity=job.train.get("wandb_entity"), group=job.experiment,
                         name=name, id=wandb_id(job.experiment, trial.trial_id), resume="allow", dir=str(save_dir),
                         config={k: trial.config[k] for k in job.param_names if k in trial.config}, mode=mode,
                         reinit="finish_previous")
        for row in rows:
            metrics = {k: v for k, v in row.items() if k.split("/")[0] in EPOCH_METRIC_GROUPS
                       and isinstance(v, (int, float))}
            run.log(metrics, step=int(row["epoch"]))
        run.summary.update({"end": end, "epochs_run": int(rows[-1]["epoch"]) if rows else 0})
        run.finish()
    except Exception as e:  # W&B problems must never fail the experiment
        LOGGER.warning("W&B: could not finish the run of %s (%s): %s", name, end, e)
        # A failed init leaves a run folder with no records: remove it so `wandb sync` sees only real runs.
        for folder in set((save_dir / "wandb").glob("*run-*")) - before:
            if folder.is_dir() and not any(f.stat().st_size for f in folder.glob("*.wandb")):
                shutil.rmtree(folder, ignore_errors=True)


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


def _trial_name(trial: Any) -> str:
    """``trial_00003``: the trial's number within the experiment (names its folders and its W&B run)."""
    return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


# -------------------------------------------------------------------------------------------------- capacity
def trial_footprint(cfg: Config) -> tuple[int, float, int]:
    """(training workers, CPUs, GPUs) one trial's Train worker group reserves."""
    workers = cfg.num_workers or 1
    gpu = cfg.device.strip().lower() not in ("cpu", "mps")
    return workers, workers * cfg.cpus_per_worker, workers if gpu else 0


def concurrency_cap(spec: TuneSpec, cluster: Mapping[str, float]) -> int:
    """How many trials the cluster can train at once: by GPUs for GPU trials, else by CPUs.

    Tune does not see the Train workers a trial starts, so it would happily start more trials than there are
    workers for; they would then wait for resources forever. ``max_concurrent_trials`` may lower the cap.
    """
    _, cpus, gpus = trial_footprint(spec.base_config)
    if gpus and cluster.get("GPU", 0) >= gpus:
        fits = int(cluster.get("GPU", 0) // gpus)
    else:
        fits = int((cluster.get("CPU", 0) + 1e-9) // cpus)
    if fits < 1:
        what = f"{gpus} GPU(s)" if gpus else f"{cpus:g} CPU(s)"
        raise ConfigError(f"{spec.source}: resources: one trial needs {what} for its training workers, but the "
                          f"cluster has {dict(cluster)}: lower resources.workers / cpus_per_worker, or set "
                          f"gpu: false.")
    if spec.max_concurrent_trials:
        if spec.max_concurrent_trials > fits:
            LOGGER.warning("max_concurrent_trials=%d but the cluster holds %d trial(s) at once now: the others "
                           "wait for workers (fine on an autoscaling cluster).", spec.max_concurrent_trials, fits)
        return spec.max_concurrent_trials
    return fits


# -------------------------------------------------------------------------------------------------- experiment
def experiment_dir(spec: TuneSpec) -> Path:
    """``project/name``: a fresh name (name, name2, ...) unless ``resume`` or ``exist_ok``."""
    project = Path(spec.project).expanduser().resolve()
    path = project / spec.name
    if spec.resume:
        if not (path / SPACE_FILE).is_file():
            raise ConfigError(f"resume=True: no tune experiment to resume at {path} (give name=...).")
        return path
    if spec.exist_ok or not path.exists():
        return path
    n = 2
    while (project / f"{spec.name}{n}").exists():
        n += 1
    return project / f"{spec.name}{n}"


def resolve_train_args(spec: TuneSpec) -> dict[str, Any]:
    """The fixed arguments resolved once, on the driver, before trials start (Ray must be running).

    Trials run in their own working directories (possibly on other nodes), so relative ``data=`` / ``model=`` paths
    would break there; built-in datasets are generated or downloaded and scanned here, once, not by every trial.
    """
    from raytrain.fit import resolve_config

    try:
        return resolve_config(spec.base_config).to_dict()
    except ConfigError as e:
        raise ConfigError(f"{spec.source}: train: {e}") from None


def check_dashboard(spec: TuneSpec) -> str | None:
    """The Ray dashboard URL; warns when it is missing and trials can be stopped early (workers would leak)."""
    try:
        from ray._private.worker import get_dashboard_url

        url = get_dashboard_url() or None
    except Exception:  # private API: never let it break a run
        url = None
    stops_early = spec.scheduler == "asha" or spec.patience or spec.time_budget_s
    if not url and stops_early:
        LOGGER.warning("The Ray dashboard is not running: when ASHA or the patience rule stops a trial, its Train "
                       "workers are only freed by Ray's cleaner, which needs the dashboard. Install ray[default] "
                       "and start Ray with the dashboard, or later trials may wait forever.")
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url


def build_job(spec: TuneSpec, exp_dir: Path, storage_root: str, trainer_factory: str) -> TrialJob:
    return TrialJob(
        train=resolve_train_args(spec), param_names=tuple(spec.space), experiment=exp_dir.name,
        experiment_dir=str(exp_dir), train_storage=_join(storage_root, exp_dir.name, TRAIN_FOLDER),
        wandb_project=spec.wandb_project or Path(spec.project).name, wandb_mode=spec.wandb_mode,
        trainer_factory=trainer_factory,
    )


def _join(root: str, *parts: str) -> str:
    """``root/part/...`` for a path or a URI; a URI's query (``s3://b/p?endpoint_override=...``) stays at the end."""
    if "://" not in root:
        return str(Path(root, *parts))
    base, sep, query = root.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def make_sampler(spec: TuneSpec) -> Any:
    """Optuna's sampler for the space: TPE (random for its first ``n_startup_trials`` trials) or random, seeded."""
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.search_seed, n_startup_trials=spec.n_startup_trials)
    return optuna.samplers.RandomSampler(seed=spec.search_seed)


def build_tuner(spec: TuneSpec, job: TrialJob, exp_dir: Path, storage_root: str, cap: int,
                max_failures: int) -> Any:
    """The :class:`ray.tune.Tuner`: Optuna (define-by-run, seeded) behind a ConcurrencyLimiter, ASHA, stopper."""
    import ray.tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    status = StatusFile(exp_dir / STATUS_FILE)
    searcher = OptunaSearch(space=spec.sample_space, metric=spec.metric, mode=spec.mode, sampler=make_sampler(spec),
                            points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None)
    tune_config = ray.tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=cap), scheduler=make_scheduler(spec, status),
        time_budget_s=spec.time_budget_s, reuse_actors=False,
        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
    )
    run_config = ray.tune.RunConfig(
        name=exp_dir.name, storage_path=storage_root, stop=make_patience_stopper(spec, status),
        callbacks=[make_status_callback(spec, status, job)],
        failure_config=ray.tune.FailureConfig(max_failures=max_failures),
        verbose=1,
    )
    return ray.tune.Tuner(trainable(job), tune_config=tune_config, run_config=run_config)


def trainable(job: TrialJob) -> Any:
    """The trial function with its job bound and a token reservation of its own (Train reserves the workers)."""
    import ray.tune

    return ray.tune.with_resources(ray.tune.with_parameters(run_trial, job=job), dict(TRIAL_RESOURCES))


def tune(space: str | Path | Mapping[str, Any], *, start_ray: bool = False, _trainer_factory: str = TRAINER_FACTORY,
         **overrides: Any) -> TuneResult:
    """Search training hyperparameters: one ``raytrain fit`` run per trial, scheduled by Ray Tune.

    Ray must be running (``ray.init(include_dashboard=True)``, or a cluster); ``start_ray=True`` (what
    ``raytrain tune`` does) starts a local Ray with the dashboard, or connects to ``address=`` / ``RAY_ADDRESS``,
    and shuts it down afterwards. The search space is validated before any trial starts.

    Args:
        space: a search-space YAML file, or the same structure as a dict.
        start_ray: start (and afterwards stop) Ray when it is not running.
        **overrides: experiment settings (``num_samples=4``, ``name=x``, ``resume=True``, ...) or training
            arguments (``epochs=3``, ``data=coco128``; a searched argument given here is fixed).

    Returns:
        A :class:`TuneResult` (experiment folder, best config and metric, the ranked trials).
    """
    import ray

    spec = load_space(space, overrides)
    if ray.is_initialized():
        return _run(spec, _trainer_factory)
    if not start_ray:
        raise RuntimeError("raytrain.tune() needs Ray running: call ray.init(include_dashboard=True) first "
                           "(ray.init(address='auto') to join a cluster), or pass start_ray=True.")
    from raytrain.cluster.local import init_ray

    init_ray(spec.address or os.environ.get("RAY_ADDRESS"))
    try:
        return _run(spec, _trainer_factory)
    finally:
        ray.shutdown()


def _run(spec: TuneSpec, trainer_factory: str) -> TuneResult:
    import ray

    from raytrain.cluster.storage import resolve_storage

    exp_dir = experiment_dir(spec)
    storage_root = resolve_storage(spec.storage, spec.project)
    if "://" not in storage_root:  # the default (the project folder) too: it is machine-local
        from raytrain.cluster.storage import require_shared_storage

        require_shared_storage(storage_root)
    cap = concurrency_cap(spec, ray.cluster_resources())
    dashboard = check_dashboard(spec)
    base = spec.base_config
    job = build_job(spec, exp_dir, storage_root, trainer_factory)
    exp_dir.mkdir(parents=True, exist_ok=True)
    if not spec.resume:
        (exp_dir / SPACE_FILE).write_text(yaml.safe_dump({**spec.to_dict(), "name": exp_dir.name,
                                                          "train": job.train}, sort_keys=False))
    LOGGER.info("Tuning %d trial(s) of %s (%s %s) in %s: up to %d at a time, %d worker(s) per trial%s.",
                spec.num_samples, ", ".join(spec.space), spec.mode, spec.metric, exp_dir, cap,
                base.num_workers or 1, f"; dashboard {dashboard}" if dashboard else "")
    LOGGER.info("TensorBoard: tensorboard --logdir %s", exp_dir)
    tuner = _restore(spec, job, exp_dir, storage_root, cap) if spec.resume else \
        build_tuner(spec, job, exp_dir, storage_root, cap, max_failures=base.max_failures)
    try:
        tuner.fit()
    finally:
        exp = summarize(exp_dir)  # also after Ctrl-C: the table and plots of what ran so far
    return _result(exp, spec)


def _restore(spec: TuneSpec, job: TrialJob, exp_dir: Path, storage_root: str, cap: int) -> Any:
    """``Tuner.restore``: finished trials stay, unfinished and errored ones continue from their checkpoints."""
    import ray.tune

    path = _join(storage_root, exp_dir.name)
    if not ray.tune.Tuner.can_restore(path):
        raise ConfigError(f"resume=True: {path} has no Tune experiment state to restore.")
    LOGGER.info("Resuming %s: finished trials are kept, unfinished trials continue from their last epoch.", path)
    return ray.tune.Tuner.restore(path, trainable(job), resume_unfinished=True, resume_errored=True)


def _result(exp: Experiment, spec: TuneSpec) -> TuneResult:
    best = exp.best_trial()
    rows = []
    for t in exp.ranked():
        value, epoch = t.best(exp.metric, exp.mode)
        rows.append({"trial": t.name, "trial_id": t.trial_id, "end": t.end, "epochs_run": t.epochs_run,
                     f"final {exp.metric}": t.final(exp.metric), f"best {exp.metric}": value, "best_epoch": epoch,
                     **t.params})
    return TuneResult(experiment_dir=exp.path,
                      best_config=spec.trial_config(best.params) if best else None,
                      best_metric=best.best(exp.metric, exp.mode)[0] if best else None,
                      metric=exp.metric, mode=exp.mode, trials=rows)


# ---------------------------------------------------------------------------------------------------------- CLI
def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain tune SPACE.yaml [key=value ...]``: start (or connect to) Ray with the dashboard, then tune."""
    if len(positional) > 1:
        raise ConfigError("usage: raytrain tune SPACE.yaml [key=value ...] (one search-space file)")
    space = positional[0] if positional else default_space()
    result = tune(space, start_ray=True, **args)
    unfinished = _print_summary(result)
    if unfinished:  # interrupted (Ctrl-C): Tune saved its state
        print(f"{unfinished} trial(s) unfinished. Continue with: raytrain tune {space} "
              f"name={result.experiment_dir.name} project={result.experiment_dir.parent} resume=True")
        return 130
    return 0


def default_space() -> Path:
    """``search_spaces/quickstart.yaml`` next to the package (what ``raytrain tune`` with no file runs)."""
    path = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    if not path.is_file():
        raise ConfigError("usage: raytrain tune SPACE.yaml [key=value ...] (the quickstart space was not found "
                          f"at {path})")
    return path


def _print_summary(result: TuneResult) -> int:
    """Print the ranked trials and where the outputs are; returns how many trials did not finish."""
    from raytrain.tune.results import BEST_YAML, TRIALS_CSV, format_table, load_experiment

    exp = load_experiment(result.experiment_dir)
    print(format_table(exp))
    if result.best_metric is not None:
        print(f"\nBest {result.metric}: {result.best_metric:.6g}. Config: {result.experiment_dir / BEST_YAML} "
              f"(raytrain fit cfg={result.experiment_dir / BEST_YAML})")
    print(f"Results: {result.experiment_dir / TRIALS_CSV}; 'raytrain results {result.experiment_dir}' redraws them.")
    return sum(t.end in ("running", "pending") for t in exp.trials)


__all__ = ["TuneResult", "concurrency_cap", "main", "run_trial", "tune"]
