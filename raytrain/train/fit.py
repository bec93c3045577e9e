"""``raytrain.fit()``: plan a run, train it with a Ray Train ``TorchTrainer``, return the results.

``raytrain fit`` is :mod:`raytrain.commands.fit`.

The plan (:mod:`raytrain.train.plan`) checks and resolves everything before Ray starts, when Ray is started here; the
trainer runs :func:`raytrain.train.worker.train_worker` on each worker, which runs the Ray-free epoch loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytrain.config import FIELDS, Config, ConfigError, make_config
from raytrain.train.plan import RunPlan, prepare_run

LOGGER = logging.getLogger("raytrain")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns: the last epoch's metrics and where the weights are."""

    metrics: dict[str, float]
    best: Path
    last: Path
    save_dir: Path


def fit(cfg: Config | None = None, *, callbacks: dict[str, list[Callable]] | None = None, start_ray: bool = False,
        **overrides: Any) -> FitResult:
    """Train one detector with Ray Train and return its metrics and weights.

    Ray must be running (``ray.init()`` locally, ``ray.init(address=...)`` for a cluster): library code does not
    start or stop Ray behind your back. ``start_ray=True`` (what ``raytrain fit`` does) starts a local Ray (or
    connects to ``address=`` / ``RAY_ADDRESS``) and shuts it down afterwards.

    Args:
        cfg: a Config (default: all defaults); ``overrides`` are ``key=value`` arguments on top.
        callbacks: ``{event: [functions]}``, see :mod:`raytrain.engine.callbacks`; they run on the rank-0 worker,
            so they must be picklable module-level functions.
        start_ray: start (and afterwards stop) Ray when it is not running.

    Returns:
        A :class:`FitResult` (``metrics`` of the last epoch, ``best``/``last`` weights, the run folder).

    Example:
        >>> import ray, raytrain
        >>> ray.init()
        >>> result = raytrain.fit(data="shapes", epochs=10, imgsz=320)
    """
    import ray

    from raytrain.engine.callbacks import check_callbacks

    cfg = cfg.replace(**overrides) if cfg is not None else make_config(overrides, where=["overrides"])
    checked = check_callbacks(callbacks)
    if ray.is_initialized():
        return run(prepare_run(cfg, callbacks=checked))
    if not start_ray:
        raise RuntimeError("raytrain.fit() needs Ray running: call ray.init() first (ray.init(address='auto') "
                           "to join a cluster), or pass start_ray=True to start and stop a local Ray here.")
    address = cfg.address or os.environ.get("RAY_ADDRESS")  # a documented entry point: it may read RAY_ADDRESS
    address = None if address in (None, "", "local") else address
    plan = None
    if address is None:  # local: check everything before paying for Ray's start
        from raytrain.engine.devices import check_local_gpu_ids

        check_local_gpu_ids(cfg.device, _local_cuda_count())
        cfg = _use_local_cpus(cfg)
        plan = prepare_run(cfg, gpus_available=_local_cuda_count(), callbacks=checked)
    from raytrain.cluster.local import init_ray

    init_ray(address, gpu_ids=plan.devices.gpu_ids if plan is not None else None)
    try:
        return run(plan or prepare_run(cfg, callbacks=checked))
    finally:
        ray.shutdown()


def _local_cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def _use_local_cpus(cfg: Config) -> Config:
    """On a local CPU run started by us, give the workers this machine's cores (default is 1 CPU per worker)."""
    from raytrain.engine.devices import plan_devices

    devices = plan_devices(cfg.device, cfg.num_workers, _local_cuda_count())
    if devices.accelerator != "cpu" or cfg.cpus_per_worker != FIELDS["cpus_per_worker"].default:
        return cfg
    return cfg.replace(cpus_per_worker=max((os.cpu_count() or 1) // devices.num_workers, 1))


def build_trainer(plan: RunPlan, *, ray_callbacks: Sequence[Any] = (), driver_node: str | None = None) -> Any:
    """A :class:`ray.train.torch.TorchTrainer` for a prepared run (Ray must be running).

    Args:
        plan: from :func:`raytrain.train.plan.prepare_run`.
        ray_callbacks: Ray Train ``UserCallback`` s (e.g. Tune's ``TuneReportCallback``).
        driver_node: the Ray node whose run folder rank 0 feeds (default: this one; see ``worker_config``).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from raytrain.cluster.storage import require_shared_storage
    from raytrain.cluster.sync import RunFolderMirror
    from raytrain.train.worker import record_fatal_error_callback, train_worker, worker_config

    cfg, devices = plan.cfg, plan.devices
    if not Path(plan.storage_path).is_absolute() and "://" not in plan.storage_path:
        raise ConfigError(f"storage_path={plan.storage_path!r} must be absolute (Ray workers run in their own folder).")
    require_shared_storage(plan.storage_path)  # a multi-machine cluster needs storage every node reaches
    if devices.note:
        LOGGER.warning(devices.note)
    gpu = devices.accelerator == "cuda"
    run_config = ray.train.RunConfig(
        name=plan.run_name,
        storage_path=plan.storage_path,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="fitness",
                                                     checkpoint_score_order="max"),
        callbacks=[RunFolderMirror(plan.save_dir), record_fatal_error_callback(plan.save_dir), *ray_callbacks],
        # W&B mode only; never the API key: each node brings its own credentials (see raytrain.tracking).
        worker_runtime_env={"env_vars": {"WANDB_MODE": plan.tracking.wandb_mode, "WANDB_SILENT": "true"}},
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # keep the epoch lines readable
    )
    scaling = ray.train.ScalingConfig(num_workers=devices.num_workers, use_gpu=gpu,
                                      resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                            **({"GPU": cfg.gpu_share} if gpu else {}),
                                                            **(cfg.worker_resources or {})})
    return TorchTrainer(train_worker, train_loop_config=worker_config(plan, driver_node), scaling_config=scaling,
                        run_config=run_config)


def run(plan: RunPlan) -> FitResult:
    """Build the trainer for a prepared run, train, and collect the result (Ray must be running).

    Raises:
        ConfigError: the workers met an error no retry can fix (the one-line message; Ray did not retry it).
    """
    from raytrain.train.plan import FATAL_FILE, fatal_error

    (plan.save_dir / FATAL_FILE).unlink(missing_ok=True)  # an earlier attempt's (e.g. fixed since, then resumed)
    trainer = build_trainer(plan)
    try:
        result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        # Ray Train's own Ctrl-C handler aborts the run, then exits with SystemExit: code 0 from the handler, or
        # code 1 from Ray's core worker when the handler fires inside a blocking ray.get (the usual case).
        last = plan.save_dir / "weights" / "last.pt"
        if last.is_file():
            LOGGER.warning("Training interrupted. Continue it with: raytrain fit resume=%s", last)
        else:
            LOGGER.warning("Training interrupted before its first epoch ended: there is no checkpoint to resume.")
        raise KeyboardInterrupt from None
    error = fatal_error(plan.save_dir)
    if error is not None:
        raise ConfigError(error)
    weights = plan.save_dir / "weights"
    return FitResult(dict(result.metrics or {}), weights / "best.pt", weights / "last.pt", plan.save_dir)
