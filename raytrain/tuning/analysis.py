"""Optuna's own analysis of a finished or running experiment: the study rebuilt from the files, fANOVA importance.

The search ran Optuna inside Ray Tune, but that study lived in the driver's memory. :func:`build_study` rebuilds an
equivalent one from the experiment folder: each trial's parameters with the distributions they were drawn from
(from the saved space, ``tune_space.yaml``), its best value of the metric, the direction from ``mode``, and its
per-epoch values as intermediate values. Trials stopped early by ASHA, the patience rule or the time budget count
as finished, with their best value: Ray's ``OptunaSearch`` told its study the same (COMPLETE, with the last value).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from raytrain.config import ConfigError
from raytrain.tuning.experiment import SPACE_FILE, Experiment, TrialRecord
from raytrain.tuning.params import Param, parse_param

LOGGER = logging.getLogger("raytrain")
# Ends whose metric is a result of the trial's settings (an error or a trial still running is not).
FINISHED_ENDS = ("completed", "asha-stopped", "patience-stopped", "time-budget")
# Fewer finished trials than this and fANOVA's forest splits on noise; it also needs more trials than parameters
# (a tree on n points has at most n - 1 splits, so with n <= k some parameter gets 0 whatever its effect).
MIN_TRIALS_FOR_IMPORTANCE = 4
IMPORTANCE_SEED = 0  # fANOVA fits a random forest: seeded, so `raytrain results` redraws the same chart


@dataclass(frozen=True)
class Importance:
    """fANOVA importance of each searched parameter (summing to 1), or a note saying why there is none."""

    trials: int  # finished trials the importance is computed from
    values: dict[str, float] | None = None  # parameter -> importance, most important first
    note: str | None = None  # set when values is None


def searched_params(exp: Experiment) -> dict[str, Param]:
    """The experiment's searched parameters, parsed from its saved space (the same parser as the space file)."""
    where = str(exp.path / SPACE_FILE)
    space = exp.space.get("space") or {}
    if not isinstance(space, dict):
        raise ConfigError(f"{where}: space: expected a mapping of name: parameter, got {type(space).__name__}.")
    return {name: parse_param(name, value, where) for name, value in space.items()}


@contextmanager
def quiet_optuna() -> Iterator[Any]:
    """Optuna without its INFO lines ("A new study created in memory") and plotting warnings; restored after."""
    import warnings

    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # matplotlib, when every trial has the same value of a parameter: it widens the axis itself
            warnings.filterwarnings("ignore", message="Attempting to set identical", category=UserWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(verbosity)


def build_study(exp: Experiment) -> Any:
    """An in-memory :class:`optuna.Study` holding the experiment's trials (see the module docstring).

    A trial whose saved parameters fall outside the saved space (the space file was edited after the run) is left
    out with a warning rather than failing the analysis.
    """
    params = searched_params(exp)
    with quiet_optuna() as optuna:
        direction = "maximize" if exp.mode == "max" else "minimize"
        study = optuna.create_study(direction=direction, study_name=exp.path.name)
        for record in exp.trials:
            try:
                study.add_trial(_frozen_trial(optuna, record, exp, params))
            except ValueError as e:
                LOGGER.warning("%s: %s left out of the analysis: %s", exp.path, record.name, e)
    return study


def _frozen_trial(optuna: Any, record: TrialRecord, exp: Experiment, params: dict[str, Param]) -> Any:
    from optuna.trial import TrialState

    value, epoch = record.best(exp.metric, exp.mode)
    if record.end in ("running", "pending"):
        state, value = TrialState.RUNNING, None
    elif record.end in FINISHED_ENDS and value is not None:
        state = TrialState.COMPLETE
    else:  # an error, or a trial that ended without ever reporting the metric
        state, value = TrialState.FAIL, None
    names = [n for n in params if n in record.params]
    return optuna.trial.create_trial(
        state=state, value=value, params={n: record.params[n] for n in names},
        distributions={n: params[n].distribution() for n in names},
        intermediate_values={e: v for e, v in record.values(exp.metric)},
        user_attrs={"trial": record.name, "trial_id": record.trial_id, "end": record.end, "best_epoch": epoch},
    )


def finished_trials(study: Any) -> list[Any]:
    """The study's trials that count for the analysis (COMPLETE, with a value)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def param_importance(study: Any, names: list[str]) -> Importance:
    """fANOVA importance (``optuna.importance.FanovaImportanceEvaluator``) of ``names`` over the finished trials.

    Returns an :class:`Importance` with a plain ``note`` instead of numbers when they would mislead: too few
    finished trials for the number of parameters, one parameter only, every finished trial scoring the same, or
    scikit-learn (which Optuna's fANOVA fits its forest with) missing.
    """
    finished = finished_trials(study)
    needed = max(MIN_TRIALS_FOR_IMPORTANCE, len(names) + 1)
    if len(names) < 2:
        return Importance(len(finished), note="Parameter importance: one searched parameter, nothing to compare.")
    if len(finished) < needed:
        return Importance(len(finished), note=(
            f"Parameter importance: {len(finished)} finished trial(s); fANOVA needs at least {needed} for "
            f"{len(names)} parameters to say anything (run more trials: num_samples=...)."))
    if len({t.value for t in finished}) < 2:
        return Importance(len(finished), note="Parameter importance: every finished trial has the same metric.")
    try:
        import sklearn  # noqa: F401  (Optuna's fANOVA imports it lazily, deep inside; check up front)
    except ImportError:
        return Importance(len(finished), note="Parameter importance (fANOVA) needs scikit-learn: "
                                              "pip install scikit-learn")
    with quiet_optuna() as optuna:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=names)
    return Importance(len(finished), values={name: float(value) for name, value in values.items()})


def format_importance(importance: Importance) -> str:
    """One line for the terminal: the ranked importances, or the note."""
    if importance.values is None:
        return str(importance.note)
    ranked = ", ".join(f"{name} {value:.2f}" for name, value in importance.values.items())
    return f"Parameter importance (fANOVA over {importance.trials} finished trials): {ranked}"


def top_params(params: list[str], importance: Importance, k: int) -> list[str]:
    """The ``k`` most important parameters (in space order when there is no importance)."""
    if importance.values is None:
        return params[:k]
    return sorted(params, key=lambda n: -importance.values.get(n, 0.0))[:k]


__all__ = ["FINISHED_ENDS", "MIN_TRIALS_FOR_IMPORTANCE", "Importance", "build_study", "finished_trials",
           "format_importance", "param_importance", "quiet_optuna", "searched_params", "top_params"]
