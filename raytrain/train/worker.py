"""The Ray Train worker function: a thin adapter between Ray Train and the Ray-free loop.

It does what only Ray can: this worker's rank, world size and device, the DDP wrapper, the state from Ray's checkpoint
(after a worker failure or on ``resume``), and a report sink that hands each epoch's metrics and state folder to
``ray.train.report``. Everything else — epochs, validation, weights, results, callbacks, patience — is
:func:`raytrain.engine.loop.run_epochs`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError
from raytrain.engine.loop import EpochReport, run_epochs
from raytrain.engine.ranks import first_message
from raytrain.engine.setup import setup_rank
from raytrain.engine.state import initial_state
from raytrain.files import atomic_write
from raytrain.keys import FATAL_ERROR
from raytrain.train.plan import FATAL_FILE

LOGGER = logging.getLogger("raytrain")


def worker_config(plan: Any, driver_node: str | None = None) -> dict[str, Any]:
    """What every worker receives (``train_loop_config``): the driver's resolved plan, picklable, carried as it is
    (the Config is not turned into a dict and parsed again on the worker).
    ``driver_node``: the Ray node that keeps the run folder (default: this one, where Ray puts the Train controller;
    a tune trial names the experiment driver's)."""
    from raytrain.cluster.sync import current_node_id

    return {
        "cfg": plan.cfg,
        "data": plan.data,
        "save_dir": str(plan.save_dir),
        "accelerator": plan.devices.accelerator,
        "callbacks": plan.callbacks,
        "tracking": plan.tracking,
        "resume_state": plan.resume_state,
        "optimizer": plan.optimizer,  # resolved once on the driver: every rank builds the same optimizer
        "interactive": sys.stderr.isatty(),
        # Ray places the Train controller on this (the caller's) node; a rank 0 elsewhere stages its run files
        # in the checkpoint for RunFolderMirror (or a tune driver's TrialFolderMirror) to copy in (cluster/sync.py).
        "driver_node": driver_node or current_node_id(),
    }


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker function Ray Train runs (``config`` from :func:`worker_config`).

    An error no retry can fix ends the run at once: every rank reports only :data:`raytrain.keys.FATAL_ERROR` with
    its one-line message and returns, so Ray does not restart the workers for it (:class:`RecordFatalError` hands
    the message to the driver). Such errors are a :class:`~raytrain.config.ConfigError` (a config, dataset or
    checkpoint problem, e.g. a file deleted since the driver checked it, a node without the dataset's mount), any
    exception while a rank sets up, and, for one worker, any exception before the run's first optimizer step (see
    :func:`no_retry_message`). Any other error is a fault: Ray restarts the workers from the last checkpoint, up to
    ``max_failures``.
    """
    import ray.train
    import ray.train.torch

    from raytrain.cluster.compat import quiet_train_worker_logs
    from raytrain.cluster.sync import current_node_id
    from raytrain.tracking import open_loggers

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    setup_worker_logging(rank)
    quiet_train_worker_logs()
    setup = state = error = None
    try:
        setup, state = _setup(config, rank, world)
    except ConfigError as e:
        error = str(e)
    except Exception as e:  # set-up is deterministic: a restart would fail the same way
        error = no_retry_message(e, "while setting up")
    error = first_message(error)  # every rank: if one cannot start, none trains
    if error is not None:
        _report_fatal(error)
        return
    if world > 1:
        setup.model = ray.train.torch.prepare_model(setup.model, move_to_device=setup.device)
    stage = rank == 0 and config.get("driver_node", "") not in ("", current_node_id())
    trackers = open_loggers(setup.cfg.loggers, config["tracking"], setup.cfg.to_dict(), done_epochs=state.epoch) \
        if rank == 0 else None
    try:
        run_epochs(setup, state, RayReport(setup.save_dir, stage), trackers=trackers)
    except ConfigError as e:
        if world > 1:  # the ranks are out of step: a restart meets the same error at setup, and ends there
            raise
        _report_fatal(str(e))
    except Exception as e:
        if world > 1 or setup.ema.updates > 0:  # after a step, or across ranks: a fault Ray may recover from
            raise
        _report_fatal(no_retry_message(e, "before the first optimizer step"))
    finally:
        if trackers is not None:
            trackers.finish()


def no_retry_message(error: Exception, when: str) -> str:
    """The one line for an exception no retry can fix: one raised while a rank sets up, or before a fresh run's first
    optimizer step (the same config, data and weights would raise it again at every attempt). The traceback goes to
    the worker's log."""
    LOGGER.error("%s %s (not retried: every attempt would meet it)", type(error).__name__, when, exc_info=error)
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__} {when}: {text[:400]} (not retried: every attempt would meet it)"


