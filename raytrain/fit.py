"""``raytrain.fit()`` and ``raytrain fit``: resolve a config into a run, start the Ray Train trainer, return results.

Everything that can be checked is checked here, before any Ray worker starts: arguments, devices and the batch
split, the dataset (resolved or generated, and scanned), model and pretrained files, the run folder. Paths become
absolute, because Ray workers run in working directories of their own.

Resume: the full training state (model, EMA, optimizer, scaler, epoch history) lives in Ray's checkpoints under
``storage`` (default ``<project>/.ray``); ``weights/last.pt`` and ``best.pt`` are small inference files (EMA
weights, no optimizer). ``resume=True`` (latest run in ``project``) or ``resume=path/to/last.pt`` reuses the run's
Ray run name and storage, so Ray hands its latest checkpoint to the workers. If that snapshot is gone, training
continues from ``last.pt`` (weights, EMA, epoch, history) with a fresh optimizer state and a warning.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from raytrain.config import FIELDS, Config, ConfigError, load_config, make_config

LOGGER = logging.getLogger("raytrain")
RUN_FILE = "run.json"  # Ray run name and storage of a run folder, read by resume
# Arguments a resumed run may change; everything else comes from the run's args.yaml.
RESUME_OVERRIDES = ("epochs", "time", "patience", "device", "num_workers", "cpus_per_worker", "workers",
                    "max_failures", "address", "wandb_mode", "verbose", "plots", "save_period")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns: the last epoch's metrics and where the weights are."""

    metrics: dict[str, float]
    best: Path
    last: Path
    save_dir: Path


@dataclass(frozen=True)
class RunPlan:
    """A resolved, ready-to-start run: everything :func:`raytrain.ray_fit.build_trainer` needs."""

    cfg: Config
    save_dir: Path
    run_name: str
    storage_path: str
    resumed: bool


# ----------------------------------------------------------------------------------------------------- resolving
def _absolute_file(value: str, key: str) -> str:
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{key}={value}: file not found.")
    return str(path)


def resolve_config(cfg: Config, *, gpus_available: int | None = None) -> Config:
    """``cfg`` made ready for Ray workers: absolute paths, dataset resolved (generated/downloaded) and scanned,
    storage absolute, the batch checked against the workers (``batch=-1`` off CUDA becomes 16).

    Tune calls this once for its base config; trial configs made with ``cfg.replace(...)`` keep the paths.

    Args:
        cfg: a validated config.
        gpus_available: GPUs Ray can schedule; default: asked from the connected Ray cluster, or this machine.

    Raises:
        ConfigError: anything that would fail later (missing dataset or weights, batch not divisible, ...).
    """
    from raytrain.data import resolve_data, scan_split
    from raytrain.ray_fit import available_gpus, per_worker_batch, plan_devices
    from raytrain.cluster.storage import resolve_storage

    project = Path(cfg.project).expanduser().resolve()
    changes: dict[str, Any] = {"project": str(project), "storage": resolve_storage(cfg.storage, project / ".ray")}
    if cfg.model.endswith(".pt"):
        changes["model"] = _absolute_file(cfg.model, "model")
    if isinstance(cfg.pretrained, str):
        changes["pretrained"] = _absolute_file(cfg.pretrained, "pretrained")
    if isinstance(cfg.resume, str):
        changes["resume"] = str(Path(cfg.resume).expanduser().resolve())
    plan = plan_devices(cfg.device, cfg.num_workers, available_gpus() if gpus_available is None else gpus_available)
    batch = cfg.batch
    if batch == -1 and plan.accelerator != "cuda":
        LOGGER.info("batch=-1 (AutoBatch) needs CUDA; training on %s with batch=16.", plan.accelerator)
        batch = changes["batch"] = 16
    if batch != -1:
        per_worker_batch(batch, plan.num_workers)
    try:
        spec = resolve_data(cfg.data)
    except FileNotFoundError as e:
        raise ConfigError(f"data={cfg.data}: {e}") from e
    changes["data"] = str(spec.yaml_file)
    for split in ("train", "val"):
        index = scan_split(spec, split)  # also fills the label cache the workers read
        if not index.records:
            raise ConfigError(f"data={cfg.data}: the {split} split has no usable images ({len(index.skipped)} "
                              f"skipped). Run 'raytrain check data={cfg.data}' for details.")
    return cfg.replace(**changes)


