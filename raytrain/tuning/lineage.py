"""What a PBT experiment learned, read back from ``pbt_history.csv``: each trial's lineage and per-epoch schedule.

A trial that exploited another continues from that trial's state after epoch ``e``: its epochs up to ``e`` are the
source's (as they were when the state was saved, so the source's own earlier exploits count, its later ones do not),
and from ``e + 1`` it trains with its new values. :func:`lineage_schedule` follows that back to the first
population, giving the values every epoch of the final model was trained with; ``best_schedule.yaml`` holds the best
trial's (``raytrain fit cfg=best.yaml`` replays it through ``schedule=``), and ``pbt_schedules.png`` draws every
trial's, with its exploits marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.tuning.experiment import Experiment, TrialRecord
from raytrain.tuning.pbt import HISTORY_FILE, read_history

BEST_SCHEDULE = "best_schedule.yaml"
SCHEDULE_PLOT = "pbt_schedules.png"


def is_pbt(exp: Experiment) -> bool:
    return exp.space.get("scheduler") == "pbt"


def history(exp: Experiment) -> list[dict[str, Any]]:
    """The experiment's exploits, in order (empty for an experiment without PBT or before the first exploit)."""
    return read_history(exp.path / HISTORY_FILE)


def initial_values(rows: Sequence[Mapping[str, Any]], names: Sequence[str],
                   final: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each trial's values before its first exploit: that row's ``KEY_before``; a trial never exploited kept its
    ``final`` values (trial name -> parameters) throughout."""
    out = {trial: {k: params.get(k) for k in names} for trial, params in final.items()}
    for row in reversed(rows):  # the earliest row of a trial wins
        out[row["trial"]] = {k: row.get(f"{k}_before") for k in names}
    return out


def lineage_schedule(rows: Sequence[Mapping[str, Any]], trial: str, epochs: int, names: Sequence[str],
                     initial: Mapping[str, Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """The values ``trial``'s final state was trained with at each epoch ``1..epochs``, along its lineage.

    Args:
        rows: the history (:func:`raytrain.tuning.pbt.read_history`), in ``seq`` order.
        trial: the trial's name.
        epochs: how many epochs to give.
        names: the mutated keys.
        initial: :func:`initial_values`.
    """

    def walk(name: str, upto: int, before_seq: float) -> list[dict[str, Any]]:
        own = [r for r in rows if r["trial"] == name and r["seq"] < before_seq]
        if not own:
            return [dict(initial.get(name, {}))] * upto
        last = own[-1]
        head_epochs = min(int(last["epoch"]), upto)
        after = {k: last.get(f"{k}_after") for k in names}
        return walk(last["source"], head_epochs, last["seq"]) + [after] * (upto - head_epochs)

    return {epoch: values for epoch, values in enumerate(walk(trial, epochs, float("inf")), 1)}


def lineage_text(rows: Sequence[Mapping[str, Any]], trial: str) -> str:
    """A trial's exploits, oldest first: ``trial_00001@2 trial_00003@4`` (source's state after that epoch)."""
    return " ".join(f"{r['source']}@{r['epoch']}" for r in rows if r["trial"] == trial)


def write_best_schedule(exp: Experiment, best: TrialRecord) -> Path | None:
    """``best_schedule.yaml``: the best trial's values per epoch along its lineage; None for a non-PBT experiment."""
    if not is_pbt(exp):
        return None
    from raytrain.engine.hyper import write_schedule

    rows, names = history(exp), exp.param_names
    initial = initial_values(rows, names, {t.name: t.params for t in exp.trials})
    epochs = max(best.epochs_run, 1)
    schedule = lineage_schedule(rows, best.name, epochs, names, initial)
    header = (f"Per-epoch hyperparameters of {best.name}'s final model along its PBT lineage "
              f"({lineage_text(rows, best.name) or 'no exploit'}), experiment {exp.path}.\n"
              f"Replay: raytrain fit cfg={exp.path / 'best.yaml'} (its schedule= names this file); the last "
              f"epoch's values hold for any later epoch.")
    return write_schedule(exp.path / BEST_SCHEDULE, schedule, header=header)


def plot_schedules(exp: Experiment, plt: Any) -> Any:
    """One panel per mutated key: each trial's values per epoch along its lineage; its exploits marked ``x`` at the
    first epoch trained with the new values, labelled with the source's trial number. None without trials."""
    rows, names = history(exp), exp.param_names
    trials = [t for t in exp.trials if t.epochs_run]
    if not trials or not names:
        return None
    initial = initial_values(rows, names, {t.name: t.params for t in exp.trials})
    best = exp.best_trial()
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.6 * len(names)), squeeze=False, sharex=True,
                             tight_layout=True)
    for t in trials:
        schedule = lineage_schedule(rows, t.name, t.epochs_run, names, initial)
        is_best = best is not None and t.trial_id == best.trial_id
        for ax, key in zip(axes[:, 0], names, strict=True):
            epochs = [e for e, v in schedule.items() if isinstance(v.get(key), (int, float))]
            values = [schedule[e][key] for e in epochs]
            (line,) = ax.step(epochs, values, where="post", linewidth=2.5 if is_best else 1.0,
                              label=f"{t.name}{' (best)' if is_best else ''}")
            for r in (r for r in rows if r["trial"] == t.name and isinstance(r.get(f"{key}_after"), (int, float))):
                ax.plot(r["epoch"] + 1, r[f"{key}_after"], "x", color=line.get_color(), markersize=8)
                ax.annotate(r["source"].rsplit("_", 1)[-1].lstrip("0") or "0", (r["epoch"] + 1, r[f"{key}_after"]),
                            fontsize=6, xytext=(3, 3), textcoords="offset points", color=line.get_color())
    for ax, key in zip(axes[:, 0], names, strict=True):
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(f"{exp.path.name}: hyperparameters per epoch along each trial's lineage "
                         f"(x: exploit, labelled with the source trial)", loc="left", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=2 if len(trials) > 8 else 1)
    axes[-1, 0].set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


__all__ = ["BEST_SCHEDULE", "SCHEDULE_PLOT", "history", "initial_values", "is_pbt", "lineage_schedule",
           "lineage_text", "plot_schedules", "write_best_schedule"]
