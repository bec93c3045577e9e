"""Tuning for deployment end to end on Ray: accuracy vs measured latency with a size constraint. The model that
breaks the constraint ends before training as ``infeasible`` (its reason in trials.csv); latency is measured once per
kind and reused; the Pareto reports are written; the study on disk reads back with Optuna; pick= picks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tuning_helpers import TRAIN


@pytest.mark.ray
def test_deploy_search_ends_infeasible_trials_before_training(tmp_path: Path, ray_local, capsys):
    import optuna

    import raytrain
    from raytrain.commands.results import main as results_main
    from raytrain.tuning.measure import MEASURED_FILE
    from raytrain.tuning.search import STUDY_FILE, study_storage

    points = [{"model": "yolov8n", "box": 7.5}, {"model": "yolov8s", "box": 7.5}, {"model": "yolov8n", "box": 3.0}]
    result = raytrain.tune({
        "name": "deploy", "project": str(tmp_path / "runs"), "wandb_mode": "disabled", "max_concurrent_trials": 1,
        "train": {**TRAIN, "val": True, "epochs": 1, "loggers": "none"},
        "space": {"model": {"type": "choice", "values": ["yolov8n", "yolov8s"]},
                  "box": {"type": "uniform", "low": 1.0, "high": 10.0}},
        "metric": ["fitness", "latency_ms"], "mode": ["max", "min"], "constraints": {"params": {"max": 5.0e6}},
        "sampler": "nsga2", "num_samples": 3, "points_to_evaluate": points, "scheduler": "none"})
    exp = result.experiment_dir
    rows = {r["trial"]: r for r in csv.DictReader((exp / "trials.csv").open())}
    ends = sorted(r["end"] for r in rows.values())
    assert ends == ["completed", "completed", "infeasible"], rows
    bad = next(r for r in rows.values() if r["end"] == "infeasible")
    assert bad["model"] == "yolov8s" and bad["epochs_run"] == "0"
    assert bad["error"].startswith("params 1.1") and bad["error"].endswith("> max 5e+06")  # 11.1 M parameters
    # yolov8n measured once, reused by the third trial; yolov8s measured (to know it is infeasible), not trained.
    measured = json.loads((exp / MEASURED_FILE).read_text())
    assert sorted(v["arch"] for v in measured.values()) == ["yolov8n", "yolov8s"]
    assert not (Path(bad["save_dir"]) / "weights").exists()
    # The Pareto reports and the plot.
    front = list(csv.DictReader((exp / "pareto.csv").open()))
    assert {r["model"] for r in front if r["on_front"] == "1"} == {"yolov8n"}
    assert (exp / "pareto_front.png").stat().st_size > 1000
    assert list((exp / "pareto").glob("*/best.yaml"))
    # The study on disk: both directions, 3 trials, the infeasible one marked by its constraint.
    study = optuna.load_study(study_name="deploy", storage=study_storage(exp))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    infeasible = [t for t in study.trials if t.constraints.get("params", 0) > 0]
    assert len(infeasible) == 1 and infeasible[0].params["model"] == "yolov8s"
    assert infeasible[0].user_attrs["infeasible"].startswith("params")
    assert (exp / STUDY_FILE).is_file()
    # raytrain results prints the front and picks within a bound.
    latency = max(float(r["latency_ms"]) for r in front)
    capsys.readouterr()
    assert results_main([str(exp)], {"pick": f"latency_ms<={latency * 2:g}"}) == 0
    out = capsys.readouterr().out
    assert "Pareto front (" in out and "Picked trial_" in out and "raytrain fit cfg=" in out
    assert (exp / "pick.yaml").is_file()
