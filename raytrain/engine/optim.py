"""Optimizer, parameter groups, learning-rate / momentum schedule and gradient accumulation, as small pure functions.

The rules follow Ultralytics 8.4.190 (``BaseTrainer.build_optimizer`` and its warmup) so results are comparable:

- parameter groups (:func:`param_groups`): ``weight`` (conv/linear weights, with weight decay), ``norm``
  (normalisation weights) and ``bias`` (both without); MuSGD puts every 2-D/4-D tensor in a ``muon`` group with weight
  decay first, and splits each group again so the Detect layer's class branches train at 3x the lr;
- gradients accumulate until about ``nbs`` (nominal batch size) images were seen, and weight decay is scaled by
  ``batch * accumulate / nbs``;
- the learning rate of every group follows ``lr0 * lr_scale * lr_factor(epoch)`` (linear or cosine, ending at
  ``lr0 * lrf``); during the first ``round(min(warmup_epochs, epochs - 1) * batches)`` iterations it is interpolated
  from 0 (bias groups: from ``warmup_bias_lr``) to the scheduled value, momentum from ``warmup_momentum`` to
  ``momentum`` and the accumulation from 1 to its full count.

Which optimizer and how it is built come from the table in :mod:`raytrain.optimizers`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from raytrain.config import Config
from raytrain.keys import LR_KEYS
from raytrain.optimizers import (
    CLASS_LR_SCALE,
    DECAY_GROUPS,
    OPTIMIZERS,
    GroupSize,
    OptimizerChoice,
    check_optimizer,
    choose_optimizer,
    expected_iterations,
)

GROUP_KINDS = ("weight", "norm", "bias", "muon")  # the order of the groups, as in Ultralytics 8.4.190
CLASS_BRANCHES = ("cv3.", "one2one_cv3.")  # the Detect layer's class branch (and YOLO26's one-to-one one)


@dataclass
class ParamGroup:
    """Parameters that share a kind (``weight``, ``norm``, ``bias``, ``muon``) and an lr multiplier."""

    kind: str
    lr_scale: float = 1.0
    names: list[str] = field(default_factory=list)
    params: list[nn.Parameter] = field(default_factory=list)

    @property
    def decay(self) -> bool:
        return self.kind in DECAY_GROUPS


def _norm_types() -> tuple[type, ...]:
    return tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))


def _class_branch_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Name prefixes of the class-branch parameters: ``model.{last}.cv3.`` (and ``.one2one_cv3.``), where the last
    layer of ``model.model`` is the Detect head; none for a model without that layout."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Module) or not len(list(layers.children())):
        return ()
    last = len(list(layers.children())) - 1
    return tuple(f"model.{last}.{branch}" for branch in CLASS_BRANCHES)


def param_groups(model: nn.Module, *, muon: bool = False) -> list[ParamGroup]:
    """The model's trainable parameters grouped as Ultralytics 8.4.190 groups them (frozen ones are left out).

    Without ``muon``: ``[weight, norm, bias]``. With ``muon`` (MuSGD): every 2-D and 4-D tensor goes to ``muon``
    first (conv filters, depthwise ones included, and linear weights), the remaining tensors to ``bias`` / ``norm`` /
    ``weight``, and each kind is split into its class-branch part (lr x :data:`CLASS_LR_SCALE`) and the rest:
    ``[weight x3, weight, norm x3, norm, bias x3, bias, muon x3, muon]``, empty groups included. Norm weights are
    recognised by module type (every ``torch.nn`` class with ``Norm`` in its name, or a class so named).

    Args:
        model: the unwrapped model; parameter names are ``model.{i}....`` as in Ultralytics.
        muon: group for MuSGD.
    """
    norm_types = _norm_types()
    kinds: dict[str, list[tuple[str, nn.Parameter]]] = {k: [] for k in GROUP_KINDS}
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{pname}" if module_name else pname
            if muon and param.ndim in (2, 4):
                kind = "muon"
            elif pname == "bias":
                kind = "bias"
            elif isinstance(module, norm_types) or "Norm" in type(module).__name__:
                kind = "norm"
            else:
                kind = "weight"
            kinds[kind].append((name, param))
    if not muon:
        return [_group(kind, 1.0, kinds[kind]) for kind in GROUP_KINDS[:3]]
    boosted = _class_branch_prefixes(model)
    out = []
    for kind in GROUP_KINDS:
        classes = [(n, p) for n, p in kinds[kind] if boosted and n.startswith(boosted)]
        out.append(_group(kind, CLASS_LR_SCALE, classes))
        out.append(_group(kind, 1.0, [m for m in kinds[kind] if m not in classes]))
    return out


def _group(kind: str, lr_scale: float, members: list[tuple[str, nn.Parameter]]) -> ParamGroup:
    return ParamGroup(kind, lr_scale, [n for n, _ in members], [p for _, p in members])


def build_optimizer(model: nn.Module, name: str, *, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a row of :data:`raytrain.optimizers.OPTIMIZERS`) over :func:`param_groups`.

    Every group carries ``name`` (its kind), ``lr_scale`` and ``lr = 0``: :func:`apply_lr_schedule` sets each group's
    learning rate before every step, so no lr is given here. ``momentum`` is SGD/RMSProp/MuSGD momentum or the
    Adam-family ``beta1``; ``weight_decay`` applies to the ``weight`` and ``muon`` groups.
    """
    spec = OPTIMIZERS.get(check_optimizer(name))
    if spec is None:
        raise ValueError("optimizer=auto is resolved first (raytrain.optimizers.choose_optimizer), then built")
    groups = [{"params": g.params, "name": g.kind, "lr_scale": g.lr_scale, "lr": 0.0,
               "weight_decay": weight_decay if g.decay else 0.0, **({"muon": g.kind == "muon"} if spec.muon else {})}
              for g in param_groups(model, muon=spec.muon)]
    module, cls = spec.builder.split(":")
    kwargs: dict[str, Any] = {"lr": 0.0}
    if spec.momentum == "betas":
        kwargs["betas"] = (momentum, 0.999)
    else:
        kwargs["momentum"] = momentum
    if spec.nesterov:
        kwargs["nesterov"] = True
    if spec.fused and _fused_supported(model):
        kwargs["fused"] = True
    return getattr(importlib.import_module(module), cls)(groups, **kwargs)


