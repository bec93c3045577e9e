"""``dry_run=True`` and GPU shares per trial: everything is checked and the plan printed before anything starts;
invalid GPU shares are refused with exit 2; the concurrency cap and a trial's reservation count shares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raytrain import cli
from raytrain.config import ConfigError
from raytrain.tuning.dryrun import asha_rungs, describe
from raytrain.tuning.orchestrate import build_job, concurrency_cap
from raytrain.tuning.space import load_space

TRAIN = {"data": "shapes", "imgsz": 64, "batch": 8, "workers": 0, "fraction": 0.1, "optimizer": "SGD", "epochs": 9}


def space_file(tmp_path: Path, **settings) -> Path:
    body = {"name": "plan", "project": str(tmp_path / "runs"), "train": dict(TRAIN), "num_samples": 16,
            "n_startup_trials": 6, "space": {"lr0": {"type": "loguniform", "low": 0.001, "high": 0.01},
                                             "mosaic": [0.0, 1.0]},
            "grace_period": 1, "reduction_factor": 3, "wandb_mode": "disabled", **settings}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_dry_run_prints_the_plan_and_starts_nothing(no_ray, tmp_path, capsys):
    path = space_file(tmp_path, resources={"cpus_per_worker": 1, "gpu": False})
    assert cli.main(["tune", str(path), "dry_run=True"]) == 0
    out = capsys.readouterr().out
    assert "nothing was started" in out and "Trials: 16, Optuna TPE (seed 0): the first 6 at random" in out
    assert "lr0: loguniform in [0.001, 0.01]" in out and "mosaic: one of [0.0, 1.0]" in out
    assert "ASHA compares trials at epochs 1, 3, 9" in out and "epochs=9" in out and "imgsz=64" in out
    assert "Per trial: 1 worker(s), 1 CPU(s); trains in the Tune trial's own process" in out
    assert not (tmp_path / "runs").exists()  # no experiment folder either


@pytest.mark.parametrize("gpu, message", [
    (0, "use gpu: false to train on CPUs"),
    (-0.5, "is not allowed"),
    (1.5, "a worker trains on one GPU; for 1.5 GPUs per trial use workers: 2"),
    ("many", "expected true, false or a share of one GPU"),
])
def test_invalid_gpu_shares_are_refused_before_anything_starts(no_ray, tmp_path, capsys, gpu, message):
    assert cli.main(["tune", str(space_file(tmp_path)), f"gpu={gpu}", "dry_run=True"]) == 2
    assert message in capsys.readouterr().err


def test_a_gpu_share_needs_one_worker(tmp_path):
    with pytest.raises(ConfigError, match="a share of a GPU .0.5. needs workers: 1"):
        load_space(space_file(tmp_path, resources={"workers": 2, "gpu": 0.5}))
    with pytest.raises(ConfigError, match="gpu_share"):  # the same rule for a run's Config
        load_space(space_file(tmp_path), {"gpu": 0.5, "num_workers": 2})


def test_gpu_shares_count_in_concurrency_and_reservations(tmp_path):
    spec = load_space(space_file(tmp_path, resources={"gpu": 0.25, "cpus_per_worker": 2}))
    assert concurrency_cap(spec, {"CPU": 16, "GPU": 1}) == 4  # four quarter-GPU trials on one GPU
    assert concurrency_cap(spec, {"CPU": 6, "GPU": 1}) == 3  # ... unless the CPUs run out first
    assert concurrency_cap(spec, {"CPU": 16, "GPU": 2}) == 8
    job = build_job(spec, tmp_path / "exp", str(tmp_path), spec.base_config, {"CPU": 16, "GPU": 1})
    assert job.resources == {"CPU": 2.0, "GPU": 0.25} and job.workers == 1
    whole = load_space(space_file(tmp_path, resources={"gpu": True, "workers": 2}))
    job = build_job(whole, tmp_path / "exp", str(tmp_path), whole.base_config, {"CPU": 16, "GPU": 4})
    assert job.workers == 2 and job.resources["CPU"] == 0  # Ray Train's workers reserve the GPUs


def test_asha_rungs_and_the_plan_text(tmp_path):
    assert asha_rungs(1, 9, 3) == [1, 3, 9] and asha_rungs(2, 16, 2) == [2, 4, 8, 16] and asha_rungs(1, 8, 3) == [1, 3]
    spec = load_space(space_file(tmp_path, resources={"gpu": 0.5}, patience=2))
    text = describe(spec, spec.base_config.replace(gpu_share=0.5), {"CPU": 8, "GPU": 2}, ray_source="a test")
    assert "Per trial: 1 worker(s), 1 CPU(s), 0.5 GPU(s)" in text and "At once: 4 trial(s)" in text
    assert "patience 2 epochs" in text and "Ray: a test: 8 CPU, 2 GPU" in text


def test_searched_checkpoint_paths_reach_trials_absolute(tmp_path, monkeypatch):
    """Tune runs each trial in its own folder: a relative ``model:`` choice is made absolute on the driver, where the
    space file named (and the driver opened) it; other sampled values pass through unchanged."""
    from raytrain.tuning.trial import trial_config

    monkeypatch.chdir(tmp_path)
    spec = load_space(space_file(tmp_path, space={"model": ["weights/a.pt", "yolov8n"], "lr0": [0.01, 0.02]}))
    job = build_job(spec, tmp_path / "exp", str(tmp_path), spec.base_config, {"CPU": 2})
    assert job.checkpoints == {"weights/a.pt": str(tmp_path / "weights" / "a.pt")}
    (tmp_path / "trial").mkdir()
    monkeypatch.chdir(tmp_path / "trial")  # as a trial: another working directory
    cfg = trial_config(job, {"model": "weights/a.pt", "lr0": 0.02}, "trial_00000")
    assert cfg.model == str(tmp_path / "weights" / "a.pt") and cfg.lr0 == 0.02
    assert trial_config(job, {"model": "yolov8n", "lr0": 0.01}, "trial_00001").model == "yolov8n"


def test_a_family_search_is_checked_and_shown(tmp_path):
    """``model`` is searchable across families: the dry run names them, and an unknown name in the space is refused on
    the driver with a suggestion (before Ray), as Config refuses it."""
    spec = load_space(space_file(tmp_path, space={"model": ["yolov8n", "yolo11n", "yolo26n"]}))
    text = describe(spec, spec.base_config, {"CPU": 2}, ray_source="a test")
    assert "(families: YOLOv8: yolov8n; YOLO11: yolo11n; YOLO26: yolo26n)" in text
    with pytest.raises(ConfigError, match=r"space\.model\.values\[1\].*'yolov9n' is not a known architecture"):
        load_space(space_file(tmp_path, space={"model": ["yolov8n", "yolov9n"]}))


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_space_value_that_only_fails_at_set_up_is_refused_before_ray(no_ray, tmp_path, capsys, dry_run):
    """``freeze: [10, 99]`` passes Config (any count is a count) but every trial drawing 99 would freeze the whole
    model: the driver checks each (model, freeze) pair the space can draw, one line, exit 2, no Ray started."""
    path = space_file(tmp_path, space={"model": ["yolov8n", "yolo26n"], "freeze": [10, 23]})
    assert cli.main(["tune", str(path), f"dry_run={dry_run}"]) == 2
    err = capsys.readouterr().err
    assert "space.freeze: freeze=23 would freeze all 23 layers of yolov8n: nothing would train" in err, err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
