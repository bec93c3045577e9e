"""raytrain fit: argument checks before Ray starts (fast), run folders and resume planning, and end-to-end Ray Train
runs on tiny images (``ray``): two workers, a failure then ``resume=True``, injected crashes. The loop's own behaviour
(patience, close_mosaic, time=, resume, callback order) is tested without Ray in test_engine_loop.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import raytrain
from raytrain import cli
from raytrain.config import ConfigError, load_config, make_config
from raytrain.engine.results import COLUMNS, read_results_csv
from raytrain.files import next_run_dir
from raytrain.train.plan import RUN_FILE, prepare_run

TINY = dict(data="shapes", model="yolov8n", imgsz=64, fraction=0.04, workers=0, device="cpu", warmup_epochs=0.5,
            close_mosaic=1)  # 20 train images, 100 val images, 64 px
REPORTED = ("epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
            "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
            "val/dfl_loss", "fitness", "lr/pg0", "lr/pg1", "lr/pg2", "time/epoch")


# ---------------------------------------------------------------------- callbacks (run on the rank-0 Ray worker)
def record_epoch(state):
    with (state.save_dir / "epochs.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": state.epoch, "world_size": state.world_size, **state.metrics}) + "\n")


def record_start(state):
    with (state.save_dir / "starts.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": state.epoch}) + "\n")


def raise_once_at_epoch_2(state):
    marker = state.save_dir / "raised"
    if state.epoch == 2 and not marker.exists():
        marker.touch()
        raise RuntimeError("injected failure")


def exit_once_at_epoch_3(state):
    marker = state.save_dir / "exited"
    if state.epoch == 3 and not marker.exists():
        marker.touch()
        os._exit(1)  # the worker process dies without cleanup


def _epochs_jsonl(save_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (save_dir / "epochs.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------- before Ray: no Ray started
@pytest.mark.parametrize("args, message", [
    (["batch=3", "num_workers=2"], "does not divide between 2 workers"),
    (["optimizer=Lion"], "optimizer='Lion' is not allowed"),
    (["data=no/such/data.yaml"], "no/such/data.yaml"),
    (["model=missing.pt"], "model=missing.pt: no such file"),
    (["resume=True"], "resume=True: no run with weights/last.pt"),
    (["device=0,0"], "GPU indices must be distinct"),
])
def test_cli_rejects_bad_arguments_before_ray(no_ray, tmp_path, capsys, args, message):
    code = cli.main(["fit", "device=cpu", f"project={tmp_path}", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*/args.yaml"))  # no run folder for a rejected run


def test_fit_needs_ray_or_start_ray(no_ray, tmp_path):
    with pytest.raises(RuntimeError, match=r"call ray.init\(\) first"):
        raytrain.fit(data="shapes", project=str(tmp_path))
    with pytest.raises(ConfigError, match="cannot be pickled"):
        raytrain.fit(data="shapes", project=str(tmp_path), callbacks={"on_train_end": lambda s: None})
    with pytest.raises(ConfigError, match="Did you mean on_train_end"):
        raytrain.fit(data="shapes", project=str(tmp_path), callbacks={"on_train_ends": record_start})


@pytest.mark.parametrize("exit_exc", [KeyboardInterrupt(), SystemExit(0), SystemExit(1)])
def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, caplog, exit_exc):
    """Ray Train's Ctrl-C handler ends fit() with SystemExit (1 when it fires inside ray.get): a clean interrupt."""
    import raytrain.train.fit
    from raytrain.train.fit import run

    class Interrupted:
        def fit(self):
            raise exit_exc

    monkeypatch.setattr(raytrain.train.fit, "build_trainer", lambda *a, **k: Interrupted())
    plan = prepare_run(make_config({**TINY, "project": str(tmp_path), "batch": 4}), gpus_available=0)
    with pytest.raises(KeyboardInterrupt):
        run(plan)
    assert "no checkpoint to resume" in caplog.text
    (plan.save_dir / "weights").mkdir()
    (plan.save_dir / "weights" / "last.pt").touch()
    with pytest.raises(KeyboardInterrupt):
        run(plan)
    assert f"raytrain fit resume={plan.save_dir / 'weights' / 'last.pt'}" in caplog.text


