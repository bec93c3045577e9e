"""``raytrain tune`` end to end on CPU, plus the orchestration pieces (capacity, sampler, folders) without Ray.

The Ray tests are few and each checks several things: a trial costs 20-35 s to start on a 2-core machine.
"""

from __future__ import annotations

import csv
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tuning_helpers import TRAIN, space

from raytrain.cluster.storage import join_storage
from raytrain.config import ConfigError, load_config
from raytrain.train.plan import trial_run_id as wandb_id
from raytrain.tuning.experiment import STATUS_FILE, load_experiment, read_result_json, read_status
from raytrain.tuning.orchestrate import concurrency_cap, experiment_dir, make_sampler
from raytrain.tuning.plots import PLOTS
from raytrain.tuning.space import load_space
from raytrain.tuning.trial import trial_overrides


# ------------------------------------------------------------------------------------------ driver-side, no Ray
def test_concurrency_cap_counts_train_workers(tmp_path: Path):
    cpu = load_space(space(tmp_path, max_concurrent_trials=None, resources={"workers": 2, "cpus_per_worker": 2}))
    assert concurrency_cap(cpu, {"CPU": 16}) == 4  # 4 CPUs per trial; the trial function itself takes none
    assert concurrency_cap(load_space(space(tmp_path, max_concurrent_trials=None)), {"CPU": 2}) == 2  # a laptop
    gpu = load_space(space(tmp_path, max_concurrent_trials=None, resources={"workers": 2, "gpu": True}))
    assert concurrency_cap(gpu, {"CPU": 64, "GPU": 8}) == 4  # by GPUs
    assert concurrency_cap(load_space(space(tmp_path, max_concurrent_trials=2)), {"CPU": 16}) == 2
    with pytest.raises(ConfigError, match="one trial needs 4 CPU"):
        concurrency_cap(cpu, {"CPU": 2})


def test_tpe_samples_at_random_for_n_startup_trials_then_models(tmp_path: Path):
    import optuna

    def suggestions(sampler, n: int) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        out = []
        for i in range(n):
            trial = study.ask()
            out.append(trial.suggest_float("x", 0.0, 1.0))
            study.tell(trial, (out[-1] - 0.3) ** 2 + 0.01 * i)
        return out

    spec = load_space(space(tmp_path, n_startup_trials=3, search_seed=5))
    tpe, random = suggestions(make_sampler(spec), 6), suggestions(optuna.samplers.RandomSampler(seed=5), 6)
    assert tpe[:3] == random[:3] and tpe[3:] != random[3:]  # random start-up, then the model
    assert isinstance(make_sampler(load_space(space(tmp_path, sampler="random"))), optuna.samplers.RandomSampler)


def test_storage_joins_keep_a_uri_query_at_the_end(tmp_path: Path):
    assert join_storage(str(tmp_path), "exp", "_train") == str(tmp_path / "exp" / "_train")
    assert join_storage("s3://bucket/runs/", "exp", "_train") == "s3://bucket/runs/exp/_train"
    minio = "s3://bucket/runs?endpoint_override=localhost:9000&scheme=http"  # a self-hosted S3 (MinIO)
    assert join_storage(minio, "exp") == "s3://bucket/runs/exp?endpoint_override=localhost:9000&scheme=http"


def test_names_and_folders(tmp_path: Path):
    assert wandb_id("tune2", "a1b2c3d4") == "tune2-a1b2c3d4" == wandb_id("tune2", "a1b2c3d4")
    spec = load_space(space(tmp_path))
    first = experiment_dir(spec)
    assert first == (tmp_path / "runs" / "t").resolve()
    first.mkdir(parents=True)
    assert experiment_dir(spec).name == "t2"  # fresh names unless exist_ok / resume
    assert experiment_dir(load_space(space(tmp_path), {"exist_ok": True})) == first
    with pytest.raises(ConfigError, match="no tune experiment to resume"):
        experiment_dir(load_space(space(tmp_path), {"resume": True}))
    (first / "tune_space.yaml").write_text("{}")
    assert experiment_dir(load_space(space(tmp_path), {"resume": True})) == first
    job = SimpleNamespace(experiment_dir=str(first), wandb_project="p", wandb_mode="disabled", workers=1)
    overrides = trial_overrides(job, "trial_00002")
    assert (overrides["project"], overrides["name"]) == (str(first / "trials"), "trial_00002")
    assert overrides["num_workers"] == 1
    assert overrides["patience"] > 10**5 and overrides["resume"] is False  # tune's stopper owns patience


