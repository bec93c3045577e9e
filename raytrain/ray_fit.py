"""Ray Train wiring for ``raytrain fit``: devices and scaling, the per-worker loop, checkpoints, failures.

A :class:`ray.train.torch.TorchTrainer` runs :func:`train_worker` on N data-parallel workers (CPU, or one GPU each).
Every epoch each worker trains on its shard, rank 0 validates the EMA weights, writes the run folder
(``weights/last.pt``, ``best.pt``, ``results.csv``, ``results.png``) and reports the metrics with a checkpoint holding
the full training state; the other ranks report the same metrics without a checkpoint (``report`` is a barrier).

Resume and failures share one mechanism: at start each worker asks ``ray.train.get_checkpoint()``. After a worker
failure Ray restarts the group and hands back the latest registered checkpoint; ``resume=True`` reuses the old Ray
run name and storage, so Ray finds the same snapshot. The checkpoint carries the epoch history, so
``results.csv`` is rewritten with each epoch exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raytrain.config import Config, ConfigError, make_config
from raytrain.engine.train import RunState, Worker, from_rank0, make_worker, mean_over_ranks

LOGGER = logging.getLogger("raytrain")
STATE_FILE = "state.pt"  # full training state in the Ray checkpoint (model, EMA, optimizer, scaler)
HISTORY_FILE = "train_state.json"  # epoch rows and counters in the Ray checkpoint
METRIC_KEYS = (
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss",
)


# --------------------------------------------------------------------------------------------------- devices, batch
@dataclass(frozen=True)
class DevicePlan:
    """How many training workers, and on what (``cpu``, ``cuda`` with one GPU each, or ``mps``)."""

    accelerator: str
    num_workers: int
    note: str = ""  # a warning to show (e.g. GPUs asked for but none available)


def parse_gpu_ids(device: str) -> list[int] | None:
    """``'0,1'`` -> ``[0, 1]``; ``'cuda:1'`` -> ``[1]``; None when ``device`` names no GPU indices."""
    text = device.lower().replace("cuda:", "").replace("cuda", "").replace(" ", "").strip(",")
    if not text:
        return None
    try:
        ids = [int(p) for p in text.split(",") if p]
    except ValueError:
        raise ConfigError(f"device={device!r} is not valid: use cpu, mps, a GPU index like 0, "
                          f"or a list like 0,1.") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"device={device!r} is not valid: GPU indices must be distinct and 0 or more.")
    return ids


def plan_devices(device: str, num_workers: int | None, gpus_available: int) -> DevicePlan:
    """Workers and accelerator for ``device`` / ``num_workers`` given the GPUs Ray can schedule.

    ``cpu``: ``num_workers`` CPU workers (default 1). ``mps``: one local worker on Apple silicon. ``0,1``: one GPU
    worker per listed GPU (``num_workers`` overrides the count on a cluster). ``''``: every GPU, else the CPU.
    GPUs asked for but unavailable fall back to CPU workers with a note.
    """
    device = device.strip().lower()
    if device == "cpu":
        return DevicePlan("cpu", num_workers or 1)
    if device == "mps":
        note = "device=mps runs one local worker; num_workers ignored." if (num_workers or 1) > 1 else ""
        return DevicePlan("mps", 1, note)
    ids = parse_gpu_ids(device)
    if gpus_available <= 0:
        note = f"device={device} asks for GPUs but none are available: training on CPU." if ids else ""
        return DevicePlan("cpu", num_workers or 1, note)
    wanted = num_workers or (len(ids) if ids else gpus_available)
    if wanted > gpus_available:
        raise ConfigError(f"device={device or repr('')} / num_workers={num_workers}: {wanted} GPU workers asked for, "
                          f"but Ray sees {gpus_available} GPU(s).")
    return DevicePlan("cuda", wanted)


def per_worker_batch(batch: int, num_workers: int) -> int:
    """The batch each worker trains on; the global ``batch`` must divide evenly between workers."""
    if batch % num_workers:
        raise ConfigError(f"batch={batch} does not divide between {num_workers} workers: use a multiple of "
                          f"{num_workers} (e.g. batch={max(num_workers, batch // num_workers * num_workers)}).")
    return batch // num_workers


def available_gpus() -> int:
    """GPUs the connected Ray cluster can schedule (or, without Ray, CUDA devices visible to this process)."""
    import ray

    if ray.is_initialized():
        return int(ray.cluster_resources().get("GPU", 0))
    import torch

    return torch.cuda.device_count()


# ---------------------------------------------------------------------------------------------------- the trainer
def wandb_run_id(save_dir: Path, run_name: str) -> str:
    """A stable W&B id for a run, so a restarted or resumed run continues the same W&B run."""
    return hashlib.sha1(f"{save_dir}|{run_name}".encode()).hexdigest()[:16]


def build_trainer(cfg: Config, *, run_name: str, storage_path: str, save_dir: Path,
                  callbacks: dict[str, list[Callable]] | None = None, ray_callbacks: Sequence[Any] = (),
                  tracking: dict[str, str] | None = None) -> Any:
    """A :class:`ray.train.torch.TorchTrainer` that trains ``cfg`` (already resolved: absolute paths, data ready).

    Args:
        cfg: resolved config (see :func:`raytrain.fit.resolve_config`).
        run_name: Ray run name; reusing one with the same ``storage_path`` resumes that run.
        storage_path: absolute path or URI where Ray keeps checkpoints.
        save_dir: the run folder rank 0 writes (must be on a filesystem rank 0 can reach: shared on a cluster).
        callbacks: ``{event: [functions]}`` run on the rank-0 worker (checked with ``check_callbacks``).
        ray_callbacks: Ray Train ``UserCallback`` s (e.g. Tune's ``TuneReportCallback``).
        tracking: W&B ``group``, ``name`` and ``id`` (from tune); default: project/run-folder names.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from raytrain.data import resolve_data
    from raytrain.engine.callbacks import check_callbacks
    from raytrain.cluster.sync import RunFolderMirror, current_node_id
    from raytrain.cluster.storage import require_shared_storage
    from raytrain.tracking import resolve_wandb_mode

    if not Path(storage_path).is_absolute() and "://" not in storage_path:
        raise ConfigError(f"storage_path={storage_path!r} must be absolute (Ray workers run in their own folder).")
    require_shared_storage(storage_path)  # a multi-machine cluster needs storage every node reaches
    plan = plan_devices(cfg.device, cfg.num_workers, available_gpus())
    if plan.note:
        LOGGER.warning(plan.note)
    if cfg.batch != -1:
        per_worker_batch(cfg.batch, plan.num_workers)
    elif plan.accelerator != "cuda":
        raise ConfigError("batch=-1 (AutoBatch) needs CUDA workers; resolve_config turns it into 16 on CPU.")
    save_dir = Path(save_dir).resolve()
    tracking = dict(tracking or {})
    wandb_mode = resolve_wandb_mode(cfg.wandb_mode)
    loop_config = {
        "cfg": cfg.to_dict(),
        "data": resolve_data(cfg.data),
        "save_dir": str(save_dir),
        "accelerator": plan.accelerator,
        "callbacks": check_callbacks(callbacks),
        "wandb": {"mode": wandb_mode, "project": cfg.wandb_project or Path(cfg.project).name,
                  "entity": cfg.wandb_entity, "group": tracking.get("group"),
                  "name": tracking.get("name") or save_dir.name,
                  "run_id": tracking.get("id") or wandb_run_id(save_dir, run_name)},
        "interactive": sys.stderr.isatty(),
        # Ray places the Train controller on this (the caller's) node; a rank 0 elsewhere stages its run files
        # in the checkpoint for RunFolderMirror to copy here (see raytrain.cluster.sync).
        "driver_node": current_node_id(),
    }
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if plan.accelerator == "cuda" else {})}
    run_config = ray.train.RunConfig(
        name=run_name,
        storage_path=storage_path,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="fitness",
                                                     checkpoint_score_order="max"),
        callbacks=[RunFolderMirror(save_dir), *ray_callbacks],
        # W&B mode only; never the API key: each node brings its own credentials (see raytrain.tracking).
        worker_runtime_env={"env_vars": {"WANDB_MODE": wandb_mode, "WANDB_SILENT": "true"}},
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # keep the epoch lines readable
    )
    scaling = ray.train.ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.accelerator == "cuda",
                                      resources_per_worker=resources)
    return TorchTrainer(train_worker, train_loop_config=loop_config, scaling_config=scaling, run_config=run_config)