def next_run_dir(project: Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or the first free ``name2``, ``name3``, ... (like Ultralytics) unless ``exist_ok``."""
    path = project / name
    n = 2
    while path.exists() and not exist_ok:
        path, n = project / f"{name}{n}", n + 1
    return path


def _find_resume(cfg: Config) -> Path:
    """The ``last.pt`` to resume: the given path (file or run folder), or the newest in ``project``."""
    if isinstance(cfg.resume, str):
        path = Path(cfg.resume).expanduser().resolve()
        path = path / "weights" / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"resume={cfg.resume}: no such checkpoint.")
        return path
    candidates = sorted(Path(cfg.project).expanduser().resolve().glob("*/weights/last.pt"),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"resume=True: no run with weights/last.pt in project={cfg.project}. Pass "
                          f"resume=path/to/last.pt.")
    return candidates[-1]


def _resume_plan(cfg: Config, gpus_available: int | None) -> RunPlan:
    from raytrain.models.checkpoint import load_checkpoint

    last = _find_resume(cfg)
    save_dir = last.parents[1]
    args_file, run_file = save_dir / "args.yaml", save_dir / RUN_FILE
    if not args_file.is_file() or not run_file.is_file():
        raise ConfigError(f"resume={last}: {save_dir} is not a raytrain fit run folder (args.yaml, {RUN_FILE}).")
    defaults = Config()
    changed = {k: getattr(cfg, k) for k in RESUME_OVERRIDES if getattr(cfg, k) != getattr(defaults, k)}
    resumed = load_config(args_file, **changed, resume=str(last))
    epoch = int(load_checkpoint(last)["epoch"])
    if epoch >= resumed.epochs and not resumed.time:
        raise ConfigError(f"resume={last}: that run already trained {epoch}/{resumed.epochs} epochs; nothing to "
                          f"resume. Pass epochs=N (> {epoch}) to train further, or start a new run with "
                          f"pretrained={last}.")
    info = json.loads(run_file.read_text())
    LOGGER.info("Resuming %s after epoch %d (Ray run %s).", save_dir, epoch, info["ray_run_name"])
    resumed = resolve_config(resumed, gpus_available=gpus_available)
    resumed.save(args_file)  # the arguments the run now continues with (e.g. more epochs)
    return RunPlan(resumed, save_dir, info["ray_run_name"], info["storage_path"], resumed=True)


def prepare_run(cfg: Config, *, gpus_available: int | None = None) -> RunPlan:
    """Resolve ``cfg`` (:func:`resolve_config`), pick the run folder and Ray run name, write ``args.yaml``.

    A new run gets a fresh folder (``train``, ``train2``, ... unless ``exist_ok``) and a fresh Ray run name (with
    a timestamp, so even ``exist_ok`` never resumes an old Ray run by accident); ``resume`` reuses both.
    """
    if cfg.resume:
        return _resume_plan(cfg, gpus_available)
    cfg = resolve_config(cfg, gpus_available=gpus_available)
    save_dir = next_run_dir(Path(cfg.project), cfg.name, cfg.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    run_name = f"{save_dir.name}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    cfg.save(save_dir / "args.yaml")
    (save_dir / RUN_FILE).write_text(json.dumps({"ray_run_name": run_name, "storage_path": cfg.storage}, indent=1))
    return RunPlan(cfg, save_dir, run_name, str(cfg.storage), resumed=False)


# ------------------------------------------------------------------------------------------------------ running
def _local_cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def _use_local_cpus(cfg: Config) -> Config:
    """On a local CPU run started by us, give the workers this machine's cores (default is 1 CPU per worker)."""
    from raytrain.ray_fit import plan_devices

    plan = plan_devices(cfg.device, cfg.num_workers, _local_cuda_count())
    if plan.accelerator != "cpu" or cfg.cpus_per_worker != FIELDS["cpus_per_worker"].default:
        return cfg
    return cfg.replace(cpus_per_worker=max((os.cpu_count() or 1) // plan.num_workers, 1))


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

    cfg = make_config(cfg.to_dict() if cfg is not None else {}, overrides, where=["cfg", "overrides"])
    checked = check_callbacks(callbacks)
    if ray.is_initialized():
        return run(prepare_run(cfg), checked)
    if not start_ray:
        raise RuntimeError("raytrain.fit() needs Ray running: call ray.init() first (ray.init(address='auto') "
                           "to join a cluster), or pass start_ray=True to start and stop a local Ray here.")
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    address = None if address == "local" else address
    plan = None
    if address is None:  # local: check everything before paying for Ray's start
        cfg = _use_local_cpus(cfg)
        plan = prepare_run(cfg, gpus_available=_local_cuda_count())
    _init_ray(cfg, address)
    try:
        return run(plan or prepare_run(cfg), checked)
    finally:
        ray.shutdown()


def _init_ray(cfg: Config, address: str | None) -> None:
    """Start a local Ray (only the GPUs that ``device=`` names visible to it) or connect to ``address``."""
    from raytrain.cluster.local import init_ray
    from raytrain.ray_fit import parse_gpu_ids

    if address is None:
        ids = parse_gpu_ids(cfg.device) if cfg.device not in ("cpu", "mps") else None
        if ids and "CUDA_VISIBLE_DEVICES" not in os.environ:
            # Ray then schedules only the GPUs asked for; each worker gets one of them as cuda:0.
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    init_ray(address)


def run(plan: RunPlan, callbacks: dict[str, list[Callable]] | None = None) -> FitResult:
    """Build the trainer for a prepared run, train, and collect the result (Ray must be running)."""
    from raytrain.ray_fit import build_trainer

    trainer = build_trainer(plan.cfg, run_name=plan.run_name, storage_path=plan.storage_path,
                            save_dir=plan.save_dir, callbacks=callbacks)
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
    weights = plan.save_dir / "weights"
    return FitResult(dict(result.metrics or {}), weights / "best.pt", weights / "last.pt", plan.save_dir)


def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain fit key=value ...``: train, starting local Ray (or joining ``address=``/``RAY_ADDRESS``)."""
    if positional:
        raise ConfigError(f"raytrain fit takes only key=value arguments, not {positional[0]!r}.")
    cfg = make_config(args)
    result = fit(cfg, start_ray=True)
    metrics = result.metrics
    LOGGER.info("mAP50 %.3f  mAP50-95 %.3f  best weights: %s", metrics.get("metrics/mAP50(B)", float("nan")),
                metrics.get("metrics/mAP50-95(B)", float("nan")), result.best)
    return 0


class _CallableModule(types.ModuleType):
    """``raytrain.fit`` names both this module and the function: once the submodule is imported, Python binds the
    package attribute ``raytrain.fit`` to the module, so the module forwards calls to :func:`fit`."""

    def __call__(self, *args: Any, **kwargs: Any) -> FitResult:
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
