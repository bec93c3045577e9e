"""The trial function: one ``raytrain fit`` run per trial, as a Ray Train ``TorchTrainer`` reporting to Tune.

The trial builds its trainer with the factory named in :attr:`TrialJob.trainer_factory` (its own workers, one or
several GPUs) and calls ``fit()``. Train reports every epoch to Tune through ``TuneReportCallback``, so ASHA (on the
reported ``epoch``) and the patience stopper can cut weak trials. Names are stable (the trial's number), so a
retried or resumed trial finds its own Train run, checkpoints and W&B run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytrain.config import make_config

TRAINER_FACTORY = "raytrain.ray_fit:build_trainer"
TRAIN_FOLDER = "_train"  # the trials' Ray Train runs (checkpoints) inside the experiment folder
TRIALS_FOLDER = "trials"  # the trials' fit run folders (weights, results.csv, W&B files)
# fit's own patience is off in a trial: tune's patience stopper applies the rule and labels the trial.
NO_FIT_PATIENCE = 10**6


@dataclass(frozen=True)
class TrialJob:
    """Everything a trial function needs besides its sampled parameters (small, picklable, paths absolute)."""

    train: dict[str, Any]  # fixed, resolved training arguments
    param_names: tuple[str, ...]
    experiment: str  # experiment name: the W&B group
    experiment_dir: str  # absolute: where trial run folders go
    train_storage: str  # absolute path or URI: where the trials' Train runs keep checkpoints
    wandb_project: str
    wandb_mode: str
    trainer_factory: str = TRAINER_FACTORY  # "module:function" with build_trainer's signature


def trial_name(trial: Any) -> str:
    """``trial_00003``: a Tune trial's number within the experiment (names its folders and its W&B run)."""
    return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


def trial_save_dir(job: TrialJob, name: str) -> Path:
    """The fit run folder of the trial called ``name``."""
    return Path(job.experiment_dir) / TRIALS_FOLDER / name


def wandb_id(experiment: str, trial_id: str) -> str:
    """The W&B run id of a trial: stable, so a retried or resumed trial continues its W&B run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{experiment}-{trial_id}")[:64]


def trial_overrides(job: TrialJob, name: str) -> dict[str, Any]:
    """Arguments tune sets on every trial's config: its run folder, W&B settings, and no fit-side patience."""
    return {"project": str(Path(job.experiment_dir) / TRIALS_FOLDER), "name": name, "exist_ok": True,
            "patience": NO_FIT_PATIENCE, "wandb_project": job.wandb_project, "wandb_mode": job.wandb_mode,
            "resume": False}


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's trial function: one ``raytrain fit`` run as a Ray Train ``TorchTrainer``, reporting every epoch."""
    import importlib

    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    context = ray.tune.get_context()
    trial_id, name = context.get_trial_id(), context.get_trial_name()
    params = {k: config[k] for k in job.param_names if k in config}
    cfg = make_config(job.train, params, trial_overrides(job, name))
    module, _, function = job.trainer_factory.partition(":")
    build_trainer = getattr(importlib.import_module(module), function)
    trainer = build_trainer(
        cfg,
        run_name=name,  # stable across retries and resume: Train finds its own snapshot
        storage_path=job.train_storage,
        save_dir=Path(cfg.project) / name,
        ray_callbacks=[TuneReportCallback()],
        tracking={"group": job.experiment, "name": name, "id": wandb_id(job.experiment, trial_id)},
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise result.error


__all__ = ["TRAINER_FACTORY", "TrialJob", "run_trial", "trial_name", "trial_overrides", "wandb_id"]