def _fused_supported(model: nn.Module) -> bool:
    """Whether torch's fused (one kernel for all tensors) step can take ``model``'s trained parameters: all floating
    point, on one device type torch has fused kernels for (the CPU among them since torch 2.4)."""
    try:  # torch's own list (private: a torch without it gets the per-tensor step)
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:
        return False
    params = [p for p in model.parameters() if p.requires_grad]
    kinds = {p.device.type for p in params}
    return (bool(params) and len(kinds) == 1 and kinds <= set(_get_fused_kernels_supported_devices())
            and all(p.is_floating_point() for p in params))


def group_sizes(model: nn.Module, name: str, weight_decay: float) -> tuple[GroupSize, ...]:
    """What :func:`build_optimizer` would build, as sizes: for the run's record, without building it."""
    spec = OPTIMIZERS[name]
    return tuple(GroupSize(g.kind, len(g.params), g.lr_scale, weight_decay if g.decay else 0.0)
                 for g in param_groups(model, muon=spec.muon))


def accumulate_steps(nbs: int, batch: int) -> int:
    """Batches to accumulate before an optimizer step so about ``nbs`` images contribute (``batch`` is global)."""
    return max(round(nbs / batch), 1)


def scaled_weight_decay(weight_decay: float, batch: int, accumulate: int, nbs: int) -> float:
    """Weight decay per optimizer step, scaled by the images per step relative to ``nbs``."""
    return weight_decay * batch * accumulate / nbs


def warmup_iterations(warmup_epochs: float, epochs: int, batches_per_epoch: int) -> int:
    """Warmup length in iterations, as Ultralytics 8.4.190: ``round(min(warmup_epochs, epochs - 1) * batches)``.

    The warmup leaves at least the last epoch to the regular schedule (so a 1-epoch run has none) and has no floor
    (older Ultralytics, and raytrain before, warmed up for at least 100 iterations). 0 when warmup is off.
    """
    epochs_of_warmup = min(warmup_epochs, max(epochs - 1, 0))
    return round(epochs_of_warmup * batches_per_epoch) if epochs_of_warmup > 0 else 0


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
class LRSchedule:
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

    def lr(self, group: str, iteration: int, epoch: int, scale: float = 1.0) -> float:
        """Learning rate of a ``group`` kind (``bias`` warms up from ``warmup_bias_lr``, others from 0) whose lr
        multiplier is ``scale``, at global ``iteration`` (0-based) in 0-based ``epoch``."""
        scheduled = self.lr0 * scale * lr_factor(epoch, self.epochs, self.lrf, self.cos)
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
        """Batches per optimizer step: rising from 1 to the full count (``round(nbs / batch)``) during warmup."""
        full = accumulate_steps(self.nbs, self.batch)
        if iteration >= self.warmup_iters:
            return full
        return max(1, round(_interp(iteration, self.warmup_iters, 1.0, full)))


