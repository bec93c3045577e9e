"""The Pareto front of a hand-made set of trials: extraction, constraints, pareto.csv, pareto/, the plot, pick=."""

from __future__ import annotations

import csv

import pytest
import yaml

from raytrain.config import ConfigError
from raytrain.tuning.experiment import Experiment, TrialRecord
from raytrain.tuning.pareto import (
    PARETO_CSV,
    dominates,
    format_front,
    hypervolume_2d,
    pareto_front,
    parse_pick,
    pick,
    plot_pareto,
    plot_title,
    trial_points,
    write_pareto,
)

SPACE = {"metric": ["fitness", "latency_ms"], "mode": ["max", "min"], "constraints": {"latency_ms": {"max": 10}},
         "train": {"data": "shapes", "epochs": 3}, "space": {"model": {"type": "choice", "values": ["yolov8n",
                                                                                                  "yolov8s"]},
                                                            "lr0": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}}


def trial(name, latency, fitness_by_epoch, end="completed", error=None):
    history = [{"epoch": e, "fitness": f, "latency_ms": latency} for e, f in enumerate(fitness_by_epoch, 1)]
    if end == "infeasible":
        history = [{"epoch": 0, "fitness": 0.0, "latency_ms": latency}]
    return TrialRecord(trial_id=f"id_{name}", name=name, params={"model": "yolov8n", "lr0": 0.01}, end=end,
                       history=history, error=error, save_dir=None)


def experiment(tmp_path):
    trials = [
        trial("a", 2.0, [0.10, 0.30]),           # fast, weak: on the front
        trial("b", 5.0, [0.40, 0.35]),           # its best epoch (1) counts: 0.40 at 5 ms, on the front
        trial("c", 6.0, [0.38]),                 # slower and weaker than b: dominated
        trial("d", 9.0, [0.55], "asha-stopped"),  # stopped early, still a point: on the front
        trial("e", 12.0, [0.70]),                # most accurate but over the 10 ms bound: infeasible
        trial("f", 15.0, [], "infeasible", "latency_ms 15 > max 10"),  # ended before training
        trial("g", 4.0, [0.9], "error"),         # an error is no point
        trial("h", 5.0, [0.40]),                 # the same trade-off as b, reached twice: both stay
    ]
    return Experiment(path=tmp_path, space=SPACE, trials=trials)


def test_dominance_and_hypervolume_by_hand():
    assert dominates([0.5, 3.0], [0.4, 3.0], ["max", "min"]) and not dominates([0.5, 3.0], [0.5, 3.0], ["max", "min"])
    assert not dominates([0.5, 4.0], [0.4, 3.0], ["max", "min"])
    # Points (0.3, 2), (0.4, 5) against the reference (0, 10): 0.3 x 8 + (0.4 - 0.3) x 5 = 2.9.
    assert hypervolume_2d([[0.3, 2.0], [0.4, 5.0], [0.2, 6.0]], [0.0, 10.0], ["max", "min"]) == pytest.approx(2.9)
    assert hypervolume_2d([[0.3, 12.0]], [0.0, 10.0], ["max", "min"]) == 0.0


def test_front_of_a_hand_made_set(tmp_path):
    exp = experiment(tmp_path)
    points = trial_points(exp)
    assert {p.trial.name for p in points} == set("abcdefh")  # the error is not a point
    by_name = {p.trial.name: p for p in points}
    assert by_name["b"].values == {"fitness": 0.40, "latency_ms": 5.0} and by_name["b"].epoch == 1
    assert by_name["e"].reasons == ("latency_ms 12 > max 10",) and not by_name["e"].feasible
    assert by_name["f"].epoch == 0 and not by_name["f"].feasible
    front = pareto_front(points, exp.objectives)
    assert [p.trial.name for p in front] == ["d", "b", "h", "a"]  # best fitness first
    table = format_front(exp, front, points)
    assert table.startswith("Pareto front (4 of 7 finished trials; 2 infeasible, 1 of them ended before training)")
    assert table.splitlines()[2].split()[:3] == ["d", "0.55", "9"]


def test_reports_plot_and_pick(tmp_path):
    exp = experiment(tmp_path)
    front = write_pareto(exp)
    rows = list(csv.DictReader((tmp_path / PARETO_CSV).open()))
    assert [r["trial"] for r in rows[:4]] == ["d", "b", "h", "a"] and {r["on_front"] for r in rows[:4]} == {"1"}
    assert {r["trial"]: r["violated"] for r in rows}["f"] == "latency_ms 15 > max 10"
    best_yaml = tmp_path / "pareto" / "d" / "best.yaml"
    assert yaml.safe_load(best_yaml.read_text())["model"] == "yolov8n" and "raytrain fit cfg=" in best_yaml.read_text()
    assert len(list((tmp_path / "pareto").glob("*/best.yaml"))) == len(front) == 4
    plot = plot_pareto(exp, trial_points(exp))
    assert plot is not None and plot.stat().st_size > 1000
    assert pick(exp, "latency_ms<=8").trial.name in ("b", "h")  # 0.40 at 5 ms: the best under 8 ms
    assert pick(exp, "latency_ms<5").trial.name == "a"
    assert pick(exp, "latency_ms<1") is None
    assert pick(exp, "latency_ms<=20").trial.name == "d"  # e (0.70) breaks the experiment's own constraint
    assert parse_pick("latency_ms <= 8, fitness>0.2", ["fitness", "latency_ms"]) == [("latency_ms", "<=", 8.0),
                                                                                     ("fitness", ">", 0.2)]
    with pytest.raises(ConfigError, match="'params' is not an objective of this experiment"):
        pick(exp, "params<5e6")
    with pytest.raises(ConfigError, match="is not a bound like latency_ms<=8"):
        pick(exp, "latency_ms=8")


def test_the_plot_title_counts_the_infeasible_trials_it_cannot_draw(tmp_path):
    """A model over a size constraint ends before its latency is timed (latency_ms inf): no point to draw, but the
    title still counts it among the infeasible."""
    exp = experiment(tmp_path)
    points = trial_points(exp)
    assert plot_title(exp, points) == f"{tmp_path.name}: Pareto front (5 feasible, 2 infeasible trials)"
    exp.trials.append(trial("i", float("inf"), [], "infeasible", "params 11.1e6 > max 5e6"))
    assert "i" not in {p.trial.name for p in trial_points(exp)}
    assert plot_title(exp, trial_points(exp)) == (f"{tmp_path.name}: Pareto front (5 feasible, 3 infeasible trials; "
                                                  "1 never timed, not drawn)")
