"""Bad input fails once: every file a run will load is opened on the driver before Ray starts (one line, exit 2), a
damaged last.pt falls back to the previous good checkpoint, and an error no retry can fix ends a Ray run after one
attempt (``ray``) instead of consuming ``max_failures``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_helpers import ultralytics_pickle

import raytrain
from raytrain import cli
from raytrain.config import ConfigError, make_config
from raytrain.models import build_model, make_checkpoint, save_checkpoint
from raytrain.train.plan import prepare_run

TINY = dict(data="shapes", model="yolov8n", imgsz=64, fraction=0.04, workers=0, device="cpu", warmup_epochs=0.5,
            close_mosaic=1)  # 20 train images, 100 val images, 64 px


def _bad_file(kind: str, path: Path, monkeypatch) -> str:
    """Write a file of ``kind`` at ``path``; return what the one-line error must say about it."""
    if kind == "random bytes":
        data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
        path.write_bytes(b"\x00" + data)  # neither a zip nor a pickle header
        return "is not a PyTorch checkpoint file"
    if kind == "text":
        path.write_text("weights: none\n")
        return "is a text file"
    if kind == "empty":
        path.write_bytes(b"")
        return "is an empty file"
    if kind == "truncated":
        save_checkpoint(path, make_checkpoint(build_model("yolov8n", nc=6), [str(i) for i in range(6)], epoch=1))
        path.write_bytes(path.read_bytes()[:100_000])
        return "is a damaged raytrain checkpoint"
    if kind == "ultralytics":
        ultralytics_pickle(path, monkeypatch)
        return "is an Ultralytics checkpoint"
    raise AssertionError(kind)


KINDS = ("random bytes", "text", "empty", "truncated", "ultralytics")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["model", "pretrained", "resume"])
def test_unusable_checkpoints_fail_before_ray_with_one_line(no_ray, tmp_path, capsys, monkeypatch, key, kind):
    project = tmp_path / "runs"
    if key == "resume":  # a real run folder whose last.pt is unusable
        plan = prepare_run(make_config({**TINY, "project": str(project), "batch": 4, "epochs": 3}), gpus_available=0)
        path = plan.save_dir / "weights" / "last.pt"
        path.parent.mkdir()
    else:
        path = tmp_path / "weights.pt"
    expected = _bad_file(kind, path, monkeypatch)
    before = {p for p in project.rglob("*")} if project.exists() else set()
    code = cli.main(["fit", *(f"{k}={v}" for k, v in TINY.items()), "batch=4", f"project={project}", f"{key}={path}"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = [x for x in err.splitlines() if x.startswith("raytrain fit:")]
    assert f"{key}={path}" in line and expected in line and "Traceback" not in err, err
    after = {p for p in project.rglob("*")} if project.exists() else set()
    assert after == before  # no run folder for a rejected run


def test_resume_with_another_class_count_fails_before_ray(no_ray, tmp_path, capsys):
    plan = prepare_run(make_config({**TINY, "project": str(tmp_path), "batch": 4, "epochs": 3}), gpus_available=0)
    last = plan.save_dir / "weights" / "last.pt"
    save_checkpoint(last, make_checkpoint(build_model("yolov8n", nc=3), ["a", "b", "c"], epoch=1))
    assert cli.main(["fit", f"resume={last}"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("raytrain fit:")]
    assert "predicts 3 classes but the dataset has 6" in line


def test_model_of_another_class_count_transfers_as_in_ultralytics(tmp_path):
    """``model=coco.pt data=shapes`` is accepted (its matching tensors transfer); a resumed run must match."""
    coco = save_checkpoint(tmp_path / "coco.pt", make_checkpoint(build_model("yolov8n", nc=80),
                                                                 [str(i) for i in range(80)]))
    plan = prepare_run(make_config({**TINY, "project": str(tmp_path), "batch": 4, "model": str(coco)}),
                       gpus_available=0)
    assert plan.cfg.model == str(coco)


def test_damaged_last_pt_resumes_from_the_previous_good_checkpoint(tmp_path, caplog):
    plan = prepare_run(make_config({**TINY, "project": str(tmp_path), "batch": 4, "epochs": 5}), gpus_available=0)
    weights = plan.save_dir / "weights"
    names = [str(i) for i in range(6)]
    save_checkpoint(weights / "epoch2.pt", make_checkpoint(build_model("yolov8n", nc=6), names, epoch=2))
    save_checkpoint(weights / "last.pt", make_checkpoint(build_model("yolov8n", nc=6), names, epoch=3))
    (weights / "last.pt").write_bytes((weights / "last.pt").read_bytes()[:50_000])  # the disk filled up
    with caplog.at_level("WARNING", logger="raytrain"):
        resumed = prepare_run(make_config({"project": str(tmp_path), "resume": True}), gpus_available=0)
    assert resumed.resumed and resumed.cfg.resume == str(weights / "epoch2.pt")
    assert "is a damaged raytrain checkpoint" in caplog.text and "previous good checkpoint" in caplog.text
    assert resumed.run_name == json.loads((plan.save_dir / "run.json").read_text())["ray_run_name"]


# ------------------------------------------------------------------------------------------------ Ray Train runs
def fail_with_config_error(state):
    """A deterministic error inside the worker (as a bad file met mid-run would raise)."""
    with (state.save_dir / "starts.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": state.epoch}) + "\n")
    raise ConfigError(f"data={state.save_dir}/gone.yaml: file not found (injected).")


def fail_before_the_first_step(state):
    """A deterministic error of another kind before any optimizer step (as a broken set-up would raise)."""
    with (state.save_dir / "starts.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": state.epoch}) + "\n")
    raise RuntimeError("element 0 of tensors does not require grad (injected)")


@pytest.mark.ray
def test_deterministic_worker_errors_end_the_run_without_retries(ray_local, by_value, tmp_path):
    # 1 worker, mid-run: the callback's ConfigError ends the run after one attempt, although max_failures=2.
    with pytest.raises(ConfigError, match=r"gone.yaml: file not found \(injected\)") as error:
        raytrain.fit(**TINY, epochs=2, batch=4, max_failures=2, project=str(tmp_path), name="once",
                     callbacks={"on_train_start": fail_with_config_error})
    assert len(str(error.value).splitlines()) == 1
    assert len((tmp_path / "once" / "starts.jsonl").read_text().splitlines()) == 1  # no restart
    # 1 worker, any exception before the first optimizer step: every attempt would meet it, so one attempt only.
    with pytest.raises(ConfigError, match=r"RuntimeError before the first optimizer step: element 0 of tensors does "
                                          r"not require grad \(injected\) \(not retried") as error:
        raytrain.fit(**TINY, epochs=2, batch=4, max_failures=2, project=str(tmp_path), name="first_step",
                     callbacks={"on_train_start": fail_before_the_first_step})
    assert len(str(error.value).splitlines()) == 1
    assert len((tmp_path / "first_step" / "starts.jsonl").read_text().splitlines()) == 1  # no restart
    # 2 workers, at setup: the dataset was deleted between the driver's check and the run.
    data = tmp_path / "data"
    from raytrain.data import resolve_data

    shutil.copytree(Path(resolve_data("shapes").yaml_file).parent, data)
    yaml_file = data / "data.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("path:", f"path: {data} #"))
    plan = prepare_run(make_config({**TINY, "data": str(yaml_file), "batch": 4, "num_workers": 2, "max_failures": 2,
                                    "project": str(tmp_path), "name": "deleted"}))
    shutil.rmtree(data / "images")
    from raytrain.train.fit import run

    with pytest.raises(ConfigError, match="images") as error:
        run(plan)
    assert len(str(error.value).splitlines()) == 1
    assert not (plan.save_dir / "results.csv").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["freeze=99"], "freeze=99 would freeze all 23 layers of yolov8n: nothing would train. Use at most freeze=22"),
    (["model=yolo26n", "freeze=24"], "freeze=24 would freeze all 24 layers of yolo26n"),
    (["freeze=[0,30]"], "freeze=[0, 30]: yolov8n has layers 0..22; [30] do not exist"),
    (["device=7"], "device=7: GPU 7 does not exist; this machine has no CUDA GPU"),
    (["model=yolov8nn"], "Did you mean yolov8n?"),
])
def test_arguments_that_cannot_train_fail_before_ray_with_one_line(no_ray, tmp_path, capsys, args, expected):
    """Deterministic set-up errors (everything frozen, a GPU that does not exist, an unknown model) are found on the
    driver: one line, exit 2, no Ray, no run folder, no retries."""
    base = {**TINY, "model": "yolov8n"}
    overrides = dict(a.split("=", 1) for a in args)
    argv = ["fit", *(f"{k}={v}" for k, v in {**base, **overrides}.items()), f"project={tmp_path / 'runs'}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("raytrain fit:")]
    assert expected in line and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()