def test_run_folders_and_names(tmp_path):
    assert next_run_dir(tmp_path, "train") == tmp_path / "train"
    (tmp_path / "train").mkdir()
    (tmp_path / "train2").mkdir()
    assert next_run_dir(tmp_path, "train") == tmp_path / "train3"
    assert next_run_dir(tmp_path, "train", exist_ok=True) == tmp_path / "train"
    project = tmp_path / "p"
    cfg = make_config({**TINY, "project": str(project), "batch": 4})
    first = prepare_run(cfg, gpus_available=0)
    second = prepare_run(cfg, gpus_available=0)
    assert (first.save_dir, second.save_dir) == (project / "train", project / "train2")
    assert first.run_name != second.run_name and first.run_name.startswith("train-")
    assert first.storage_path == str(project / ".ray") and Path(first.cfg.data).is_absolute()
    assert load_config(first.save_dir / "args.yaml") == first.cfg
    assert json.loads((first.save_dir / RUN_FILE).read_text())["ray_run_name"] == first.run_name
    again = prepare_run(cfg.replace(exist_ok=True), gpus_available=0)
    assert again.save_dir == first.save_dir and again.run_name != first.run_name  # never an accidental Ray resume
    cpu16 = prepare_run(cfg.replace(batch=-1), gpus_available=0)
    assert cpu16.cfg.batch == 16  # AutoBatch needs CUDA


def test_resume_plan_reuses_run_and_checks_epochs(tmp_path):
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    cfg = make_config({**TINY, "project": str(tmp_path), "batch": 4, "epochs": 3, "lr0": 0.02})
    first = prepare_run(cfg, gpus_available=0)
    save_checkpoint(first.save_dir / "weights" / "last.pt", make_checkpoint(build_model("yolov8n", nc=6),
                                                                            [str(i) for i in range(6)], epoch=2))
    plan = prepare_run(make_config({"project": str(tmp_path), "resume": True, "epochs": 5}), gpus_available=0)
    assert (plan.save_dir, plan.run_name, plan.storage_path) == (first.save_dir, first.run_name, first.storage_path)
    assert plan.resumed and plan.cfg.epochs == 5 and plan.cfg.lr0 == 0.02 and plan.cfg.imgsz == 64
    assert plan.cfg.resume == str(first.save_dir / "weights" / "last.pt")
    # args.yaml keeps what the run trains with, as asked (more epochs), not that it resumed: run.json says that.
    args = load_config(first.save_dir / "args.yaml")
    assert args == plan.cfg.replace(resume=False) and args.epochs == 5
    resumes = json.loads((first.save_dir / RUN_FILE).read_text())["resumes"]
    assert [(r["from"], r["after_epoch"]) for r in resumes] == [(plan.cfg.resume, 2)]
    repeat = prepare_run(load_config(first.save_dir / "args.yaml"), gpus_available=0)  # cfg=args.yaml
    assert not repeat.resumed and repeat.save_dir == tmp_path / "train2" and repeat.cfg == args
    # An argument a resume would drop is refused, naming it; the run's own value (any spelling of a path) is not.
    with pytest.raises(ConfigError, match=r"resume: lr0=0.1 is not applied to a resumed run, .* \(lr0=0.02\)"):
        prepare_run(make_config({"project": str(tmp_path), "resume": str(first.save_dir), "lr0": 0.1}),
                    gpus_available=0)
    same = prepare_run(make_config({"project": str(tmp_path), "resume": str(first.save_dir), "lr0": 0.02,
                                    "epochs": 6, "data": "SHAPES"}), gpus_available=0)  # the run's dataset by name
    assert same.resumed and same.cfg.epochs == 6
    with pytest.raises(ConfigError, match="already trained 2/2 epochs"):
        prepare_run(make_config({"project": str(tmp_path), "resume": str(first.save_dir), "epochs": 2}),
                    gpus_available=0)


