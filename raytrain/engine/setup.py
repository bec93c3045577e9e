"""The setup of one training rank: :class:`RankSetup` (model, data, optimizer, loss, EMA, LR schedule) from a Config.

Nothing here knows about Ray: :func:`setup_rank` builds a rank's pieces, so the epoch loop (:mod:`raytrain.engine.loop`)
runs inside a Ray Train worker (:mod:`raytrain.train.worker`), in a tune trial's process, and directly (tests,
``bench/throughput.py``).
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raytrain.config import Config, ConfigError
from raytrain.engine.ema import ModelEMA
from raytrain.engine.optim import LRSchedule
from raytrain.engine.ranks import min_over_ranks
from raytrain.models.registry import is_checkpoint

LOGGER = logging.getLogger("raytrain")


@dataclass
class RankSetup:
    """What one training rank holds while it trains (from :func:`setup_rank`; Ray's worker adds DDP)."""

    cfg: Config
    rank: int
    world: int
    device: Any
    names: list[str]
    save_dir: Path
    model: Any  # DDP-wrapped when world > 1
    ema: Any
    optimizer: Any
    scaler: Any
    loss_fn: Any
    train_loader: Any
    val_loader: Any
    lr_schedule: LRSchedule  # its epochs are replaced every epoch (a time limit can shorten the run)
    global_batch: int
    amp: bool
    callbacks: dict[str, list[Callable]]
    interactive: bool

    def emit(self, event: str, state: Any, **kw: Any) -> None:
        """Run user callbacks for ``event`` (rank 0 only); ``state`` is the loop's ``RunState``."""
        if self.rank != 0:
            return
        from raytrain.engine.callbacks import run_callbacks

        run_callbacks(self.callbacks, event, epochs=state.schedule_epochs, save_dir=self.save_dir,
                      last=self.save_dir / "weights" / "last.pt", best=self.save_dir / "weights" / "best.pt",
                      best_fitness=state.best_fitness, world_size=self.world, batches=len(self.train_loader), **kw)


def setup_rank(cfg: Config, spec: Any, *, device: Any, save_dir: Path, rank: int = 0, world: int = 1,
                callbacks: dict[str, list[Callable]] | None = None, interactive: bool = False,
                choice: Any = None) -> RankSetup:
    """Model, data, optimizer, LR schedule and EMA for one rank; no Ray calls (``bench/throughput.py`` uses it too).

    The model is not wrapped in DDP and no state is restored: the caller does that (:mod:`raytrain.train.worker`
    inside Ray; :func:`raytrain.engine.state.initial_state` restores). ``choice``: the run's resolved optimizer
    (:class:`raytrain.optimizers.OptimizerChoice`, planned on the driver and kept in ``run.json``); None resolves it
    here from this rank's data.
    """
    from raytrain.engine.autobatch import autobatch
    from raytrain.engine.optim import accumulate_steps, freeze_layers, make_optimizer, resolve_choice
    from raytrain.loss import build_loss

    torch.set_num_threads(max(int(cfg.cpus_per_worker), 1))  # the CPUs Ray reserved for this worker
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    names = ["object"] if cfg.single_cls else [spec.names[i] for i in sorted(spec.names)]
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = model_for(cfg, len(names))
    frozen = freeze_layers(model, cfg.freeze)
    LOGGER.info("Frozen %d parameter tensors (freeze=%s; the DFL conv is always frozen).", len(frozen), cfg.freeze)
    model.to(device)
    seed_everything(cfg.seed + 1000 * rank)  # each rank draws its own randomness

    if cfg.batch == -1:
        # AutoBatch's usual 60 % of the GPU's memory, of this worker's share of the GPU.
        batch = min_over_ranks(autobatch(model, cfg.imgsz, device, fraction=0.6 * cfg.gpu_share, amp=cfg.amp),
                               device)
        LOGGER.info("AutoBatch chose batch=%d per GPU: global batch %d.", batch, batch * world)
    else:
        batch = cfg.batch // world
    global_batch = batch * world
    loader_workers = min(cfg.workers, int(cfg.cpus_per_worker))  # capped to the CPUs this worker has
    train_loader, val_loader = build_loaders(cfg, spec, batch=batch, workers=loader_workers, rank=rank, world=world)

    if choice is None:
        choice = resolve_choice(cfg, model, nc=len(names), train_images=len(train_loader.dataset), batch=global_batch)
    optimizer, lr_schedule = make_optimizer(model, cfg, choice, batch=global_batch, batches=len(train_loader))
    LOGGER.info("Optimizer: %s. Warmup %d iterations, %d images per optimizer step.", choice.describe(),
                lr_schedule.warmup_iters, global_batch * accumulate_steps(cfg.nbs, global_batch))
    amp = cfg.amp and device.type == "cuda"
    return RankSetup(cfg=cfg, rank=rank, world=world, device=device, names=names, save_dir=Path(save_dir),
                  model=model, ema=ModelEMA(model), optimizer=optimizer,
                  scaler=torch.amp.GradScaler("cuda", enabled=amp),
                  loss_fn=build_loss(model.spec, len(names), cfg),
                  train_loader=train_loader, val_loader=val_loader, lr_schedule=lr_schedule, global_batch=global_batch,
                  amp=amp, callbacks=callbacks or {}, interactive=interactive)


def model_for(cfg: Config, nc: int) -> Any:
    """The model from ``model=`` (a scale or a checkpoint), with ``pretrained`` weights transferred."""
    from raytrain.models import build_model, transfer_weights
    from raytrain.models.checkpoint import load_checkpoint

    def load(key: str, path: str) -> dict[str, Any]:
        try:
            return load_checkpoint(path)
        except FileNotFoundError:  # the driver opened it: this node does not see it (a retry would not either)
            raise ConfigError(f"{key}={path}: not found on {socket.gethostname()}, where this run trains; every "
                              f"node that trains must see the file (put it on storage all nodes mount).") from None

    arch, source, source_path = cfg.model, None, None
    if is_checkpoint(cfg.model):
        ckpt = load("model", cfg.model)
        arch = ckpt["arch"]
        if cfg.pretrained is True:
            source, source_path = ckpt, cfg.model
    if isinstance(cfg.pretrained, str):
        source, source_path = load("pretrained", cfg.pretrained), cfg.pretrained
    model = build_model(arch, nc=nc)
    if source is not None:
        copied, total = transfer_weights(model, source)
        LOGGER.info("Transferred %d/%d tensors from %s (the rest keep their initial values).", copied, total,
                    source_path)
    return model


def build_loaders(cfg: Config, spec: Any, *, batch: int, workers: int, rank: int, world: int) -> tuple[Any, Any]:
    """Train and val loaders for this rank, both sharded by rank (validation is distributed too)."""
    from raytrain.data import YoloDataset, build_dataloader, scan_split

    train_ds = YoloDataset(scan_split(spec, "train"), cfg.imgsz, augment=True, hyp=cfg, cache=cfg.cache,
                           fraction=cfg.fraction, seed=cfg.seed)
    train = build_dataloader(train_ds, batch, shuffle=True, workers=workers, seed=cfg.seed, rank=rank,
                             world_size=world)
    val_ds = YoloDataset(scan_split(spec, "val"), cfg.imgsz, augment=False, hyp=cfg, cache=cfg.cache, seed=cfg.seed)
    val = build_dataloader(val_ds, batch * 2, shuffle=False, workers=workers, seed=cfg.seed, rank=rank,
                           world_size=world)
    return train, val


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (model init; the data derive their own seeds)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["RankSetup", "build_loaders", "model_for", "seed_everything", "setup_rank"]
