"""The search-space file of ``raytrain tune``: format, validation, and the Optuna sampling function.

A space file is YAML with fixed training arguments (``train:``), the searched arguments (``space:``) keyed by the
same names as ``raytrain fit``, the objective, and the experiment settings (see the top of
``search_spaces/detect.yaml`` and ``docs/tuning.md``, "Space-file reference"). :func:`load_space` reads it, applies
``key=value`` overrides and validates everything before any trial starts; every error names the file and the key
path (``search_spaces/x.yaml: space.lr0: low >= high``). Ranges are checked by building :class:`Config` with each
bound and each choice on top of the fixed arguments, so the valid ranges live in one place (``raytrain.config``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain.config import (
    FIELDS,
    WANDB_MODES,
    Config,
    ConfigError,
    make_config,
    read_yaml_mapping,
    unknown_key_error,
)
from raytrain.tuning import objectives
from raytrain.tuning.params import Param, parse_param
from raytrain.tuning.pbt import PBT_SETTINGS, check_pbt, pbt_settings

LOGGER = logging.getLogger("raytrain")

METRICS = objectives.ACCURACY  # every metric a trial reports each epoch (objectives.OBJECTIVES adds the measured)
# Settings accepted at the top level of a space file (and as key=value overrides), besides train/space/resources.
SETTINGS = (
    "name", "project", "storage", "exist_ok", "resume", "address", "metric", "mode", "num_samples",
    "max_concurrent_trials", "sampler", "search_seed", "n_startup_trials", "points_to_evaluate", "scheduler",
    "grace_period", "reduction_factor", "patience", "time_budget_s", "wandb_project", "wandb_mode", "dry_run",
    *PBT_SETTINGS, *objectives.OBJECTIVE_SETTINGS,
)
SECTIONS = ("train", "space", "resources")
RESOURCE_KEYS = ("workers", "gpu", "cpus_per_worker", "worker_resources")
# key=value overrides that are not Config fields: ``raytrain tune`` accepts them besides every Config key (the CLI
# reads this list; points_to_evaluate is a list of mappings, which key=value cannot spell).
CLI_KEYS = tuple(k for k in (*SETTINGS, "gpu") if k not in FIELDS and k != "points_to_evaluate")


@dataclass
class TuneSpec:
    """A validated search-space file with overrides applied (see the module docstring for the format)."""

    source: str  # the file name, or "<dict>" (used in error messages)
    train: dict[str, Any]  # fixed Config arguments (raw values; resources merged in)
    space: dict[str, Param]
    name: str = "tune"
    project: str = "runs/tune"
    storage: str | None = None
    exist_ok: bool = False
    resume: bool = False
    address: str | None = None
    metric: str = "fitness"  # the first objective: what ASHA and patience stop on (raytrain.tuning.objectives)
    mode: str = "max"
    objectives: tuple[str, ...] = ()  # every objective, when metric: is a list; modes: their directions
    modes: tuple[str, ...] = ()
    constraints: dict[str, dict[str, float]] = field(default_factory=dict)  # {latency_ms: {max: 10}}
    latency_runtime: str = "torch"  # torch | onnxruntime | openvino
    latency_threads: int = 1  # CPU threads of the timed latency runs
    num_samples: int = 10
    max_concurrent_trials: int | None = None  # None: as many as the cluster can hold
    sampler: str = "tpe"
    search_seed: int = 0
    n_startup_trials: int = 10  # TPE samples at random until this many trials have finished (Optuna's default)
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0
    patience: int | None = None
    time_budget_s: float | None = None
    wandb_project: str | None = None
    wandb_mode: str = ""
    dry_run: bool = False  # check everything and print the plan; start nothing (raytrain.tuning.dryrun)
    # scheduler: pbt (raytrain.tuning.pbt); population is num_samples
    population: int | None = None
    perturbation_interval: int = 3  # epochs between a trial's exploit/explore steps
    burn_in: int = 0  # epochs before the first
    quantile_fraction: float = 0.25  # the bottom share copies the top share
    resample_probability: float = 0.25  # a mutation draws afresh instead of perturbing

    @property
    def base_config(self) -> Config:
        """The fixed training arguments as a validated Config (before any searched value is applied)."""
        return make_config(self.train)

    @property
    def max_epochs(self) -> int:
        """The largest ``epochs`` any trial can run: ASHA's ``max_t``."""
        if "epochs" in self.space:
            return int(self.space["epochs"].largest())
        return self.base_config.epochs

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        """The full training Config of a trial: the fixed arguments with the sampled ``params`` on top."""
        return make_config(self.train, dict(params))

    def to_dict(self) -> dict[str, Any]:
        """The space file's YAML form (settings, ``train:``, ``space:``), e.g. to save next to the experiment."""
        settings = objectives.saved_settings(self, {k: getattr(self, k) for k in SETTINGS})
        return {**settings, "train": dict(self.train), "space": {k: p.to_dict() for k, p in self.space.items()}}

    def sample_space(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run function: one value per searched parameter (returned so q-rounding sticks)."""
        return {name: param.suggest(trial) for name, param in self.space.items()}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TuneSpec) if f.name in SETTINGS}
_DEFAULTS.update(points_to_evaluate=[], constraints={})


# ------------------------------------------------------------------------------------------------------ loading
def load_space(source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TuneSpec:
    """Read and validate a search-space file (or an equivalent dict) with ``key=value`` overrides on top.

    Overrides: experiment settings (``num_samples=20``, ``name=x``, ``gpu=true``, ...) replace the file's; any
    other key is a training argument and goes under ``train:`` (a searched argument given this way is fixed and
    removed from the space).

    Raises:
        ConfigError: naming the file and the key path of the first problem found.
    """
    if isinstance(source, Mapping):
        where, raw = "<dict>", dict(source)
    else:
        where = str(Path(source).expanduser())
        raw = read_yaml_mapping(source, label=where, kind="search-space file",
                                expected="a mapping with 'train:' and 'space:'")
    raw = _apply_overrides(raw, dict(overrides or {}), where)
    for key in raw:
        if key in (*SETTINGS, *SECTIONS):
            continue
        if key in FIELDS:
            raise ConfigError(f"{where}: {key}: a training argument at the top level; put it under 'train:' "
                              f"(fixed) or 'space:' (searched).")
        raise _at(where, key, unknown_key_error(key, (*SETTINGS, *SECTIONS)))
    train = _section(raw, "train", where)
    resources = _section(raw, "resources", where)
    for key in train:
        if key not in FIELDS:
            raise _at(where, f"train.{key}", unknown_key_error(key, FIELDS))
    train = {**train, **_resources_to_train(resources, where)}
    space = {key: parse_param(key, value, where) for key, value in _section(raw, "space", where).items()}
    if not space:
        raise ConfigError(f"{where}: space: nothing to search; add at least one argument under 'space:'.")
    # An empty (null) setting means its default, except where None is itself a value (e.g. no time budget).
    settings = {k: raw[k] for k in SETTINGS if k in raw and (raw[k] is not None or _DEFAULTS[k] is None)}
    settings = objectives.typed_objective_settings(objectives.split_objectives(settings, where), where)
    spec = TuneSpec(source=where, train=train, space=space, **pbt_settings(_typed_settings(settings, where), where))
    validate_spec(spec)
    return spec


def _at(where: str, key_path: str, error: Exception) -> ConfigError:
    """A ConfigError prefixed with the file and the key path."""
    return ConfigError(f"{where}: {key_path}: {error}")


def _section(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key}: expected a mapping of name: value, got {type(value).__name__}.")
    return dict(value)


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Settings overrides replace the file's; training arguments go under ``train:`` and leave the space."""
    raw = {**raw, "train": dict(raw.get("train") or {}), "space": dict(raw.get("space") or {}),
           "resources": dict(raw.get("resources") or {})}
    for key, value in overrides.items():
        if key in SETTINGS:  # the CLI reads scheduler=none as None: no scheduler, not "null, so the default"
            raw[key] = "none" if key == "scheduler" and value is None else value
        elif key == "gpu":
            raw["resources"]["gpu"] = value
        elif key in FIELDS:
            raw["train"][key] = value
            if raw["space"].pop(key, None) is not None:
                LOGGER.info("%s: %s=%r given as an override: fixed, no longer searched.", where, key, value)
        else:
            raise unknown_key_error(key, [*FIELDS, *CLI_KEYS], where="the overrides")
    return raw


def _resources_to_train(resources: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``resources:`` (workers, gpu, cpus_per_worker, worker_resources per trial) as the Config fields that mean the
    same (``worker_resources``: other Ray resources per worker, memory or custom ones)."""
    out: dict[str, Any] = {}
    for key in resources:
        if key not in RESOURCE_KEYS:
            raise _at(where, f"resources.{key}", unknown_key_error(key, RESOURCE_KEYS))
    if "workers" in resources:
        out["num_workers"] = resources["workers"]
    if "cpus_per_worker" in resources:
        out["cpus_per_worker"] = resources["cpus_per_worker"]
    if "worker_resources" in resources:
        out["worker_resources"] = resources["worker_resources"]
    if "gpu" in resources:
        out.update(_gpu_resources(resources["gpu"], int(resources.get("workers") or 1), where))
    return out


def _gpu_resources(gpu: Any, workers: int, where: str) -> dict[str, Any]:
    """``resources.gpu``: ``false`` (CPU), ``true`` or ``1`` (one GPU per worker), or a share of one GPU in (0, 1)
    for a one-worker trial (``0.25`` packs four trials on a GPU), as Config's ``device`` and ``gpu_share``.

    ``true`` and a share mean GPUs (``device=cuda``): a cluster that has none and cannot add any is refused
    (:func:`raytrain.tuning.capacity.trial_footprint`), not trained on CPUs."""
    if isinstance(gpu, str):
        text = gpu.strip().lower()
        with contextlib.suppress(ValueError):
            gpu = float(text)
        gpu = {"true": True, "false": False}.get(text, gpu)
    if isinstance(gpu, bool):
        return {"device": "cuda" if gpu else "cpu"}
    if not isinstance(gpu, (int, float)) or not math.isfinite(gpu):
        raise ConfigError(f"{where}: resources.gpu: expected true, false or a share of one GPU like 0.25, "
                          f"got {gpu!r}.")
    if gpu <= 0:
        raise ConfigError(f"{where}: resources.gpu: {gpu:g} GPUs per trial is not allowed; use gpu: false to train "
                          f"on CPUs, or a share of one GPU in (0, 1].")
    if gpu > 1:
        raise ConfigError(f"{where}: resources.gpu: {gpu:g}: a worker trains on one GPU; for {gpu:g} GPUs per trial "
                          f"use workers: {math.ceil(gpu)} with gpu: true.")
    if gpu < 1 and workers > 1:
        raise ConfigError(f"{where}: resources.gpu: a share of a GPU ({gpu:g}) needs workers: 1; Ray could place "
                          f"the {workers} data-parallel workers on one GPU, which NCCL refuses.")
    return {"device": "cuda", "gpu_share": float(gpu)}


def _typed_settings(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """Coerce and range-check the experiment settings."""
    out = dict(settings)

    def number(key: str, kind: type, minimum: float, allow_none: bool = False, strict: bool = False) -> None:
        if key not in out or (out[key] is None and allow_none):
            return
        value = out[key]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not integral):
            raise ConfigError(f"{where}: {key}: expected {'an integer' if kind is int else 'a number'}, "
                              f"got {settings[key]!r}.")
        value = kind(value)
        if value < minimum or (strict and value == minimum):
            raise ConfigError(f"{where}: {key}: must be {'>' if strict else '>='} {minimum}, got {value}.")
        out[key] = value

    number("num_samples", int, 1)
    number("max_concurrent_trials", int, 1, allow_none=True)
    number("search_seed", int, 0)
    number("n_startup_trials", int, 1)
    number("grace_period", int, 1)
    number("reduction_factor", float, 1, strict=True)
    number("patience", int, 1, allow_none=True)
    number("time_budget_s", float, 0, allow_none=True, strict=True)
    number("population", int, 1, allow_none=True)
    number("perturbation_interval", int, 1)
    number("burn_in", int, 0)
    number("quantile_fraction", float, 0)
    number("resample_probability", float, 0)
    for key in ("exist_ok", "resume", "dry_run"):
        if key in out and not isinstance(out[key], bool):
            text = str(out[key]).lower()
            if text not in ("true", "false"):
                raise ConfigError(f"{where}: {key}: expected true or false, got {out[key]!r}.")
            out[key] = text == "true"
    choices = {"mode": ("max", "min"), "sampler": objectives.SAMPLERS, "scheduler": ("asha", "pbt", "none"),
               "wandb_mode": WANDB_MODES}
    for key, allowed in choices.items():
        if key in out:
            out[key] = "none" if key == "scheduler" and out[key] in (None, False) else str(out[key])
            if out[key] not in allowed:
                raise ConfigError(f"{where}: {key}: {out[key]!r} is not allowed; use one of "
                                  f"{', '.join(repr(a) for a in allowed)}.")
    for key in ("name", "project", "metric"):
        if key in out and not str(out[key] or "").strip():
            raise ConfigError(f"{where}: {key}: must not be empty.")
        if key in out:
            out[key] = str(out[key])
    if "name" in out and not re.fullmatch(r"[\w.\-]+", out["name"]):
        raise ConfigError(f"{where}: name: {out['name']!r} must be a folder name (letters, digits, . _ -).")
    points = out.get("points_to_evaluate") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError(f"{where}: points_to_evaluate: expected a list of mappings (argument: value).")
    out["points_to_evaluate"] = [dict(p) for p in points]
    return out


# --------------------------------------------------------------------------------------------------- validation
def validate_spec(spec: TuneSpec) -> None:
    """Check the fixed arguments, every bound and choice against Config, the objective and the ASHA settings."""
    where = spec.source
    try:
        base = make_config(spec.train)
    except ConfigError as e:
        raise _at(where, "train", e) from None
    objectives.check_objectives(spec)  # first: several objectives or constraints with PBT are refused with that reason
    if spec.scheduler == "pbt":  # first: a key PBT cannot mutate is refused with PBT's reason
        check_pbt(spec)
    for name, param in spec.space.items():
        for field_name, value in param.extremes():
            try:
                make_config(spec.train, {name: value})
            except ConfigError as e:
                raise _at(where, f"space.{name}.{field_name}", e) from None
    _check_optimizer_trap(spec, base)
    _check_batch_split(spec, base)
    _check_metric(spec)
    _check_points(spec)
    if spec.sampler != "tpe" and spec.n_startup_trials != _DEFAULTS["n_startup_trials"]:
        raise ConfigError(f"{where}: n_startup_trials: only the tpe sampler has a random start-up phase; "
                          f"sampler: {spec.sampler} ignores it.")
    if spec.scheduler == "asha" and spec.grace_period > spec.max_epochs:
        raise ConfigError(f"{where}: grace_period: {spec.grace_period} is more than the largest epochs "
                          f"({spec.max_epochs}): ASHA would never compare trials.")


def _check_optimizer_trap(spec: TuneSpec, base: Config) -> None:
    """``optimizer=auto`` picks lr0 and momentum itself, so searching them would search nothing."""
    searched = [k for k in ("lr0", "momentum") if k in spec.space]
    if not searched:
        return
    opt = spec.space.get("optimizer")
    auto = (opt is not None and any(str(v).lower() == "auto" for v in opt.values)) or \
        (opt is None and base.optimizer == "auto")
    if auto:
        where = "space.optimizer" if opt is not None else "train.optimizer"
        raise ConfigError(
            f"{spec.source}: {where}: optimizer=auto chooses lr0 and momentum itself and ignores the searched "
            f"{' and '.join(searched)}, so those trials would differ only in name. Fix an optimizer under "
            f"'train:' (e.g. optimizer: SGD) or search 'optimizer' as a choice without auto.")


def _check_batch_split(spec: TuneSpec, base: Config) -> None:
    """Every searched batch must divide evenly between the trial's training workers."""
    workers = base.num_workers or 1
    param = spec.space.get("batch")
    if workers <= 1 or param is None:
        return
    if param.type == "choice":
        bad = [v for v in param.values if isinstance(v, int) and v != -1 and v % workers]
    else:
        step_ok = param.type == "qrandint" and param.q and param.q % workers == 0 and param.low % workers == 0
        bad = [] if step_ok else [param.low]
    if bad:
        raise ConfigError(f"{spec.source}: space.batch: batch={bad[0]} does not divide between {workers} workers; "
                          f"use choices that are multiples of {workers}, or qrandint with q a multiple of {workers}.")


def _check_metric(spec: TuneSpec) -> None:
    if spec.metric not in METRICS:
        contains = [m for m in METRICS if spec.metric.lower() in m.lower()]  # e.g. mAP50 -> metrics/mAP50(B)
        close = contains[:2] or difflib.get_close_matches(spec.metric, METRICS, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{spec.source}: metric: trials never report {spec.metric!r}.{hint} Reported metrics: "
                          f"{', '.join(METRICS)}.")
    if spec.metric.endswith("_loss") and spec.mode == "max":
        raise ConfigError(f"{spec.source}: mode: metric={spec.metric} is a loss; use mode: min.")
    gains = [k for k in ("box", "cls", "dfl") if k in spec.space]
    if spec.metric.endswith("_loss") and gains:
        LOGGER.warning("%s: metric=%s with the loss gain(s) %s searched: reported losses include the gains, so the "
                       "search will favour small gains rather than better models.", spec.source, spec.metric,
                       ", ".join(gains))
    if not spec.metric.endswith("_loss") and spec.mode == "min":
        LOGGER.warning("%s: mode=min with metric=%s: the search will prefer lower %s.", spec.source, spec.metric,
                       spec.metric)


def _check_points(spec: TuneSpec) -> None:
    """Each start point names only searched arguments, with values the space can take."""
    for i, point in enumerate(spec.points_to_evaluate):
        for key, value in point.items():
            path = f"points_to_evaluate[{i}].{key}"
            if key not in spec.space:
                raise _at(spec.source, path, unknown_key_error(key, spec.space))
            if not spec.space[key].contains(value):
                raise ConfigError(f"{spec.source}: {path}: {value!r} is outside the space "
                                  f"({spec.space[key].to_dict()}).")
        missing = [k for k in spec.space if k not in point]
        if missing:
            raise ConfigError(f"{spec.source}: points_to_evaluate[{i}]: missing {', '.join(missing)} (a start "
                              f"point gives every searched argument).")


__all__ = ["CLI_KEYS", "METRICS", "SETTINGS", "TuneSpec", "load_space", "validate_spec"]
