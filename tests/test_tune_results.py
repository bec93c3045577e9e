"""Tune outputs from synthetic experiment folders: trials.csv, best.yaml/best.pt, importance, plots, ``results``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from raytrain.cli import main as cli_main
from raytrain.config import ConfigError, load_config
from raytrain.tune.results import (
    PLOTS,
    load_experiment,
    param_importance,
    read_result_json,
    summarize,
)

SPACE = {
    "metric": "fitness", "mode": "max",
    "train": {"optimizer": "SGD", "epochs": 4, "imgsz": 64, "data": "shapes"},
    "space": {"lr0": {"type": "loguniform", "low": 1e-4, "high": 0.1},
              "optimizer": {"type": "choice", "values": ["SGD", "AdamW"]},
              "mosaic": {"type": "uniform", "low": 0.0, "high": 1.0}},
}


def make_trial(exp: Path, trial_id: str, params: dict, curve: list[float], *, status: dict | None,
               partial_line: bool = False) -> None:
    """A trial folder as Tune writes it (params.json, result.json) and its fit run folder (weights/best.pt)."""
    name = f"trial_{trial_id}"
    folder = exp / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    lines = [json.dumps({"epoch": e, "fitness": v, "trial_id": trial_id, "training_iteration": e,
                         "config": params}) for e, v in enumerate(curve, 1)]
    text = "\n".join(lines) + "\n" + ('{"epoch": 9, "fitn' if partial_line else "")
    (folder / "result.json").write_text(text)
    save_dir = exp / "trials" / name
    (save_dir / "weights").mkdir(parents=True)
    (save_dir / "weights" / "best.pt").write_bytes(trial_id.encode())
    if status is not None:
        status_file = exp / "trial_status.yaml"
        data = yaml.safe_load(status_file.read_text()) if status_file.exists() else {}
        data[trial_id] = {"name": name, "params": params, "epochs": 4, "save_dir": str(save_dir), **status}
        status_file.write_text(yaml.safe_dump(data))


@pytest.fixture()
def experiment(tmp_path: Path) -> Path:
    exp = tmp_path / "runs" / "tune" / "exp"
    exp.mkdir(parents=True)
    (exp / "tune_space.yaml").write_text(yaml.safe_dump(SPACE))
    # lr0 goes with the metric (higher lr0, better), optimizer and mosaic are noise.
    make_trial(exp, "aaaa0001", {"lr0": 0.001, "optimizer": "SGD", "mosaic": 0.9}, [0.1, 0.2, 0.3, 0.35],
               status={"end": "completed"})
    make_trial(exp, "aaaa0002", {"lr0": 0.0001, "optimizer": "AdamW", "mosaic": 0.1}, [0.05],
               status={"end": "asha-stopped", "stopped_by": "asha-stopped", "stopped_at_epoch": 1})
    make_trial(exp, "aaaa0003", {"lr0": 0.01, "optimizer": "SGD", "mosaic": 0.5}, [0.3, 0.5, 0.45, 0.44],
               status={"end": "completed"})
    make_trial(exp, "aaaa0004", {"lr0": 0.003, "optimizer": "AdamW", "mosaic": 0.6}, [0.2, 0.4, 0.38],
               status={"end": "patience-stopped"})
    # The driver died before recording this one; its last line is half-written.
    make_trial(exp, "aaaa0005", {"lr0": 0.005, "optimizer": "SGD", "mosaic": 0.3}, [0.25, 0.41],
               status=None, partial_line=True)
    return exp


def test_summarize_writes_table_best_and_plots(experiment: Path):
    exp = summarize(experiment)
    rows = list(csv.DictReader((experiment / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["trial_aaaa0003", "trial_aaaa0005", "trial_aaaa0004", "trial_aaaa0001",
                                          "trial_aaaa0002"]
    first = rows[0]
    assert (first["rank"], first["end"], first["epochs_run"], first["best fitness"], first["best_epoch"],
            first["final fitness"]) == ("1", "completed", "4", "0.5", "2", "0.44")
    assert {r["trial"]: r["end"] for r in rows} == {
        "trial_aaaa0001": "completed", "trial_aaaa0002": "asha-stopped", "trial_aaaa0003": "completed",
        "trial_aaaa0004": "patience-stopped", "trial_aaaa0005": "running"}
    assert rows[1]["epochs_run"] == "2"  # the half-written line is skipped
    assert [r["stopped_at_epoch"] for r in rows] == ["", "", "", "", "1"]
    assert float(rows[0]["lr0"]) == 0.01 and rows[0]["optimizer"] == "SGD"

    cfg = load_config(experiment / "best.yaml")  # usable as `raytrain fit cfg=best.yaml`
    assert (cfg.lr0, cfg.optimizer, cfg.mosaic, cfg.imgsz, cfg.epochs) == (0.01, "SGD", 0.5, 64, 4)
    assert (experiment / "best.pt").read_bytes() == b"aaaa0003"
    assert exp.best_trial().trial_id == "aaaa0003"
    for name in PLOTS:
        assert (experiment / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_importance_follows_the_parameter_that_goes_with_the_metric(experiment: Path):
    importance = param_importance(load_experiment(experiment))
    assert sum(importance.values()) == pytest.approx(1.0)
    assert max(importance, key=importance.get) == "lr0"
    assert importance["lr0"] > 2 * importance["mosaic"]


def test_results_command_prints_the_ranked_table(experiment: Path, capsys: pytest.CaptureFixture):
    (experiment / "trials_metric.png").unlink(missing_ok=True)
    assert cli_main(["results", str(experiment)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["#", "trial", "end", "ran", "best"]
    assert lines[1].split()[:5] == ["1", "trial_aaaa0003", "completed", "4/4", "0.5"]
    assert "1 asha-stopped" in out and "1 patience-stopped" in out and "Best: trial_aaaa0003" in out
    assert (experiment / "trials_metric.png").is_file()  # redrawn


def test_not_an_experiment(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(ConfigError, match="not a raytrain tune experiment"):
        load_experiment(tmp_path)
    assert cli_main(["results", str(tmp_path)]) == 2
    assert "not a raytrain tune experiment" in capsys.readouterr().err


def test_result_json_keeps_the_last_report_of_each_epoch(tmp_path: Path):
    path = tmp_path / "result.json"
    path.write_text("\n".join(json.dumps(r) for r in [{"epoch": 1, "fitness": 0.1}, {"epoch": 2, "fitness": 0.2},
                                                      {"epoch": 2, "fitness": 0.25}, {"done": True}]))
    assert [(r["epoch"], r["fitness"]) for r in read_result_json(path)] == [(1, 0.1), (2, 0.25)]
