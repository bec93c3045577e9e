"""What a tune experiment leaves behind: ``trials.csv``, ``best.yaml``, ``best.pt``, plots, and ``raytrain results``.

Everything here is read back from files, so it works for a finished experiment, a running one and one whose driver
died: ``tune_space.yaml`` (the validated space, written before trials start), ``trial_status.yaml`` (each trial's
id, parameters, run folder and how it ended, kept by the driver's :class:`~raytrain.tune.run.TrialStatusCallback`),
and each trial folder's ``result.json`` (Tune's per-epoch results, one JSON object per line).

How a trial ended (``end`` column): ``completed`` (ran all its epochs), ``asha-stopped`` (ASHA cut it at a rung),
``patience-stopped`` (no improvement of the metric for ``patience`` epochs), ``time-budget`` (the experiment's
``time_budget_s`` ran out while it trained), ``error`` (failed after its retries), ``running`` / ``pending``
(the experiment is still going, or was interrupted: ``resume=True`` continues it).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytrain.config import ConfigError

LOGGER = logging.getLogger("raytrain")
SPACE_FILE = "tune_space.yaml"
# Not .json/.pkl: Tune copies those top-level files into its driver staging folder on restore and syncs them back
# over the experiment folder, which would undo the updates made after the restore.
STATUS_FILE = "trial_status.yaml"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
BEST_WEIGHTS = "best.pt"
PLOTS = ("trials_metric.png", "param_importance.png", "metric_vs_params.png")
ENDS = ("completed", "asha-stopped", "patience-stopped", "time-budget", "error", "running", "pending")


@dataclass
class TrialRecord:
    """One trial as read from the experiment folder."""

    trial_id: str
    name: str
    params: dict[str, Any]
    end: str = "pending"  # one of ENDS
    epochs_planned: int | None = None  # the trial's own epochs
    save_dir: str | None = None  # the trial's fit run folder (weights/best.pt, results.csv)
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch results, ordered by epoch
    error: str | None = None
    stopped_at_epoch: int | None = None  # the epoch at which ASHA or the patience rule decided to stop it

    @property
    def epochs_run(self) -> int:
        """Epochs trained (Tune stops a trial asynchronously, so this can exceed ``stopped_at_epoch``)."""
        return int(self.history[-1]["epoch"]) if self.history else 0

    def values(self, metric: str) -> list[tuple[int, float]]:
        """(epoch, value) pairs of ``metric``, skipping epochs that did not report a finite value."""
        out = []
        for row in self.history:
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append((int(row["epoch"]), float(value)))
        return out

    def final(self, metric: str) -> float | None:
        values = self.values(metric)
        return values[-1][1] if values else None

    def best(self, metric: str, mode: str) -> tuple[float | None, int | None]:
        """The best value of ``metric`` over the trial's epochs, and the epoch it came from."""
        values = self.values(metric)
        if not values:
            return None, None
        epoch, value = (max if mode == "max" else min)(values, key=lambda ev: ev[1])
        return value, epoch


@dataclass
class Experiment:
    """An experiment folder read back: the space, the objective and every trial."""

    path: Path
    space: dict[str, Any]  # the saved TuneSpec.to_dict()
    trials: list[TrialRecord]

    @property
    def metric(self) -> str:
        return self.space.get("metric", "fitness")

    @property
    def mode(self) -> str:
        return self.space.get("mode", "max")

    @property
    def param_names(self) -> list[str]:
        return list(self.space.get("space", {}))

    def ranked(self) -> list[TrialRecord]:
        """Trials ordered best first by their best metric; trials without a result last."""
        sign = -1.0 if self.mode == "max" else 1.0

        def key(t: TrialRecord) -> tuple[int, float]:
            value, _ = t.best(self.metric, self.mode)
            return (1, 0.0) if value is None else (0, sign * value)

        return sorted(self.trials, key=key)

    def best_trial(self) -> TrialRecord | None:
        ranked = self.ranked()
        return ranked[0] if ranked and ranked[0].best(self.metric, self.mode)[0] is not None else None


