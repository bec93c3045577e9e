"""Trials that train in their own Tune process (one worker per trial): a killed trial process resumes from its last
checkpoint, a trial whose file broke after the driver's check ends as ``error`` once while the others finish, a
trial folder is an ordinary run folder that ``raytrain fit resume=`` continues, and trial processes are reused."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from raytrain.tuning.experiment import STATUS_FILE, read_status

TRAIN = {"data": "shapes", "model": "yolov8n", "imgsz": 64, "batch": 8, "workers": 0, "fraction": 0.1,
         "optimizer": "SGD", "close_mosaic": 0, "warmup_epochs": 0, "val": False, "plots": False, "device": "cpu",
         "epochs": 4, "max_failures": 2}


def _sabotage(exp: Path, weights: Path, done: threading.Event, log: list[str]) -> None:
    """Kill the first trial's process once it has trained 2 epochs; then break the file the second trial loads."""
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and not done.is_set():
        status = read_status(exp / STATUS_FILE) if (exp / STATUS_FILE).is_file() else {}
        for record in status.values():
            folder = Path(record["save_dir"])
            if not killed and record.get("params", {}).get("pretrained") is True and \
                    len(list((exp / record["name"]).glob("checkpoint_*/state.pt"))) >= 2 and \
                    (folder / "startup.json").is_file():
                pid = json.loads((folder / "startup.json").read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                weights.write_bytes(weights.read_bytes()[:50_000])  # the disk filled up since the driver's check
                log.append(f"killed {pid}")
                killed = True
        if killed:
            return
        time.sleep(0.2)


@pytest.mark.ray
def test_killed_trial_resumes_and_a_broken_file_errors_once(tmp_path: Path, ray_local, caplog):
    import raytrain
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    weights = save_checkpoint(tmp_path / "w.pt", make_checkpoint(build_model("yolov8n", nc=6),
                                                                 [str(i) for i in range(6)]))
    settings = {"name": "t", "project": str(tmp_path / "runs"), "train": dict(TRAIN), "num_samples": 3,
                "space": {"pretrained": {"type": "choice", "values": [True, str(weights)]},
                          "box": {"type": "uniform", "low": 1.0, "high": 10.0}},
                "points_to_evaluate": [{"pretrained": True, "box": 7.5}, {"pretrained": str(weights), "box": 5.0},
                                       {"pretrained": True, "box": 3.0}],
                "metric": "train/box_loss", "mode": "min", "scheduler": "none", "max_concurrent_trials": 1,
                "wandb_mode": "disabled"}
    exp = tmp_path / "runs" / "t"
    done, log = threading.Event(), []
    saboteur = threading.Thread(target=_sabotage, args=(exp, weights, done, log), daemon=True)
    saboteur.start()
    try:
        result = raytrain.tune(settings)
    finally:
        done.set()
        saboteur.join()
    assert log, "the first trial was never killed"
    status = read_status(exp / STATUS_FILE)
    by_box = {r["params"]["box"]: r for r in status.values()}
    killed, broken, plain = by_box[7.5], by_box[5.0], by_box[3.0]
    # The killed trial came back from its last checkpoint: every epoch once, and its state was restored.
    assert (killed["end"], killed.get("retries")) == ("completed", 1)
    rows = (Path(killed["save_dir"]) / "results.csv").read_text().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2, 3, 4]
    # The broken file: one attempt, its one-line reason in the status and trials.csv, no retry.
    assert broken["end"] == "error" and "is a damaged raytrain checkpoint" in broken["error"]
    assert "retries" not in broken and not (Path(broken["save_dir"]) / "results.csv").exists()
    assert "is a damaged raytrain checkpoint" in (exp / "trials.csv").read_text()
    assert plain["end"] == "completed"
    assert {row["end"] for row in result.trials} == {"completed", "error"}
    # After the kill, one new process served the retried trial, the broken one and the last (Tune reused it).
    pids = {json.loads((Path(r["save_dir"]) / "startup.json").read_text())["pid"] for r in (killed, plain)}
    assert len(pids) == 1 and f"killed {pids.pop()}" not in log

    # The trial folder is an ordinary run folder: raytrain fit resume= continues it (two more epochs), from the
    # trial's last full state (optimizer included), not just its weights.
    with caplog.at_level("INFO", logger="raytrain"):
        result = raytrain.fit(resume=str(Path(plain["save_dir"]) / "weights" / "last.pt"), epochs=6)
    assert f"comes from {exp / plain['name']}/checkpoint_" in caplog.text  # the trial's last Tune checkpoint
    rows = (Path(plain["save_dir"]) / "results.csv").read_text().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2, 3, 4, 5, 6] and result.metrics["epoch"] == 6
