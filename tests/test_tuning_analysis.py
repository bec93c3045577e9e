"""Reading an experiment back, its reports and Optuna's analysis, from experiment folders built by hand.

The folders have the layout every raytrain version so far has written (``tune_space.yaml``, ``trial_status.yaml``,
Tune's ``TRIAL/params.json`` + ``result.json``, ``trials/TRIAL/weights/best.pt``), so they stand for experiments
from before Optuna's analysis too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from raytrain.cli import main as cli_main
from raytrain.config import ConfigError, load_config
from raytrain.tuning.analysis import build_study, format_importance, param_importance
from raytrain.tuning.experiment import load_experiment, read_result_json
from raytrain.tuning.plots import IMPORTANCE_PLOT, PARALLEL_PLOT, PLOTS
from raytrain.tuning.results import summarize

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
               status={"end": "asha-stopped", "stopped_by": "asha-stopped", "stopped_at_epoch": 1,
                       "stop_reason": "stopped at rung 1 (epoch 1): 0.05 < cut-off 0.2"})
    make_trial(exp, "aaaa0003", {"lr0": 0.01, "optimizer": "SGD", "mosaic": 0.5}, [0.3, 0.5, 0.45, 0.44],
               status={"end": "completed"})
    make_trial(exp, "aaaa0004", {"lr0": 0.003, "optimizer": "AdamW", "mosaic": 0.6}, [0.2, 0.4, 0.38],
               status={"end": "patience-stopped"})
    # The driver died before recording this one; its last line is half-written.
    make_trial(exp, "aaaa0005", {"lr0": 0.005, "optimizer": "SGD", "mosaic": 0.3}, [0.25, 0.41],
               status=None, partial_line=True)
    return exp


def test_summarize_writes_table_best_and_plots(experiment: Path):
    exp = summarize(experiment).experiment
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
    assert [r["stop_reason"] for r in rows] == ["", "", "", "", "stopped at rung 1 (epoch 1): 0.05 < cut-off 0.2"]
    assert float(rows[0]["lr0"]) == 0.01 and rows[0]["optimizer"] == "SGD"

    cfg = load_config(experiment / "best.yaml")  # usable as `raytrain fit cfg=best.yaml`
    assert (cfg.lr0, cfg.optimizer, cfg.mosaic, cfg.imgsz, cfg.epochs) == (0.01, "SGD", 0.5, 64, 4)
    assert (experiment / "best.pt").read_bytes() == b"aaaa0003"
    assert exp.best_trial().trial_id == "aaaa0003"
    for name in PLOTS:
        assert (experiment / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_command_prints_the_ranked_table(experiment: Path, capsys: pytest.CaptureFixture):
    (experiment / "trials_metric.png").unlink(missing_ok=True)
    assert cli_main(["results", str(experiment)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["#", "trial", "end", "ran", "best"]
    assert lines[1].split()[:5] == ["1", "trial_aaaa0003", "completed", "4/4", "0.5"]
    assert "1 asha-stopped" in out and "1 patience-stopped" in out and "Best: trial_aaaa0003" in out
    assert "Parameter importance" in out  # the importance, or the note saying why there is none
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


def png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_holds_each_trial_with_its_distributions_best_value_and_direction(experiment: Path):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    study = build_study(load_experiment(experiment))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # mode: max
    by_name = {t.user_attrs["trial"]: t for t in study.trials}
    assert {n: (t.state, t.value) for n, t in by_name.items()} == {
        "trial_aaaa0001": (TrialState.COMPLETE, 0.35), "trial_aaaa0002": (TrialState.COMPLETE, 0.05),
        "trial_aaaa0003": (TrialState.COMPLETE, 0.5), "trial_aaaa0004": (TrialState.COMPLETE, 0.4),
        "trial_aaaa0005": (TrialState.RUNNING, None)}  # ASHA-/patience-stopped count with their best value
    best = study.best_trial
    assert best.user_attrs == {"trial": "trial_aaaa0003", "trial_id": "aaaa0003", "end": "completed", "best_epoch": 2}
    assert best.params == {"lr0": 0.01, "optimizer": "SGD", "mosaic": 0.5}
    assert best.distributions == {"lr0": FloatDistribution(1e-4, 0.1, log=True),
                                  "optimizer": CategoricalDistribution(["SGD", "AdamW"]),
                                  "mosaic": FloatDistribution(0.0, 1.0)}
    assert best.intermediate_values == {1: 0.3, 2: 0.5, 3: 0.45, 4: 0.44}

    space = yaml.safe_load((experiment / "tune_space.yaml").read_text())
    (experiment / "tune_space.yaml").write_text(yaml.safe_dump({**space, "mode": "min"}))
    study = build_study(load_experiment(experiment))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.best_value == 0.05


def test_too_few_finished_trials_give_a_note_not_a_chart(experiment: Path, capsys: pytest.CaptureFixture):
    status = yaml.safe_load((experiment / "trial_status.yaml").read_text())
    status["aaaa0001"]["end"] = "error"  # 3 finished trials left (0002, 0003, 0004) for 3 parameters
    (experiment / "trial_status.yaml").write_text(yaml.safe_dump(status))
    (experiment / IMPORTANCE_PLOT).write_bytes(b"an old chart")  # e.g. drawn by an older raytrain
    (experiment / "metric_vs_params.png").write_bytes(b"an older raytrain's hand-drawn slices")
    summary = summarize(experiment)
    assert summary.importance.values is None and summary.importance.trials == 3
    assert summary.importance.note == ("Parameter importance: 3 finished trial(s); fANOVA needs at least 4 for 3 "
                                       "parameters to say anything (run more trials: num_samples=...).")
    assert not (experiment / IMPORTANCE_PLOT).exists()  # an old chart cannot mislead
    assert not (experiment / "metric_vs_params.png").exists()  # replaced by param_slices.png
    assert all(png(experiment / name) for name in PLOTS)
    assert cli_main(["results", str(experiment)]) == 0
    assert "fANOVA needs at least 4" in capsys.readouterr().out


def test_one_parameter_or_identical_metrics_give_a_note(experiment: Path):
    import optuna

    study = build_study(load_experiment(experiment))
    assert param_importance(study, ["lr0"]).note == "Parameter importance: one searched parameter, nothing to compare."
    flat = optuna.create_study(direction="maximize")
    for trial in study.trials:  # the same trials, every finished one scoring 0.25
        flat.add_trial(optuna.trial.create_trial(state=trial.state, value=0.25 if trial.value is not None else None,
                                                 params=trial.params, distributions=trial.distributions))
    assert param_importance(flat, ["lr0", "mosaic", "optimizer"]).note == \
        "Parameter importance: every finished trial has the same metric."


def test_missing_scikit_learn_gives_a_note_saying_what_to_install(experiment: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)  # import sklearn raises ImportError
    importance = param_importance(build_study(load_experiment(experiment)), ["lr0", "optimizer", "mosaic"])
    assert importance.values is None
    assert importance.note == "Parameter importance (fANOVA) needs scikit-learn: pip install scikit-learn"


def test_fanova_importance_and_all_plots(tmp_path: Path):
    """8 finished trials where the metric is a function of lr0 alone: fANOVA ranks lr0 first, every chart drawn."""
    pytest.importorskip("sklearn", reason="Optuna's fANOVA needs scikit-learn")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tune_space.yaml").write_text(yaml.safe_dump(SPACE))
    lrs = [1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 1e-2, 3e-2, 0.1]
    mosaics = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4]
    for i, (lr0, mosaic) in enumerate(zip(lrs, mosaics, strict=True)):
        score = lrs.index(lr0) / 10
        make_trial(exp, f"bbbb000{i}", {"lr0": lr0, "optimizer": ["SGD", "AdamW"][i % 2], "mosaic": mosaic},
                   [score / 2, score], status={"end": "completed"})
    summary = summarize(exp)
    importance = summary.importance
    assert importance.trials == 8 and sum(importance.values.values()) == pytest.approx(1.0)
    assert max(importance.values, key=importance.values.get) == "lr0"
    assert importance.values["lr0"] > 0.5
    assert format_importance(importance).startswith("Parameter importance (fANOVA over 8 finished trials): lr0 ")
    assert all(png(exp / name) for name in (*PLOTS, IMPORTANCE_PLOT, PARALLEL_PLOT))
    assert summarize(exp).importance == importance  # seeded: the same chart every time


def test_results_on_an_experiment_with_no_results_yet(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Right after the start: trials registered, nothing reported; the command still works."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tune_space.yaml").write_text(yaml.safe_dump(SPACE))
    (exp / "trial_status.yaml").write_text(yaml.safe_dump({"cccc0001": {"name": "trial_cccc0001", "end": "running",
                                                                         "params": {"lr0": 0.01}}}))
    assert cli_main(["results", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "trial_cccc0001  running" in out and "0 finished trial(s)" in out
    assert png(exp / "trials_metric.png") and not (exp / PARALLEL_PLOT).exists()
