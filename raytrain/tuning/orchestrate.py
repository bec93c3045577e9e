"""Orchestrating a tune experiment on a running Ray: folder, capacity, the Tuner (Optuna or PBT, ASHA, stopper),
restore.

A one-worker trial trains in its own Tune trial process, which reserves the trial's CPUs and GPU (share); a
multi-worker trial's process reserves only a token and its Ray Train workers reserve the rest, which Tune does not
count: the number of concurrent trials is capped at what the cluster can hold either way. Stable names make everything
resumable: the experiment is ``project/name`` (Tune's checkpoints of each trial under it; multi-worker trials' Train
runs under ``project/name/_train``), so ``resume=True`` (``Tuner.restore``) keeps finished trials and continues the
rest.

A stopped multi-worker trial's Train workers are freed by Ray Train's cleaner, which needs the Ray dashboard (State
API): the CLI starts Ray with it, and :func:`check_dashboard` warns when it is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from raytrain.cluster.compat import TRIAL_TOKEN_RESOURCES, dashboard_url, set_restored_settings
from raytrain.cluster.nodes import ClusterShape
from raytrain.cluster.storage import join_storage
from raytrain.config import Config, ConfigError
from raytrain.files import atomic_write, next_run_dir
from raytrain.models.registry import is_checkpoint
from raytrain.tuning.capacity import concurrency_cap, trial_footprint
from raytrain.tuning.experiment import SPACE_FILE, STATUS_FILE, Experiment
from raytrain.tuning.objectives import trial_deploy
from raytrain.tuning.results import summarize
from raytrain.tuning.resume import write_start
from raytrain.tuning.space import TuneSpec
from raytrain.tuning.status import make_status_callback
from raytrain.tuning.stopping import StatusFile, make_patience_stopper, make_scheduler
from raytrain.tuning.trial import CHECKPOINT_KEYS, TRAIN_FOLDER, TRIALS_FOLDER, TrialJob, run_trial, trial_name

LOGGER = logging.getLogger("raytrain")


# -------------------------------------------------------------------------------------------------- experiment
def experiment_dir(spec: TuneSpec) -> Path:
    """``project/name``: a fresh name (name, name2, ...) unless ``resume`` or ``exist_ok``."""
    project = Path(spec.project).expanduser().resolve()
    if spec.resume:
        path = project / spec.name
        if not (path / SPACE_FILE).is_file():
            raise ConfigError(f"resume=True: no tune experiment to resume at {path} (give name=...).")
        return path
    return next_run_dir(project, spec.name, exist_ok=spec.exist_ok)


def resolve_train_args(spec: TuneSpec, gpus_available: int | None = None) -> Config:
    """The fixed arguments resolved once, on the driver, before trials start (``gpus_available``: default, asked
    from the running Ray). Every file a trial will load is opened here, once for the experiment.

    Trials run in their own working directories (possibly on other nodes), so relative ``data=`` / ``model=`` paths
    would break there; built-in datasets are generated or downloaded and scanned here, once, not by every trial.
    """
    from raytrain.models.checkpoint import inspect_checkpoint
    from raytrain.models.weights import resolve_weights
    from raytrain.train.plan import resolve_config

    try:
        train = resolve_config(spec.base_config, gpus_available=gpus_available)
    except ConfigError as e:
        raise ConfigError(f"{spec.source}: train: {e}") from None
    for key in CHECKPOINT_KEYS:  # searched checkpoints: opened here, once, like the fixed ones
        param = spec.space.get(key)
        for value in param.values if param is not None else ():
            if is_checkpoint(value):
                try:
                    inspect_checkpoint(resolve_weights(value, key=key), key=key)  # yolo26n.pt: fetched, converted
                except ConfigError as e:
                    raise ConfigError(f"{spec.source}: space.{key}: {e}") from None
    _check_searched_freeze(spec, train)
    return train


def _check_searched_freeze(spec: TuneSpec, train: Config) -> None:
    """Every (model, freeze) pair the space can draw, checked as a fit would (a trial that freezes every layer would
    fail at its first step): refused on the driver, naming the space key."""
    from raytrain.models.checkpoint import inspect_checkpoint
    from raytrain.models.weights import resolve_weights
    from raytrain.train.plan import check_freeze

    if "freeze" not in spec.space and "model" not in spec.space:
        return
    models = list(spec.space["model"].values) if "model" in spec.space else [train.model]
    freezes = list(spec.space["freeze"].values) if "freeze" in spec.space else [train.freeze]
    for model in models:
        arch = (inspect_checkpoint(resolve_weights(model, key="model"), key="model")["arch"]
                if is_checkpoint(model) else model)
        for freeze in freezes:
            try:
                check_freeze(freeze, arch)
            except ConfigError as e:
                where = "space.freeze" if "freeze" in spec.space else "train.freeze"
                raise ConfigError(f"{spec.source}: {where}: {e}") from None


def check_dashboard(spec: TuneSpec) -> str | None:
    """The Ray dashboard URL; warns when it is missing and trials can be stopped early (workers would leak)."""
    url = dashboard_url()
    stops_early = spec.scheduler == "asha" or spec.patience or spec.time_budget_s
    if not url and stops_early:
        LOGGER.warning("The Ray dashboard is not running: when ASHA or the patience rule stops a trial, its Train "
                       "workers are only freed by Ray's cleaner, which needs the dashboard. Install ray[default] "
                       "and start Ray with the dashboard, or later trials may wait forever.")
    return url


def build_job(spec: TuneSpec, exp_dir: Path, storage_root: str, train: Config,
              cluster: ClusterShape | Mapping[str, float]) -> TrialJob:
    """The trials' shared job; starts the experiment's tracker records (e.g. MLflow's parent run) once."""
    from raytrain.cluster.sync import current_node_id
    from raytrain.models.weights import resolve_weights
    from raytrain.tracking import start_experiment

    footprint = trial_footprint(spec.base_config, cluster)
    workers = footprint.workers
    # A one-worker trial trains in its own process, which reserves the trial's CPUs and GPU (and custom resources);
    # a multi-worker trial's process reserves only a token (its Ray Train workers reserve the real resources).
    resources = dict(footprint.worker) if workers == 1 else dict(TRIAL_TOKEN_RESOURCES)
    project = spec.wandb_project or Path(spec.project).name
    tracking = start_experiment(train.loggers, experiment_dir=exp_dir, name=exp_dir.name, project=project,
                                mlflow_uri=train.mlflow_uri, params=list(spec.space))
    # Ultralytics' weight names (yolo26n.pt) map to their converted file, cached by resolve_train_args.
    checkpoints = {value: str(Path(resolve_weights(value, key=key)).expanduser().resolve()) for key in CHECKPOINT_KEYS
                   if key in spec.space for value in spec.space[key].values
                   if is_checkpoint(value)}
    return TrialJob(
        deploy=trial_deploy(spec),
        train=train, param_names=tuple(spec.space), experiment=exp_dir.name, experiment_dir=str(exp_dir),
        train_storage=join_storage(storage_root, exp_dir.name, TRAIN_FOLDER),
        tune_storage=join_storage(storage_root, exp_dir.name), wandb_project=project,
        wandb_mode=spec.wandb_mode, metric=spec.metric, workers=workers, resources=resources, tracking=tracking,
        checkpoints=checkpoints, driver_node=current_node_id(), gpus_available=footprint.gpus_available,
    )


def make_sampler(spec: TuneSpec) -> Any:
    """Optuna's sampler for the space (:func:`raytrain.tuning.search.make_sampler`: TPE, NSGA-II or random)."""
    from raytrain.tuning.search import make_sampler as sampler

    return sampler(spec)


def build_tuner(spec: TuneSpec, job: TrialJob, exp_dir: Path, storage_root: str, cap: int,
                max_failures: int) -> Any:
    """The :class:`ray.tune.Tuner`: Optuna (define-by-run, seeded) behind a ConcurrencyLimiter, ASHA, stopper; or,
    for ``scheduler: pbt``, a random (seeded) first population evolved by PBT (:mod:`raytrain.tuning.pbt`)."""
    import ray.tune
    from ray.tune.search import ConcurrencyLimiter

    status = StatusFile(exp_dir / STATUS_FILE)
    param_space, keep = None, 2  # a trial resumes from its latest checkpoint
    if spec.scheduler == "pbt":  # PBT refuses a searcher; exploits need the sources' recent checkpoints kept
        from raytrain.tuning.pbt import pbt_search

        search_alg, param_space, keep = pbt_search(spec, cap)
    else:
        from raytrain.tuning.search import make_search

        # Optuna, with its study on disk in the experiment folder (one or several objectives, constraints).
        search_alg = ConcurrencyLimiter(make_search(spec, exp_dir), max_concurrent=cap)
    tune_config = ray.tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
        search_alg=search_alg, scheduler=make_scheduler(spec, status),
        time_budget_s=spec.time_budget_s,
        # Trials that train in their own process reuse it for the next trial (no new process, no new imports).
        reuse_actors=job.workers == 1,
        trial_name_creator=trial_name, trial_dirname_creator=trial_name,
    )
    run_config = ray.tune.RunConfig(
        name=exp_dir.name, storage_path=storage_root, stop=make_patience_stopper(spec, status),
        callbacks=driver_callbacks(spec, job, exp_dir),
        failure_config=ray.tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=keep),
        verbose=1,
    )
    return ray.tune.Tuner(trainable(job), param_space=param_space, tune_config=tune_config, run_config=run_config)


