"""What a run carries across epochs, restarts and resumes: counters and history, and the full training state on disk.

A *state folder* holds everything needed to continue a run exactly: ``state.pt`` (model, EMA, optimizer, scaler, as a
raytrain checkpoint) and ``train_state.json`` (:class:`RunState`: epoch, best fitness, time, the per-epoch history).
The loop writes one every epoch and hands it to its report sink; whoever runs the loop keeps it (Ray Train as a
checkpoint, a test as a folder) and gives it back with :func:`restore_state`. ``weights/last.pt`` is the small
inference file (EMA weights only); :func:`restore_from_weights` continues from it when no state folder is left.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raytrain.config import Config
from raytrain.engine.hyper import reapply_after_restore

LOGGER = logging.getLogger("raytrain")
STATE_FILE = "state.pt"  # full training state: model, EMA, optimizer, scaler
HISTORY_FILE = "train_state.json"  # RunState: counters and the epoch rows


@dataclass
class RunState:
    """What survives a restart besides the weights: counters and the per-epoch history."""

    epoch: int = 0  # last completed epoch (from 1)
    schedule_epochs: int = 0  # epochs the LR schedule spans (a time limit may change it)
    best_fitness: float | None = None
    best_epoch: int = 0
    train_time: float = 0.0  # seconds spent training so far, over all attempts
    history: list[dict[str, float]] = field(default_factory=list)
    # Set when this run continues another run's state (a PBT exploit): that run's name, until the next epoch ends.
    continued_from: str = ""


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


def save_state(folder: Path, setup: Any, state: RunState, metrics: dict[str, float]) -> None:
    """Write the full training state of rank ``setup`` (a :class:`raytrain.engine.setup.RankSetup`) into ``folder``."""
    from raytrain.files import atomic_write
    from raytrain.models.checkpoint import save_checkpoint

    full = checkpoint_dict(setup.model, setup.ema, setup.names, state=state, cfg=setup.cfg, metrics=metrics,
                           optimizer=setup.optimizer, scaler=setup.scaler)
    save_checkpoint(Path(folder) / STATE_FILE, full)
    atomic_write(Path(folder) / HISTORY_FILE, json.dumps(asdict(state)))


def restore_state(setup: Any, folder: Path) -> RunState:
    """Load a state folder into ``setup``'s (unwrapped) model, EMA, optimizer and scaler; return its state."""
    from raytrain.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(folder) / STATE_FILE)
    state = RunState(**json.loads((Path(folder) / HISTORY_FILE).read_text()))
    setup.model.load_state_dict(ckpt["model"])
    setup.ema.load(ckpt["ema"], ckpt["ema_updates"])
    setup.optimizer.load_state_dict(ckpt["optimizer"])
    # The loaded groups carry the saving run's momentum and weight decay; this run's own values apply from here.
    reapply_after_restore(setup)
    if ckpt.get("scaler") and setup.scaler.is_enabled():
        setup.scaler.load_state_dict(ckpt["scaler"])
    source = str((ckpt.get("config") or {}).get("name") or "")
    if source and source != setup.cfg.name:
        state.continued_from = source
        LOGGER.info("Continuing from %s's state after epoch %d (model, EMA, optimizer, schedule position) with this "
                    "run's hyperparameters.", source, state.epoch)
    else:
        LOGGER.info("Resuming after epoch %d (optimizer, schedule and EMA restored).", state.epoch)
    return state


def restore_from_weights(setup: Any, last: str | Path) -> RunState:
    """Continue from ``weights/last.pt`` when the run's state folders are gone: weights, EMA, epoch, best fitness and
    history come back; the optimizer state starts fresh (``last.pt`` does not hold it), with a warning."""
    from raytrain.engine.results import read_results_csv
    from raytrain.models.checkpoint import load_checkpoint

    last = Path(last)
    ckpt = load_checkpoint(last)
    setup.model.load_state_dict(ckpt["model"])
    setup.ema.load(ckpt["model"], ckpt["ema_updates"])
    csv, best = last.parents[1] / "results.csv", last.parent / "best.pt"
    history = [r for r in read_results_csv(csv) if r["epoch"] <= ckpt["epoch"]] if csv.is_file() else []
    LOGGER.warning("No saved training state for this run: resuming from %s after epoch %d with a fresh optimizer "
                   "state (weights, EMA, schedule position and history restored).", last, ckpt["epoch"])
    return RunState(epoch=ckpt["epoch"], best_fitness=ckpt.get("best_fitness"),
                    best_epoch=load_checkpoint(best)["epoch"] if best.is_file() else ckpt["epoch"],
                    train_time=history[-1]["time"] if history else 0.0, history=history)


def initial_state(setup: Any, state_folder: Path | None = None) -> RunState:
    """The state a run starts from: a state folder (restart or resume), else ``resume=last.pt``, else a new run.

    ``schedule_epochs`` is set here: the run's ``epochs``, unless a ``time=`` limit already re-planned it.
    """
    if state_folder is not None:
        state = restore_state(setup, state_folder)
    elif isinstance(setup.cfg.resume, str):
        state = restore_from_weights(setup, setup.cfg.resume)
    else:
        state = RunState()
    if not setup.cfg.time or not state.schedule_epochs:
        state.schedule_epochs = setup.cfg.epochs
    return state
