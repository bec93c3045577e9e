"""What every tracker shares: the run's identity (:class:`TrackerInfo`), the fan-out (:class:`Loggers`) and helpers.

A tracker is one small class in its own module (``tracking/wandb.py``, ``tensorboard.py``, ...) with the
:class:`Tracker` methods; its constructor opens the tool's run. It imports its library inside the constructor,
so nothing here (or in :mod:`raytrain.tracking`) imports a tracker library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from raytrain.files import atomic_write

LOGGER = logging.getLogger("raytrain")
TRACKING_FILE = "tracking.json"  # in the run folder: the tools' own run ids (MLflow), so a resumed run continues


@dataclass(frozen=True)
class TrackerInfo:
    """Who a run is, for every tracker: built on the driver, picklable, sent to the rank-0 worker.

    Attributes:
        save_dir: the run folder (a fit run or a tune trial).
        name: run name: the run folder's name, or the tune trial's name.
        run_id: stable id: a restarted or resumed run continues the same tracker run.
        project: W&B project, MLflow experiment (fit runs), Comet and ClearML project.
        group: the tune experiment's name (None for a fit).
        params: the searched parameters of a tune trial (first class in each tool: W&B config top level, MLflow
            params, TensorBoard hparams, Comet parameters, ClearML hyperparameters).
        wandb_mode: the ``wandb_mode`` argument, resolved on the driver (:func:`resolve_wandb_mode`).
        wandb_entity: W&B entity, or None.
        mlflow_uri: MLflow tracking URI; None: a local SQLite store ``<save_dir's parent>/mlflow.db`` (the project
            folder of a fit run).
        parent_run_id: the MLflow parent run of a tune experiment (from :func:`start_experiment`).
    """

    save_dir: Path
    name: str
    run_id: str
    project: str
    group: str | None = None
    params: dict = field(default_factory=dict)
    wandb_mode: str = ""
    wandb_entity: str | None = None
    mlflow_uri: str | None = None
    parent_run_id: str | None = None


class Tracker(Protocol):
    """One tool's run, opened by the class's constructor ``(info, config, *, done_epochs)`` on rank 0."""

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None: ...

    def log_summary(self, metrics: Mapping[str, float]) -> None: ...

    def finish(self, end: str) -> None: ...


def plain_name(key: str) -> str:
    """``metrics/mAP50(B)`` -> ``metrics/mAP50B``: MLflow refuses parentheses in names, and TensorBoard rewrites them
    (with a warning per tag); Ultralytics logs the same names."""
    return key.replace("(", "").replace(")", "")


def numeric(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a row (a tracker gets metrics only; ``epoch`` is the step, not a metric)."""
    out = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def read_tracking_file(save_dir: Path) -> dict[str, Any]:
    """``<save_dir>/tracking.json`` (empty when absent or unreadable: the run then starts a new tool run)."""
    try:
        data = json.loads((Path(save_dir) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_tracking_file(save_dir: Path, tool: str, record: Mapping[str, Any]) -> None:
    """Store one tool's ids in ``<save_dir>/tracking.json`` (atomically: a killed worker leaves a whole file)."""
    data = read_tracking_file(save_dir)
    data[tool] = dict(record)
    atomic_write(Path(save_dir) / TRACKING_FILE, json.dumps(data, indent=1, sort_keys=True))


class Loggers:
    """Every selected tracker of one run, on rank 0: each call goes to each tool.

    A tool that fails must never fail training: its first error is logged as a warning and the tool is dropped.
    ``log_epoch`` skips epochs up to ``done_epochs`` (logged by an earlier attempt of the same run).
    """

    def __init__(self, trackers: Mapping[str, Tracker], done_epochs: int = 0) -> None:
        self.trackers = dict(trackers)
        self.done_epochs = done_epochs

    @property
    def names(self) -> list[str]:
        """The tools still logging."""
        return list(self.trackers)

    def _each(self, action: str, call: Any) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                call(tracker)
            except Exception as e:  # a tracker problem must never stop training
                LOGGER.warning("%s: %s failed (%s: %s); continuing without %s.", name, action, type(e).__name__,
                               e, name)
                self.trackers.pop(name, None)
                if action != "finish":
                    _close_quietly(tracker)

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None:
        """Log one epoch's row (the ``results.csv`` columns, fitness, ...) at step ``epoch`` (from 1)."""
        if epoch <= self.done_epochs:
            return
        self._each("log_epoch", lambda t: t.log_epoch(row, epoch))
        self.done_epochs = epoch

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Log the run's final best metrics."""
        self._each("log_summary", lambda t: t.log_summary(metrics))

    def finish(self, end: str = "completed") -> None:
        """Close every tool's run; ``end`` says how the run ended (completed, error, asha-stopped, ...)."""
        self._each("finish", lambda t: t.finish(end))
        self.trackers.clear()


def _close_quietly(tracker: Tracker) -> None:
    with contextlib.suppress(Exception):  # already failing: the warning above is the one the user needs
        tracker.finish("error")
