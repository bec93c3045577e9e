"""Experiment trackers (``loggers=``): W&B, TensorBoard, MLflow, Comet, ClearML, on the rank-0 worker only.

Each tool is one module with one small class (open in the constructor, ``log_epoch``, ``log_summary``,
``finish``); importing this package imports no tracker library, and a tool's library is imported only when the tool
is selected. The driver checks the selection (:func:`check_loggers`) before anything starts and builds a
:class:`TrackerInfo`; rank 0 calls :func:`open_loggers`. The tune driver adds :func:`start_experiment`,
:func:`finish_stopped_run` and :func:`finish_experiment`. No tool is ever given a secret: each finds its own
credentials on the machine that logs, and logs offline (or to local files) without them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.config import LOGGERS, ConfigError
from raytrain.tracking.base import TRACKING_FILE, Loggers, Tracker, TrackerInfo
from raytrain.tracking.wandb import WandbRun, has_wandb_credentials, resolve_wandb_mode

LOGGER = logging.getLogger("raytrain")
LOGGER_NAMES = LOGGERS  # ("wandb", "tensorboard", "mlflow", "comet", "clearml"), checked by the config
# name -> (module.Class of its tracker, the package it imports, the raytrain extra that installs it)
TOOLS = {
    "wandb": ("raytrain.tracking.wandb:WandbLogger", "wandb", "wandb"),
    "tensorboard": ("raytrain.tracking.tensorboard:TensorBoardLogger", "tensorboardX", "tensorboard"),
    "mlflow": ("raytrain.tracking.mlflow:MlflowLogger", "mlflow", "mlflow"),
    "comet": ("raytrain.tracking.comet:CometLogger", "comet_ml", "comet"),
    "clearml": ("raytrain.tracking.clearml:ClearMLLogger", "clearml", "clearml"),
}

__all__ = ["LOGGER_NAMES", "TRACKING_FILE", "Loggers", "Tracker", "TrackerInfo", "WandbRun", "check_loggers",
           "finish_experiment", "finish_stopped_run", "has_wandb_credentials", "open_loggers", "resolve_wandb_mode",
           "start_experiment"]


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent missing, or a module with no spec (sys.modules[name] = None)
        return False


def check_loggers(names: Sequence[str]) -> None:
    """Driver side, before anything starts: every name is a tool, and its package is installed here.

    Raises:
        ConfigError: an unknown name (with "did you mean"), or ``"loggers=mlflow needs the mlflow package:
            pip install 'raytrain[mlflow]'"``.
    """
    import difflib

    for name in names:
        if name not in TOOLS:
            close = difflib.get_close_matches(name, LOGGER_NAMES, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"loggers={name!r} is not a logger: choose from {', '.join(LOGGER_NAMES)}.{hint}")
        _, package, extra = TOOLS[name]
        if not _installed(package):
            raise ConfigError(f"loggers={name} needs the {package} package: pip install 'raytrain[{extra}]'")


def _tool(name: str, attribute: str | None = None) -> Any:
    target, _, _ = TOOLS[name]
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), attribute or cls)


def open_loggers(names: Sequence[str], info: TrackerInfo, config: Mapping[str, Any], *,
                 done_epochs: int = 0) -> Loggers:
    """Open every selected tool's run, on rank 0 only; a tool that cannot start is dropped with a warning.

    Args:
        names: the ``loggers`` argument.
        info: the run's identity (built on the driver).
        config: ``Config.to_dict()``: the resolved arguments, logged once.
        done_epochs: epochs an earlier attempt of this run already logged (resume, restart): ``log_epoch`` skips
            them, so no epoch is logged twice.
    """
    trackers = {}
    for name in dict.fromkeys(names):
        try:
            trackers[name] = _tool(name)(info, dict(config), done_epochs=done_epochs)
        except Exception as e:  # a tracker must never stop training
            LOGGER.warning("%s: could not start (%s: %s); continuing without %s.", name, type(e).__name__, e, name)
    return Loggers(trackers, done_epochs=done_epochs)


def start_experiment(names: Sequence[str], *, experiment_dir: Path, name: str, project: str, mlflow_uri: str | None,
                     params: Sequence[str]) -> dict[str, str]:
    """Tune driver, once per experiment (again on resume): what each trial's :class:`TrackerInfo` adds.

    MLflow: the experiment's parent run (continued on resume); returns ``{"parent_run_id": ..., "mlflow_uri": ...}``
    (the store, made absolute). Other tools group trials by ``TrackerInfo.group`` and need nothing here.
    """
    if "mlflow" not in names:
        return {}
    try:
        return _tool("mlflow", "start_experiment")(experiment_dir=Path(experiment_dir), name=name, project=project,
                                                   mlflow_uri=mlflow_uri, params=list(params))
    except Exception as e:  # the trials still log, as runs without a parent
        LOGGER.warning("mlflow: could not start the experiment's parent run (%s: %s).", type(e).__name__, e)
        return {}


def finish_experiment(names: Sequence[str], *, experiment_dir: Path, end: str = "completed",
                      best: Mapping[str, float] | None = None) -> None:
    """Tune driver, when the experiment ends: close the MLflow parent run (with the best trial's metrics)."""
    if "mlflow" not in names:
        return
    try:
        _tool("mlflow", "finish_experiment")(experiment_dir=Path(experiment_dir), end=end, best=best)
    except Exception as e:
        LOGGER.warning("mlflow: could not close the experiment's parent run (%s: %s).", type(e).__name__, e)


def finish_stopped_run(names: Sequence[str], info: TrackerInfo, rows: Sequence[Mapping[str, Any]], end: str) -> None:
    """Tune driver: close the runs of a trial Tune killed (ASHA, patience, time budget, error).

    Tune kills a stopped trial's processes, so its rank-0 worker never finished its tracker runs. Each tool resumes
    the trial's run (same id), logs the epochs ``rows`` hold that it lacks (``rows``: the epoch reports the driver
    received, e.g. Tune's ``result.json``, each with ``epoch``) and how it ended, and closes it. Never raises.
    """
    rows = sorted((r for r in rows if isinstance(r.get("epoch"), (int, float))), key=lambda r: r["epoch"])
    for name in dict.fromkeys(names):
        try:
            _tool(name, "finish_stopped_run")(info, rows, end)
        except Exception as e:  # tracker problems must never fail the experiment
            LOGGER.warning("%s: could not finish the run of %s (%s): %s", name, info.name, end, e)