# ------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_dict(model: Any, ema: Any, names: list[str], *, state: RunState, cfg: Config,
                    metrics: dict[str, float], optimizer: Any = None, scaler: Any = None) -> dict[str, Any]:
    """The contract's checkpoint: with ``optimizer`` the full training state, else the small inference file
    (``last.pt``/``best.pt``: the EMA weights as ``model``, no optimizer, like Ultralytics' stripped weights)."""
    from raytrain.engine.ema import unwrap
    from raytrain.models.checkpoint import make_checkpoint

    common = {"ema_updates": ema.updates, "epoch": state.epoch, "best_fitness": state.best_fitness,
              "config": cfg.to_dict(), "metrics": metrics}
    if optimizer is None:
        return make_checkpoint(ema.ema, names, **common)
    return make_checkpoint(unwrap(model), names, ema=ema.ema, optimizer=optimizer.state_dict(),
                           scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                           **common)


# ------------------------------------------------------------------------------------------------ worker helpers
def _setup_logging(rank: int) -> None:
    if not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    # Ray Train logs every report at INFO on each worker (under a logger named by its file); keep the console
    # for the epoch lines.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray version: its logs stay as they are
        pass


def _worker_device(accelerator: str) -> Any:
    import ray.train.torch
    import torch

    if accelerator == "cuda":
        # Ray assigned this worker one GPU (CUDA_VISIBLE_DEVICES); get_device() names it.
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        return device
    return torch.device(accelerator)


