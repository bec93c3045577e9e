"""MLflow read back through ``mlflow.MlflowClient`` from the local store: params, per-epoch metrics, resume, tune."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from raytrain.tracking import (
    TRACKING_FILE,
    TrackerInfo,
    finish_experiment,
    finish_stopped_run,
    open_loggers,
    start_experiment,
)

pytest.importorskip("mlflow", reason="MLflow is optional: pip install 'raytrain[mlflow]'")

MAP = "metrics/mAP50-95(B)"


def row(epoch: int, fitness: float) -> dict[str, float]:
    return {"epoch": epoch, "train/box_loss": 1.0 / epoch, MAP: fitness, "fitness": fitness}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project folder (one local store: creating MLflow's SQLite tables takes seconds) for the module."""
    return tmp_path_factory.mktemp("runs")


def steps(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(run_id, key))


def test_fit_run_params_metrics_and_resume(project: Path):
    from mlflow import MlflowClient

    info = TrackerInfo(save_dir=project / "train", name="train", run_id="fit-1", project="detect")
    config = {"epochs": 3, "lr0": 0.01, "freeze": None, "device": "cpu"}
    first = open_loggers(["mlflow"], info, config)
    first.log_epoch(row(1, 0.1), 1)
    first.log_epoch(row(2, 0.2), 2)  # logged, then the run is killed before epoch 2's checkpoint
    # Resumed from epoch 1's checkpoint: the same MLflow run continues; epoch 2 already there is not logged twice.
    second = open_loggers(["mlflow"], info, config, done_epochs=1)
    for epoch, fitness in ((1, 0.1), (2, 0.25), (3, 0.3)):
        second.log_epoch(row(epoch, fitness), epoch)
    second.log_summary({"fitness": 0.3})
    second.finish()

    record = json.loads((project / "train" / TRACKING_FILE).read_text())["mlflow"]
    assert record["uri"] == f"sqlite:///{project.resolve() / 'mlflow.db'}"  # the default local store
    client = MlflowClient(tracking_uri=record["uri"])
    runs = client.search_runs([client.get_experiment_by_name("detect").experiment_id])
    assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]]
    run = runs[0]
    assert (run.info.run_name, run.info.status) == ("train", "FINISHED")
    assert run.data.params == {"epochs": "3", "lr0": "0.01", "freeze": "None", "device": "cpu"}
    assert run.data.tags["raytrain.end"] == "completed" and run.data.tags["raytrain.epochs_run"] == "3"
    assert steps(client, run.info.run_id, "fitness") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert steps(client, run.info.run_id, "metrics/mAP50-95B") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert steps(client, run.info.run_id, "best/fitness") == [(3, 0.3)]
    assert "epoch" not in run.data.metrics


def test_tune_parent_and_child_runs(project: Path):
    from mlflow import MlflowClient

    exp = project / "tune"
    extra = start_experiment(["tensorboard", "mlflow"], experiment_dir=exp, name="tune", project="detect",
                             mlflow_uri=None, params=["lr0"])
    assert set(extra) == {"parent_run_id", "mlflow_uri"}
    # A resumed experiment continues its parent run.
    assert start_experiment(["mlflow"], experiment_dir=exp, name="tune", project="detect", mlflow_uri=None,
                            params=["lr0"]) == extra
    assert start_experiment(["wandb"], experiment_dir=exp, name="tune", project="detect", mlflow_uri=None,
                            params=["lr0"]) == {}

    def trial(n: int, lr0: float) -> TrackerInfo:
        return TrackerInfo(save_dir=exp / "trials" / f"trial_{n}", name=f"trial_{n}", run_id=f"tune-{n}",
                           project="detect", group="tune", params={"lr0": lr0}, **extra)

    done = open_loggers(["mlflow"], trial(1, 0.01), {"lr0": 0.01, "epochs": 2})
    done.log_epoch(row(1, 0.3), 1)
    done.log_epoch(row(2, 0.5), 2)
    done.finish()
    # Trial 2's worker logged epoch 1, Tune received epochs 1-2, then ASHA killed it: the driver finishes the run.
    killed = open_loggers(["mlflow"], trial(2, 0.1), {"lr0": 0.1, "epochs": 2})
    killed.log_epoch(row(1, 0.2), 1)
    received = [{**row(1, 0.2), "training_iteration": 1, "config/lr0": 0.1}, {**row(2, 0.22), "timestamp": 9}]
    finish_stopped_run(["mlflow"], trial(2, 0.1), received, "asha-stopped")
    # Trial 3 was killed before its worker opened a run.
    finish_stopped_run(["mlflow"], trial(3, 0.5), [row(1, 0.1)], "asha-stopped")
    finish_experiment(["mlflow"], experiment_dir=exp, best={"fitness": 0.5})

    client = MlflowClient(tracking_uri=extra["mlflow_uri"])
    parent = client.get_run(extra["parent_run_id"])
    assert (parent.info.run_name, parent.info.status) == ("tune", "FINISHED")
    assert parent.data.metrics["best/fitness"] == 0.5
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{extra['parent_run_id']}'")
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == ["trial_1", "trial_2", "trial_3"]
    assert [by_name[f"trial_{n}"].data.params["lr0"] for n in (1, 2, 3)] == ["0.01", "0.1", "0.5"]
    assert by_name["trial_1"].data.tags["raytrain.end"] == "completed"
    stopped = by_name["trial_2"]
    assert (stopped.info.status, stopped.data.tags["raytrain.end"]) == ("FINISHED", "asha-stopped")
    assert steps(client, stopped.info.run_id, "fitness") == [(1, 0.2), (2, 0.22)]  # epoch 1 once
    assert "training_iteration" not in stopped.data.metrics and "timestamp" not in stopped.data.metrics
    assert steps(client, by_name["trial_3"].info.run_id, "fitness") == [(1, 0.1)]


def test_no_secret_in_anything_a_tracker_writes(project: Path, monkeypatch):
    """Secrets in the environment never reach a run folder, the local store, or the picklable TrackerInfo."""
    secrets = {"WANDB_API_KEY": "w4nd" * 10, "MLFLOW_TRACKING_TOKEN": "mlfl0w" * 6,
               "MLFLOW_TRACKING_PASSWORD": "pw" * 9, "AWS_SECRET_ACCESS_KEY": "aws5" * 10}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    info = TrackerInfo(save_dir=project / "secret", name="secret", run_id="fit-secret", project="detect",
                       params={"lr0": 0.02}, wandb_mode="offline")
    names = ["wandb", "tensorboard", "mlflow"]
    loggers = open_loggers(names, info, {"lr0": 0.02, "epochs": 2})
    assert loggers.names == names
    for epoch, fitness in ((1, 0.1), (2, 0.3)):
        loggers.log_epoch(row(epoch, fitness), epoch)
    loggers.log_summary({"fitness": 0.3})
    loggers.finish()
    written = [p for p in [*project.glob("mlflow.db*"), *(project / "secret").rglob("*")] if p.is_file()]
    assert any("tfevents" in p.name for p in written) and any(p.name.endswith(".wandb") for p in written)
    with sqlite3.connect(project / "mlflow.db") as db:
        assert db.execute("select count(*) from metrics where key = 'fitness' and run_uuid = ?",
                          (json.loads((project / "secret" / TRACKING_FILE).read_text())["mlflow"]["mlflow_run_id"],)
                          ).fetchone() == (2,)
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                data = b"".join(z.read(n) for n in z.namelist())
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} written to {path}"
    assert not any(value in repr(info) for value in secrets.values())
