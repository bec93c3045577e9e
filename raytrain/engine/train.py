"""One training epoch as a plain function, and the setup of one training rank (model, data, optimizer, EMA).

Nothing here knows about Ray: :func:`train_one_epoch` takes a (possibly DDP-wrapped) model, a loader, an optimizer
and the schedule, and :func:`make_worker` builds them for one rank from a Config, so the epoch loop
(:mod:`raytrain.engine.loop`) runs inside a Ray Train worker (:mod:`raytrain.train.worker`) and directly (tests,
``bench/throughput.py``). The collective helpers at the end use
``torch.distributed`` when a process group is up (Ray Train sets it up) and do nothing otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raytrain.config import Config, ConfigError
from raytrain.engine.ema import ModelEMA
from raytrain.engine.optim import Schedule, apply_schedule

LOGGER = logging.getLogger("raytrain")

MAX_GRAD_NORM = 10.0


@dataclass(frozen=True)
class EpochResult:
    """Mean loss parts over the epoch's batches on this worker, and bookkeeping for the next epoch."""

    losses: torch.Tensor  # (3,) mean [box, cls, dfl] after gains
    batches: int
    images: int
    last_step: int  # global iteration of the last optimizer step
    seconds: float


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   ema: ModelEMA | None, max_norm: float = MAX_GRAD_NORM) -> None:
    """Unscale, clip the gradient norm to ``max_norm``, step, zero the gradients, update the EMA."""
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update(model)


