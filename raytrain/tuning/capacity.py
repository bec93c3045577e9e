"""What one trial trains on and how many trials run at once, judged on the node types a trial can be placed on.

On a cluster that can grow (an autoscaler with node types to start), a fresh cluster may have no GPU node yet: the
footprint and the cap come from the node types, Tune queues the trials, and their resource requests make the
autoscaler add the nodes. A training worker that fits no node type is refused here, before Ray Tune starts, and
``resources.gpu: true`` on a cluster that has no GPU and cannot add one is an error, not a CPU run.

Tune does not see the Ray Train workers a multi-worker trial starts, so it would start more trials than there are
workers for (they would wait forever): the cap counts whole workers on whole nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from raytrain.cluster.nodes import ClusterShape, check_fits, format_resources, max_gpus, max_placeable
from raytrain.config import Config, ConfigError
from raytrain.tuning.space import TuneSpec

LOGGER = logging.getLogger("raytrain")


@dataclass(frozen=True)
class TrialFootprint:
    """What one trial trains on: ``workers`` training workers, each reserving ``worker`` (CPU, GPU share, custom)."""

    workers: int
    accelerator: str  # "cuda" or "cpu"
    worker: dict[str, float]

    @property
    def cpus(self) -> float:
        return self.workers * self.worker.get("CPU", 0.0)

    @property
    def gpus(self) -> float:
        return self.workers * self.worker.get("GPU", 0.0)

    @property
    def gpus_available(self) -> int:
        """The GPU count a trial plans its run with (``plan_devices``): its own workers' GPUs, or none."""
        return self.workers if self.accelerator == "cuda" else 0


def as_shape(cluster: ClusterShape | Mapping[str, float]) -> ClusterShape:
    """A shape as it is; plain resource totals (``ray.cluster_resources()``-like) as one fixed node."""
    return cluster if isinstance(cluster, ClusterShape) else ClusterShape.fixed(cluster)


def wants_gpus(cfg: Config) -> bool:
    """``resources.gpu: true`` or a share (``device=cuda``): the trial must train on GPUs."""
    return cfg.device.strip().lower() == "cuda"


def trial_footprint(cfg: Config, cluster: ClusterShape | Mapping[str, float]) -> TrialFootprint:
    """The workers and per-worker reservation of one trial of ``cfg`` on ``cluster``.

    ``device=''`` (``resources.gpu`` unset) trains on GPUs when the cluster has or can add any, else on CPUs.

    Raises:
        ConfigError: GPUs asked for (``resources.gpu``) on a cluster that has none and cannot add any.
    """
    from raytrain.engine.devices import plan_devices

    shape = as_shape(cluster)
    gpus = max_gpus(shape)
    if wants_gpus(cfg) and gpus == 0:
        offers = "; ".join(f"{t.name} offers {format_resources(t.resources)}" for t in shape.node_types)
        raise ConfigError(f"resources.gpu asks for GPUs, but {shape.source} has none and cannot add any ({offers}): "
                          f"set gpu: false to train on CPUs, or add a GPU node type.")
    devices = plan_devices(cfg.device, cfg.num_workers or 1, gpus)
    gpu = devices.accelerator == "cuda"
    worker = {"CPU": float(cfg.cpus_per_worker), **({"GPU": float(cfg.gpu_share)} if gpu else {}),
              **{k: float(v) for k, v in (cfg.worker_resources or {}).items()}}
    return TrialFootprint(devices.num_workers, "cuda" if gpu else "cpu", worker)


def trials_at_most(spec: TuneSpec, cluster: ClusterShape | Mapping[str, float]) -> int:
    """How many trials the cluster can train at once, at its largest (no setting applied).

    Every training worker must fit one node type; the count is the workers the cluster holds, whole nodes counted,
    divided by the workers per trial; on a cluster whose node types have no limit, ``num_samples``.

    Raises:
        ConfigError: a worker that fits no node type (naming each type and what it offers), GPUs asked for where
            none can come, or a cluster that cannot hold one trial's workers at once.
    """
    shape = as_shape(cluster)
    try:
        footprint = trial_footprint(spec.base_config, shape)
        check_fits(shape, footprint.worker, "resources: one training worker")
    except ConfigError as e:
        raise ConfigError(f"{spec.source}: {e}") from None
    placeable = max_placeable(shape, footprint.worker)
    fits = spec.num_samples if placeable is None else placeable // footprint.workers
    if fits < 1:
        what = f"{footprint.gpus:g} GPU(s)" if footprint.gpus else f"{footprint.cpus:g} CPU(s)"
        raise ConfigError(f"{spec.source}: resources: one trial needs {what} for its {footprint.workers} training "
                          f"workers of {format_resources(footprint.worker)}, but {shape.source} holds {placeable} such "
                          f"worker(s) at once: lower resources.workers / cpus_per_worker, or set gpu: false.")
    return fits


def concurrency_cap(spec: TuneSpec, cluster: ClusterShape | Mapping[str, float]) -> int:
    """How many trials run at once: :func:`trials_at_most`, or ``max_concurrent_trials`` when set (with a warning
    when it is more than the cluster holds: the others wait for workers)."""
    shape = as_shape(cluster)
    fits = trials_at_most(spec, shape)
    if spec.max_concurrent_trials:
        if spec.max_concurrent_trials > fits:
            LOGGER.warning("max_concurrent_trials=%d but the cluster holds %d trial(s) at once: the others wait for "
                           "workers.", spec.max_concurrent_trials, fits)
        return spec.max_concurrent_trials
    if shape.can_grow:
        LOGGER.info("The cluster can add nodes (%s): up to %d trial(s) at once, on nodes the autoscaler starts.",
                    shape.source, fits)
    return fits


__all__ = ["TrialFootprint", "as_shape", "concurrency_cap", "trial_footprint", "trials_at_most", "wants_gpus"]
