"""The experiment's plots: the metric per epoch of every trial, and Optuna's own charts of the rebuilt study.

``trials_metric.png`` is ours (it shows how ASHA and the patience rule cut trials); the others are drawn by
``optuna.visualization.matplotlib``: ``optimization_history.png``, ``parallel_coordinates.png``,
``param_slices.png`` (the most important parameters) and ``param_importance.png`` (fANOVA, only when there are
enough finished trials to say anything; see :func:`raytrain.tuning.analysis.param_importance`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raytrain.tuning.analysis import Importance, finished_trials, quiet_optuna, top_params
from raytrain.tuning.experiment import Experiment
from raytrain.tuning.lineage import SCHEDULE_PLOT, is_pbt, plot_schedules
from raytrain.tuning.pareto import PARETO_PLOT  # several objectives: drawn by raytrain.tuning.pareto.plot_pareto

CURVES_PLOT = "trials_metric.png"
HISTORY_PLOT = "optimization_history.png"
PARALLEL_PLOT = "parallel_coordinates.png"
SLICE_PLOT = "param_slices.png"
IMPORTANCE_PLOT = "param_importance.png"
PLOTS = (CURVES_PLOT, HISTORY_PLOT, PARALLEL_PLOT, SLICE_PLOT)  # drawn whenever a trial has finished
# Drawn by raytrain before Optuna's analysis (param_slices.png replaces it): removed on redraw, as it is no longer
# updated and would show an old state of a running experiment.
LEGACY_PLOTS = ("metric_vs_params.png",)
SLICE_PARAMS = 4  # slices for the top parameters only: one panel each, readable side by side
_STYLES = {"completed": "-", "asha-stopped": "--", "patience-stopped": "-.", "time-budget": ":", "error": ":",
           "running": "-", "pending": "-"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_experiment(exp: Experiment, study: Any, names: list[str], importance: Importance) -> list[Path]:
    """Draw every plot the experiment supports into its folder; returns the paths written.

    Args:
        exp: the experiment read back.
        study: the study rebuilt from it (:func:`raytrain.tuning.analysis.build_study`).
        names: the searched parameters, in the space file's order.
        importance: their importance, or the note saying why there is none.

    Before any trial has finished only the per-epoch curves are drawn. Without an importance (too few trials) no
    importance chart is drawn, and one left by an earlier ``raytrain results`` is removed, so it cannot mislead.
    """
    plt = _pyplot()
    for name in LEGACY_PLOTS:
        (exp.path / name).unlink(missing_ok=True)
    written = [_save(plt, _plot_curves(exp, plt), exp.path / CURVES_PLOT)]
    if is_pbt(exp):  # what the population's schedules were, and where trials exploited others
        schedules = plot_schedules(exp, plt)
        if schedules is not None:
            written.append(_save(plt, schedules, exp.path / SCHEDULE_PLOT))
    if not finished_trials(study):
        return written
    target = exp.metric
    with quiet_optuna() as optuna:
        vis = optuna.visualization.matplotlib
        written.append(_save(plt, _figure(vis.plot_optimization_history(study, target_name=target)),
                             exp.path / HISTORY_PLOT))
        written.append(_save(plt, _figure(vis.plot_parallel_coordinate(study, params=names, target_name=target)),
                             exp.path / PARALLEL_PLOT))
        top = top_params(names, importance, SLICE_PARAMS)
        written.append(_save(plt, _figure(vis.plot_slice(study, params=top, target_name=target)),
                             exp.path / SLICE_PLOT))
        if importance.values is not None:
            ax = vis.plot_param_importances(study, evaluator=_precomputed(importance), params=names,
                                            target_name=target)
            ax.set_title(f"Parameter importance (fANOVA, {importance.trials} finished trials)", loc="left")
            written.append(_save(plt, ax.figure, exp.path / IMPORTANCE_PLOT))
    if importance.values is None:
        (exp.path / IMPORTANCE_PLOT).unlink(missing_ok=True)
    return written


def _precomputed(importance: Importance) -> Any:
    """An Optuna importance evaluator that returns the fANOVA values already computed (a second forest fit costs
    seconds and could only give the same seeded numbers)."""
    from optuna.importance import BaseImportanceEvaluator

    class Precomputed(BaseImportanceEvaluator):
        def evaluate(self, study: Any, params: list[str] | None = None, *, target: Any = None) -> dict[str, float]:
            return dict(importance.values or {})

    return Precomputed()


def _figure(axes: Any) -> Any:
    """The figure of what an Optuna plot function returned (one Axes, or an array of them)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # not tight_layout: parallel coordinates has twin axes
    plt.close(fig)
    return path


def _plot_curves(exp: Experiment, plt: Any) -> Any:
    """The metric against epoch for every trial; early-stopped trials dashed, the best one thick."""
    fig, ax = plt.subplots(figsize=(8, 5), tight_layout=True)
    best = exp.best_trial()
    for t in exp.trials:
        values = t.values(exp.metric)
        if not values:
            continue
        is_best = best is not None and t.trial_id == best.trial_id
        ax.plot([e for e, _ in values], [v for _, v in values], _STYLES.get(t.end, "-"), marker=".",
                linewidth=2.5 if is_best else 1.2, label=f"{t.name} ({t.end}){' best' if is_best else ''}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=exp.metric, title=f"{exp.path.name}: {exp.metric} per epoch "
           f"(dashed: ASHA-stopped, dash-dot: patience-stopped)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2 if len(exp.trials) > 12 else 1)
    return fig


__all__ = ["CURVES_PLOT", "HISTORY_PLOT", "IMPORTANCE_PLOT", "PARALLEL_PLOT", "PARETO_PLOT", "PLOTS", "SLICE_PLOT",
           "plot_experiment"]
