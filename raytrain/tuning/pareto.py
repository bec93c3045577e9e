"""The Pareto front of a multi-objective experiment: extraction, ``pareto.csv``, ``pareto/``, the plot, ``pick=``.

Each finished trial is one point: its objectives at its best epoch on the first objective (the epoch ``best.pt``
keeps; measured values such as ``latency_ms`` are the same at every epoch). A point is feasible when the trial did not
end ``infeasible`` and its values meet every constraint; the front is the feasible points no other feasible point
dominates (at least as good in every objective, better in one). ``pareto_front.png`` is Optuna's own
``plot_pareto_front`` of the study rebuilt from the folder, with infeasible trials drawn as such.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raytrain.config import ConfigError
from raytrain.files import atomic_write
from raytrain.keys import EPOCH
from raytrain.tuning.experiment import SPACE_FILE, Experiment, TrialRecord
from raytrain.tuning.objectives import Constraint, parse_constraints

PARETO_CSV = "pareto.csv"
PARETO_PLOT = "pareto_front.png"
PARETO_DIR = "pareto"  # one folder per front member, holding its best.yaml
PICK_YAML = "pick.yaml"
# Trials whose values are results of their settings (still-running or failed trials are not points).
POINT_ENDS = ("completed", "asha-stopped", "patience-stopped", "time-budget", "infeasible")


@dataclass(frozen=True)
class Point:
    """One trial in objective space."""

    trial: TrialRecord
    values: dict[str, float]  # objective -> value
    epoch: int | None  # the epoch the values come from (0: measured only, never trained)
    reasons: tuple[str, ...] = ()  # the constraints it breaks (empty: feasible)

    @property
    def feasible(self) -> bool:
        return not self.reasons


def constraints_of(exp: Experiment) -> list[Constraint]:
    return parse_constraints(exp.space.get("constraints") or {}, str(exp.path / SPACE_FILE))


def trial_points(exp: Experiment) -> list[Point]:
    """Every finished trial as a :class:`Point` (infeasible ones included, marked)."""
    objectives, constraints = exp.objectives, constraints_of(exp)
    first, mode = objectives[0]
    points = []
    for t in exp.trials:
        if t.end not in POINT_ENDS:
            continue
        _, epoch = t.best(first, mode)
        row = next((r for r in t.history if int(r[EPOCH]) == epoch), None) if epoch is not None else None
        if row is None or any(not _finite(row.get(k)) for k, _ in objectives):
            continue
        values = {k: float(row[k]) for k, _ in objectives}
        checked = {**{c.key: row[c.key] for c in constraints if _finite(row.get(c.key))}, **values}
        reasons = [r for c in constraints if c.key in checked for r in [c.reason(float(checked[c.key]))] if r]
        if t.end == "infeasible" and not reasons:
            reasons = [t.error or "infeasible"]
        points.append(Point(t, values, epoch, tuple(reasons)))
    return points


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = [(x > y) if m == "max" else (x < y) for x, y, m in zip(a, b, modes, strict=True)]
    worse = [(x < y) if m == "max" else (x > y) for x, y, m in zip(a, b, modes, strict=True)]
    return any(better) and not any(worse)


def pareto_front(points: Sequence[Point], objectives: Sequence[tuple[str, str]]) -> list[Point]:
    """The feasible points no other feasible point dominates, best first on the first objective. Points with equal
    values all stay (they are the same trade-off reached twice)."""
    names, modes = [k for k, _ in objectives], [m for _, m in objectives]
    feasible = [p for p in points if p.feasible]
    vectors = [[p.values[k] for k in names] for p in feasible]
    front = [p for p, v in zip(feasible, vectors, strict=True)
             if not any(dominates(w, v, modes) for w in vectors if w is not v)]
    sign = -1.0 if modes[0] == "max" else 1.0
    return sorted(front, key=lambda p: (sign * p.values[names[0]], p.trial.name))


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float], modes: Sequence[str]) -> float:
    """The area dominated by ``points`` (two objectives) and bounded by ``reference`` (a point worse than all of
    them in both objectives); points not better than the reference in both are ignored."""
    if len(modes) != 2:
        raise ValueError("hypervolume_2d takes two objectives")
    # Both to minimisation; sweep by the first: each point below the lowest second value so far adds the strip
    # [x, ref_x] x [y, lowest so far] (the union of the boxes each point dominates, as a staircase).
    flip = [(-1.0 if m == "max" else 1.0) for m in modes]
    ref = [r * f for r, f in zip(reference, flip, strict=True)]
    pts = sorted((p[0] * flip[0], p[1] * flip[1]) for p in points)
    area, lowest = 0.0, ref[1]
    for x, y in pts:
        if x < ref[0] and y < lowest:
            area += (ref[0] - x) * (lowest - y)
            lowest = y
    return area


# ------------------------------------------------------------------------------------------------------ reports
def write_pareto(exp: Experiment) -> list[Point]:
    """``pareto.csv`` (every finished trial: objectives, feasible, on the front, parameters) and ``pareto/<trial>/
    best.yaml`` for each front member (``raytrain fit cfg=...`` trains it again); returns the front."""
    points = trial_points(exp)
    front = pareto_front(points, exp.objectives)
    on_front = {p.trial.trial_id for p in front}
    names = [k for k, _ in exp.objectives]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["trial", "on_front", "feasible", "end", "epoch", *names, *exp.param_names, "violated",
                     "save_dir"])
    ordered = front + [p for p in points if p.trial.trial_id not in on_front]
    for p in ordered:
        writer.writerow([p.trial.name, int(p.trial.trial_id in on_front), int(p.feasible), p.trial.end, p.epoch,
                         *(f"{p.values[k]:.6g}" for k in names), *(_blank(p.trial.params.get(k)) for k in
                                                                  exp.param_names),
                         "; ".join(p.reasons), _blank(p.trial.save_dir)])
    atomic_write(exp.path / PARETO_CSV, text.getvalue())
    folder = exp.path / PARETO_DIR
    for old in folder.glob("*/best.yaml") if folder.is_dir() else ():
        if old.parent.name not in {p.trial.name for p in front}:  # no longer on the front
            old.unlink()
    for p in front:
        write_trial_yaml(exp, p, folder / p.trial.name / "best.yaml", "on the Pareto front")
    return front


def write_trial_yaml(exp: Experiment, point: Point, path: Path, why: str) -> Path:
    """The trial's full training config as ``raytrain fit cfg=`` YAML, with a header saying what it is."""
    from raytrain.config import make_config

    cfg = make_config(dict(exp.space.get("train", {})),
                      {k: v for k, v in point.trial.params.items() if k in exp.param_names})
    values = ", ".join(f"{k}={v:.4g}" for k, v in point.values.items())
    weights = Path(point.trial.save_dir) / "weights" / "best.pt" if point.trial.save_dir else None
    header = (f"# Trial {point.trial.name} ({point.trial.trial_id}) of {exp.path}, {why}: {values} "
              f"(epoch {point.epoch}, {point.trial.end}).\n# Its weights: {weights}\n"
              f"# Train it again with: raytrain fit cfg={path}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _blank(value: Any) -> Any:
    return "" if value is None else value


def format_front(exp: Experiment, front: Sequence[Point], points: Sequence[Point]) -> str:
    """The front as an aligned table (trial, objectives, parameters), with a count of infeasible trials."""
    names, params = [k for k, _ in exp.objectives], exp.param_names
    rows = [["trial", *(f"{k} ({m})" for k, m in exp.objectives), "epoch", *params]]
    for p in front:
        rows.append([p.trial.name, *(f"{p.values[k]:.4g}" for k in names), str(p.epoch),
                     *(_short(p.trial.params.get(k)) for k in params)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    # Trials that ended on a size constraint were never timed: they are no point, but they count here.
    finished = sum(t.end in POINT_ENDS for t in exp.trials)
    ended = sum(t.end == "infeasible" for t in exp.trials)
    infeasible = ended + sum(not p.feasible and p.trial.end != "infeasible" for p in points)
    return (f"Pareto front ({len(front)} of {finished} finished trials; {infeasible} infeasible, {ended} of them "
            f"ended before training):\n{table}")


def _short(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------------------- plot
def plot_title(exp: Experiment, points: Sequence[Point]) -> str:
    """The plot's title: the trials it draws by feasibility, and the infeasible ones it cannot draw (ended on a size
    constraint before their latency was timed: no point)."""
    drawn = {p.trial.name for p in points}
    untimed = sum(t.end == "infeasible" and t.name not in drawn for t in exp.trials)
    counts = (f"{sum(p.feasible for p in points)} feasible, {sum(not p.feasible for p in points) + untimed} "
              f"infeasible trials" + (f"; {untimed} never timed, not drawn" if untimed else ""))
    return f"{exp.path.name}: Pareto front ({counts})"


def plot_pareto(exp: Experiment, points: Sequence[Point]) -> Path | None:
    """``pareto_front.png``: Optuna's ``plot_pareto_front`` (2 or 3 objectives) of the finished trials, infeasible
    ones drawn as infeasible (from each trial's constraints); None (and no file) otherwise."""
    from raytrain.tuning.analysis import quiet_optuna

    path = exp.path / PARETO_PLOT
    if not 2 <= len(exp.objectives) <= 3 or not points:
        path.unlink(missing_ok=True)
        return None
    with quiet_optuna() as optuna:
        study = optuna.create_study(directions=["maximize" if m == "max" else "minimize" for _, m in exp.objectives],
                                    study_name=exp.path.name)
        for p in points:
            trial = optuna.trial.create_trial(values=[p.values[k] for k, _ in exp.objectives],
                                              user_attrs={"trial": p.trial.name})
            trial.set_constraint("violated", float(len(p.reasons)))  # > 0: Optuna draws it as infeasible
            study.add_trial(trial)
        ax = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=[k for k, _ in exp.objectives])
        fig = ax.figure
        ax.set_title("")  # Optuna's centred title, replaced by one that counts the trials
        ax.set_title(plot_title(exp, points), loc="left")
        if len(exp.objectives) == 2:  # name the front's trials
            for p in pareto_front(points, exp.objectives):
                ax.annotate(p.trial.name.removeprefix("trial_"), [p.values[k] for k, _ in exp.objectives],
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------- pick
_BOUND = re.compile(r"^\s*([\w/().\-]+?)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


def parse_pick(text: str, objectives: Sequence[str]) -> list[tuple[str, str, float]]:
    """``"latency_ms<=8, params<5e6"`` -> [(key, op, value)]; a key must be one of the experiment's objectives."""
    bounds = []
    for part in [p for p in str(text).split(",") if p.strip()]:
        match = _BOUND.match(part)
        if not match:
            raise ConfigError(f"pick={text!r}: {part.strip()!r} is not a bound like latency_ms<=8 (use <=, <, >=, >).")
        key, op, number = match.groups()
        if key not in objectives:
            raise ConfigError(f"pick={text!r}: {key!r} is not an objective of this experiment "
                              f"({', '.join(objectives)}).")
        try:
            bounds.append((key, op, float(number)))
        except ValueError:
            raise ConfigError(f"pick={text!r}: {number!r} is not a number.") from None
    if not bounds:
        raise ConfigError(f"pick={text!r}: give at least one bound, e.g. pick=\"latency_ms<=8\".")
    return bounds


def pick(exp: Experiment, text: str) -> Point | None:
    """The best feasible trial on the first objective among those within the ``pick=`` bounds (None: none is)."""
    bounds = parse_pick(text, [k for k, _ in exp.objectives])
    ops = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}
    inside = [p for p in trial_points(exp) if p.feasible and all(ops[op](p.values[k], v) for k, op, v in bounds)]
    first, mode = exp.objectives[0]
    if not inside:
        return None
    return (max if mode == "max" else min)(inside, key=lambda p: p.values[first])


__all__ = ["PARETO_CSV", "PARETO_DIR", "PARETO_PLOT", "PICK_YAML", "Point", "dominates", "format_front",
           "hypervolume_2d", "parse_pick", "pareto_front", "pick", "plot_pareto", "plot_title", "trial_points",
           "write_pareto", "write_trial_yaml"]