def driver_callbacks(spec: TuneSpec, job: TrialJob, exp_dir: Path) -> list[Any]:
    """The driver's Tune callbacks: each trial's status (start, retries, end), its run folder mirrored here, and
    Tune's per-trial logs kept whole across a restart (these run before Tune's own loggers)."""
    from raytrain.cluster.sync import TrialFolderMirror, TuneLogKeeper

    return [make_status_callback(spec, StatusFile(exp_dir / STATUS_FILE), job),
            TrialFolderMirror(Path(job.experiment_dir) / TRIALS_FOLDER, trial_name), TuneLogKeeper()]


def trainable(job: TrialJob) -> Any:
    """The trial function with its job bound and its own reservation (:attr:`TrialJob.resources`)."""
    import ray.tune

    return ray.tune.with_resources(ray.tune.with_parameters(run_trial, job=job), dict(job.resources))


def run_experiment(spec: TuneSpec, train: Config | None = None, *,
                   overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Run (or resume) the experiment on the running Ray; returns it read back, with its reports written.

    ``train``: the fixed arguments, already resolved (:func:`resolve_train_args`); default: resolved here.
    ``overrides``: the ``key=value`` overrides ``spec`` was loaded with, recorded for an exact resume
    (:mod:`raytrain.tuning.resume`). A resumed ``spec`` is the experiment's saved one
    (:func:`raytrain.tuning.resume.resumed_spec`).

    Also after Ctrl-C: the reports and plots show what ran so far, then the interrupt propagates.
    """
    from raytrain.cluster.nodes import read_cluster_shape
    from raytrain.cluster.storage import resolve_storage

    exp_dir = experiment_dir(spec)
    storage_root = resolve_storage(spec.storage, spec.project)
    if "://" not in storage_root:  # the default (the project folder) too: it is machine-local
        from raytrain.cluster.storage import require_shared_storage

        require_shared_storage(storage_root)
    cluster = read_cluster_shape()  # node types when the cluster can grow: GPU nodes may not exist yet
    cap = concurrency_cap(spec, cluster)
    dashboard = check_dashboard(spec)
    base = spec.base_config
    job = build_job(spec, exp_dir, storage_root, train or resolve_train_args(spec), cluster)
    exp_dir.mkdir(parents=True, exist_ok=True)
    if not spec.resume:
        record_experiment(exp_dir, spec, job.train, overrides or {})
    LOGGER.info("Tuning %d trial(s) of %s (%s %s) in %s: up to %d at a time, %d worker(s) per trial%s.",
                spec.num_samples, ", ".join(spec.space), spec.mode, spec.metric, exp_dir, cap,
                base.num_workers or 1, f"; dashboard {dashboard}" if dashboard else "")
    LOGGER.info("TensorBoard: tensorboard --logdir %s", exp_dir)
    tuner = restore_tuner(spec, job, exp_dir, storage_root, cap) if spec.resume else \
        build_tuner(spec, job, exp_dir, storage_root, cap, max_failures=base.max_failures)
    try:
        tuner.fit()
    finally:
        exp = summarize(exp_dir).experiment  # also after Ctrl-C: the table and plots of what ran so far
    _finish_trackers(job, exp)
    return exp


def record_experiment(exp_dir: Path, spec: TuneSpec, train: Config, overrides: Mapping[str, Any]) -> None:
    """What a resume rebuilds the experiment from: ``tune_space.yaml`` (the validated space, the fixed arguments
    resolved) and ``tune_start.yaml`` (the space file and overrides it was started with)."""
    atomic_write(exp_dir / SPACE_FILE, yaml.safe_dump({**spec.to_dict(), "name": exp_dir.name,
                                                       "train": train.to_dict()},
                                                      sort_keys=False))
    write_start(exp_dir, spec.source, overrides)


def _finish_trackers(job: TrialJob, exp: Experiment) -> None:
    """Close the experiment's tracker records (MLflow's parent run) with the best trial's best metrics."""
    from raytrain.tracking import finish_experiment

    best = exp.best_trial()
    value = best.best(exp.metric, exp.mode)[0] if best else None
    finish_experiment(job.train.loggers, experiment_dir=Path(job.experiment_dir),
                      best={exp.metric: value} if value is not None else None)


def restore_tuner(spec: TuneSpec, job: TrialJob, exp_dir: Path, storage_root: str, cap: int) -> Any:
    """``Tuner.restore``: finished trials stay, unfinished and errored ones continue from their checkpoints."""
    import ray.tune

    path = join_storage(storage_root, exp_dir.name)
    if not ray.tune.Tuner.can_restore(path):
        raise ConfigError(f"resume=True: {path} has no Tune experiment state to restore.")
    LOGGER.info("Resuming %s: finished trials are kept, unfinished trials continue from their last epoch.", path)
    tuner = ray.tune.Tuner.restore(path, trainable(job), resume_unfinished=True, resume_errored=True)
    # Tune restores its own settings from the experiment; the ones a resume may change are put back from ``spec``.
    set_restored_settings(tuner, time_budget_s=spec.time_budget_s, max_concurrent=cap,
                          callbacks=driver_callbacks(spec, job, exp_dir))
    return tuner


__all__ = ["build_job", "build_tuner", "check_dashboard", "concurrency_cap", "driver_callbacks", "experiment_dir",
           "make_sampler", "record_experiment", "run_experiment", "trial_footprint"]
