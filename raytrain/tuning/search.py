"""The Optuna search behind a tune experiment: sampler, constraints, and the study kept on disk.

The study lives in the experiment folder (``study.journal``, Optuna's :class:`~optuna.storages.JournalStorage`
through Ray's ``OptunaSearch(storage=...)``), so ``optuna-dashboard <exp>/study.journal`` shows the trials, the
Pareto front and the importances while the search runs and after Ray is gone, and ``resume=True`` continues the same
study (Tune pickles the searcher with its experiment state; the journal storage reopens the file by its path).

Several objectives: Ray's ``OptunaSearch`` tells Optuna each trial's *last* result; :class:`TrialSearch` tells it the
result of the trial's best epoch on the first objective instead (the epoch ``best.pt`` keeps, and the values the
Pareto front of ``raytrain results`` shows). Constraints: before telling, :class:`TrialSearch` sets each one on the
Optuna trial (``Trial.set_constraint``: how much it is broken, <= 0 when met), which TPE and NSGA-II read from the
trials (Optuna 5's way; their ``constraints_func`` argument is deprecated), and records the measured values as user
attributes. One objective and no constraint: exactly Ray's behaviour (the same sampler, so the same trials for the
same seed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from raytrain.keys import DEPLOY_KEYS, INFEASIBLE, LATENCY_IQR_MS
from raytrain.tuning.objectives import Constraint, deploy_spec, objective_modes, objective_names

STUDY_FILE = "study.journal"  # in the experiment folder


def study_storage(exp_dir: Path) -> Any:
    """Optuna's journal storage on ``exp_dir/study.journal`` (a file append-only log: safe while the search runs)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(exp_dir) / STUDY_FILE)))


def make_sampler(spec: Any) -> Any:
    """Optuna's sampler, seeded: TPE (random for its first ``n_startup_trials``; several objectives too), NSGA-II, or
    random. TPE and NSGA-II read the constraints from the trials (:class:`TrialSearch` sets them). NSGA-II's
    population is a quarter of the trials (4 to 50, Optuna's default): with 50, a small budget would never leave
    its random first generation."""
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.search_seed, n_startup_trials=spec.n_startup_trials)
    if spec.sampler == "nsga2":  # Optuna's, made picklable for Tune (raytrain.tuning.samplers)
        from raytrain.tuning.samplers import NSGAIISampler

        return NSGAIISampler(seed=spec.search_seed, population_size=nsga2_population(spec.num_samples))
    return optuna.samplers.RandomSampler(seed=spec.search_seed)


def nsga2_population(num_samples: int) -> int:
    return max(4, min(50, num_samples // 4))


def make_search(spec: Any, exp_dir: Path) -> Any:
    """The searcher (not yet behind Tune's ConcurrencyLimiter) with the study in ``exp_dir`` (a fresh study unless
    ``resume``: a folder reused with ``exist_ok`` must not feed an old run's trials to the sampler)."""
    if not spec.resume:
        (Path(exp_dir) / STUDY_FILE).unlink(missing_ok=True)
    names, modes = objective_names(spec), objective_modes(spec)
    several = len(names) > 1
    constraints = deploy_spec(spec).constraints
    recorded = tuple(dict.fromkeys([*(c.key for c in constraints), *DEPLOY_KEYS, LATENCY_IQR_MS, INFEASIBLE]))
    return _trial_search_class()(
        space=spec.sample_space, metric=list(names) if several else names[0],
        mode=list(modes) if several else modes[0], sampler=make_sampler(spec),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        storage=study_storage(exp_dir), study_name=Path(exp_dir).name, recorded=recorded, constraints=constraints)


def _trial_search_class() -> type:
    """``TrialSearch``: Ray's ``OptunaSearch`` that tells the best epoch's values (several objectives), sets the
    ``constraints`` on each trial and records the ``recorded`` values as its user attributes (module docstring).
    Defined on first use, so importing this module does not import Ray (Tune pickles the Tuner with cloudpickle; the
    searcher saves only its state)."""
    from ray.tune.search.optuna import OptunaSearch

    class TrialSearch(OptunaSearch):
        def __init__(self, *args: Any, recorded: tuple[str, ...] = (), constraints: tuple[Constraint, ...] = (),
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._recorded, self._constraints = recorded, constraints
            self._best_rows: dict[str, dict[str, Any]] = {}

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            if isinstance(self.metric, list):
                self._best_rows[trial_id] = best_row(self._best_rows.get(trial_id), result, self.metric, self.mode)
            super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            if result and isinstance(self.metric, list):
                result = {**result, **best_row(self._best_rows.pop(trial_id, None), result, self.metric, self.mode)}
            ot_trial = self._ot_trials.get(trial_id)
            if result and ot_trial is not None and trial_id not in self._completed_trials:
                for key in self._recorded:
                    value = result.get(key)
                    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                        ot_trial.set_user_attr(key, value)
                for c in self._constraints:  # a value the trial never reported counts as broken
                    value = result.get(c.key)
                    ot_trial.set_constraint(c.key, c.excess(float(value)) if _number(value) else 1.0)
            super().on_trial_complete(trial_id, result, error)

    return TrialSearch


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def best_row(best: dict[str, Any] | None, result: dict[str, Any], metrics: list[str],
             modes: list[str]) -> dict[str, Any]:
    """The objectives of whichever of ``best`` (kept so far, or None) and ``result`` is better on the first objective
    (a tie goes to the later result, as ``best.pt`` does)."""
    value = result.get(metrics[0])
    if not isinstance(value, (int, float)) or math.isnan(value):
        return best or {}
    if best and metrics[0] in best:
        kept = best[metrics[0]]
        if (value < kept) if modes[0] == "max" else (value > kept):
            return best
    return {k: result[k] for k in metrics if k in result}


__all__ = ["STUDY_FILE", "best_row", "make_sampler", "make_search", "nsga2_population", "study_storage"]