# ------------------------------------------------------------------------------------------------------ reading
def read_result_json(path: Path) -> list[dict[str, Any]]:
    """Tune's ``result.json`` rows, one per epoch (the last report of an epoch wins; a half-written line is skipped)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the driver may be writing this line right now
        if isinstance(row, dict) and isinstance(row.get("epoch"), (int, float)):
            by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_status(path: Path) -> dict[str, dict[str, Any]]:
    """``trial_status.yaml``: trial id -> what the driver recorded about it (empty when absent)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        LOGGER.warning("%s is not valid YAML; reading trials from their folders only.", path)
        return {}
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def load_experiment(path: str | Path) -> Experiment:
    """Read a tune experiment folder (finished, running, or interrupted).

    Raises:
        ConfigError: when ``path`` is not a raytrain tune experiment folder.
    """
    path = Path(path).expanduser().resolve()
    space_file = path / SPACE_FILE
    if not space_file.is_file():
        raise ConfigError(f"{path}: not a raytrain tune experiment ({SPACE_FILE} not found).")
    space = yaml.safe_load(space_file.read_text()) or {}
    status = read_status(path / STATUS_FILE)
    trials: dict[str, TrialRecord] = {}
    for trial_id, info in status.items():
        trials[trial_id] = TrialRecord(trial_id=trial_id, name=info.get("name", trial_id),
                                       params=dict(info.get("params", {})), end=info.get("end", "pending"),
                                       epochs_planned=info.get("epochs"), save_dir=info.get("save_dir"),
                                       error=info.get("error"), stopped_at_epoch=info.get("stopped_at_epoch"))
    for params_file in sorted(path.glob("*/params.json")):
        folder = params_file.parent
        rows = read_result_json(folder / "result.json")
        trial_id = rows[-1].get("trial_id") if rows else None
        record = trials.get(trial_id) if trial_id else None
        if record is None:
            record = next((t for t in trials.values() if t.name == folder.name), None)
        if record is None:  # the driver died before recording it: rebuild from Tune's files
            params = json.loads(params_file.read_text())
            record = TrialRecord(trial_id=trial_id or folder.name, name=folder.name,
                                 params={k: params[k] for k in space.get("space", {}) if k in params},
                                 end="running" if rows else "pending")
            trials[record.trial_id] = record
        record.history = [_numbers(r) for r in rows]
    for record in trials.values():
        record.history = _merge_fit_history(record, space.get("train", {}))
    return Experiment(path=path, space=space, trials=sorted(trials.values(), key=lambda t: t.name))