# ---------------------------------------------------------------------------------------------------- on Ray
def test_tune_exits_1_when_trials_ended_in_error(tmp_path: Path, monkeypatch, capsys):
    """A search where trials failed (each one's reason is in trials.csv) is a failed command, not exit 0, and its
    last line says how many and the first reason."""
    from raytrain.commands import tune as command
    from raytrain.tuning import api

    ends = []
    monkeypatch.setattr(api, "tune", lambda space, **kwargs: api.TuneResult(
        experiment_dir=tmp_path, best_config=None, best_metric=None, metric="fitness", mode="max",
        trials=[{"trial": f"trial_{i}", "end": end, "error": "freeze=23 ..." if end == "error" else ""}
                for i, end in enumerate(ends)]))
    monkeypatch.setattr(command, "_print_summary", lambda result: 0)
    ends[:] = ["error", "error"]
    assert command.main(["space.yaml"], {}) == 1
    err = capsys.readouterr().err
    assert f"Every trial ended in error (first: freeze=23 ...); each one's reason is in the error column of " \
           f"{tmp_path}" in err
    ends[:] = ["error", "completed"]
    assert command.main(["space.yaml"], {}) == 1
    assert "1 of 2 trials ended in error (first: freeze=23 ...)" in capsys.readouterr().err.splitlines()[-1]
    ends[:] = ["completed", "stopped"]
    assert command.main(["space.yaml"], {}) == 0


@pytest.fixture(scope="module")
def ray_tune(request: pytest.FixtureRequest):
    """The shared local Ray, started the way ``raytrain tune`` starts it (dashboard pinned for the PG cleaner)."""
    return request.getfixturevalue("ray_local")  # started with tune's dashboard pin and fit's address pin


@pytest.mark.ray
def test_trials_are_told_the_driver_node(tmp_path: Path, ray_tune):
    """Every trial learns the driver's node (to stage its run files for it when it trains elsewhere); no trial is
    tied to a node: a multi-worker trial's process reserves only its token."""
    from raytrain.tuning.orchestrate import build_job

    node = ray_tune.get_runtime_context().get_node_id()
    whole = load_space(space(tmp_path, resources={"workers": 2}))
    job = build_job(whole, tmp_path / "exp", str(tmp_path), whole.base_config, {"CPU": 4})
    assert job.resources == {"CPU": 0, "memory": 2**20} and job.driver_node == node
    one = load_space(space(tmp_path))
    job = build_job(one, tmp_path / "exp", str(tmp_path), one.base_config, {"CPU": 4})
    assert job.resources == {"CPU": 1.0} and job.driver_node == node


def offline_wandb_runs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))


