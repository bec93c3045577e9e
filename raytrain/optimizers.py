"""The optimizer table and the ``optimizer=auto`` rule: plain data, no torch (the config validates names with it).

One row per optimizer says how it is built and how it groups parameters; ``config.OPTIMIZERS``, the ``optimizer``
help, the error for an unknown name and the search-space check all derive from :data:`OPTIMIZERS`, and
:func:`raytrain.engine.optim.build_optimizer` builds from the row. The resolved choice
(:class:`OptimizerChoice`: what ``auto``, or the user, picked and why) is plain data too: the driver records it in
the run folder's ``run.json`` and every worker, restart and resume trains with that record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from raytrain.parsing import ConfigError, did_you_mean

AUTO = "auto"
CLASS_LR_SCALE = 3.0  # MuSGD: the class branches (Detect's cv3, YOLO26's one2one_cv3) train at 3x the lr
DECAY_GROUPS = ("weight", "muon")  # parameter groups with weight decay; "norm" and "bias" have none


@dataclass(frozen=True)
class OptimizerSpec:
    """How one optimizer is built and how it groups the model's parameters.

    Attributes:
        name: the ``optimizer=`` value.
        builder: ``"module:Class"``, imported when a run builds it (so this table needs no torch).
        momentum: how the ``momentum`` argument reaches it: ``"momentum"`` (SGD-style, warmed up from
            ``warmup_momentum``) or ``"betas"`` (Adam's ``beta1``; ``beta2`` stays 0.999; not warmed up).
        nesterov: Nesterov momentum.
        muon: Muon grouping (:func:`raytrain.engine.optim.param_groups`): every 2-D/4-D parameter in a ``muon`` group
            with weight decay, and every group split again so the class branches train at :data:`CLASS_LR_SCALE`.
        summary: one line for the help and the docs.
        fused: built with torch's ``fused=True`` (one kernel for every tensor) where the device has it: the same
            update, rounded differently; on a CPU in 0.3x the time of torch's default per-tensor loop for AdamW,
            0.4x for SGD (``python bench/optimizer_step.py``).
    """

    name: str
    builder: str
    momentum: Literal["momentum", "betas"]
    nesterov: bool = False
    muon: bool = False
    summary: str = ""
    fused: bool = False


_ADAM = "Adam-family: momentum is beta1, beta2 = 0.999"
OPTIMIZERS: dict[str, OptimizerSpec] = {spec.name: spec for spec in (
    OptimizerSpec("SGD", "torch.optim:SGD", "momentum", nesterov=True, summary="SGD with Nesterov momentum",
                  fused=True),
    OptimizerSpec("Adam", "torch.optim:Adam", "betas", summary=_ADAM, fused=True),
    OptimizerSpec("AdamW", "torch.optim:AdamW", "betas", summary=f"{_ADAM}, decoupled weight decay", fused=True),
    OptimizerSpec("NAdam", "torch.optim:NAdam", "betas", summary=f"{_ADAM}, Nesterov"),
    OptimizerSpec("RAdam", "torch.optim:RAdam", "betas", summary=f"{_ADAM}, rectified"),
    OptimizerSpec("Adamax", "torch.optim:Adamax", "betas", summary=f"{_ADAM}, infinity norm"),
    OptimizerSpec("RMSProp", "torch.optim:RMSprop", "momentum", summary="RMSprop with momentum"),
    OptimizerSpec("MuSGD", "raytrain.engine.muon:MuSGD", "momentum", nesterov=True, muon=True,
                  summary="Muon's orthogonalised step (x0.2) plus Nesterov SGD (x1.0), Ultralytics 8.4's"),
)}
NAMES = (*OPTIMIZERS, AUTO)  # every valid optimizer= value


def check_optimizer(name: str) -> str:
    """The table's spelling of ``name`` (matched without case, as Ultralytics does: ``musgd`` is ``MuSGD``).

    Raises:
        ConfigError: an unknown name, with the valid ones and the closest match.
    """
    match = {n.lower(): n for n in NAMES}.get(str(name).lower())
    if match is None:
        raise ConfigError(f"optimizer={name!r} is not allowed: choose one of {', '.join(NAMES)}."
                          f"{did_you_mean(str(name), NAMES)}")
    return match


# --------------------------------------------------------------------------------------------- the resolved choice
@dataclass(frozen=True)
class GroupSize:
    """One parameter group of the built optimizer: its kind, how many tensors, lr multiplier and weight decay."""

    name: str  # weight, norm, bias or muon
    params: int
    lr_scale: float
    weight_decay: float


@dataclass(frozen=True)
class OptimizerChoice:
    """What a run trains with: ``optimizer=auto`` resolved (or the user's optimizer, unchanged), and why.

    ``momentum`` is what the optimizer is built with (Adam's beta1). ``groups`` is filled where the model is known
    (:func:`raytrain.engine.optim.plan_optimizer`); ``run.json`` keeps the whole record under ``optimizer``.
    """

    requested: str  # the optimizer= argument as given (args.yaml keeps it)
    name: str
    lr0: float
    momentum: float
    warmup_bias_lr: float
    iterations: int  # expected optimizer steps, which the auto rule compares with AUTO_ITERATIONS
    nc: int
    reason: str
    groups: tuple[GroupSize, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> OptimizerChoice:
        groups = tuple(GroupSize(**g) for g in record.get("groups", ()))
        return cls(**{**{k: v for k, v in record.items() if k != "groups"}, "groups": groups})

    def describe(self) -> str:
        """One line for the log: ``MuSGD(lr0=0.01, momentum=0.9, warmup_bias_lr=0) — why; groups ...``."""
        groups = ", ".join(f"{g.params} {g.name}{'' if g.lr_scale == 1 else f' x{g.lr_scale:g} lr'}"
                           f"{f' (decay {g.weight_decay:.3g})' if g.weight_decay else ''}"
                           for g in self.groups if g.params)
        return (f"{self.name}(lr0={self.lr0:g}, momentum={self.momentum:g}, warmup_bias_lr={self.warmup_bias_lr:g})"
                f" - {self.reason}" + (f"; parameter groups: {groups}" if groups else ""))


AUTO_ITERATIONS = 10_000  # optimizer=auto: more expected optimizer steps than this -> MuSGD, else AdamW


def expected_iterations(train_images: int, batch: int, nbs: int, epochs: int) -> int:
    """Optimizer steps a run expects: ``ceil(images / max(batch, nbs)) * epochs`` (``batch`` global)."""
    return math.ceil(train_images / max(batch, nbs)) * epochs


def choose_optimizer(name: str, *, lr0: float, momentum: float, warmup_bias_lr: float, nc: int,
                     iterations: int) -> OptimizerChoice:
    """Resolve ``optimizer=auto`` as Ultralytics 8.4.190 does (``BaseTrainer.build_optimizer``); any other name is
    returned with the user's values.

    ``auto``: more than :data:`AUTO_ITERATIONS` expected optimizer steps -> MuSGD(lr 0.01, momentum 0.9), else AdamW
    with ``lr0 = round(0.002 * 5 / (4 + nc), 6)`` fitted to the class count and momentum (beta1) 0.9; in both cases
    the bias warmup starts at lr 0 (``warmup_bias_lr=0``). ``auto`` ignores ``lr0`` and ``momentum``; as in 8.4 the
    momentum warmup still climbs to the ``momentum`` argument (the schedule's target, see
    :func:`raytrain.engine.optim.make_optimizer`), so the 0.9 holds for MuSGD only when there is no warmup.

    Args:
        name: the ``optimizer`` argument (a :data:`NAMES` spelling).
        lr0, momentum, warmup_bias_lr: the user's values (kept unless ``name == "auto"``).
        nc: number of classes.
        iterations: :func:`expected_iterations`.
    """
    if name != AUTO:
        return OptimizerChoice(name, name, lr0, momentum, warmup_bias_lr, iterations, nc,
                               f"optimizer={name} as requested")
    if iterations > AUTO_ITERATIONS:
        return OptimizerChoice(AUTO, "MuSGD", 0.01, 0.9, 0.0, iterations, nc,
                               f"optimizer=auto: {iterations} iterations > {AUTO_ITERATIONS}, so MuSGD(lr=0.01, "
                               f"momentum=0.9)")
    lr_fit = round(0.002 * 5 / (4 + nc), 6)
    return OptimizerChoice(AUTO, "AdamW", lr_fit, 0.9, 0.0, iterations, nc,
                           f"optimizer=auto: {iterations} iterations <= {AUTO_ITERATIONS}, so AdamW(lr={lr_fit:g} "
                           f"fitted to nc={nc}, momentum=0.9)")


def optimizer_help() -> str:
    """The ``optimizer`` argument's help line, from the table."""
    return f"{', '.join(OPTIMIZERS)} or auto (8.4's rule: MuSGD for long runs, else AdamW; picks lr0 itself)"


__all__ = ["AUTO", "AUTO_ITERATIONS", "CLASS_LR_SCALE", "DECAY_GROUPS", "NAMES", "OPTIMIZERS", "GroupSize",
           "OptimizerChoice", "OptimizerSpec", "check_optimizer", "choose_optimizer", "expected_iterations",
           "optimizer_help"]
