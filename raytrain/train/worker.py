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

from raytrain.config import make_config
from raytrain.engine.loop import EpochReport, run_epochs
from raytrain.engine.state import initial_state
from raytrain.engine.train import make_worker

LOGGER = logging.getLogger("raytrain")


def worker_config(plan: Any) -> dict[str, Any]:
    """What every worker receives (``train_loop_config``): plain, picklable data from the driver's plan."""
    from raytrain.cluster.sync import current_node_id

    return {
        "cfg": plan.cfg.to_dict(),
        "data": plan.data,
        "save_dir": str(plan.save_dir),
        "accelerator": plan.devices.accelerator,
        "callbacks": plan.callbacks,
        "tracking": plan.tracking,
        "interactive": sys.stderr.isatty(),
        # Ray places the Train controller on this (the caller's) node; a rank 0 elsewhere stages its run files
        # in the checkpoint for RunFolderMirror to copy here (see raytrain.cluster.sync).
        "driver_node": current_node_id(),
    }


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker function Ray Train runs (``config`` from :func:`worker_config`)."""
    import ray.train
    import ray.train.torch

    from raytrain.cluster.compat import quiet_train_worker_logs
    from raytrain.cluster.sync import current_node_id

    cfg = make_config(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _setup_logging(rank)
    quiet_train_worker_logs()
    device = _worker_device(config["accelerator"])
    spec = dataset_on_this_node(cfg.data, config["data"])
    w = make_worker(cfg, spec, device=device, save_dir=Path(config["save_dir"]), rank=rank, world=world,
                    callbacks=config["callbacks"], interactive=config["interactive"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = initial_state(w, Path(folder))
    else:
        state = initial_state(w)
    if world > 1:
        w.model = ray.train.torch.prepare_model(w.model, move_to_device=device)
    stage = rank == 0 and config.get("driver_node", "") not in ("", current_node_id())
    trackers = _open_trackers(config["tracking"], w, cfg) if rank == 0 else None
    try:
        run_epochs(w, state, RayReport(w.save_dir, stage), trackers=trackers)
    finally:
        if trackers is not None:
            trackers.finish()


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


def _open_trackers(tracking: dict[str, Any], w: Any, cfg: Any) -> Any:
    """Rank 0's W&B run (a no-op object when W&B is off)."""
    from raytrain.tracking import WandbRun

    run = WandbRun(mode=tracking["mode"], project=tracking["project"], entity=tracking["entity"],
                   group=tracking["group"], name=tracking["name"], run_id=tracking["run_id"], save_dir=w.save_dir,
                   config=cfg.to_dict())
    run.log_epoch = lambda row, epoch: run.log(row, step=epoch)
    run.log_summary = lambda metrics: None
    return run


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


def _setup_logging(rank: int) -> None:
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
