"""Trackers in a real ``raytrain fit`` on Ray: ``loggers=tensorboard,mlflow`` leaves TensorBoard events in the run
folder and an MLflow run, and a run whose worker failed and restarted from its last state logs each epoch once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = dict(data="shapes", model="yolov8n", imgsz=64, fraction=0.04, workers=0, device="cpu", warmup_epochs=0.5,
            close_mosaic=0, batch=4, val=False, plots=False)


def fail_once_at_epoch_2(state):
    """A fault after epoch 2 was trained and written, before its state was reported: Ray restarts from epoch 1."""
    marker = state.save_dir / "failed"
    if state.epoch == 2 and not marker.exists():
        marker.touch()
        raise RuntimeError("injected fault")


@pytest.mark.ray
def test_fit_logs_each_epoch_once_to_tensorboard_and_mlflow(ray_local, by_value, tmp_path: Path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import raytrain

    result = raytrain.fit(**TINY, epochs=3, max_failures=1, project=str(tmp_path), name="logged",
                          loggers="tensorboard,mlflow", callbacks={"on_fit_epoch_end": fail_once_at_epoch_2})
    save_dir = result.save_dir
    assert (save_dir / "failed").exists() and result.metrics["epoch"] == 3  # it did fail once, and finished

    events = EventAccumulator(str(save_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/box_loss")] == [1, 2, 3]

    record = json.loads((save_dir / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=record["uri"])
    history = client.get_metric_history(record["mlflow_run_id"], "train/box_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "3" and run.data.params["imgsz"] == "64"
