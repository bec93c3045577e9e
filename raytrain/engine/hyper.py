"""Hyperparameters that may change while a run trains, applied to a live rank; schedule files that replay them.

Population-based training (``scheduler: pbt`` in a tune space, :mod:`raytrain.tuning.pbt`) changes these between
epochs: a weak trial continues from a strong trial's full state with perturbed values. Everything else (model, image
size, batch, optimizer type, epochs, data, ...) is built once when a run starts and cannot change under it.

Two callers apply them here:

- :func:`reapply_after_restore`: loading an optimizer ``state_dict`` overwrites each parameter group's momentum
  (Adam's ``betas``) and weight decay with the values of the run that saved it, which after an exploit is another
  trial. The run's own values go back into the groups, so its new hyperparameters apply from the next epoch (the
  learning-rate schedule is the rank's own already, and keeps its position: no warmup restart).
- :func:`apply_values`: ``schedule=`` (a file from :func:`raytrain.replay.write_schedule`, e.g. a PBT experiment's
  ``best_schedule.yaml``) replays per-epoch values in one run; the loop applies each epoch's values at its start.

Imports no torch and no Config; schedule files themselves are read and written by :mod:`raytrain.replay`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from raytrain.optimizers import DECAY_GROUPS
from raytrain.parsing import ConfigError
from raytrain.replay import (  # the schedule-file side lives below the config; re-exported for the engine
    AUGMENT_KEYS,
    LOSS_KEYS,
    MUTABLE,
    OPTIMIZER_KEYS,
    SCHEDULE_KEYS,
    read_schedule,
    values_at,
    write_schedule,
)

LOGGER = logging.getLogger("raytrain")



def reapply_after_restore(setup: Any) -> None:
    """Put rank ``setup``'s own momentum and weight decay back into its optimizer's groups after a state was loaded.

    Args:
        setup: a :class:`raytrain.engine.setup.RankSetup` whose LR schedule, loss and dataset came from ``setup.cfg``.
    """
    _set_optimizer_groups(setup, setup.lr_schedule.momentum, setup.cfg.weight_decay)


def apply_values(setup: Any, values: Mapping[str, float]) -> dict[str, float]:
    """Apply mutable hyperparameter ``values`` to rank ``setup`` from its next optimizer step; returns what changed.

    ``lr0``/``lrf``/``momentum`` replace the schedule's (the schedule keeps its position, so a new ``lr0`` follows the
    run's decay from the current epoch), ``weight_decay`` is scaled as :func:`raytrain.engine.setup.setup_rank`
    scales it, the loss gains go to the loss, augmentation values to the training dataset (restarting its loader's
    worker processes, which hold a copy of the dataset).

    Raises:
        ConfigError: for a key that cannot change while a run trains.
    """
    unknown = [k for k in values if k not in MUTABLE]
    if unknown:
        raise ConfigError(f"{unknown[0]} cannot change while a run trains; only {', '.join(MUTABLE)} can.")
    current = current_values(setup)
    changed = {k: float(v) for k, v in values.items() if float(v) != current[k]}
    if not changed:
        return {}
    schedule = {k: v for k, v in changed.items() if k in SCHEDULE_KEYS}
    if schedule:
        setup.lr_schedule = dataclasses.replace(setup.lr_schedule, **schedule)
    if "momentum" in changed or "weight_decay" in changed:
        _set_optimizer_groups(setup, setup.lr_schedule.momentum, changed.get("weight_decay", current["weight_decay"]))
    gains = {k: v for k, v in changed.items() if k in LOSS_KEYS}
    if gains:  # the loss is a frozen dataclass: a new one with the new gains
        setup.loss_fn = dataclasses.replace(setup.loss_fn, **gains)
    augment = {k: v for k, v in changed.items() if k in AUGMENT_KEYS}
    if augment:
        setup.train_loader.set_hyp(setup.train_loader.dataset.hyp.replace(**augment))
    return changed


def current_values(setup: Any) -> dict[str, float]:
    """The mutable hyperparameters rank ``setup`` trains with now (``weight_decay`` unscaled, as in the config)."""
    hyp = setup.train_loader.dataset.hyp
    group = next((g for g in setup.optimizer.param_groups if g.get("name", "weight") in DECAY_GROUPS), None)
    decay = setup.cfg.weight_decay
    if group is not None and group["weight_decay"] and setup.cfg.weight_decay:
        decay = group["weight_decay"] / _decay_scale(setup)
    return {"lr0": setup.lr_schedule.lr0, "lrf": setup.lr_schedule.lrf, "momentum": setup.lr_schedule.momentum,
            "weight_decay": float(decay), **{k: float(getattr(setup.loss_fn, k)) for k in LOSS_KEYS},
            **{k: float(getattr(hyp, k)) for k in AUGMENT_KEYS}}


def _decay_scale(setup: Any) -> float:
    """What setup_rank multiplies ``weight_decay`` by: images per optimizer step over ``nbs``."""
    from raytrain.engine.optim import accumulate_steps, scaled_weight_decay

    batch, nbs = setup.global_batch, setup.cfg.nbs
    return scaled_weight_decay(1.0, batch, accumulate_steps(nbs, batch), nbs)


def _set_optimizer_groups(setup: Any, momentum: float, weight_decay: float) -> None:
    """Momentum (SGD/RMSProp/MuSGD ``momentum``, Adam-family ``betas[0]``) in every group; weight decay in the
    groups that have it (``weight``, MuSGD's ``muon``)."""
    decay = weight_decay * _decay_scale(setup)
    for group in setup.optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group:  # during warmup, apply_lr_schedule sets it per step; this is its target
            group["momentum"] = momentum
        if group.get("name", "weight") in DECAY_GROUPS:
            group["weight_decay"] = decay


# ----------------------------------------------------------------------------------------------- schedule files
__all__ = ["AUGMENT_KEYS", "LOSS_KEYS", "MUTABLE", "OPTIMIZER_KEYS", "SCHEDULE_KEYS", "apply_values",
           "current_values", "reapply_after_restore", "read_schedule", "values_at", "write_schedule"]
