"""Reading a tune experiment back (``raytrain results DIR``, :mod:`raytrain.commands.results`): rewrite its reports,
redraw its plots.

Works on a finished experiment, a running one, one whose driver died, and one written before Optuna's analysis was
added (the folder layout is the same). The reports are in :mod:`raytrain.tuning.report`, the analysis in
:mod:`raytrain.tuning.analysis` and :mod:`raytrain.tuning.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain.tuning.experiment import Experiment, load_experiment
from raytrain.tuning.report import write_best, write_trials_csv


@dataclass
class Summary:
    """What :func:`summarize` wrote and found."""

    experiment: Experiment
    importance: Any = None  # raytrain.tuning.analysis.Importance, when plots were drawn
    plots: list[Path] = field(default_factory=list)
    front: list[Any] = field(default_factory=list)  # several objectives: the Pareto front (raytrain.tuning.pareto)


def summarize(path: str | Path, plots: bool = True) -> Summary:
    """Read an experiment folder and (re)write ``trials.csv``, ``best.yaml``, ``best.pt`` and the plots; with several
    objectives also ``pareto.csv``, ``pareto/`` and ``pareto_front.png`` (:mod:`raytrain.tuning.pareto`)."""
    exp = load_experiment(path)
    write_trials_csv(exp)
    write_best(exp)
    front = []
    if len(exp.objectives) > 1:
        from raytrain.tuning.pareto import write_pareto

        front = write_pareto(exp)
    if not plots:
        return Summary(exp, front=front)
    from raytrain.tuning.analysis import build_study, param_importance, searched_params
    from raytrain.tuning.plots import plot_experiment

    names = list(searched_params(exp))
    study = build_study(exp)
    importance = param_importance(study, names)
    drawn = plot_experiment(exp, study, names, importance)
    if len(exp.objectives) > 1:
        from raytrain.tuning.pareto import plot_pareto, trial_points

        drawn += [p for p in [plot_pareto(exp, trial_points(exp))] if p is not None]
    return Summary(exp, importance, drawn, front)


__all__ = ["Summary", "summarize"]
