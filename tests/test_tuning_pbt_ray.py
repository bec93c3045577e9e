"""``scheduler: pbt`` end to end on Ray (CPU, tiny images): a population of 4 exploits, records it, and the best
trial's schedule replays in ``raytrain.fit``. One test: starting trials is what costs time on a 2-core machine."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from raytrain.config import load_config
from raytrain.engine.hyper import read_schedule
from raytrain.engine.optim import lr_factor
from raytrain.tuning.experiment import STATUS_FILE, read_result_json, read_status
from raytrain.tuning.pbt import HISTORY_FILE, read_history

EPOCHS, LRF = 6, 0.5
TRAIN = {"data": "shapes", "model": "yolov8n", "imgsz": 32, "batch": 8, "workers": 0, "fraction": 0.1,
         "optimizer": "SGD", "close_mosaic": 0, "warmup_epochs": 0, "val": False, "plots": False, "device": "cpu",
         "epochs": EPOCHS, "lrf": LRF, "loggers": "none"}


def scheduled_lr(lr0: float, epoch: int) -> float:
    """pg0's learning rate in ``epoch`` (from 1) of a linear schedule without warmup."""
    return lr0 * lr_factor(epoch - 1, EPOCHS, LRF)


@pytest.mark.ray
def test_pbt_exploits_are_recorded_continue_the_sources_state_and_replay(tmp_path: Path, ray_local):
    """Box gains 0.5, 1, 2 and 12 with the (gain-scaled) train box loss as the objective: the box=12 trial is the
    worst whenever it is compared, so it exploits at epoch 2 or 4 at the latest."""
    import raytrain

    settings = {
        "name": "pbt", "project": str(tmp_path / "runs"), "train": dict(TRAIN), "scheduler": "pbt",
        "population": 4, "perturbation_interval": 2, "quantile_fraction": 0.25, "resample_probability": 0.0,
        "metric": "train/box_loss", "mode": "min", "wandb_mode": "disabled",
        "space": {"box": {"type": "uniform", "low": 0.5, "high": 12.0},
                  "lr0": {"type": "loguniform", "low": 0.002, "high": 0.05}},
        "points_to_evaluate": [{"box": b, "lr0": lr} for b, lr in ((0.5, 0.01), (1.0, 0.02), (2.0, 0.005),
                                                                    (12.0, 0.01))],
    }
    started = time.monotonic()
    result = raytrain.tune(settings)
    print(f"PBT experiment: {time.monotonic() - started:.0f} s")
    exp = result.experiment_dir

    # Every exploit is a row: a trial continued another's state after epoch 2 or 4, with values inside the space.
    rows = read_history(exp / HISTORY_FILE)
    assert rows, "no exploit recorded"
    status = read_status(exp / STATUS_FILE)
    names = {r["name"] for r in status.values()}
    for row in rows:
        assert row["trial"] != row["source"] and {row["trial"], row["source"]} <= names
        assert row["epoch"] in (2, 4) and 0.5 <= row["box_after"] <= 12.0 and 0.002 <= row["lr0_after"] <= 0.05
    assert all(r["end"] == "completed" and r["epochs_run"] == EPOCHS for r in status.values())

    # Tune's result.json keeps every epoch of every trial, exploited ones too (Tune's restart would drop the rows it
    # had not copied to storage yet).
    for result_json in exp.glob("trial_*/result.json"):
        assert [int(r["epoch"]) for r in read_result_json(result_json)] == list(range(1, EPOCHS + 1)), result_json

    # The exploited trial continued from the source's epoch (not from 1) and trained with its own new lr0 from the
    # next epoch on, at the schedule's position; its first epoch there tells trackers where it came from.
    last = rows[-1]
    trial_dir = next(exp.glob(f"{last['trial']}*/result.json"))
    reported = {int(r["epoch"]): r for r in read_result_json(trial_dir)}
    after = [reported[e] for e in range(last["epoch"] + 1, EPOCHS + 1)]
    assert [r["lr/pg0"] for r in after] == pytest.approx(
        [scheduled_lr(last["lr0_after"], e) for e in range(last["epoch"] + 1, EPOCHS + 1)])
    assert after[0]["pbt/exploit"] == 1.0 and after[0]["pbt/exploited_from"] == int(last["source"].rsplit("_")[-1])
    final = next(r for r in status.values() if r["name"] == last["trial"])["params"]
    assert final == {"box": last["box_after"], "lr0": last["lr0_after"]}

    # trials.csv shows lineage and final values; best.yaml names the best trial's schedule along its lineage.
    table = {r["trial"]: r for r in csv.DictReader((exp / "trials.csv").open())}
    assert last["source"] + "@" in table[last["trial"]]["lineage"]
    assert float(table[last["trial"]]["lr0"]) == last["lr0_after"]
    best = load_config(exp / "best.yaml")
    schedule = read_schedule(best.schedule)
    assert sorted(schedule) == list(range(1, EPOCHS + 1)) and schedule[EPOCHS]["lr0"] == best.lr0

    # raytrain fit replays it: each epoch trains at that epoch's lr0, at the schedule's position.
    fit = raytrain.fit(best, project=str(tmp_path / "fit"), name="replay")
    from raytrain.engine.results import read_results_csv

    lrs = [r["lr/pg0"] for r in read_results_csv(fit.save_dir / "results.csv")]
    assert lrs == pytest.approx([scheduled_lr(schedule[e]["lr0"], e) for e in range(1, EPOCHS + 1)], rel=1e-4)
    print(f"PBT experiment + replay: {time.monotonic() - started:.0f} s; exploits: "
          f"{[(r['trial'], r['source'], r['epoch']) for r in rows]}")


