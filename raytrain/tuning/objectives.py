"""What a tune experiment optimises: one or several objectives, their directions, and constraints.

A space file names its objectives with ``metric:`` and ``mode:``, each a name or a list of the same length::

    metric: [fitness, latency_ms]     # the first one is what ASHA and the patience rule stop trials on
    mode: [max, min]
    constraints: {latency_ms: {max: 10}, params: {max: 5.0e6}}
    latency_runtime: torch            # torch | onnxruntime | openvino: where latency_ms is measured
    latency_threads: 1                # CPU threads of the timed runs (fixed, so numbers compare)

An objective is any metric a trial reports each epoch (:data:`OBJECTIVES`): fitness (``fitness_weights=`` makes it
your own), mAP, precision, recall, F1, the losses, and what a trial measures of its model before training
(``latency_ms``, ``params``, ``gflops``; :mod:`raytrain.tuning.measure`). Constraints bound any of them; those on
measured values end a trial before it trains (``infeasible``), and every constraint reaches Optuna's samplers on
each finished trial (``Trial.set_constraint``, by :mod:`raytrain.tuning.search`). Everything here is checked when
the space file is read, before Ray starts; each refusal is one line naming the file and the key.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raytrain.config import ConfigError
from raytrain.keys import (
    DEPLOY_KEYS,
    F1,
    FITNESS,
    LATENCY_MS,
    METRIC_KEYS,
    TRAIN_LOSS_KEYS,
    VAL_LOSS_KEYS,
)

# Everything a trial reports that an objective or a constraint may name.
ACCURACY = (FITNESS, *METRIC_KEYS, F1, *VAL_LOSS_KEYS, *TRAIN_LOSS_KEYS)
OBJECTIVES = (*ACCURACY, *DEPLOY_KEYS)
RUNTIMES = ("torch", "onnxruntime", "openvino")
SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVE_SETTINGS = ("constraints", "latency_runtime", "latency_threads")  # besides metric and mode
DEFAULTS: dict[str, Any] = {"constraints": {}, "latency_runtime": "torch", "latency_threads": 1}
# What an infeasible trial (never trained) reports for an accuracy objective: the worst a trained one could get, so a
# sampler that learns from it (TPE, NSGA-II: infeasible trials rank below feasible ones anyway) is not misled.
UNTRAINED = {"max": 0.0, "min": math.inf}


@dataclass(frozen=True)
class Constraint:
    """``key`` must stay within ``[low, high]`` (either may be None)."""

    key: str
    high: float | None = None
    low: float | None = None

    def excess(self, value: float) -> float:
        """How far ``value`` is outside the bound (<= 0: within it), as Optuna's ``Trial.set_constraint`` takes it."""
        over = value - self.high if self.high is not None else -math.inf
        under = self.low - value if self.low is not None else -math.inf
        return float(max(over, under))

    def describe(self) -> str:
        parts = ([f"{self.key} >= {self.low:g}"] if self.low is not None else []) + \
            ([f"{self.key} <= {self.high:g}"] if self.high is not None else [])
        return " and ".join(parts)

    def reason(self, value: float) -> str | None:
        """None when ``value`` meets the bound, else the one-line reason (``latency_ms 14.2 > max 10``)."""
        if self.high is not None and value > self.high:
            return f"{self.key} {value:.4g} > max {self.high:g}"
        if self.low is not None and value < self.low:
            return f"{self.key} {value:.4g} < min {self.low:g}"
        return None


@dataclass(frozen=True)
class DeploySpec:
    """What a trial must measure of its model before training, and the constraints it checks then (picklable; the
    trial's :class:`raytrain.tuning.trial.TrialJob` carries it)."""

    objectives: tuple[str, ...]
    modes: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    runtime: str = "torch"
    threads: int = 1

    @property
    def measured(self) -> tuple[str, ...]:
        """The measured values (latency, params, GFLOPs) an objective or a constraint names."""
        named = {*self.objectives, *(c.key for c in self.constraints)}
        return tuple(k for k in DEPLOY_KEYS if k in named)

    def violations(self, values: Mapping[str, float]) -> list[str]:
        """The reasons ``values`` break a constraint (only the constraints whose key is in ``values``)."""
        reasons = [c.reason(float(values[c.key])) for c in self.constraints if c.key in values]
        return [r for r in reasons if r]

    def untrained_report(self, values: Mapping[str, float]) -> dict[str, float]:
        """Every objective for a trial that never trained: measured ones as measured, the rest at their worst."""
        return {k: float(values[k]) if k in values else UNTRAINED[m] for k, m in zip(self.objectives, self.modes,
                                                                                    strict=True)}