def _setup(config: dict[str, Any], rank: int, world: int) -> tuple[Any, Any]:
    """This rank's :class:`~raytrain.engine.setup.RankSetup` and the state it starts from (Ray's checkpoint, else
    ``resume=last.pt``, else new)."""
    import ray.train

    cfg = config["cfg"]
    device = _worker_device(config["accelerator"])
    spec = dataset_on_this_node(cfg.data, config["data"])
    setup = setup_rank(cfg, spec, device=device, save_dir=Path(config["save_dir"]), rank=rank, world=world,
                    callbacks=config["callbacks"], interactive=config["interactive"], choice=config["optimizer"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:  # no snapshot in Ray Train: a state kept elsewhere (a tune trial's), else resume=/new
        resume_state = config.get("resume_state")
        return setup, initial_state(setup, Path(resume_state) if resume_state else None)
    with checkpoint.as_directory() as folder:
        return setup, initial_state(setup, Path(folder))


def _report_fatal(message: str) -> None:
    import ray.train

    LOGGER.error("%s", message)
    ray.train.report({FATAL_ERROR: message}, checkpoint=None)


class RayReport:
    """The loop's report sink inside Ray Train: ``ray.train.report`` with the state folder as rank 0's checkpoint.

    With ``stage`` (rank 0 is not on the driver's node) the run files changed this epoch also go into the checkpoint,
    for :class:`raytrain.cluster.sync.RunFolderMirror` to copy into the driver's run folder.
    """

    def __init__(self, save_dir: Path, stage: bool) -> None:
        self.save_dir, self.stage = save_dir, stage

    def __call__(self, report: EpochReport) -> None:
        import ray.train

        if report.state_dir is None:  # every rank reports (a barrier); only rank 0 brings the checkpoint
            ray.train.report(report.metrics, checkpoint=None)
            return
        if self.stage:
            from raytrain.cluster.sync import stage_run_files

            stage_run_files(self.save_dir, report.changed, report.state_dir)
        ray.train.report(report.metrics, checkpoint=ray.train.Checkpoint.from_directory(report.state_dir))


def record_fatal_error_callback(save_dir: Path) -> Any:
    """A Ray Train callback (on the controller, which runs on the caller's node) that writes a run's fatal error into
    ``save_dir/fatal_error.txt``: the channel back to the caller, as a report without a checkpoint is not part of
    Ray's ``Result``."""
    from ray.train import UserCallback

    class RecordFatalError(UserCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            message = metrics[0].get(FATAL_ERROR) if metrics else None
            if message:
                atomic_write(Path(save_dir) / FATAL_FILE, str(message))

    return RecordFatalError()


def dataset_on_this_node(data: str, spec: Any) -> Any:
    """The driver's resolved dataset, or, on a node where its files are missing, the dataset prepared here.

    Built-in and ``download:`` datasets live on each node's disk: the first worker on a node that lacks them downloads
    (or generates) them, under a file lock, so the other workers on that node wait and reuse the result.
    """
    splits = [*spec.train, *spec.val]
    if all(Path(p).exists() for p in splits):
        return spec
    from raytrain.data import resolve_data

    LOGGER.info("Dataset %s is not on this node yet: preparing it here.", data)
    return resolve_data(data)


def setup_worker_logging(rank: int) -> None:
    if not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _worker_device(accelerator: str) -> Any:
    import ray.train.torch
    import torch

    if accelerator == "cuda":
        # Ray assigned this worker one GPU (CUDA_VISIBLE_DEVICES); get_device() names it.
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        return device
    return torch.device(accelerator)
