"""``raytrain results EXPERIMENT_DIR [pick="latency_ms<=8"]``: a finished or running experiment's ranked trials,
fresh plots and Optuna's analysis (:func:`raytrain.tuning.results.summarize`); the Pareto front of a multi-objective
one; with ``pick=`` the most accurate trial within the bounds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from raytrain.config import ConfigError
from raytrain.tuning.experiment import Experiment


def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain results DIR [pick="latency_ms<=8"]``: the ranked table of a finished or running experiment, fresh
    plots, the Pareto front of a multi-objective one, and with ``pick=`` the best trial within the bounds."""
    if len(positional) != 1:
        raise ConfigError("usage: raytrain results EXPERIMENT_DIR [pick=\"latency_ms<=8\"] "
                          "(e.g. runs/tune/quickstart)")
    from raytrain.tuning.analysis import format_importance
    from raytrain.tuning.report import BEST_YAML, TRIALS_CSV, format_table
    from raytrain.tuning.results import summarize

    summary = summarize(positional[0])
    exp = summary.experiment
    print(format_table(exp))
    best = exp.best_trial()
    ended = Counter(t.end for t in exp.trials)
    print(f"\n{len(exp.trials)} trials ({', '.join(f'{n} {e}' for e, n in ended.items())}).")
    if best is not None:
        value, epoch = best.best(exp.metric, exp.mode)
        print(f"Best: {best.name} {exp.metric}={value:.6g} (epoch {epoch}); config {exp.path / BEST_YAML}")
    print(format_importance(summary.importance))
    print(f"Table {exp.path / TRIALS_CSV}; plots {', '.join(str(p) for p in summary.plots)}")
    if len(exp.objectives) > 1:
        print_front(exp)
    if args.get("pick") is not None:
        return print_pick(exp, str(args["pick"]))
    return 0


def print_front(exp: Experiment) -> None:
    """The Pareto front table and where its files are."""
    from raytrain.tuning.pareto import PARETO_CSV, PARETO_DIR, format_front, pareto_front, trial_points

    points = trial_points(exp)
    print("\n" + format_front(exp, pareto_front(points, exp.objectives), points))
    print(f"Front {exp.path / PARETO_CSV}; each member's config {exp.path / PARETO_DIR}/<trial>/best.yaml")


def print_pick(exp: Experiment, text: str) -> int:
    """``pick=``: the most accurate feasible trial within the bounds, its config (``pick.yaml``) and retrain
    command; exit 1 when no trial is within them."""
    from raytrain.tuning.pareto import PICK_YAML, pick, write_trial_yaml

    chosen = pick(exp, text)
    if chosen is None:
        print(f"No finished feasible trial meets {text}.")
        return 1
    path = write_trial_yaml(exp, chosen, exp.path / PICK_YAML, f"picked by {text}")
    values = ", ".join(f"{k}={v:.4g}" for k, v in chosen.values.items())
    print(f"Picked {chosen.trial.name} ({text}): {values}.\nRetrain it: raytrain fit cfg={path}")
    return 0