def wandb_run_records(run_dir: Path) -> list:
    """The run records (id, group, name) in an offline W&B run's transaction log (LevelDB log format)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("*.wandb")).read_bytes()
    block, pos, chunks, runs = 32768, 7, b"", []  # 7: the W&B file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4) and chunks:  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            if record.WhichOneof("record_type") == "run":
                runs.append(record.run)
            chunks = b""
    return runs


@pytest.mark.ray
def test_tiny_experiment_asha_outputs_wandb(tmp_path: Path, ray_tune, capsys: pytest.CaptureFixture):
    """3 sequential trials; box gains 0.5, 12, 3: at epoch 1 the box losses (after gains) rank trial 1, 3, 2."""
    import raytrain

    settings = space(
        tmp_path, num_samples=3, grace_period=1, reduction_factor=2, wandb_mode="offline",
        space={"box": {"type": "uniform", "low": 0.5, "high": 12.0}, "epochs": [2, 3]},
        points_to_evaluate=[{"box": 0.5, "epochs": 3}, {"box": 12.0, "epochs": 3}, {"box": 3.0, "epochs": 2}])
    started = time.monotonic()
    result = raytrain.tune(settings)
    print(f"tiny experiment: {time.monotonic() - started:.0f} s")
    exp = result.experiment_dir
    by_box = {row["box"]: row for row in result.trials}
    assert (by_box[0.5]["end"], by_box[0.5]["epochs_run"]) == ("completed", 3)
    # ASHA stops it at epoch 1 (stopped_at_epoch, below). Tune's stop is asynchronous: with ~1 s epochs the worker
    # may train further before the kill lands, and epochs_run (from the run's results.csv) counts what it trained.
    assert by_box[12.0]["end"] == "asha-stopped" and by_box[12.0]["epochs_run"] >= 1
    # Trial 3 searched epochs=2: ASHA's rung 2 is its own last epoch, where it is let finish: a completion.
    assert (by_box[3.0]["end"], by_box[3.0]["epochs_run"]) == ("completed", 2)
    assert result.best_config.box == 0.5 and result.best_config.epochs == 3
    assert result.best_metric == by_box[0.5]["best train/box_loss"]

    # The ASHA-stopped trial freed its CPU at once: all CPUs come back.
    deadline = time.monotonic() + 60
    while ray_tune.available_resources().get("CPU", 0) < ray_tune.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"CPUs still reserved: {ray_tune.available_resources()}"
        time.sleep(1)

    # Outputs: table, best config (a valid fit config), best weights, plots, TensorBoard logs.
    rows = list(csv.DictReader((exp / "trials.csv").open()))
    assert len(rows) == 3 and rows[0]["box"] == "0.5" and rows[0]["rank"] == "1"
    best = load_config(exp / "best.yaml")
    assert (best.box, best.epochs, best.imgsz) == (0.5, 3, 64) and Path(best.data).is_absolute()
    from raytrain.models.checkpoint import load_checkpoint

    assert load_checkpoint(exp / "best.pt")["format"] == "raytrain.detect"
    assert all((exp / name).stat().st_size > 0 for name in PLOTS)
    assert len(list(exp.glob("trial_*/events.out.tfevents.*"))) == 3

    # W&B: one run (one id) per trial, named after the trial and grouped under the experiment. A stopped trial's
    # worker is killed before it finishes its run; the driver then writes the run's epochs and end (same id).
    status = read_status(exp / STATUS_FILE)
    assert len(status) == 3
    assert [r.get("stopped_at_epoch") for r in status.values() if r["end"] == "asha-stopped"] == [1]
    for trial_id, record in status.items():
        folders = offline_wandb_runs(Path(record["save_dir"]))
        assert folders and all(f.name.endswith(wandb_id(exp.name, trial_id)) for f in folders)
        runs = [run for folder in folders for run in wandb_run_records(folder)]
        assert runs and {(r.run_id, r.run_group, r.display_name) for r in runs} == {
            (wandb_id(exp.name, trial_id), exp.name, record["name"])}
        for run in runs:  # searched parameters at the config's top level: W&B's parallel coordinates see them
            config = {item.key: item.value_json for item in run.config.update}
            assert {"box", "epochs"} <= set(config), sorted(config)
        assert len(folders) == (1 if record["end"] == "completed" else 2)

    from raytrain.cli import main as cli_main

    assert cli_main(["results", str(exp)]) == 0
    assert "asha-stopped" in capsys.readouterr().out


@pytest.mark.ray
def test_resume_after_killing_the_driver(tmp_path: Path):
    """Kill ``raytrain tune SPACE epochs=6`` (the file says 2) after trial 1 finished and trial 2 is mid-way;
    ``resume=True`` finishes the job with the override it was started with, and trials.csv says what each trained."""
    from raytrain.tuning.resume import resume_command

    settings = space(tmp_path, num_samples=2, scheduler="none", train={**TRAIN, "epochs": 2},
                     points_to_evaluate=[{"box": 7.5}, {"box": 5.0}])
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(settings))
    exp = tmp_path / "runs" / "t"
    command = [sys.executable, "-m", "raytrain.cli", "tune", str(space_file), f"epochs={EPOCHS}"]
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        first, second = wait_for_mid_experiment(exp, driver, timeout=400)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    first_csv = Path(first["save_dir"]) / "results.csv"
    first_mtime = first_csv.stat().st_mtime_ns

    hint = shlex.split(resume_command(exp, space_file))  # the Ctrl-C hint (it resumes exactly: test_tuning_resume)
    assert hint[:3] == ["raytrain", "tune", str(space_file)] and f"epochs={EPOCHS}" in hint and "resume=True" in hint
    # Resumed without repeating the override: the experiment's saved space still trains EPOCHS, not the file's 2.
    done = subprocess.run([*command[:-1], "resume=True"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = read_status(exp / STATUS_FILE)
    assert sorted(r["end"] for r in status.values()) == ["completed", "completed"]
    assert first_csv.stat().st_mtime_ns == first_mtime  # the finished trial was not run again
    for record in status.values():  # every epoch trained once, none lost
        assert epochs_in_results_csv(Path(record["save_dir"]) / "results.csv") == list(range(1, EPOCHS + 1))
        assert int(read_result_json(exp / record["name"] / "result.json")[-1]["epoch"]) == EPOCHS  # Tune has it
    # Tune's result.json may miss epochs the killed driver had not synced; the history merges the run's CSV.
    experiment = load_experiment(exp)
    assert [[int(r["epoch"]) for r in t.history] for t in experiment.trials] == [list(range(1, EPOCHS + 1))] * 2
    assert all(t.best("train/box_loss", "min")[0] is not None for t in experiment.trials)
    assert "Resuming after epoch" in done.stdout + done.stderr
    assert (exp / "trials.csv").is_file() and (exp / "best.yaml").is_file()
    rows = list(csv.DictReader((exp / "trials.csv").open()))
    assert [(r["epochs_run"], r["epochs_planned"]) for r in rows] == [(str(EPOCHS), str(EPOCHS))] * 2
    # A resume that would change the experiment is refused before anything starts, naming the override.
    changed = subprocess.run([sys.executable, "-m", "raytrain.cli", *hint[1:], "epochs=3"], capture_output=True,
                             text=True, timeout=120)
    assert changed.returncode == 2 and f"epochs=3 would change the experiment {exp} (it was started with " \
        f"epochs={EPOCHS})" in changed.stderr


EPOCHS = 6  # per trial in the resume test: enough that the second trial is caught mid-way


def epochs_in_results_csv(path: Path) -> list[int]:
    return [int(float(row["epoch"])) for row in csv.DictReader(path.open())]


def wait_for_mid_experiment(exp: Path, driver: subprocess.Popen, timeout: float) -> tuple[dict, dict]:
    """Poll until one trial completed and another, known to Tune's saved experiment state, has a checkpoint but has
    not trained every epoch (a kill before Tune saved its state loses what it had not saved, by design)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the experiment finished before it could be interrupted"
        status = read_status(exp / STATUS_FILE)
        done = [r for r in status.values() if r.get("end") == "completed"]
        running = [(tid, r) for tid, r in status.items() if r.get("end") == "running"]
        saved = "".join(p.read_text() for p in exp.glob("experiment_state-*.json"))  # what Tune can restore
        for trial_id, record in running:
            csv_file = Path(record["save_dir"]) / "results.csv"
            registered = list((exp / record["name"]).glob("checkpoint_*/state.pt"))  # Tune has a checkpoint
            if done and registered and trial_id in saved and csv_file.is_file() and \
                    len(epochs_in_results_csv(csv_file)) < EPOCHS:
                return done[0], record
        time.sleep(0.5)
    raise AssertionError(f"no mid-experiment state within {timeout} s: {read_status(exp / STATUS_FILE)}")