# ------------------------------------------------------------------------------------------------------ parsing
def split_objectives(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """The settings with ``metric``/``mode`` lists split: ``metric``/``mode`` become the first objective (what ASHA,
    patience and the single-objective reports use, as before) and ``objectives``/``modes`` hold them all."""
    out = dict(settings)
    metric, mode = out.get("metric", FITNESS), out.get("mode", "max")
    metrics = [str(m) for m in metric] if isinstance(metric, (list, tuple)) else [str(metric)]
    modes = [str(m) for m in mode] if isinstance(mode, (list, tuple)) else None
    if not metrics:
        raise ConfigError(f"{where}: metric: an empty list; name at least one objective.")
    if modes is None:  # one mode for one metric; several metrics need one mode each
        if len(metrics) > 1:
            raise ConfigError(f"{where}: mode: {mode!r} is one direction for {len(metrics)} objectives; give one "
                              f"per metric, e.g. mode: [{', '.join(['max'] + ['min'] * (len(metrics) - 1))}].")
        modes = [str(mode)]
    if len(modes) != len(metrics):
        raise ConfigError(f"{where}: mode: {len(modes)} direction(s) for {len(metrics)} objective(s) "
                          f"({', '.join(metrics)}); give one per metric.")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"{where}: metric: {', '.join(metrics)} names an objective twice.")
    out["metric"], out["mode"] = metrics[0], modes[0]
    out["objectives"], out["modes"] = tuple(metrics), tuple(modes)
    return out


