"""User callbacks: a small, explicit list of events, each given a read-only view of the training state.

Callbacks run **on the rank-0 training worker** (a Ray actor, possibly on another machine), not in the process
that called ``raytrain.fit``. They travel there pickled inside the trainer's config, so they must be picklable:
module-level functions (or instances of module-level classes), not lambdas or closures. A callback that raises
fails the worker like any training error (Ray then restarts from the last checkpoint, up to ``max_failures``).
"""

from __future__ import annotations

import difflib
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from raytrain.config import ConfigError

EVENTS = (
    "on_train_start",  # after model, data and optimizer are ready (and a checkpoint restored)
    "on_train_epoch_start",  # before the first batch of an epoch
    "on_train_batch_end",  # after every batch (and optimizer step, when one happened)
    "on_train_epoch_end",  # after the last batch, before validation
    "on_model_save",  # after weights/last.pt (and best.pt) were written
    "on_fit_epoch_end",  # after validation and saving: metrics hold the epoch's full row
    "on_train_end",  # once, after the last epoch (or an early stop)
)

Callback = Callable[["TrainState"], Any]


@dataclass(frozen=True)
class TrainState:
    """What a callback sees; frozen, with ``metrics`` a read-only mapping.

    Attributes:
        event: the event being run.
        epoch: current epoch, from 1 (0 before the first epoch starts).
        epochs: epochs the run is scheduled for.
        batch: batch index within the epoch (from 0), or -1 outside a batch.
        batches: batches per epoch on this worker.
        metrics: the latest metrics (the flat dict reported to Ray; losses so far during an epoch).
        best_fitness: best fitness so far, or None.
        save_dir: the run folder.
        last: ``weights/last.pt``.
        best: ``weights/best.pt``.
        world_size: number of training workers.
    """

    event: str
    epoch: int
    epochs: int
    save_dir: Path
    last: Path
    best: Path
    batch: int = -1
    batches: int = 0
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    best_fitness: float | None = None
    world_size: int = 1


def check_callbacks(callbacks: Mapping[str, Callback | list[Callback]] | None) -> dict[str, list[Callback]]:
    """Validate ``{event: callable or [callables]}`` before anything starts.

    Raises:
        ConfigError: an unknown event (with a "did you mean"), something not callable, or a callable that cannot
            be pickled (it has to travel to the Ray worker).
    """
    checked: dict[str, list[Callback]] = {}
    for event, funcs in (callbacks or {}).items():
        if event not in EVENTS:
            close = difflib.get_close_matches(event, EVENTS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"callbacks: unknown event {event!r}.{hint} Events: {', '.join(EVENTS)}.")
        funcs = list(funcs) if isinstance(funcs, (list, tuple)) else [funcs]
        for func in funcs:
            if not callable(func):
                raise ConfigError(f"callbacks[{event!r}]: {func!r} is not callable.")
            try:
                pickle.dumps(func)
            except Exception as e:  # lambdas, closures, bound methods of unpicklable objects
                raise ConfigError(
                    f"callbacks[{event!r}]: {getattr(func, '__qualname__', func)!r} cannot be pickled ({e}). "
                    f"Callbacks run on the rank-0 Ray worker, so use module-level functions.") from e
        checked[event] = funcs
    return checked


def run_callbacks(callbacks: Mapping[str, list[Callback]], event: str, **state: Any) -> None:
    """Call every callback registered for ``event`` with a frozen :class:`TrainState`."""
    funcs = callbacks.get(event)
    if not funcs:
        return
    metrics = state.pop("metrics", {})
    view = TrainState(event=event, metrics=MappingProxyType(dict(metrics)), **state)
    for func in funcs:
        func(view)
