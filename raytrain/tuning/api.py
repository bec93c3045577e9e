"""The public :func:`tune` (``raytrain.tune(...)``; the command ``raytrain tune`` is :mod:`raytrain.commands.tune`).

Ray Tune + Optuna (TPE) + ASHA + a patience rule, one ``raytrain fit`` run per trial: the space file is read and
validated (:mod:`raytrain.tuning.space`), the experiment runs (:mod:`raytrain.tuning.orchestrate`), and the result
is read back from the experiment folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain.config import Config
from raytrain.tuning.experiment import Experiment
from raytrain.tuning.orchestrate import experiment_dir, resolve_train_args, run_experiment
from raytrain.tuning.resume import resumed_spec
from raytrain.tuning.space import TuneSpec, load_space


@dataclass
class TuneResult:
    """What :func:`tune` returns."""

    experiment_dir: Path
    best_config: Config | None  # the best trial's full training config (also in best.yaml)
    best_metric: float | None
    metric: str
    mode: str
    trials: list[dict[str, Any]] = field(default_factory=list)  # one row per trial, best first (as trials.csv)

    def dataframe(self) -> Any:
        """The trials table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.trials)


def tune(space: str | Path | Mapping[str, Any], *, start_ray: bool = False, **overrides: Any) -> TuneResult | None:
    """Search training hyperparameters: one ``raytrain fit`` run per trial, scheduled by Ray Tune.

    Ray must be running (``ray.init(include_dashboard=True)``, or a cluster); ``start_ray=True`` (what
    ``raytrain tune`` does) starts a local Ray with the dashboard, or connects to ``address=`` / ``RAY_ADDRESS``,
    and shuts it down afterwards. The search space, the dataset and every file the trials will load are checked
    once, before any trial starts (before Ray starts, when it is started here).

    Args:
        space: a search-space YAML file, or the same structure as a dict.
        start_ray: start (and afterwards stop) Ray when it is not running.
        **overrides: experiment settings (``num_samples=4``, ``name=x``, ``resume=True``, ...) or training
            arguments (``epochs=3``, ``data=coco128.yaml``; a searched argument given here is fixed). With
            ``resume=True`` the experiment ``project/name`` continues as it was started (its saved space and
            overrides); an override that would change it is refused (:mod:`raytrain.tuning.resume`).

    Returns:
        A :class:`TuneResult` (experiment folder, best config and metric, the ranked trials); None for
        ``dry_run=True``, which checks everything, prints the plan and starts nothing.
    """
    import ray

    spec = load_space(space, overrides)
    if spec.resume:  # the experiment as it was started, not the space given now
        spec = resumed_spec(experiment_dir(spec), overrides)
    if spec.dry_run:
        from raytrain.tuning.dryrun import run_dry

        print(run_dry(spec))
        return None
    if ray.is_initialized():
        return _result(run_experiment(spec, overrides=overrides), spec)
    if not start_ray:
        raise RuntimeError("raytrain.tune() needs Ray running: call ray.init(include_dashboard=True) first "
                           "(ray.init(address='auto') to join a cluster), or pass start_ray=True.")
    from raytrain.cluster.local import init_ray

    address = spec.address or os.environ.get("RAY_ADDRESS")  # a documented entry point: it may read RAY_ADDRESS
    train = None
    if address in (None, "", "local"):  # local: check everything before paying for Ray's start
        import torch

        train = resolve_train_args(spec, gpus_available=torch.cuda.device_count())
        from raytrain.cluster.nodes import ClusterShape
        from raytrain.tuning.capacity import trials_at_most
        from raytrain.tuning.dryrun import local_resources

        trials_at_most(spec, ClusterShape.fixed(local_resources(), "this machine"))  # GPUs asked for, a worker too big
    init_ray(address)
    try:
        return _result(run_experiment(spec, train, overrides=overrides), spec)
    finally:
        ray.shutdown()


def _result(exp: Experiment, spec: TuneSpec) -> TuneResult:
    best = exp.best_trial()
    rows = []
    for t in exp.ranked():
        value, epoch = t.best(exp.metric, exp.mode)
        rows.append({"trial": t.name, "trial_id": t.trial_id, "end": t.end, "epochs_run": t.epochs_run,
                     f"final {exp.metric}": t.final(exp.metric), f"best {exp.metric}": value, "best_epoch": epoch,
                     **t.params})
    return TuneResult(experiment_dir=exp.path,
                      best_config=spec.trial_config(best.params) if best else None,
                      best_metric=best.best(exp.metric, exp.mode)[0] if best else None,
                      metric=exp.metric, mode=exp.mode, trials=rows)


__all__ = ["TuneResult", "tune"]
