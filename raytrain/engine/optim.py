"""Optimizer, parameter groups, learning-rate / momentum schedule and gradient accumulation, as small pure functions.

The rules follow YOLOv8 (Ultralytics) so results are comparable:

- three parameter groups: ``pg0`` conv/linear weights (with weight decay), ``pg1`` normalisation weights and
  ``pg2`` biases (both without weight decay);
- gradients accumulate until about ``nbs`` (nominal batch size) images were seen, and weight decay is scaled by
  ``batch * accumulate / nbs``;
- the learning rate of every group follows ``lr0 * lr_factor(epoch)`` (linear or cosine, ending at ``lr0 * lrf``);
  during the first ``max(warmup_epochs * batches, 100)`` iterations it is interpolated from 0 (bias group: from
  ``warmup_bias_lr``) to the scheduled value, momentum from ``warmup_momentum`` to ``momentum``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

GROUP_NAMES = ("weight", "norm", "bias")  # pg0, pg1, pg2: the order of optimizer.param_groups
SGD_AUTO_ITERATIONS = 10_000  # optimizer=auto: more iterations than this -> SGD, else AdamW (as in YOLOv8)


@dataclass(frozen=True)
class OptimizerChoice:
    """What ``optimizer=auto`` resolved to (or the user's choice, unchanged), and why."""

    name: str
    lr0: float
    momentum: float
    warmup_bias_lr: float
    reason: str


def choose_optimizer(name: str, *, lr0: float, momentum: float, warmup_bias_lr: float, nc: int,
                     iterations: int) -> OptimizerChoice:
    """Resolve ``optimizer=auto``; any other name is returned unchanged.

    YOLOv8's rule: long runs (more than 10,000 optimizer iterations) use SGD with lr 0.01; short runs use AdamW
    with a learning rate fitted to the class count, ``round(0.002 * 5 / (4 + nc), 6)``, and no higher bias warmup
    lr (Adam-family optimizers diverge with a 0.1 bias lr). ``auto`` overrides ``lr0`` and ``momentum``.

    Args:
        name: the ``optimizer`` argument.
        lr0, momentum, warmup_bias_lr: the user's values (kept unless ``name == "auto"``).
        nc: number of classes.
        iterations: expected optimizer steps, ``ceil(train_images / max(batch, nbs)) * epochs``.
    """
    if name != "auto":
        return OptimizerChoice(name, lr0, momentum, warmup_bias_lr, f"optimizer={name} as requested")
    if iterations > SGD_AUTO_ITERATIONS:
        return OptimizerChoice("SGD", 0.01, 0.9, warmup_bias_lr,
                               f"{iterations} iterations > {SGD_AUTO_ITERATIONS}: SGD(lr=0.01, momentum=0.9)")
    lr_fit = round(0.002 * 5 / (4 + nc), 6)
    return OptimizerChoice("AdamW", lr_fit, 0.9, 0.0,
                           f"{iterations} iterations <= {SGD_AUTO_ITERATIONS}: AdamW(lr={lr_fit:g} fitted to "
                           f"nc={nc}, momentum=0.9)")


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters as (weights with decay, normalisation weights, biases).

    Normalisation layers are recognised by type (every ``nn.modules.batchnorm`` / ``GroupNorm`` / ``LayerNorm``
    and anything whose class name contains ``Norm``); frozen parameters are left out.
    """
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    decay, norm, bias = [], [], []
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if pname == "bias":
                bias.append(param)
            elif isinstance(module, norm_types) or "Norm" in type(module).__name__:
                norm.append(param)
            else:
                decay.append(param)
    return decay, norm, bias


def build_optimizer(model: nn.Module, name: str, *, lr0: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """An optimizer with the three groups ``pg0`` weight (decay), ``pg1`` norm, ``pg2`` bias (no decay).

    ``momentum`` is SGD/RMSProp momentum or the Adam-family ``beta1``. Each group carries ``name`` and
    ``initial_lr`` so the schedule can be applied per iteration.
    """
    decay, norm, bias = split_parameters(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "weight"},
        {"params": norm, "weight_decay": 0.0, "name": "norm"},
        {"params": bias, "weight_decay": 0.0, "name": "bias"},
    ]
    betas = (momentum, 0.999)
    if name == "SGD":
        optimizer = torch.optim.SGD(groups, lr=lr0, momentum=momentum, nesterov=True)
    elif name == "Adam":
        optimizer = torch.optim.Adam(groups, lr=lr0, betas=betas)
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(groups, lr=lr0, betas=betas)
    elif name == "NAdam":
        optimizer = torch.optim.NAdam(groups, lr=lr0, betas=betas)
    elif name == "RAdam":
        optimizer = torch.optim.RAdam(groups, lr=lr0, betas=betas)
    elif name == "RMSProp":
        optimizer = torch.optim.RMSprop(groups, lr=lr0, momentum=momentum)
    else:
        raise ValueError(f"unknown optimizer {name!r}; use SGD, Adam, AdamW, NAdam, RAdam, RMSProp or auto")
    for group in optimizer.param_groups:
        group["initial_lr"] = lr0
    return optimizer


def accumulate_steps(nbs: int, batch: int) -> int:
    """Batches to accumulate before an optimizer step so about ``nbs`` images contribute (``batch`` is global)."""
    return max(round(nbs / batch), 1)


def scaled_weight_decay(weight_decay: float, batch: int, accumulate: int, nbs: int) -> float:
    """Weight decay per optimizer step, scaled by the images per step relative to ``nbs``."""
    return weight_decay * batch * accumulate / nbs


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int) -> int:
    """Warmup length in iterations: ``max(round(warmup_epochs * batches), 100)``; 0 when warmup is off."""
    if warmup_epochs <= 0:
        return 0
    return max(round(warmup_epochs * batches_per_epoch), 100)


def lr_factor(epoch: int, epochs: int, lrf: float, cos: bool = False) -> float:
    """Multiplier of ``lr0`` for a 0-based ``epoch``: 1 at epoch 0, falling to ``lrf`` at ``epochs``.

    Linear: ``(1 - e / E) * (1 - lrf) + lrf``. Cosine: ``(1 - cos(pi * e / E)) / 2 * (lrf - 1) + 1``.
    """
    x = min(max(epoch / epochs, 0.0), 1.0)
    if cos:
        return (1 - math.cos(math.pi * x)) / 2 * (lrf - 1) + 1
    return (1 - x) * (1 - lrf) + lrf


def _interp(x: float, x1: float, y0: float, y1: float) -> float:
    """Linear interpolation from ``(0, y0)`` to ``(x1, y1)``, clamped outside."""
    t = min(max(x / x1, 0.0), 1.0) if x1 > 0 else 1.0
    return y0 + t * (y1 - y0)


@dataclass(frozen=True)
class Schedule:
    """Everything that decides the learning rate, momentum and accumulation at an iteration."""

    lr0: float
    lrf: float
    epochs: int  # epochs the schedule spans (recomputed when a time limit shortens the run)
    cos: bool
    warmup_iters: int
    warmup_bias_lr: float
    warmup_momentum: float
    momentum: float
    nbs: int
    batch: int  # global batch size

    def lr(self, group: str, iteration: int, epoch: int) -> float:
        """Learning rate of parameter group ``group`` at global ``iteration`` (0-based) in 0-based ``epoch``."""
        scheduled = self.lr0 * lr_factor(epoch, self.epochs, self.lrf, self.cos)
        if iteration >= self.warmup_iters:
            return scheduled
        start = self.warmup_bias_lr if group == "bias" else 0.0
        return _interp(iteration, self.warmup_iters, start, scheduled)

    def momentum_at(self, iteration: int) -> float:
        """SGD momentum (Adam beta1 is not warmed up): ``warmup_momentum`` rising to ``momentum``."""
        if iteration >= self.warmup_iters:
            return self.momentum
        return _interp(iteration, self.warmup_iters, self.warmup_momentum, self.momentum)

    def accumulate(self, iteration: int) -> int:
        """Batches per optimizer step: rising from 1 to ``nbs / batch`` during warmup."""
        full = accumulate_steps(self.nbs, self.batch)
        if iteration >= self.warmup_iters:
            return full
        return max(1, round(_interp(iteration, self.warmup_iters, 1.0, self.nbs / self.batch)))


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, iteration: int, epoch: int) -> None:
    """Set every group's ``lr`` (and ``momentum`` where the optimizer has one) for this iteration."""
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr(group.get("name", "weight"), iteration, epoch)
        if "momentum" in group and iteration < schedule.warmup_iters:
            group["momentum"] = schedule.momentum_at(iteration)
        elif "momentum" in group:
            group["momentum"] = schedule.momentum


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/pg0": ..., "lr/pg1": ..., "lr/pg2": ...}`` for reporting."""
    return {f"lr/pg{i}": float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


def epochs_within_time(limit_hours: float, elapsed_s: float, epochs_done: int) -> int:
    """Epochs the run can have in total under a time limit, from the mean epoch time so far.

    Returns ``epochs_done`` when the next epoch would overrun the limit (stop now). The learning-rate schedule
    is then recomputed to span this many epochs, as Ultralytics does.
    """
    if epochs_done <= 0:
        raise ValueError("epochs_within_time needs at least one finished epoch to measure")
    mean = elapsed_s / epochs_done
    remaining = limit_hours * 3600 - elapsed_s
    return epochs_done + max(int(remaining // mean), 0) if mean > 0 else epochs_done


def freeze_layers(model: nn.Module, freeze: int | list[int] | None) -> list[str]:
    """Freeze ``model.0``..``model.{N-1}`` (or the listed layer indices) and always the DFL conv.

    The DFL conv holds fixed projection weights (0..reg_max-1), never trained. Returns the frozen parameter names.
    """
    if freeze is None:
        indices: Iterable[int] = ()
    elif isinstance(freeze, int):
        indices = range(freeze)
    else:
        indices = freeze
    prefixes = tuple(f"model.{i}." for i in indices)
    frozen = []
    for name, param in model.named_parameters():
        if name.startswith(prefixes) or ".dfl" in name:
            param.requires_grad_(False)
            frozen.append(name)
        elif not param.requires_grad and param.is_floating_point():
            param.requires_grad_(True)  # a checkpoint may have saved frozen flags; train what is not frozen now
    return frozen
