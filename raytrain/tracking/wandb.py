"""Weights & Biases on the rank-0 training worker: lazy import, never an interactive prompt, no key in any file.

The mode is decided on the driver (:func:`resolve_wandb_mode`) and re-checked on the worker: ``online`` needs
credentials (``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``) *where the worker runs*; without them
the worker falls back to ``offline`` with a warning (upload later with ``wandb sync``). The API key itself is never
copied into the trainer config, the runtime environment, ``args.yaml`` or a checkpoint: on a cluster, give each node
its own credentials.
"""

from __future__ import annotations

import logging
import netrc
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH, EPOCH_KEYS
from raytrain.tracking.base import TrackerInfo, numeric

LOGGER = logging.getLogger("raytrain")
WANDB_HOST = "api.wandb.ai"


def has_wandb_credentials(environ: Mapping[str, str] | None = None, netrc_file: str | Path | None = None) -> bool:
    """True when W&B could log in without a prompt: ``WANDB_API_KEY`` is set or ``~/.netrc`` has api.wandb.ai."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    path = Path(netrc_file) if netrc_file else Path(environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] | None = None,
                       netrc_file: str | Path | None = None) -> str:
    """The W&B mode to use: the ``wandb_mode`` argument, else ``WANDB_MODE``, else online with credentials.

    ``wandb_mode=''`` (the default) means: ``WANDB_MODE`` from the environment when set, else ``online`` when
    credentials exist and ``offline`` otherwise. An explicit ``online`` without credentials becomes ``offline``
    (with a warning) rather than a login prompt.
    """
    environ = os.environ if environ is None else environ
    mode = mode or environ.get("WANDB_MODE", "")
    if mode in ("disabled", "offline"):
        return mode
    if mode == "dryrun":
        return "offline"
    online = has_wandb_credentials(environ, netrc_file)
    if mode == "online" and not online:
        LOGGER.warning("wandb_mode=online but no W&B credentials (WANDB_API_KEY or ~/.netrc) were found here: "
                       "logging offline; upload later with 'wandb sync'.")
    return "online" if online else "offline"


def init_run(*, mode: str, project: str, name: str, save_dir: Path, config: dict[str, Any],
             entity: str | None = None, group: str | None = None, run_id: str | None = None) -> Any:
    """``wandb.init`` as raytrain calls it (the only place): its own W&B service, files in ``save_dir/wandb``.

    Returns the run, or None when ``mode`` is disabled. Raises ImportError when wandb is not installed.
    """
    if mode == "disabled":
        return None
    mode = resolve_wandb_mode(mode)  # re-check on this machine: credentials live per node
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    # A Ray worker inherits the environment of the process that started Ray: if that process had used W&B,
    # WANDB_SERVICE points at its W&B service, and this run would live (and, if the worker is killed, stay "in
    # use") in another process's service. Each training process gets a service of its own.
    os.environ.pop("WANDB_SERVICE", None)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=name, entity=entity, group=group, id=run_id, resume="allow",
                     dir=str(save_dir), config=config, mode=mode, reinit="finish_previous")
    LOGGER.info("W&B: %s run %s (%s)", mode, name, getattr(run, "url", None) or save_dir / "wandb")
    return run


class WandbLogger:
    """The W&B run of one fit run or tune trial (a :class:`raytrain.tracking.base.Tracker`).

    The run config is the resolved arguments with a tune trial's searched parameters at the top level under their
    own names, so W&B's parallel-coordinates and sweep views compare trials by them.
    """

    def __init__(self, info: TrackerInfo, config: Mapping[str, Any], *, done_epochs: int = 0) -> None:
        self.last_epoch = done_epochs
        self.run = init_run(mode=info.wandb_mode, project=info.project, name=info.name, save_dir=info.save_dir,
                            config={**config, **info.params}, entity=info.wandb_entity, group=info.group,
                            run_id=info.run_id)

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None:
        if self.run is not None:
            self.run.log(dict(row), step=epoch)
        self.last_epoch = epoch

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        if self.run is not None:
            self.run.summary.update({f"best/{k}": v for k, v in numeric(metrics).items()})

    def finish(self, end: str) -> None:
        if self.run is not None:
            self.run.summary.update({"end": end, "epochs_run": self.last_epoch})
            self.run.finish()
            self.run = None


def finish_stopped_run(info: TrackerInfo, rows: Sequence[Mapping[str, Any]], end: str) -> None:
    """From the tune driver: write a killed trial's epochs and how it ended to its W&B run (same id), and close it.

    When ASHA, the patience rule or the time budget stops a trial, Tune kills the trial's processes: the rank-0
    worker never finishes its W&B run, and an offline run loses the records W&B still buffered. The driver resumes
    the same run id (so it stays one run per trial), logs the epochs Tune received and a summary with ``end``.
    """
    save_dir = Path(info.save_dir)
    before = set((save_dir / "wandb").glob("*run-*"))
    try:
        run = init_run(mode=info.wandb_mode, project=info.project, name=info.name, save_dir=save_dir,
                       config=dict(info.params), entity=info.wandb_entity, group=info.group, run_id=info.run_id)
        if run is None:
            return
        for row in rows:
            run.log(numeric({k: row[k] for k in EPOCH_KEYS if k in row}), step=int(row[EPOCH]))
        run.summary.update({"end": end, "epochs_run": int(rows[-1][EPOCH]) if rows else 0})
        run.finish()
    except Exception as e:  # W&B problems must never fail the experiment
        LOGGER.warning("W&B: could not finish the run of %s (%s): %s", info.name, end, e)
        # A failed init leaves a run folder with no records: remove it so `wandb sync` sees only real runs.
        for folder in set((save_dir / "wandb").glob("*run-*")) - before:
            if folder.is_dir() and not any(f.stat().st_size for f in folder.glob("*.wandb")):
                shutil.rmtree(folder, ignore_errors=True)


class WandbRun:
    """The rank-0 W&B run as ``ray_fit.train_worker`` uses it until the loop calls :func:`open_loggers`.

    Args:
        mode: online, offline or disabled (from :func:`resolve_wandb_mode`).
        project: W&B project.
        name: run name (the run folder's name, or the tune trial's name).
        save_dir: the run folder; W&B writes its files under ``save_dir/wandb``.
        config: the resolved config (plain data; holds no secrets).
        entity: W&B entity, or None.
        group: group (the tune experiment), or None.
        run_id: a stable id so a resumed or restarted run continues the same W&B run.
    """

    def __init__(self, *, mode: str, project: str, name: str, save_dir: Path, config: dict[str, Any],
                 entity: str | None = None, group: str | None = None, run_id: str | None = None) -> None:
        try:
            self.run = init_run(mode=mode, project=project, name=name, save_dir=save_dir, config=config,
                                entity=entity, group=group, run_id=run_id)
        except ImportError:
            LOGGER.warning("wandb is not installed: 'pip install wandb' to log runs; continuing without W&B.")
            self.run = None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Log one epoch's metrics at ``step`` (the epoch)."""
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def finish(self) -> None:
        """Close the run (flushes offline files)."""
        if self.run is not None:
            self.run.finish()
            self.run = None
