"""Comet and ClearML offline archives read back, and no secret in anything a tracker writes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from raytrain.tracking import TrackerInfo, finish_stopped_run, open_loggers

MAP = "metrics/mAP50-95(B)"
ROWS = [{"epoch": 1, MAP: 0.1, "fitness": 0.1}, {"epoch": 2, MAP: 0.3, "fitness": 0.3}]


def trial_info(save_dir: Path) -> TrackerInfo:
    return TrackerInfo(save_dir=save_dir, name="trial_1", run_id="tune-abc", project="detect", group="tune",
                       params={"lr0": 0.02}, wandb_mode="offline")


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No Comet or ClearML credentials or config files here, and ClearML's cache in the test's folder."""
    for name in ("COMET_API_KEY", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "home" / ".comet.config"))
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "clearml-cache"))


def test_comet_offline_archive(tmp_path, no_credentials):
    pytest.importorskip("comet_ml", reason="Comet is optional: pip install 'raytrain[comet]'")
    loggers = open_loggers(["comet"], trial_info(tmp_path / "trial_1"), {"lr0": 0.02, "epochs": 2})
    for row in ROWS:
        loggers.log_epoch(row, row["epoch"])
    loggers.finish()
    (archive,) = (tmp_path / "trial_1" / "comet").glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        experiment = json.loads(z.read("experiment.json"))
        messages = [json.loads(line) for line in z.read("messages.json").splitlines()]
    assert (experiment["project_name"], experiment["tags"]) == ("detect", ["tune"])
    params = {m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"] for m in messages
              if m["type"] == "parameter_msg" and m["payload"]["param"]["source"] == "manual"}
    assert params == {"lr0": 0.02, "epochs": 2}
    fitness = [(m["payload"]["metric"]["step"], m["payload"]["metric"]["metricValue"]) for m in messages
               if m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == "fitness"]
    assert fitness == [(1, 0.1), (2, 0.3)]


def test_clearml_offline_session_in_run_folder(tmp_path, no_credentials):
    pytest.importorskip("clearml", reason="ClearML is optional: pip install 'raytrain[clearml]'")
    # A trial Tune killed: the driver writes the epochs it received and the end into an offline session.
    finish_stopped_run(["clearml"], trial_info(tmp_path / "trial_1"), ROWS, "asha-stopped")
    (archive,) = (tmp_path / "trial_1" / "clearml").glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        task = json.loads(z.read(next(n for n in z.namelist() if n.endswith("task.json"))))
        events = [json.loads(line) for n in z.namelist() if n.endswith("metrics.jsonl")
                  for line in z.read(n).splitlines()]
    assert (task["name"], task["tags"]) == ("trial_1", ["tune"])
    assert task["hyperparams"]["params"]["lr0"]["value"] == "0.02"
    assert task["hyperparams"]["raytrain"]["end"]["value"] == "asha-stopped"
    flat = [e for batch in events for e in (batch if isinstance(batch, list) else [batch])]
    scalars = sorted((e["iter"], e["value"]) for e in flat if e.get("metric") == "fitness")
    assert scalars == [(1, 0.1), (2, 0.3)]