@pytest.mark.ray
def test_pbt_driver_killed_after_an_exploit_resumes_with_population_and_history(tmp_path: Path):
    """Kill ``raytrain tune`` once an exploit is recorded and Tune has saved its state; ``resume=True`` finishes the
    same population (no new trials), keeps the exploits already recorded, and every trial ends at its last epoch."""
    import signal
    import subprocess
    import sys

    import yaml

    epochs = 8
    settings = {
        "name": "pbt", "project": str(tmp_path / "runs"), "train": {**TRAIN, "epochs": epochs}, "scheduler": "pbt",
        "population": 2, "perturbation_interval": 2, "quantile_fraction": 0.5, "resample_probability": 0.0,
        "metric": "train/box_loss", "mode": "min", "wandb_mode": "disabled",
        "space": {"box": {"type": "uniform", "low": 0.5, "high": 12.0}},
        "points_to_evaluate": [{"box": 0.5}, {"box": 12.0}],  # box=12 is the worse: it exploits at epoch 2
    }
    space_file = tmp_path / "pbt.yaml"
    space_file.write_text(yaml.safe_dump(settings))
    exp = tmp_path / "runs" / "pbt"
    command = [sys.executable, "-m", "raytrain.cli", "tune", str(space_file)]
    driver = subprocess.Popen(command, stdout=(tmp_path / "first.log").open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert driver.poll() is None, "the experiment finished before it could be interrupted"
            history = read_history(exp / HISTORY_FILE) if (exp / HISTORY_FILE).is_file() else []
            saved = "".join(p.read_text() for p in exp.glob("experiment_state-*.json"))
            status = read_status(exp / STATUS_FILE) if (exp / STATUS_FILE).is_file() else {}
            if history and len(status) == 2 and all(tid in saved for tid in status) and \
                    all(int(r.get("epochs_run", 0) or 0) < epochs for r in status.values()):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no exploit within 300 s")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    recorded = read_history(exp / HISTORY_FILE)

    done = subprocess.run([*command, "resume=True"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = read_status(exp / STATUS_FILE)
    assert len(status) == 2  # the same population: no trial was added
    assert all(r["end"] == "completed" for r in status.values()), status
    for record in status.values():
        assert int(read_result_json(exp / record["name"] / "result.json")[-1]["epoch"]) == epochs
    history = read_history(exp / HISTORY_FILE)
    assert history[:len(recorded)] == recorded  # the exploits recorded before the kill are kept
