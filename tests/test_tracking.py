"""The tracker interface (check_loggers, open_loggers, Loggers); W&B and TensorBoard read back by their readers."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from raytrain.config import ConfigError
from raytrain.tracking import (
    LOGGER_NAMES,
    TOOLS,
    Loggers,
    TrackerInfo,
    check_loggers,
    finish_stopped_run,
    has_wandb_credentials,
    open_loggers,
    resolve_wandb_mode,
)

MAP = "metrics/mAP50-95(B)"


def rows(*fitness: float) -> list[dict[str, float]]:
    """Epoch rows as the loop reports them: epoch i+1 has fitness[i], box loss 1/(i+1)."""
    return [{"epoch": i + 1, "train/box_loss": 1 / (i + 1), MAP: f, "fitness": f, "time": 2.0 * (i + 1)}
            for i, f in enumerate(fitness)]


# ------------------------------------------------------------------------------------------ the interface
def test_names_and_import_is_free():
    assert tuple(TOOLS) == LOGGER_NAMES == ("wandb", "tensorboard", "mlflow", "comet", "clearml")
    code = ("import sys, raytrain.tracking; "
            "print([m for m in ('wandb', 'tensorboardX', 'mlflow', 'comet_ml', 'clearml') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_check_loggers_refuses_unknown_and_missing(monkeypatch):
    check_loggers(["tensorboard", "wandb"])
    check_loggers([])
    with pytest.raises(ConfigError, match="Did you mean mlflow"):
        check_loggers(["mlfow"])
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the package were not installed
    with pytest.raises(ConfigError) as error:
        check_loggers(["tensorboard", "mlflow"])
    assert str(error.value) == "loggers=mlflow needs the mlflow package: pip install 'raytrain[mlflow]'"


class Recorder:
    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def _call(self, *call) -> None:
        self.calls.append(call)
        if call[0] == self.fail_on:
            raise RuntimeError("server gone")

    def log_epoch(self, row, epoch):
        self._call("epoch", epoch)

    def log_summary(self, metrics):
        self._call("summary", dict(metrics))

    def finish(self, end):
        self._call("finish", end)


def test_loggers_fan_out_skip_done_epochs_and_drop_a_failing_tool(caplog):
    good, bad = Recorder(), Recorder(fail_on="epoch")
    loggers = Loggers({"good": good, "bad": bad}, done_epochs=2)
    with caplog.at_level(logging.WARNING, logger="raytrain"):
        for row in rows(0.1, 0.2, 0.3, 0.4):
            loggers.log_epoch(row, row["epoch"])
        loggers.log_summary({"fitness": 0.4})
        loggers.finish("completed")
    # epochs 1-2 were logged by the earlier attempt; bad fails at epoch 3, is closed once and dropped.
    assert good.calls == [("epoch", 3), ("epoch", 4), ("summary", {"fitness": 0.4}), ("finish", "completed")]
    assert bad.calls == [("epoch", 3), ("finish", "error")]
    assert [r.getMessage() for r in caplog.records] == [
        "bad: log_epoch failed (RuntimeError: server gone); continuing without bad."]


def test_open_loggers_drops_a_tool_that_cannot_start(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    info = TrackerInfo(save_dir=tmp_path, name="train", run_id="r1", project="detect")
    with caplog.at_level(logging.WARNING, logger="raytrain"):
        loggers = open_loggers(["tensorboard"], info, {})
    assert loggers.names == [] and "tensorboard: could not start" in caplog.text
    loggers.log_epoch(rows(0.5)[0], 1)  # nothing left: a no-op, not an error
    loggers.finish()


# ------------------------------------------------------------------------------------------------------ W&B
def test_wandb_mode(tmp_path):
    no_netrc = tmp_path / "none"
    assert not has_wandb_credentials({}, no_netrc)
    assert resolve_wandb_mode("", {}, no_netrc) == "offline"
    assert resolve_wandb_mode("online", {}, no_netrc) == "offline"  # never a login prompt
    assert resolve_wandb_mode("", {"WANDB_API_KEY": "x" * 40}, no_netrc) == "online"
    assert resolve_wandb_mode("", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, no_netrc) == "disabled"
    assert resolve_wandb_mode("offline", {"WANDB_API_KEY": "k"}, no_netrc) == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    assert has_wandb_credentials({}, netrc) and resolve_wandb_mode("", {}, netrc) == "online"


def test_wandb_offline_run_in_run_folder_without_key(tmp_path, monkeypatch):
    from raytrain.tracking import WandbRun

    key = "k3y" * 13 + "x"  # 40 characters, like a real API key
    monkeypatch.setenv("WANDB_API_KEY", key)
    run = WandbRun(mode="offline", project="detect", name="train", save_dir=tmp_path, config={"epochs": 3},
                   group="exp", run_id="raytrain-test-1")
    run.log({"metrics/mAP50(B)": 0.5}, step=1)
    run.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*-raytrain-test-1"))
    assert len(runs) == 1
    for path in (tmp_path / "wandb").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"API key written to {path}"
    WandbRun(mode="disabled", project="p", name="n", save_dir=tmp_path / "off", config={}).log({"a": 1.0}, 1)
    assert not (tmp_path / "off").exists()


def test_wandb_disabled_opens_nothing(tmp_path):
    info = TrackerInfo(save_dir=tmp_path / "run", name="train", run_id="r", project="p", wandb_mode="disabled")
    loggers = open_loggers(["wandb"], info, {"epochs": 1})
    loggers.log_epoch(rows(0.1)[0], 1)
    loggers.finish()
    assert loggers.names == [] and not (tmp_path / "run").exists()
    finish_stopped_run(["wandb"], info, rows(0.1), "asha-stopped")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- TensorBoard
def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_fit_run_and_resume_logs_each_epoch_once(tmp_path):
    pytest.importorskip("tensorboard")
    info = TrackerInfo(save_dir=tmp_path / "train", name="train", run_id="r1", project="detect")
    first = open_loggers(["tensorboard"], info, {"epochs": 3, "lr0": 0.01})
    for row in rows(0.1, 0.2):
        first.log_epoch(row, row["epoch"])
    # The worker dies after logging epoch 2 but before its checkpoint: the restart continues after epoch 1.
    # (tensorboardX writes events from a background thread: let the dying writer's reach its file, as they would
    # have by the time a restarted worker logs again.)
    first.trackers["tensorboard"].writer.close()
    second = open_loggers(["tensorboard"], info, {"epochs": 3, "lr0": 0.01}, done_epochs=1)
    for row in rows(0.1, 0.25, 0.3):
        second.log_epoch(row, row["epoch"])
    second.log_summary({"fitness": 0.3})
    second.finish()
    scalars = event_scalars(tmp_path / "train" / "tensorboard")
    assert scalars["fitness"] == [(1, 0.1), (2, 0.25), (3, 0.3)]  # the restart's epoch 2, once
    assert scalars["train/box_loss"] == [(1, 1.0), (2, 0.5), (3, round(1 / 3, 6))]
    assert scalars["best/fitness"] == [(3, 0.3)]
    assert "epoch" not in scalars


def test_tensorboard_trial_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = TrackerInfo(save_dir=tmp_path / "trial_1", name="trial_1", run_id="tune-1", project="detect",
                       group="tune", params={"lr0": 0.02, "optimizer": "AdamW"})
    loggers = open_loggers(["tensorboard"], info, {"lr0": 0.02, "optimizer": "AdamW"})
    loggers.log_epoch(rows(0.4)[0], 1)
    loggers.finish()
    acc = EventAccumulator(str(tmp_path / "trial_1" / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert (hp["lr0"].number_value, hp["optimizer"].string_value) == (0.02, "AdamW")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"fitness", "metrics/mAP50-95B", "metrics/mAP50B"}
    assert ("fitness" in acc.Tags()["scalars"]) and pickle.loads(pickle.dumps(info)) == info