def train_one_epoch(model: nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer,
                    loss_fn: Callable, *, device: torch.device, epoch: int, schedule: Schedule,
                    ema: ModelEMA | None, scaler: torch.amp.GradScaler, amp: bool = False, world_size: int = 1,
                    iteration: int = 0, last_step: int = -1,
                    on_batch_end: Callable[[int, torch.Tensor], None] | None = None) -> EpochResult:
    """Train one epoch with warmup, gradient accumulation, AMP, clipping and EMA.

    Args:
        model: the model in train mode output format (a DDP wrapper is fine).
        loader: yields batches as in the data contract (``img`` uint8 (B, 3, H, W), ``targets`` (N, 6)).
        optimizer: from :func:`raytrain.engine.optim.build_optimizer`.
        loss_fn: ``loss_fn(preds, targets, img_hw) -> (total, parts)``; ``total`` is summed over the batch.
        device: where the model lives.
        epoch: 0-based epoch (drives the learning-rate schedule).
        schedule: learning rate, momentum and accumulation per iteration.
        ema: the EMA to update after every optimizer step, or None.
        scaler: gradient scaler (disabled unless AMP on CUDA).
        amp: autocast to float16 on CUDA.
        world_size: data-parallel workers; DDP averages gradients over them, so the loss is multiplied back to a
            sum over the global batch (as in YOLOv8).
        iteration: global iteration (0-based) of this epoch's first batch.
        last_step: global iteration of the previous optimizer step (-1 at the start).
        on_batch_end: called as ``on_batch_end(batch_index, mean_losses_so_far)``.
    """
    model.train()
    mean = torch.zeros(3, device=device)
    start, i, images = time.perf_counter(), -1, 0
    for i, batch in enumerate(loader):
        ni = iteration + i
        apply_schedule(optimizer, schedule, ni, epoch)
        step_now = ni - last_step >= schedule.accumulate(ni)
        imgs = batch["img"].to(device, non_blocking=True).float() / 255
        targets = batch["targets"].to(device, non_blocking=True)
        # Between optimizer steps DDP need not all-reduce gradients: they only accumulate locally.
        sync = contextlib.nullcontext() if step_now or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with torch.autocast(device.type, enabled=amp):
                preds = model(imgs)
                total, parts = loss_fn(preds, targets, tuple(imgs.shape[2:]))
            scaler.scale(total * world_size).backward()
        if step_now:
            optimizer_step(model, optimizer, scaler, ema)
            last_step = ni
        mean = (mean * i + parts.detach().to(mean.dtype)) / (i + 1)
        images += imgs.shape[0]
        if on_batch_end is not None:
            on_batch_end(i, mean)
    return EpochResult(mean, i + 1, images, last_step, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ one rank's setup
@dataclass
class Worker:
    """What one training rank holds while it trains (from :func:`make_worker`; Ray's worker adds DDP)."""

    cfg: Config
    rank: int
    world: int
    device: Any
    names: list[str]
    save_dir: Path
    model: Any  # DDP-wrapped when world > 1
    ema: Any
    optimizer: Any
    scaler: Any
    loss_fn: Any
    train_loader: Any
    val_loader: Any
    schedule: Schedule  # its epochs are replaced every epoch (a time limit can shorten the run)
    global_batch: int
    amp: bool
    callbacks: dict[str, list[Callable]]
    interactive: bool

    def emit(self, event: str, state: Any, **kw: Any) -> None:
        """Run user callbacks for ``event`` (rank 0 only); ``state`` is the loop's ``RunState``."""
        if self.rank != 0:
            return
        from raytrain.engine.callbacks import run_callbacks

        run_callbacks(self.callbacks, event, epochs=state.schedule_epochs, save_dir=self.save_dir,
                      last=self.save_dir / "weights" / "last.pt", best=self.save_dir / "weights" / "best.pt",
                      best_fitness=state.best_fitness, world_size=self.world, batches=len(self.train_loader), **kw)


def make_worker(cfg: Config, spec: Any, *, device: Any, save_dir: Path, rank: int = 0, world: int = 1,
                callbacks: dict[str, list[Callable]] | None = None, interactive: bool = False,
                choice: Any = None) -> Worker:
    """Model, data, optimizer, schedule and EMA for one rank; no Ray calls (``bench/throughput.py`` uses it too).

    The model is not wrapped in DDP and no state is restored: the caller does that (:mod:`raytrain.train.worker`
    inside Ray; :func:`raytrain.engine.state.initial_state` restores). ``choice``: the run's resolved optimizer
    (:class:`raytrain.optimizers.OptimizerChoice`, planned on the driver and kept in ``run.json``); None resolves it
    here from this rank's data.
    """
    from raytrain.engine.autobatch import autobatch
    from raytrain.engine.optim import accumulate_steps, freeze_layers, make_optimizer, resolve_choice
    from raytrain.loss import build_loss

    torch.set_num_threads(max(int(cfg.cpus_per_worker), 1))  # the CPUs Ray reserved for this worker
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    names = ["object"] if cfg.single_cls else [spec.names[i] for i in sorted(spec.names)]
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = model_for(cfg, len(names))
    frozen = freeze_layers(model, cfg.freeze)
    LOGGER.info("Frozen %d parameter tensors (freeze=%s; the DFL conv is always frozen).", len(frozen), cfg.freeze)
    model.to(device)
    seed_everything(cfg.seed + 1000 * rank)  # each rank draws its own randomness

    if cfg.batch == -1:
        # AutoBatch's usual 60 % of the GPU's memory, of this worker's share of the GPU.
        batch = min_over_ranks(autobatch(model, cfg.imgsz, device, fraction=0.6 * cfg.gpu_share, amp=cfg.amp),
                               device)
        LOGGER.info("AutoBatch chose batch=%d per GPU: global batch %d.", batch, batch * world)
    else:
        batch = cfg.batch // world
    global_batch = batch * world
    loader_workers = min(cfg.workers, int(cfg.cpus_per_worker))  # capped to the CPUs this worker has
    train_loader, val_loader = build_loaders(cfg, spec, batch=batch, workers=loader_workers, rank=rank, world=world)

    if choice is None:
        choice = resolve_choice(cfg, model, nc=len(names), train_images=len(train_loader.dataset), batch=global_batch)
    optimizer, schedule = make_optimizer(model, cfg, choice, batch=global_batch, batches=len(train_loader))
    LOGGER.info("Optimizer: %s. Warmup %d iterations, %d images per optimizer step.", choice.describe(),
                schedule.warmup_iters, global_batch * accumulate_steps(cfg.nbs, global_batch))
    amp = cfg.amp and device.type == "cuda"
    return Worker(cfg=cfg, rank=rank, world=world, device=device, names=names, save_dir=Path(save_dir),
                  model=model, ema=ModelEMA(model), optimizer=optimizer,
                  scaler=torch.amp.GradScaler("cuda", enabled=amp),
                  loss_fn=build_loss(model.spec, len(names), cfg),
                  train_loader=train_loader, val_loader=val_loader, schedule=schedule, global_batch=global_batch,
                  amp=amp, callbacks=callbacks or {}, interactive=interactive)


def model_for(cfg: Config, nc: int) -> Any:
    """The model from ``model=`` (a scale or a checkpoint), with ``pretrained`` weights transferred."""
    from raytrain.models import build_model, transfer_weights
    from raytrain.models.checkpoint import load_checkpoint

    def load(key: str, path: str) -> dict[str, Any]:
        try:
            return load_checkpoint(path)
        except FileNotFoundError:  # the driver opened it: this node does not see it (a retry would not either)
            raise ConfigError(f"{key}={path}: not found on {socket.gethostname()}, where this run trains; every "
                              f"node that trains must see the file (put it on storage all nodes mount).") from None

    arch, source, source_path = cfg.model, None, None
    if cfg.model.endswith(".pt"):
        ckpt = load("model", cfg.model)
        arch = ckpt["arch"]
        if cfg.pretrained is True:
            source, source_path = ckpt, cfg.model
    if isinstance(cfg.pretrained, str):
        source, source_path = load("pretrained", cfg.pretrained), cfg.pretrained
    model = build_model(arch, nc=nc)
    if source is not None:
        copied, total = transfer_weights(model, source)
        LOGGER.info("Transferred %d/%d tensors from %s (the rest keep their initial values).", copied, total,
                    source_path)
    return model


def build_loaders(cfg: Config, spec: Any, *, batch: int, workers: int, rank: int, world: int) -> tuple[Any, Any]:
    """Train and val loaders for this rank, both sharded by rank (validation is distributed too)."""
    from raytrain.data import YoloDataset, build_dataloader, scan_split

    train_ds = YoloDataset(scan_split(spec, "train"), cfg.imgsz, augment=True, hyp=cfg, cache=cfg.cache,
                           fraction=cfg.fraction, seed=cfg.seed)
    train = build_dataloader(train_ds, batch, shuffle=True, workers=workers, seed=cfg.seed, rank=rank,
                             world_size=world)
    val_ds = YoloDataset(scan_split(spec, "val"), cfg.imgsz, augment=False, hyp=cfg, cache=cfg.cache, seed=cfg.seed)
    val = build_dataloader(val_ds, batch * 2, shuffle=False, workers=workers, seed=cfg.seed, rank=rank,
                           world_size=world)
    return train, val


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (model init; the data derive their own seeds)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dist() -> Any:
    """torch.distributed when a process group with more than one rank is up, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def mean_over_ranks(t: Any) -> Any:
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def from_rank0(values: list[float], device: Any) -> list[float]:
    """Rank 0's ``values`` on every rank (decisions such as stopping must agree, or ``report`` would hang)."""
    import torch

    dist = _dist()
    if dist is None:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def min_over_ranks(value: int, device: Any) -> int:
    import torch

    dist = _dist()
    if dist is None:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def first_message(message: str | None) -> str | None:
    """The first rank's non-empty ``message`` (by rank), on every rank; None when no rank has one.

    Every rank must call it (a collective): ranks agree on whether one of them failed before they train together.
    """
    dist = _dist()
    if dist is None:
        return message
    messages: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    return next((m for m in messages if m), None)
