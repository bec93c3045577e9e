"""One training epoch as a plain function: forward, loss, backward, the optimizer step on its accumulation and the LR
schedule, the EMA. Nothing here knows about Ray or how the rank was set up (:mod:`raytrain.engine.setup`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from raytrain.engine.ema import ModelEMA
from raytrain.engine.optim import LRSchedule, apply_lr_schedule

LOGGER = logging.getLogger("raytrain")

MAX_GRAD_NORM = 10.0


@dataclass(frozen=True)
class EpochResult:
    """Mean loss parts over the epoch's batches on this rank, and bookkeeping for the next epoch."""

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
                    loss_fn: Callable, *, device: torch.device, epoch: int, lr_schedule: LRSchedule,
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
        lr_schedule: learning rate, momentum and accumulation per iteration.
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
        apply_lr_schedule(optimizer, lr_schedule, ni, epoch)
        step_now = ni - last_step >= lr_schedule.accumulate(ni)
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


__all__ = ["MAX_GRAD_NORM", "EpochResult", "optimizer_step", "train_one_epoch"]
