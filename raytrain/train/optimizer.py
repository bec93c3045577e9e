"""The run's optimizer, planned on the driver: ``optimizer=auto`` resolved once, with the parameter groups it builds.

The choice depends on the dataset (class count, training images) and the model (its parameter groups), which the
driver knows before any worker starts. :func:`raytrain.train.plan.prepare_run` prints it, records it in ``run.json``
(``optimizer``) and hands it to every worker, so all ranks, restarts and resumes train with the same optimizer and
learning rate, even when the dataset has changed since; ``args.yaml`` keeps what the user asked (``optimizer: auto``).
"""

from __future__ import annotations

from typing import Any

from raytrain.config import Config
from raytrain.models.registry import is_checkpoint
from raytrain.optimizers import OptimizerChoice


def plan_optimizer(cfg: Config, spec: Any) -> OptimizerChoice:
    """Resolve the run's optimizer from its resolved config and dataset (:class:`raytrain.data.DataSpec`).

    The model is built on the ``meta`` device (names and shapes, no memory, no weights read) to count its parameter
    groups; the training images are the train split's after ``fraction``; the rule sees the global batch (``nbs``
    for ``batch=-1``, whose AutoBatch size is picked later on the GPU).
    """
    import torch

    from raytrain.data import scan_split
    from raytrain.data.loader import subset_indices
    from raytrain.engine.optim import freeze_layers, resolve_choice
    from raytrain.models import build_model

    nc = 1 if cfg.single_cls else spec.nc
    images = len(subset_indices(len(scan_split(spec, "train", warn=False).records), cfg.fraction, cfg.seed))
    with torch.device("meta"):
        model = build_model(_arch(cfg), nc=nc)
    freeze_layers(model, cfg.freeze)
    return resolve_choice(cfg, model, nc=nc, train_images=images, batch=None if cfg.batch == -1 else cfg.batch)


def _arch(cfg: Config) -> str:
    """The architecture ``model=`` names: a scale such as ``yolo26n``, or a checkpoint's (already checked)."""
    if not is_checkpoint(cfg.model):
        return cfg.model
    from raytrain.models.checkpoint import load_checkpoint

    return str(load_checkpoint(cfg.model)["arch"])


__all__ = ["plan_optimizer"]