def _restore(model: Any, ema: Any, optimizer: Any, scaler: Any, cfg: Config) -> RunState:
    """Training state from Ray's checkpoint (failure restart or resume), else from ``resume=last.pt``, else new."""
    import ray.train

    from raytrain.models.checkpoint import load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            ckpt = load_checkpoint(Path(folder) / STATE_FILE)
            state = RunState(**json.loads((Path(folder) / HISTORY_FILE).read_text()))
        model.load_state_dict(ckpt["model"])
        ema.load(ckpt["ema"], ckpt["ema_updates"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        LOGGER.info("Resuming from Ray checkpoint after epoch %d (optimizer, schedule and EMA restored).",
                    state.epoch)
        return state
    if isinstance(cfg.resume, str):  # Ray's snapshot is gone: weights and history from last.pt, fresh optimizer
        from raytrain.engine.results import read_results_csv

        ckpt = load_checkpoint(cfg.resume)
        model.load_state_dict(ckpt["model"])
        ema.load(ckpt["model"], ckpt["ema_updates"])
        weights = Path(cfg.resume).parent
        csv = weights.parent / "results.csv"
        history = [r for r in read_results_csv(csv) if r["epoch"] <= ckpt["epoch"]] if csv.is_file() else []
        best = weights / "best.pt"
        LOGGER.warning("No Ray checkpoint for this run: resuming from %s after epoch %d with a fresh optimizer "
                       "state (weights, EMA, schedule position and history restored).", cfg.resume, ckpt["epoch"])
        return RunState(epoch=ckpt["epoch"], best_fitness=ckpt.get("best_fitness"),
                        best_epoch=load_checkpoint(best)["epoch"] if best.is_file() else ckpt["epoch"],
                        train_time=history[-1]["time"] if history else 0.0, history=history)
    return RunState()


def _save_weights(save_dir: Path, ckpt: dict[str, Any], *, improved: bool, epoch: int, save_period: int) -> None:
    """``weights/last.pt`` every epoch, ``best.pt`` when fitness improved, ``epochN.pt`` every ``save_period``."""
    from raytrain.models.checkpoint import save_checkpoint

    weights = save_dir / "weights"
    last = weights / "last.pt"
    save_checkpoint(last, ckpt)
    if improved:
        shutil.copyfile(last, weights / "best.pt")
    if save_period > 0 and epoch % save_period == 0:
        shutil.copyfile(last, weights / f"epoch{epoch}.pt")


def _progress_line(epoch: int, epochs: int, row: dict[str, float], seconds: float, eta: float) -> str:
    return (f"Epoch {epoch}/{epochs}  box {row['train/box_loss']:.3f}  cls {row['train/cls_loss']:.3f}  "
            f"dfl {row['train/dfl_loss']:.3f}  P {row['metrics/precision(B)']:.3f}  "
            f"R {row['metrics/recall(B)']:.3f}  mAP50 {row['metrics/mAP50(B)']:.3f}  "
            f"mAP50-95 {row['metrics/mAP50-95(B)']:.3f}  {seconds:.1f}s/epoch  ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _batch_progress(epoch: int, epochs: int, batches: int) -> Callable[[int, Any], None]:
    """A batch progress bar for interactive terminals: one line per 10 % (Ray forwards worker output by line)."""
    marks = {max(round(batches * k / 10) - 1, 0) for k in range(1, 11)}

    def show(i: int, losses: Any) -> None:
        if i in marks:
            done = (i + 1) / batches
            box, cls, dfl = losses.tolist()
            print(f"  {epoch}/{epochs} [{'=' * round(done * 20):<20}] {i + 1}/{batches}  "
                  f"box {box:.3f} cls {cls:.3f} dfl {dfl:.3f}", flush=True)

    return show


# ------------------------------------------------------------------------------------------------ the worker loop


def _setup_worker(config: dict[str, Any]) -> tuple[Worker, RunState]:
    """This rank's :class:`Worker` inside Ray Train, with the restored state and the model wrapped in DDP."""
    import ray.train
    import ray.train.torch

    cfg = make_config(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _setup_logging(rank)
    device = _worker_device(config["accelerator"])
    spec = dataset_on_this_node(cfg.data, config["data"])
    w = make_worker(cfg, spec, device=device, save_dir=Path(config["save_dir"]), rank=rank, world=world,
                    callbacks=config["callbacks"], interactive=config["interactive"])
    state = _restore(w.model, w.ema, w.optimizer, w.scaler, cfg)
    if not cfg.time or not state.schedule_epochs:
        state.schedule_epochs = cfg.epochs
    if world > 1:
        w.model = ray.train.torch.prepare_model(w.model, move_to_device=device)
    return w, state


def dataset_on_this_node(data: str, spec: Any) -> Any:
    """The driver's resolved dataset, or, on a node where its files are missing, the dataset prepared here.

    Built-in and ``download:`` datasets live on each node's disk: the first worker on a node that lacks them downloads
    (or generates) them, under a file lock, so the other workers on that node wait and reuse the result.
    """
    splits = [*spec.train, *spec.val]
    if all(Path(p).exists() for p in splits):
        return spec
    from raytrain.data import resolve_data

    LOGGER.info("Dataset %s is not on this node yet: preparing it here.", data)
    return resolve_data(data)


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker training loop (runs inside a Ray Train worker; ``config`` from :func:`build_trainer`)."""
    import dataclasses

    import ray.train

    from raytrain.engine.optim import current_lrs
    from raytrain.engine.train import LOSS_NAMES, early_stop, train_one_epoch
    from raytrain.cluster.sync import current_node_id
    from raytrain.tracking import WandbRun

    w, state = _setup_worker(config)
    cfg, nb = w.cfg, len(w.train_loader)
    remote_rank0 = w.rank == 0 and config.get("driver_node", "") not in ("", current_node_id())
    if w.rank == 0:
        cfg.save(w.save_dir / "args.yaml")  # also for runs started by build_trainer alone (tune trials)
        w.wandb = WandbRun(**config["wandb"], save_dir=w.save_dir, config=cfg.to_dict())
        if state.epoch == 0:
            LOGGER.info("Training %s on %d %s worker(s): global batch %d, %d batches per epoch per worker, "
                        "%d epochs, imgsz %d. Run folder: %s", cfg.model, w.world, w.device.type, w.global_batch,
                        nb, state.schedule_epochs, cfg.imgsz, w.save_dir)
    w.emit("on_train_start", state, epoch=state.epoch, metrics=state.history[-1] if state.history else {})
    last_step = state.epoch * nb - 1
    stop = state.epoch >= state.schedule_epochs
    while not stop:
        epoch, started = state.epoch + 1, time.perf_counter()  # epochs from 1
        mosaic = not (cfg.close_mosaic and epoch > state.schedule_epochs - cfg.close_mosaic)
        if not mosaic and epoch == state.schedule_epochs - cfg.close_mosaic + 1:
            LOGGER.info("Closing mosaic for the last %d epochs.", cfg.close_mosaic)
        w.train_loader.set_epoch(epoch, mosaic=mosaic)
        w.emit("on_train_epoch_start", state, epoch=epoch)
        progress = _batch_progress(epoch, state.schedule_epochs, nb) if w.interactive and w.rank == 0 else None

        def on_batch_end(i: int, losses: Any, _epoch: int = epoch, _progress: Any = progress) -> None:
            if _progress is not None:
                _progress(i, losses)
            w.emit("on_train_batch_end", state, epoch=_epoch, batch=i,
                   metrics={f"train/{n}": v for n, v in zip(LOSS_NAMES, losses.tolist(), strict=True)})

        result = train_one_epoch(w.model, w.train_loader, w.optimizer, w.loss_fn, device=w.device, epoch=epoch - 1,
                                 schedule=dataclasses.replace(w.schedule, epochs=state.schedule_epochs), ema=w.ema,
                                 scaler=w.scaler, amp=w.amp, world_size=w.world, iteration=(epoch - 1) * nb,
                                 last_step=last_step, on_batch_end=on_batch_end if w.rank == 0 else None)
        last_step = result.last_step
        losses = mean_over_ranks(result.losses.clone()).tolist()
        row = {"epoch": epoch, **{f"train/{n}": v for n, v in zip(LOSS_NAMES, losses, strict=True)},
               **current_lrs(w.optimizer), "time/train": result.seconds}
        w.emit("on_train_epoch_end", state, epoch=epoch, metrics=row)
        # Decisions every rank must agree on (or the collective calls below would hang) come from rank 0.
        if cfg.time:
            state.schedule_epochs = _epochs_within_time(w, state, epoch, started)
        final = epoch >= state.schedule_epochs
        metrics = _validate(w) if cfg.val or final else None  # every rank validates its shard
        fit = epoch_fitness(metrics, cfg.fitness) if metrics else -sum(losses)  # no val: lower loss is fitter
        improved = state.best_fitness is None or fit >= state.best_fitness
        if improved:
            state.best_fitness, state.best_epoch = fit, epoch
        stop = bool(from_rank0([float(final or early_stop(epoch, state.best_epoch, cfg.patience))], w.device)[0])
        if stop and not final:
            LOGGER.info("Stopping early: no fitness improvement in the last %d epochs (best %.4f at epoch %d; "
                        "patience=%d).", epoch - state.best_epoch, state.best_fitness, state.best_epoch, cfg.patience)
        if stop and metrics is None:
            metrics = _validate(w)
        row.update(metrics or dict.fromkeys(METRIC_KEYS, 0.0))
        row["fitness"] = fit
        state.epoch = epoch
        if w.rank == 0:
            _save_and_report(w, state, row, improved=improved, stop=stop, started=started, stage=remote_rank0)
        else:
            ray.train.report(row, checkpoint=None)
    w.emit("on_train_end", state, epoch=state.epoch, metrics=state.history[-1] if state.history else {})
    if w.wandb is not None:
        w.wandb.finish()


def epoch_fitness(metrics: dict[str, float], key: str) -> float:
    """The number that picks ``best.pt`` and drives ``patience`` (``fitness=`` names the metric)."""
    from raytrain.metrics import fitness

    return float(fitness(metrics, key=key))


def _epochs_within_time(w: Worker, state: RunState, epoch: int, started: float) -> int:
    """Rank 0's answer (shared with every rank) to: how many epochs fit in ``time=`` hours?"""
    from raytrain.engine.optim import epochs_within_time

    fits = epochs_within_time(w.cfg.time, state.train_time + time.perf_counter() - started, epoch)
    fits = int(from_rank0([float(fits)], w.device)[0])
    if fits != state.schedule_epochs:
        LOGGER.info("time=%gh: %d epochs fit; the learning-rate schedule now spans %d epochs.", w.cfg.time, fits, fits)
    return fits


def _validate(w: Worker) -> dict[str, float]:
    """Validate the EMA weights; every rank takes part (``evaluate`` gathers the shards' matches)."""
    from raytrain.engine.validate import evaluate

    result = evaluate(w.ema.ema, w.val_loader, device=w.device, names=w.names, iou=w.cfg.iou,
                      max_det=w.cfg.max_det, loss_fn=w.loss_fn)
    return {k: float(result.metrics.get(k, 0.0)) for k in METRIC_KEYS}


def _save_and_report(w: Worker, state: RunState, row: dict[str, float], *, improved: bool, stop: bool,
                     started: float, stage: bool = False) -> None:
    """Rank 0: write the run folder (csv, png, last/best), log, then report metrics with the full checkpoint.

    With ``stage`` (rank 0 is not on the driver's node) the run files changed this epoch also go into the
    checkpoint, for :class:`raytrain.cluster.sync.RunFolderMirror` to copy into the driver's run folder.
    """
    import ray.train
    from ray.train import Checkpoint

    from raytrain.engine.results import plot_results, write_results_csv
    from raytrain.models.checkpoint import save_checkpoint

    epoch, cfg = int(row["epoch"]), w.cfg
    seconds = time.perf_counter() - started
    state.train_time += seconds
    row.update({"time": state.train_time, "time/epoch": seconds})
    state.history.append(dict(row))
    write_results_csv(w.save_dir / "results.csv", state.history)
    if cfg.plots:
        plot_results(w.save_dir / "results.csv")
    small = checkpoint_dict(w.model, w.ema, w.names, state=state, cfg=cfg, metrics=row)
    _save_weights(w.save_dir, small, improved=improved, epoch=epoch, save_period=cfg.save_period)
    w.emit("on_model_save", state, epoch=epoch, metrics=row)
    if w.wandb is not None:
        w.wandb.log(row, step=epoch)
    eta = 0.0 if stop else (state.schedule_epochs - epoch) * state.train_time / len(state.history)
    LOGGER.info(_progress_line(epoch, state.schedule_epochs, row, seconds, eta))
    w.emit("on_fit_epoch_end", state, epoch=epoch, metrics=row)
    full = checkpoint_dict(w.model, w.ema, w.names, state=state, cfg=cfg, metrics=row, optimizer=w.optimizer,
                           scaler=w.scaler)
    with tempfile.TemporaryDirectory(prefix="raytrain-ckpt-") as folder:
        save_checkpoint(Path(folder) / STATE_FILE, full)
        (Path(folder) / HISTORY_FILE).write_text(json.dumps(asdict(state)))
        if stage:
            from raytrain.cluster.sync import stage_run_files

            weights = w.save_dir / "weights"
            changed = [w.save_dir / "args.yaml", w.save_dir / "results.csv", w.save_dir / "results.png",
                       weights / "last.pt", *([weights / "best.pt"] if improved else []),
                       *([weights / f"epoch{epoch}.pt"] if cfg.save_period > 0 and epoch % cfg.save_period == 0
                         else [])]
            stage_run_files(w.save_dir, changed, Path(folder))
        ray.train.report({k: float(v) for k, v in row.items()}, checkpoint=Checkpoint.from_directory(folder))
    if stop:
        LOGGER.info("%d epochs completed in %.3f hours. Results saved to %s", epoch, state.train_time / 3600,
                    w.save_dir)


__all__ = ["DevicePlan", "RunState", "build_trainer", "per_worker_batch", "plan_devices", "train_worker"]
