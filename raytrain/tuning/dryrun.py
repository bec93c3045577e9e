"""``raytrain tune SPACE.yaml dry_run=True``: what an experiment would do, checked and printed, with nothing started.

The space file and every override are validated, the dataset is resolved and scanned and the checkpoints the trials
load are opened (as before a real run); the plan is computed with the same functions the experiment uses (capacity,
trial resources, ASHA's rungs) against the Ray it would run on: the cluster at ``address=`` (connected to, read, and
left alone), or this machine's CPUs and GPUs for the local Ray ``raytrain tune`` would start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from raytrain.cluster.nodes import ClusterShape, format_resources
from raytrain.config import Config
from raytrain.models.registry import is_checkpoint
from raytrain.tuning.space import TuneSpec


def asha_rungs(grace_period: int, max_t: int, reduction_factor: float) -> list[float]:
    """The epochs at which ASHA compares trials, as Ray 2.60's ``_Bracket`` spaces them (``min_t * rf**k``)."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [grace_period * reduction_factor**k for k in range(count)]


def describe(spec: TuneSpec, base: Config, cluster: ClusterShape | Mapping[str, float], *,
             ray_source: str) -> str:
    """The experiment plan as text: trials, searched keys, fixed arguments, resources, concurrency, stopping rules,
    storage and tracking. ``base``: the resolved fixed arguments; ``cluster``: the node types (or plain resource
    totals) of the Ray it would use."""
    from raytrain.cluster.storage import resolve_storage
    from raytrain.config import FIELDS
    from raytrain.tracking import resolve_wandb_mode
    from raytrain.tuning.capacity import as_shape, concurrency_cap, trial_footprint
    from raytrain.tuning.orchestrate import experiment_dir
    from raytrain.tuning.trial import trial_overrides

    shape = as_shape(cluster)
    footprint = trial_footprint(base, shape)
    workers, cpus, gpus = footprint.workers, footprint.cpus, footprint.gpus
    defaults = {k: f.default_factory() if callable(f.default_factory) else f.default for k, f in FIELDS.items()}
    job = SimpleNamespace(experiment_dir="", wandb_project="", wandb_mode="", workers=1)  # only the keys are wanted
    per_trial = set(trial_overrides(job, "-")) | {"storage"}  # every trial sets its own
    fixed = {k: v for k, v in base.to_dict().items()
             if k not in spec.space and k not in per_trial and defaults.get(k, object()) != v}
    lines = [
        f"Dry run of {spec.source}: nothing was started.",
        f"Experiment folder: {experiment_dir(spec)}{' (resumed)' if spec.resume else ''}",
        f"Ray: {ray_source}: {_resources(shape)}",
        f"Trials: {spec.num_samples}, {_sampler(spec)}; {_objectives(spec)}",
        "Searched:",
        *(f"  {name}: {_param(param)}" for name, param in spec.space.items()),
        *_families(spec),
        "Fixed (besides the defaults):",
        *(f"  {key}={value}" for key, value in fixed.items()),
        f"Per trial: {workers} worker(s), {cpus:g} CPU(s){f', {gpus:g} GPU(s)' if gpus else ''}"
        + (f" (each worker {format_resources(footprint.worker)})" if set(footprint.worker) - {"CPU", "GPU"} else "")
        + "; "
        + ("trains in the Tune trial's own process (reused between trials)" if workers == 1
           else "a Ray Train TorchTrainer (DDP) per trial"),
        f"At once: {concurrency_cap(spec, shape)} trial(s)",
        f"Stopping: {_stopping(spec)}",
        f"Storage: {resolve_storage(spec.storage, spec.project)}",
        f"Trackers: {', '.join(base.loggers) or 'none'}"
        + (f" (W&B {resolve_wandb_mode(spec.wandb_mode or base.wandb_mode)})" if "wandb" in base.loggers else ""),
    ]
    return "\n".join(lines)


def _families(spec: TuneSpec) -> list[str]:
    """A line naming the detector families and scales the trials train, when ``model`` is searched."""
    param = spec.space.get("model")
    if param is None or param.type != "choice":
        return []
    from raytrain.models.registry import family_of

    names = [str(v) for v in param.values]
    built = [n for n in names if not is_checkpoint(n)]
    by_family: dict[str, list[str]] = {}
    for name in built:
        by_family.setdefault(family_of(name).title, []).append(name)
    listed = "; ".join(f"{title}: {', '.join(archs)}" for title, archs in by_family.items())
    files = [n for n in names if is_checkpoint(n)]
    return [f"  (families: {listed}{'; checkpoints: ' + ', '.join(files) if files else ''})"]