def apply_lr_schedule(optimizer: torch.optim.Optimizer, schedule: LRSchedule, iteration: int, epoch: int) -> None:
    """Set every group's ``lr`` (and ``momentum`` where the optimizer has one) for this iteration."""
    momentum = schedule.momentum_at(iteration)
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr(group.get("name", "weight"), iteration, epoch, group.get("lr_scale", 1.0))
        if "momentum" in group:
            group["momentum"] = momentum


_REPORTED = dict(zip(LR_KEYS, (("weight", "muon"), ("norm",), ("bias",)), strict=True))


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/pg0": weights, "lr/pg1": norm weights, "lr/pg2": biases}`` for reporting: each kind's lr at scale 1
    (MuSGD's class-branch groups train at 3x that)."""
    out = {}
    for key, kinds in _REPORTED.items():
        group = next(g for g in optimizer.param_groups
                     if g.get("name", "weight") in kinds and g.get("lr_scale", 1.0) == 1.0)
        out[key] = float(group["lr"])
    return out


# ------------------------------------------------------------------------------------- the run's optimizer, planned
def resolve_choice(cfg: Config, model: nn.Module, *, nc: int, train_images: int,
                   batch: int | None) -> OptimizerChoice:
    """The run's :class:`~raytrain.optimizers.OptimizerChoice` (``auto`` resolved), with its parameter groups.

    Args:
        cfg: the run's config.
        model: the model to train (a ``meta``-device copy on the driver: only names and shapes matter).
        nc: classes the model predicts.
        train_images: training images after ``fraction``.
        batch: the global batch; None when AutoBatch picks it later on the GPU: the rule then uses ``nbs`` (it
            compares ``ceil(images / max(batch, nbs))``, so only a batch above ``nbs`` would count).
    """
    batch = batch or cfg.nbs
    iterations = expected_iterations(train_images, batch, cfg.nbs, cfg.epochs)
    choice = choose_optimizer(cfg.optimizer, lr0=cfg.lr0, momentum=cfg.momentum, warmup_bias_lr=cfg.warmup_bias_lr,
                              nc=nc, iterations=iterations)
    decay = scaled_weight_decay(cfg.weight_decay, batch, accumulate_steps(cfg.nbs, batch), cfg.nbs)
    return dataclasses.replace(choice, groups=group_sizes(model, choice.name, decay))


def make_optimizer(model: nn.Module, cfg: Config, choice: OptimizerChoice, *, batch: int,
                   batches: int) -> tuple[torch.optim.Optimizer, LRSchedule]:
    """The optimizer and schedule a rank trains with.

    Args:
        model: the unwrapped model, frozen layers already frozen.
        cfg: the run's config (``lrf``, ``cos_lr``, warmup, ``nbs``, ``weight_decay``).
        choice: the resolved optimizer (the driver's, from ``run.json`` on resume).
        batch: the global batch.
        batches: batches per epoch on this rank.

    The momentum warmup climbs to ``cfg.momentum`` and stays there, as in Ultralytics 8.4.190 (where ``auto`` sets
    the optimizer's momentum to 0.9 but not the warmup's target); without warmup the choice's momentum holds.
    """
    decay = scaled_weight_decay(cfg.weight_decay, batch, accumulate_steps(cfg.nbs, batch), cfg.nbs)
    optimizer = build_optimizer(model, choice.name, momentum=choice.momentum, weight_decay=decay)
    warmup = warmup_iterations(cfg.warmup_epochs, cfg.epochs, batches)
    warmed = warmup > 0 and OPTIMIZERS[choice.name].momentum == "momentum"
    schedule = LRSchedule(lr0=choice.lr0, lrf=cfg.lrf, epochs=cfg.epochs, cos=cfg.cos_lr, warmup_iters=warmup,
                        warmup_bias_lr=choice.warmup_bias_lr, warmup_momentum=cfg.warmup_momentum,
                        momentum=cfg.momentum if warmed else choice.momentum, nbs=cfg.nbs, batch=batch)
    return optimizer, schedule


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
