"""Population-based training (``scheduler: pbt``): settings, the space check, Ray Tune's PBT and its history file.

A population of ``population`` trials trains at once; every ``perturbation_interval`` epochs (after ``burn_in``), a
trial in the bottom ``quantile_fraction`` continues from a top trial's latest full state (weights, EMA, optimizer,
scaler, epoch, schedule position: the state folder every trial reports each epoch) with that trial's hyperparameters
perturbed (x1.2 or x0.8, a neighbouring choice, or with ``resample_probability`` a fresh draw), kept inside the space.
So the ``space:`` keys must be ones that can change between epochs (:data:`raytrain.engine.hyper.MUTABLE`);
:func:`check_pbt` refuses the others before anything starts, saying why.

Each exploit is a row of ``pbt_history.csv`` in the experiment folder (:class:`PBTHistory`), written by the driver's
scheduler; :mod:`raytrain.tuning.lineage` turns it into each trial's lineage and per-epoch schedule.

Ray Tune's PBT runs without Optuna (it refuses a searcher): the first population is drawn at random from the space
(seeded by ``search_seed``), plus ``points_to_evaluate``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError
from raytrain.engine.hyper import MUTABLE
from raytrain.files import atomic_write
from raytrain.keys import EPOCH

LOGGER = logging.getLogger("raytrain")
HISTORY_FILE = "pbt_history.csv"
# Settings of scheduler: pbt, in the space file's top level (and as key=value overrides), with their defaults.
PBT_DEFAULTS = {"population": None, "perturbation_interval": 3, "burn_in": 0, "quantile_fraction": 0.25,
                "resample_probability": 0.25}
PBT_SETTINGS = tuple(PBT_DEFAULTS)
DEFAULT_POPULATION = 8
# Why a key cannot mutate, for the ones users are most likely to try; the rest get the general reason.
_FIXED_BECAUSE = {
    "model": "the network is built once, and an exploit copies weights between trials of the same network",
    "pretrained": "initial weights are loaded once, when a trial starts",
    "imgsz": "the data loaders are built for one image size when a trial starts",
    "batch": "the data loaders, gradient accumulation and weight-decay scaling are built for one batch size",
    "nbs": "gradient accumulation and weight-decay scaling are set when a trial starts",
    "optimizer": "an exploit continues the source's optimizer state, which only the same optimizer type can use",
    "epochs": "an exploit continues the source's schedule position, so every member runs the same schedule length",
    "warmup_epochs": "warmup runs once at the start; an exploit continues without restarting it",
    "warmup_momentum": "warmup runs once at the start; an exploit continues without restarting it",
    "warmup_bias_lr": "warmup runs once at the start; an exploit continues without restarting it",
    "cos_lr": "every member must follow the same decay shape for an exploit to continue its position",
    "close_mosaic": "it is part of the epoch plan every member shares",
    "freeze": "frozen layers are chosen when the model and optimizer are built",
    "single_cls": "the model's classes are fixed when it is built",
    "seed": "it seeds a trial's initial weights and data order, fixed when it starts",
}


# ------------------------------------------------------------------------------------------------------ settings
def pbt_settings(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """The typed settings with ``num_samples`` set to the population (``scheduler: pbt``), or unchanged.

    Raises:
        ConfigError: a PBT setting without ``scheduler: pbt``, or ``num_samples`` and ``population`` that disagree.
    """
    if settings.get("scheduler") != "pbt":
        # Defaults pass: a saved space (TuneSpec.to_dict) lists every setting.
        given = [k for k in PBT_SETTINGS if settings.get(k, PBT_DEFAULTS[k]) != PBT_DEFAULTS[k]]
        if given:
            raise ConfigError(f"{where}: {given[0]}: only applies to scheduler: pbt (this space uses scheduler: "
                              f"{settings.get('scheduler', 'asha')}).")
        return settings
    population, samples = settings.get("population"), settings.get("num_samples")
    if population is not None and samples is not None and population != samples:
        raise ConfigError(f"{where}: num_samples: {samples} disagrees with population: {population}; with "
                          f"scheduler: pbt give population only (it is the number of trials).")
    size = population if population is not None else samples if samples is not None else DEFAULT_POPULATION
    return {**settings, "population": size, "num_samples": size}


def check_pbt(spec: Any) -> None:
    """Refuse what PBT cannot do, before Ray starts: a searched key that cannot change between epochs, several
    workers per trial, a population below 2, settings out of range, a replayed ``schedule``.

    Args:
        spec: a :class:`raytrain.tuning.space.TuneSpec` with ``scheduler: pbt``.
    """
    where = spec.source
    for key in spec.space:
        if key not in MUTABLE:
            why = _FIXED_BECAUSE.get(key, "it is fixed when a trial starts")
            raise ConfigError(f"{where}: space.{key}: scheduler: pbt changes hyperparameters while trials train, and "
                              f"{key} cannot change: {why}. Fix it under 'train:' (or use scheduler: asha). "
                              f"PBT can mutate: {', '.join(MUTABLE)}.")
    base = spec.base_config
    if (base.num_workers or 1) > 1:
        raise ConfigError(f"{where}: resources.workers: scheduler: pbt needs one training worker per trial "
                          f"(an exploit moves Tune checkpoints between trials, and a multi-worker trial's state "
                          f"lives in its Ray Train run); use workers: 1, or scheduler: asha.")
    if base.schedule:
        raise ConfigError(f"{where}: train.schedule: a replayed schedule would override PBT's mutations every "
                          f"epoch; remove it.")
    if spec.num_samples < 2:
        raise ConfigError(f"{where}: population: PBT needs at least 2 trials, got {spec.num_samples}.")
    if not 0 < spec.quantile_fraction <= 0.5:
        raise ConfigError(f"{where}: quantile_fraction: {spec.quantile_fraction} must be in (0, 0.5] (the share "
                          f"of the population that is exploited, and exploits).")
    if not 0 <= spec.resample_probability <= 1:
        raise ConfigError(f"{where}: resample_probability: {spec.resample_probability} must be in [0, 1].")
    if spec.perturbation_interval >= base.epochs:
        raise ConfigError(f"{where}: perturbation_interval: {spec.perturbation_interval} epochs is not less than "
                          f"epochs={base.epochs}: no trial would ever be perturbed.")
    if spec.burn_in >= base.epochs:
        raise ConfigError(f"{where}: burn_in: {spec.burn_in} epochs leaves no epoch to perturb (epochs="
                          f"{base.epochs}).")


# ---------------------------------------------------------------------------------------------- Tune's pieces
def domain(param: Any) -> Any:
    """The Ray Tune search domain of a :class:`raytrain.tuning.params.Param` (first population, resampling)."""
    from ray import tune

    if param.type == "choice":
        return tune.choice(list(param.values))
    low, high, q = param.low, param.high, param.q
    return {"uniform": lambda: tune.uniform(low, high), "loguniform": lambda: tune.loguniform(low, high),
            "quniform": lambda: tune.quniform(low, high, q), "qloguniform": lambda: tune.qloguniform(low, high, q),
            "int": lambda: tune.randint(int(low), int(high) + 1), "randint": lambda: tune.randint(int(low), int(high)),
            "qrandint": lambda: tune.qrandint(int(low), int(high), int(q))}[param.type]()


def mutations(spec: Any) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: a choice as its list (PBT shifts to a neighbour), a range as its domain."""
    return {k: list(p.values) if p.type == "choice" else domain(p) for k, p in spec.space.items()}