def _resources(shape: ClusterShape) -> str:
    if shape.can_grow:  # the node types the autoscaler may start
        return "can add nodes: " + "; ".join(
            f"{t.name} {format_resources(t.resources)} x{'any' if t.max_nodes is None else t.max_nodes}"
            for t in shape.node_types)
    totals = shape.totals
    return ", ".join(f"{totals.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def _sampler(spec: TuneSpec) -> str:
    if spec.scheduler == "pbt":
        return f"a population drawn at random (seed {spec.search_seed}), then mutated by PBT"
    if spec.sampler == "random":
        return f"random sampling (seed {spec.search_seed})"
    if spec.sampler == "nsga2":
        from raytrain.tuning.search import nsga2_population

        return f"Optuna NSGA-II (seed {spec.search_seed}, population {nsga2_population(spec.num_samples)})"
    startup = min(spec.n_startup_trials, spec.num_samples)
    return (f"Optuna TPE (seed {spec.search_seed}): the first {startup} at random, then modelled"
            + (f"; {len(spec.points_to_evaluate)} given point(s) first" if spec.points_to_evaluate else ""))


def _objectives(spec: TuneSpec) -> str:
    """``objective: max fitness``, or every objective, the constraints and how latency is measured."""
    from raytrain.tuning.objectives import deploy_spec

    deploy = deploy_spec(spec)
    if len(deploy.objectives) == 1 and not deploy.constraints:
        return f"objective: {spec.mode} {spec.metric}"
    text = "objectives: " + ", ".join(f"{m} {k}" for k, m in zip(deploy.objectives, deploy.modes, strict=True))
    if deploy.constraints:
        text += "; constraints: " + ", ".join(c.describe() for c in deploy.constraints)
    if "latency_ms" in deploy.measured:
        text += f"; latency in {deploy.runtime} with {deploy.threads} thread(s), measured before training"
    return text


def _param(param: Any) -> str:
    if param.type == "choice":
        return f"one of {list(param.values)}"
    step = f" step {param.q:g}" if param.q is not None else ""
    return f"{param.type} in [{param.low:g}, {param.high:g}{')' if param.type == 'randint' else ']'}{step}"


def _stopping(spec: TuneSpec) -> str:
    rules = []
    if spec.scheduler == "pbt":
        rules.append(f"PBT: every {spec.perturbation_interval} epoch(s) after {spec.burn_in}, the bottom "
                     f"{spec.quantile_fraction:g} of the population copies a top trial's state and perturbs "
                     f"{', '.join(spec.space)} (resampled with probability {spec.resample_probability:g}); "
                     f"{spec.max_epochs} epochs each")
    elif spec.scheduler == "asha":
        rungs = asha_rungs(spec.grace_period, spec.max_epochs, spec.reduction_factor)
        rules.append(f"ASHA compares trials at epochs {', '.join(f'{r:g}' for r in rungs)} and keeps the top "
                     f"1/{spec.reduction_factor:g} past each (max {spec.max_epochs} epochs)")
    else:
        rules.append(f"every trial runs all its epochs (max {spec.max_epochs})")
    if spec.patience:
        rules.append(f"patience {spec.patience} epochs without a better {spec.metric}")
    if spec.time_budget_s:
        rules.append(f"time budget {spec.time_budget_s:g} s")
    return "; ".join(rules)


def local_resources() -> dict[str, float]:
    """What the local Ray ``raytrain tune`` would start sees: this machine's CPUs and CUDA GPUs."""
    import os

    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def run_dry(spec: TuneSpec) -> str:
    """Check everything a run would check and return the plan (:func:`describe`); starts no trial.

    With Ray already running (the API), its node types or nodes; with ``address=`` / ``RAY_ADDRESS``, the
    cluster's (connected to for the reading only); else this machine's.
    """
    import os

    import ray

    from raytrain.cluster.nodes import max_gpus, read_cluster_shape
    from raytrain.tuning.orchestrate import resolve_train_args

    address = spec.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        cluster, source = read_cluster_shape(), "the running Ray"
    elif address not in (None, "", "local"):
        ray.init(address=address, log_to_driver=False)
        try:
            cluster, source = read_cluster_shape(), f"the cluster at {address}"
        finally:
            ray.shutdown()
    else:
        cluster, source = ClusterShape.fixed(local_resources(), "this machine"), "a local Ray on this machine"
    train = resolve_train_args(spec, gpus_available=max_gpus(cluster))
    return describe(spec, train, cluster, ray_source=source)


__all__ = ["asha_rungs", "describe", "local_resources", "run_dry"]