# ------------------------------------------------------------------------------------------------ Ray Train runs
@pytest.mark.ray
def test_two_workers_report_every_epoch_and_write_run_folder(ray_local, by_value, tmp_path):
    from raytrain.models import load_checkpoint, load_model

    result = raytrain.fit(**TINY, epochs=2, batch=8, num_workers=2, project=str(tmp_path), name="exp",
                          callbacks={"on_fit_epoch_end": record_epoch})
    save_dir = tmp_path / "exp"
    assert result.save_dir == save_dir and result.best == save_dir / "weights" / "best.pt"
    assert set(REPORTED) <= set(result.metrics) and result.metrics["epoch"] == 2
    epochs = _epochs_jsonl(save_dir)
    assert [e["epoch"] for e in epochs] == [1, 2] and {e["world_size"] for e in epochs} == {2}
    assert all(set(REPORTED) <= set(e) for e in epochs)
    assert all(0 <= e["metrics/mAP50(B)"] <= 1 and e["train/box_loss"] > 0 for e in epochs)
    rows = read_results_csv(save_dir / "results.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and list(rows[0]) == list(COLUMNS)
    assert (save_dir / "results.png").stat().st_size > 10_000
    last, best = load_checkpoint(result.last), load_checkpoint(result.best)  # weights_only=True
    assert last["epoch"] == 2 and last["optimizer"] is None and last["ema"] is None and last["nc"] == 6
    assert best["epoch"] in (1, 2) and last["config"]["imgsz"] == 64
    assert load_model(result.best).nc == 6  # what `raytrain val` loads
    saved = load_config(save_dir / "args.yaml")
    assert saved.to_dict() == last["config"] and Path(saved.data).is_absolute() and saved.num_workers == 2
    run_name = json.loads((save_dir / RUN_FILE).read_text())["ray_run_name"]
    kept = [p for p in (tmp_path / ".ray" / run_name).glob("checkpoint_*") if p.is_dir()]
    assert 1 <= len(kept) <= 2  # num_to_keep=2: the last and the best
    from ray.util.state import list_actors

    started = {a.class_name for a in list_actors(limit=1000, raise_on_missing_output=False)}
    assert "PlacementGroupCleaner" in started and "PreemptionWatcher" not in started  # no drained nodes here


@pytest.mark.ray
def test_failure_then_resume_true_finishes_each_epoch_once(ray_local, by_value, tmp_path):
    from ray.train import TrainingFailedError

    with pytest.raises(TrainingFailedError, match="injected failure"):
        raytrain.fit(**TINY, epochs=3, batch=4, max_failures=0, project=str(tmp_path), name="crash",
                     callbacks={"on_fit_epoch_end": raise_once_at_epoch_2})
    save_dir = tmp_path / "crash"
    # epoch 2 was written to the run folder but its checkpoint never reached Ray
    assert [r["epoch"] for r in read_results_csv(save_dir / "results.csv")] == [1, 2]
    result = raytrain.fit(resume=True, project=str(tmp_path), callbacks={"on_train_start": record_start,
                                                                          "on_fit_epoch_end": record_epoch})
    assert result.save_dir == save_dir and result.metrics["epoch"] == 3
    assert [json.loads(s)["epoch"] for s in (save_dir / "starts.jsonl").read_text().splitlines()] == [1]
    assert [e["epoch"] for e in _epochs_jsonl(save_dir)] == [2, 3]
    assert [r["epoch"] for r in read_results_csv(save_dir / "results.csv")] == [1, 2, 3]
    assert not (tmp_path / "crash2").exists()


@pytest.fixture
def s3_storage():
    """An ``s3://`` storage URI on a local S3 server (moto), as a MinIO or other self-hosted S3 is addressed.

    The credentials ride in the URI (pyarrow reads ``s3://KEY:SECRET@bucket/...``), so the Ray workers, started
    before this test, need no AWS environment.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield (f"s3://testkey:testsecret@raytrain-test/runs?endpoint_override={host}:{port}&scheme=http"
           "&region=us-east-1&allow_bucket_creation=true")
    server.stop()


@pytest.mark.ray
def test_checkpoints_go_to_s3_and_resume_comes_back_from_it(ray_local, by_value, tmp_path, s3_storage):
    import pyarrow.fs
    from ray.train import TrainingFailedError

    with pytest.raises(TrainingFailedError, match="injected failure"):
        raytrain.fit(**TINY, epochs=3, batch=4, max_failures=0, project=str(tmp_path), name="s3", val=False,
                     storage=s3_storage, callbacks={"on_fit_epoch_end": raise_once_at_epoch_2})
    save_dir = tmp_path / "s3"
    run = json.loads((save_dir / RUN_FILE).read_text())
    assert run["storage_path"] == s3_storage and not (tmp_path / ".ray").exists()  # nothing Ray wrote stayed local
    fs, root = pyarrow.fs.FileSystem.from_uri(s3_storage)
    stored = [f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))]
    assert any(f"/{run['ray_run_name']}/checkpoint_" in path for path in stored), stored
    result = raytrain.fit(resume=True, project=str(tmp_path), callbacks={"on_train_start": record_start})
    assert result.metrics["epoch"] == 3 and result.last.is_file()
    # weights/last.pt held epoch 2 (written before the failure); only the Ray snapshot in S3 holds epoch 1
    assert [json.loads(s)["epoch"] for s in (save_dir / "starts.jsonl").read_text().splitlines()] == [1]
    assert [r["epoch"] for r in read_results_csv(save_dir / "results.csv")] == [1, 2, 3]


@pytest.mark.ray
def test_worker_crashes_are_retried_and_each_epoch_counted_once(ray_local, by_value, tmp_path):
    result = raytrain.fit(**TINY, epochs=3, batch=8, num_workers=2, max_failures=2, project=str(tmp_path),
                          name="flaky", callbacks={"on_train_epoch_end": raise_once_at_epoch_2,
                                                   "on_fit_epoch_end": [record_epoch, exit_once_at_epoch_3]})
    save_dir = tmp_path / "flaky"
    assert (save_dir / "raised").exists() and (save_dir / "exited").exists()  # both failures happened
    assert result.metrics["epoch"] == 3
    assert [r["epoch"] for r in read_results_csv(save_dir / "results.csv")] == [1, 2, 3]
    recorded = [e["epoch"] for e in _epochs_jsonl(save_dir)]
    assert recorded[-1] == 3 and recorded.count(3) == 2  # epoch 3 ran again after the crash