def _merge_fit_history(record: TrialRecord, train: dict[str, Any]) -> list[dict[str, float]]:
    """Tune's per-epoch results completed with the trial's own ``results.csv``.

    When the driver is killed, Tune's copy of ``result.json`` can miss the last epochs it had received (it is synced
    to the experiment folder periodically), while the fit run folder's ``results.csv`` is rewritten every epoch from
    the checkpointed history. Epochs Tune has keep Tune's values; the others come from the CSV, with ``fitness``
    recomputed the way fit computes it.
    """
    csv_file = Path(record.save_dir) / "results.csv" if record.save_dir else None
    if csv_file is None or not csv_file.is_file():
        return record.history
    from raytrain.engine.results import read_results_csv

    try:
        fit_rows = read_results_csv(csv_file)
    except (OSError, ValueError, KeyError):
        return record.history
    by_epoch = {int(r["epoch"]): _with_fitness(r, train) for r in fit_rows}
    for row in record.history:
        by_epoch[int(row["epoch"])] = {**by_epoch.get(int(row["epoch"]), {}), **row}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _with_fitness(row: dict[str, float], train: dict[str, Any]) -> dict[str, float]:
    from raytrain.metrics import fitness

    if "fitness" in row:
        return row
    validated = any(row.get(k) for k in row if k.startswith("metrics/"))
    if validated or train.get("val", True):
        value = fitness(row, key=train.get("fitness", "mAP50-95"))
    else:  # fit without validation ranks epochs by the summed train losses (lower is fitter)
        value = -sum(row.get(f"train/{n}_loss", 0.0) for n in ("box", "cls", "dfl"))
    return {**row, "fitness": value}


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------------------------ writing
def write_trials_csv(exp: Experiment, path: Path | None = None) -> Path:
    """``trials.csv``: one row per trial, best first: parameters, final and best metric, epochs run, how it ended."""
    path = path or exp.path / TRIALS_CSV
    metric = exp.metric
    header = ["rank", "trial", "end", "stopped_at_epoch", "epochs_run", "epochs_planned", f"final {metric}",
              f"best {metric}", "best_epoch", *exp.param_names, "trial_id", "save_dir"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for rank, t in enumerate(exp.ranked(), 1):
            best, best_epoch = t.best(metric, exp.mode)
            writer.writerow([rank, t.name, t.end, _blank(t.stopped_at_epoch), t.epochs_run, _blank(t.epochs_planned),
                             _fmt(t.final(metric)),
                             _fmt(best), _blank(best_epoch), *(_blank(t.params.get(p)) for p in exp.param_names),
                             t.trial_id, _blank(t.save_dir)])
    return path


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _blank(value: Any) -> Any:
    return "" if value is None else value


def write_best(exp: Experiment) -> TrialRecord | None:
    """``best.yaml`` (the best trial's full training config: ``raytrain fit cfg=best.yaml``) and its ``best.pt``."""
    from raytrain.config import make_config

    best = exp.best_trial()
    if best is None:
        return None
    train = dict(exp.space.get("train", {}))
    cfg = make_config(train, {k: v for k, v in best.params.items() if k in exp.param_names})
    value, epoch = best.best(exp.metric, exp.mode)
    header = (f"# Best trial {best.name} ({best.trial_id}) of {exp.path}: {exp.metric}={value:.6g} at epoch {epoch} "
              f"({best.end}).\n# Train it again with: raytrain fit cfg={exp.path / BEST_YAML}\n")
    (exp.path / BEST_YAML).write_text(header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    weights = Path(best.save_dir) / "weights" / "best.pt" if best.save_dir else None
    if weights is not None and weights.is_file():
        shutil.copyfile(weights, exp.path / BEST_WEIGHTS)
    elif best.save_dir:
        LOGGER.warning("Best trial %s has no weights at %s.", best.name, weights)
    return best


# -------------------------------------------------------------------------------------------------------- table
def format_table(exp: Experiment, limit: int | None = None) -> str:
    """The ranked trials as an aligned text table (best first)."""
    metric = exp.metric
    params = exp.param_names
    rows = [["#", "trial", "end", "ran", f"best {metric}", f"final {metric}", *params]]
    for rank, t in enumerate(exp.ranked()[:limit], 1):
        best, _ = t.best(metric, exp.mode)
        planned = f"/{t.epochs_planned}" if t.epochs_planned else ""
        rows.append([str(rank), t.name, t.end, f"{t.epochs_run}{planned}", _fmt(best), _fmt(t.final(metric)),
                     *(_short(t.params.get(p)) for p in params)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------------------------------- importance
def param_importance(exp: Experiment) -> dict[str, float]:
    """How strongly each searched parameter goes with the trials' best metric, normalised to sum to 1.

    A simple, documented measure that works with a handful of trials: for a numeric parameter the absolute
    Spearman rank correlation with the metric; for a choice, the correlation ratio (the share of the metric's
    spread explained by the choice, square-rooted so both live on [0, 1]). Parameters with one distinct value, or
    fewer than 3 trials with results, score 0. It shows association, not causation, and ignores interactions.
    """
    scored = [(t.params, t.best(exp.metric, exp.mode)[0]) for t in exp.trials]
    scored = [(p, v) for p, v in scored if v is not None]
    raw: dict[str, float] = {}
    for name in exp.param_names:
        pairs = [(p[name], v) for p, v in scored if name in p]
        raw[name] = _association([x for x, _ in pairs], [y for _, y in pairs]) if len(pairs) >= 3 else 0.0
    total = sum(raw.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in raw.items()}


def _association(xs: Sequence[Any], ys: Sequence[float]) -> float:
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if len(set(map(repr, xs))) < 2:
        return 0.0
    if numeric:
        return abs(_pearson(_ranks([float(x) for x in xs]), _ranks(list(ys))))
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys)
    if total == 0:
        return 0.0
    groups: dict[str, list[float]] = {}
    for x, y in zip(xs, ys, strict=True):
        groups.setdefault(repr(x), []).append(y)
    between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
    return math.sqrt(between / total)


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else 0.0


# -------------------------------------------------------------------------------------------------------- plots
_STYLES = {"completed": "-", "asha-stopped": "--", "patience-stopped": "-.", "time-budget": ":", "error": ":",
           "running": "-", "pending": "-"}


def plot_experiment(exp: Experiment) -> list[Path]:
    """Draw the three plots (Agg backend) into the experiment folder; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths = [exp.path / name for name in PLOTS]
    for path, draw in zip(paths, (_plot_curves, _plot_importance, _plot_params), strict=True):
        fig = draw(exp, plt)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return paths


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
    if exp.trials:
        ax.legend(fontsize=7, ncol=2 if len(exp.trials) > 12 else 1)
    return fig


def _plot_importance(exp: Experiment, plt: Any) -> Any:
    importance = param_importance(exp)
    names = sorted(importance, key=importance.get)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5), tight_layout=True)
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set(xlabel=f"importance for best {exp.metric} (|Spearman| / correlation ratio, normalised)",
           title=f"Parameter importance ({sum(1 for t in exp.trials if t.history)} trials)")
    return fig


def _plot_params(exp: Experiment, plt: Any) -> Any:
    """The best metric against each searched parameter (one panel each); marker shows how the trial ended."""
    names = exp.param_names
    cols = min(4, max(len(names), 1))
    rows = max(math.ceil(len(names) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.6 * cols, 6.5), 3.0 * rows + 0.5), squeeze=False,
                             tight_layout=True)
    markers = {"completed": "o", "asha-stopped": "v", "patience-stopped": "s"}
    space = exp.space.get("space", {})
    for ax, name in zip(axes.flat, names, strict=False):
        for t in exp.trials:
            value = t.best(exp.metric, exp.mode)[0]
            if value is None or name not in t.params:
                continue
            ax.scatter([_axis_value(t.params[name], space.get(name, {}))], [value],
                       marker=markers.get(t.end, "x"), color="tab:green" if t.end == "completed" else "tab:orange")
        kind = space.get(name, {}).get("type", "")
        if kind in ("loguniform", "qloguniform"):
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if kind == "choice":
            values = space[name].get("values", [])
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set(xlabel=name, ylabel=f"best {exp.metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Best metric per trial (o completed, v ASHA-stopped, s patience-stopped, x other)", fontsize=9)
    return fig


def _axis_value(value: Any, param: dict[str, Any]) -> float:
    if param.get("type") == "choice":
        values = [repr(v) for v in param.get("values", [])]
        return float(values.index(repr(value))) if repr(value) in values else -1.0
    return float(value)


# ------------------------------------------------------------------------------------------------------ summary
def summarize(path: str | Path, plots: bool = True) -> Experiment:
    """Read an experiment folder and (re)write ``trials.csv``, ``best.yaml``, ``best.pt`` and the plots."""
    exp = load_experiment(path)
    write_trials_csv(exp)
    write_best(exp)
    if plots:
        plot_experiment(exp)
    return exp


def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain results DIR``: the ranked table of a finished or running experiment, and fresh plots."""
    if len(positional) != 1:
        raise ConfigError("usage: raytrain results EXPERIMENT_DIR (e.g. runs/tune/quickstart)")
    exp = summarize(positional[0])
    print(format_table(exp))
    best = exp.best_trial()
    ended = _counts(t.end for t in exp.trials)
    print(f"\n{len(exp.trials)} trials ({', '.join(f'{n} {e}' for e, n in ended.items())}).")
    if best is not None:
        value, epoch = best.best(exp.metric, exp.mode)
        print(f"Best: {best.name} {exp.metric}={value:.6g} (epoch {epoch}); config {exp.path / BEST_YAML}")
    print(f"Table {exp.path / TRIALS_CSV}; plots {', '.join(str(exp.path / p) for p in PLOTS)}")
    return 0


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


__all__ = ["ENDS", "Experiment", "TrialRecord", "format_table", "load_experiment", "param_importance",
           "plot_experiment", "summarize", "write_best", "write_trials_csv"]