def keep_in_space(spec: Any) -> Any:
    """PBT's ``custom_explore_fn``: a perturbed value (x1.2 or x0.8) clipped back into its range and rounded to its
    step, so a mutated config is one the space allows (and Config validates)."""
    params = {k: p for k, p in spec.space.items() if p.type != "choice"}

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for key, param in params.items():
            high = param.high - 1 if param.type == "randint" else param.high
            value = min(max(config[key], param.low), high)
            if param.q:
                value = param.round(value)
            config[key] = int(round(value)) if param.is_int else float(value)
        return config

    return explore


def pbt_search(spec: Any, cap: int) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm, param_space, checkpoints to keep per trial) for the Tuner of a PBT experiment.

    The population is drawn at random (seeded) by Tune's basic generator, at most ``cap`` trials at once (PBT
    pauses and rotates trials when the population is larger). A trial keeps enough checkpoints that the one an
    exploit points at (the source's state at its last perturbation) still exists when the exploiting trial restarts.
    """
    from ray.tune.search import BasicVariantGenerator

    search = BasicVariantGenerator(points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
                                   random_state=spec.search_seed, max_concurrent=cap)
    return search, {k: domain(p) for k, p in spec.space.items()}, 2 * spec.perturbation_interval + 2


def make_pbt(spec: Any, experiment_dir: Path) -> Any:
    """Ray Tune's PBT on the reported ``epoch``, recording every exploit in ``experiment_dir/pbt_history.csv``."""
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    from raytrain.tuning.trial import trial_name

    history = PBTHistory(experiment_dir / HISTORY_FILE, list(spec.space), spec.metric)
    last_epoch = spec.base_config.epochs

    class RecordedPBT(PopulationBasedTraining):
        """PBT that writes one history row per exploit (Tune itself only logs it), and leaves a trial that finished
        its epochs alone: an exploit then would only swap its model for the source's and give it values it never
        trained with."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            if int(result.get(EPOCH, 0)) >= last_epoch:
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def _checkpoint_or_exploit(self, trial: Any, tune_controller: Any, upper_quantile: list,
                                   lower_quantile: list) -> None:
            # Ray 2.60 keeps a trial's state for later clones only when the trial is in the upper quantile as it
            # reaches a perturbation point; one that gets there first (nobody to compare with) can never be cloned
            # afterwards, even as the best of the population, and exploits are skipped ("no checkpoint for trial").
            # Every trial reports its state each epoch, so keep this point's state for any trial still running
            # (an exploited trial is paused by PBT's _exploit: it restarts from its source's state).
            super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)
            state = self._trial_state[trial]
            if state.last_checkpoint is None and trial.status == "RUNNING":
                state.last_checkpoint = tune_controller._schedule_trial_save(trial, result=state.last_result)

        def _exploit(self, tune_controller: Any, trial: Any, trial_to_clone: Any) -> None:
            weak, strong = self._trial_state[trial], self._trial_state[trial_to_clone]
            before = dict(trial.config)
            super()._exploit(tune_controller, trial, trial_to_clone)
            history.append(epoch=int(strong.last_result[EPOCH]), trial=trial_name(trial),
                           source=trial_name(trial_to_clone), trial_epoch=int(weak.last_result.get(EPOCH, 0)),
                           trial_value=weak.last_result.get(spec.metric),
                           source_value=strong.last_result.get(spec.metric), before=before, after=trial.config,
                           trial_id=trial.trial_id, source_id=trial_to_clone.trial_id)

    return RecordedPBT(time_attr=EPOCH, perturbation_interval=spec.perturbation_interval,
                       burn_in_period=spec.burn_in, hyperparam_mutations=mutations(spec),
                       quantile_fraction=spec.quantile_fraction, resample_probability=spec.resample_probability,
                       custom_explore_fn=keep_in_space(spec), log_config=False)


# ------------------------------------------------------------------------------------------------------ history
class PBTHistory:
    """``pbt_history.csv``: one row per exploit, in the order they happened.

    Columns: ``seq`` (1, 2, ...), ``time`` (unix seconds), ``epoch`` (the source's epoch whose state the trial
    continues from), ``trial``, ``source``, ``trial_epoch`` (where the trial itself was), the objective of both,
    ``KEY_before`` / ``KEY_after`` for every mutated key, and both trial ids. The driver's scheduler writes it
    (rewritten whole, atomically: a reader never sees half a row); a resumed experiment appends to it.
    """

    def __init__(self, path: str | Path, names: list[str], metric: str) -> None:
        self.path, self.names, self.metric = str(path), list(names), metric

    @property
    def columns(self) -> list[str]:
        return ["seq", "time", "epoch", "trial", "source", "trial_epoch", f"trial {self.metric}",
                f"source {self.metric}", *(f"{k}_{when}" for k in self.names for when in ("before", "after")),
                "trial_id", "source_id"]

    def append(self, *, epoch: int, trial: str, source: str, trial_epoch: int, trial_value: Any,
               source_value: Any, before: Mapping[str, Any], after: Mapping[str, Any], trial_id: str,
               source_id: str) -> None:
        rows = read_history(Path(self.path))
        row = {"seq": len(rows) + 1, "time": round(time.time(), 3), "epoch": epoch, "trial": trial,
               "source": source, "trial_epoch": trial_epoch, f"trial {self.metric}": trial_value,
               f"source {self.metric}": source_value, "trial_id": trial_id, "source_id": source_id,
               **{f"{k}_before": before.get(k) for k in self.names}, **{f"{k}_after": after.get(k) for k in self.names}}
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([*rows, row])
        atomic_write(self.path, text.getvalue())
        LOGGER.info("PBT: %s continues from %s's state after epoch %d with %s.", trial, source, epoch,
                    ", ".join(f"{k}={after.get(k)!r}" for k in self.names))


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``pbt_history.csv`` (numbers parsed; empty when there is no file), in ``seq`` order."""
    if not Path(path).is_file():
        return []
    rows = []
    for raw in csv.DictReader(io.StringIO(Path(path).read_text(), newline="")):
        rows.append({k: _number(v) if k not in ("trial", "source", "trial_id", "source_id") else v
                     for k, v in raw.items()})
    return sorted(rows, key=lambda r: r["seq"])


def _number(text: str | None) -> Any:
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


__all__ = ["DEFAULT_POPULATION", "HISTORY_FILE", "PBTHistory", "PBT_DEFAULTS", "PBT_SETTINGS", "check_pbt",
           "keep_in_space", "make_pbt", "mutations", "pbt_search", "pbt_settings", "read_history"]