def typed_objective_settings(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """``constraints`` (parsed), ``latency_runtime``, ``latency_threads``, coerced and range-checked."""
    out = dict(settings)
    if "constraints" in out:
        out["constraints"] = {c.key: _bound_dict(c) for c in parse_constraints(out["constraints"], where)}
    if "latency_runtime" in out:
        runtime = str(out["latency_runtime"]).lower()
        if runtime not in RUNTIMES:
            raise ConfigError(f"{where}: latency_runtime: {out['latency_runtime']!r} is not a runtime; use one of "
                              f"{', '.join(RUNTIMES)}.")
        out["latency_runtime"] = runtime
    if "latency_threads" in out:
        value = out["latency_threads"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: latency_threads: expected a whole number >= 1, got {value!r}.")
    return out


def parse_constraints(raw: Any, where: str) -> list[Constraint]:
    """``{key: {max: v, min: v}}`` -> constraints; an unknown key or bound is refused with "did you mean"."""
    if isinstance(raw, str):  # constraints={latency_ms: {max: 10}} on the command line
        import yaml

        with contextlib.suppress(yaml.YAMLError):
            raw = yaml.safe_load(raw)
    if raw in (None, {}):
        return []
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: constraints: expected a mapping like {{latency_ms: {{max: 10}}}}, got {raw!r}.")
    out = []
    for key, bounds in raw.items():
        path = f"{where}: constraints.{key}"
        if key not in OBJECTIVES:
            raise ConfigError(f"{path}: trials never report {key!r}.{_hint(str(key))} A constraint can bound: "
                              f"{', '.join(OBJECTIVES)}.")
        if not isinstance(bounds, Mapping) or not bounds or set(bounds) - {"max", "min"}:
            raise ConfigError(f"{path}: expected {{max: value}}, {{min: value}} or both, got {bounds!r}.")
        high, low = (_number(bounds.get(b), f"{path}.{b}") for b in ("max", "min"))
        if high is not None and low is not None and low > high:
            raise ConfigError(f"{path}: min {low:g} > max {high:g}: no trial can meet it.")
        out.append(Constraint(str(key), high=high, low=low))
    return out


def _number(value: Any, path: str) -> float | None:
    if value is None:
        return None
    try:  # PyYAML reads 5.0e6 (no sign in the exponent) as text
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{path}: expected a number, got {value!r}.")
    return number


def _bound_dict(c: Constraint) -> dict[str, float]:
    return {**({"max": c.high} if c.high is not None else {}), **({"min": c.low} if c.low is not None else {})}


def _hint(name: str) -> str:
    contains = [m for m in OBJECTIVES if name.lower() in m.lower()]  # mAP50 -> metrics/mAP50(B)
    close = contains[:2] or difflib.get_close_matches(name, OBJECTIVES, n=2, cutoff=0.5)
    return f" Did you mean {' or '.join(close)}?" if close else ""


# --------------------------------------------------------------------------------------------------- validation
def check_objectives(spec: Any) -> None:
    """Refuse what cannot be optimised, before Ray starts (``spec``: a :class:`~raytrain.tuning.space.TuneSpec`).

    Unknown objectives, a measured value first (ASHA and patience stop trials on the first objective, and a measured
    value is the same at every epoch), a wrong direction for a loss or a measured value, PBT with several objectives,
    constraints with PBT, and the runtime's own package missing.
    """
    where = spec.source
    names, modes = objective_names(spec), objective_modes(spec)
    for i, (name, mode) in enumerate(zip(names, modes, strict=True)):
        if name not in OBJECTIVES:
            raise ConfigError(f"{where}: metric: trials never report {name!r}.{_hint(name)} Objectives: "
                              f"{', '.join(OBJECTIVES)}.")
        if mode not in ("max", "min"):
            raise ConfigError(f"{where}: mode: {mode!r} is not allowed (objective {name}); use 'max' or 'min'.")
        if name in DEPLOY_KEYS and i == 0:
            raise ConfigError(f"{where}: metric: put an accuracy objective first (e.g. [fitness, {name}]): ASHA and "
                              f"the patience rule stop trials on the first one, and {name} is measured once, before "
                              f"training.")
        if (name in DEPLOY_KEYS or name.endswith("_loss")) and mode == "max" and len(names) > 1:
            raise ConfigError(f"{where}: mode: {name} is better lower; use min for it.")
    several = len(names) > 1
    if spec.scheduler == "pbt" and (several or spec.constraints):
        what = f"{len(names)} objectives ({', '.join(names)})" if several else "constraints"
        raise ConfigError(f"{where}: scheduler: pbt optimises one metric (it copies the best trials' states by one "
                          f"number) and takes no constraints; this space has {what}. Use scheduler: asha or none.")
    if spec.sampler == "random" and spec.constraints:
        import logging

        logging.getLogger("raytrain").warning(
            "%s: sampler: random ignores constraints when drawing trials (TPE and NSGA-II learn them); infeasible "
            "trials still end before training and are marked.", where)
    if LATENCY_MS in deploy_spec(spec).measured:
        check_runtime(spec.latency_runtime, where)


def check_runtime(runtime: str, where: str) -> None:
    """The runtime's Python package must import (onnxruntime, openvino), and raytrain's exporter must exist."""
    if runtime == "torch":
        return
    from raytrain.deploy.latency import runtime_problem

    problem = runtime_problem(runtime)
    if problem:
        raise ConfigError(f"{where}: latency_runtime: {problem}")


def saved_settings(spec: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as a space file writes them: ``metric``/``mode`` as lists when there are several objectives."""
    if len(spec.objectives) > 1:
        return {**settings, "metric": list(spec.objectives), "mode": list(spec.modes)}
    return settings


def objective_names(spec: Any) -> tuple[str, ...]:
    return tuple(spec.objectives) or (spec.metric,)


def objective_modes(spec: Any) -> tuple[str, ...]:
    return tuple(spec.modes) or (spec.mode,)


def trial_deploy(spec: Any) -> DeploySpec | None:
    """What the trials measure before training, or None when no objective or constraint needs a measurement (the
    trials then run exactly as without this module)."""
    deploy = deploy_spec(spec)
    return deploy if deploy.measured else None


def deploy_spec(spec: Any) -> DeploySpec:
    """The trials' :class:`DeploySpec` of a :class:`~raytrain.tuning.space.TuneSpec`."""
    return DeploySpec(objectives=objective_names(spec), modes=objective_modes(spec),
                      constraints=tuple(parse_constraints(spec.constraints, spec.source)),
                      runtime=spec.latency_runtime, threads=spec.latency_threads)


__all__ = ["ACCURACY", "DEFAULTS", "OBJECTIVES", "OBJECTIVE_SETTINGS", "RUNTIMES", "SAMPLERS",
           "Constraint", "DeploySpec", "check_objectives", "check_runtime", "deploy_spec",
           "objective_modes", "objective_names", "parse_constraints", "saved_settings", "split_objectives",
           "trial_deploy", "typed_objective_settings"]
