"""``raytrain results DIR``: read an experiment back, rewrite its reports, redraw its plots, print the ranking.

Works on a finished experiment, a running one, one whose driver died, and one written before Optuna's analysis was
added (the folder layout is the same). The reports are in :mod:`raytrain.tuning.report`, the analysis in
:mod:`raytrain.tuning.analysis` and :mod:`raytrain.tuning.plots`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError
from raytrain.tuning.experiment import Experiment, load_experiment
from raytrain.tuning.report import BEST_YAML, TRIALS_CSV, format_table, write_best, write_trials_csv


@dataclass
class Summary:
    """What :func:`summarize` wrote and found."""

    experiment: Experiment
    importance: Any = None  # raytrain.tuning.analysis.Importance, when plots were drawn
    plots: list[Path] = field(default_factory=list)


def summarize(path: str | Path, plots: bool = True) -> Summary:
    """Read an experiment folder and (re)write ``trials.csv``, ``best.yaml``, ``best.pt`` and the plots."""
    exp = load_experiment(path)
    write_trials_csv(exp)
    write_best(exp)
    if not plots:
        return Summary(exp)
    from raytrain.tuning.analysis import build_study, param_importance, searched_params
    from raytrain.tuning.plots import plot_experiment

    names = list(searched_params(exp))
    study = build_study(exp)
    importance = param_importance(study, names)
    return Summary(exp, importance, plot_experiment(exp, study, names, importance))


def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain results DIR``: the ranked table of a finished or running experiment, and fresh plots."""
    if len(positional) != 1:
        raise ConfigError("usage: raytrain results EXPERIMENT_DIR (e.g. runs/tune/quickstart)")
    from raytrain.tuning.analysis import format_importance

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
    return 0


__all__ = ["Summary", "main", "summarize"]
