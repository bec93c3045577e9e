"""The run's optimizer, resolved once on the driver: printed, recorded in run.json (args.yaml keeps what was asked),
taken back from run.json on resume, and what every worker builds. No Ray; shapes at 64 px."""

from __future__ import annotations

import json
import logging

import torch

from raytrain.config import load_config, make_config
from raytrain.optimizers import OptimizerChoice
from raytrain.train.plan import RUN_FILE, prepare_run

TINY = dict(data="shapes", model="yolov8n", imgsz=64, fraction=0.04, workers=0, device="cpu", batch=4)  # 20 images


def test_auto_is_resolved_recorded_and_printed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="raytrain")
    plan = prepare_run(make_config({**TINY, "project": str(tmp_path), "epochs": 3}), gpus_available=0)
    choice = plan.optimizer
    # 20 images / max(4, nbs 64) -> 1 step per epoch, 3 expected steps: AdamW fitted to shapes' 6 classes
    assert (choice.requested, choice.name, choice.lr0, choice.momentum, choice.warmup_bias_lr) == \
        ("auto", "AdamW", round(0.01 / 10, 6), 0.9, 0.0)
    assert (choice.iterations, choice.nc) == (3, 6)
    assert [(g.name, g.params, g.weight_decay) for g in choice.groups] == [
        ("weight", 63, 0.0005), ("norm", 57, 0.0), ("bias", 63, 0.0)]  # yolov8n without its frozen DFL conv
    record = json.loads((plan.save_dir / RUN_FILE).read_text())["optimizer"]
    assert OptimizerChoice.from_dict(record) == choice
    asked = load_config(plan.save_dir / "args.yaml")
    assert (asked.optimizer, asked.lr0, asked.warmup_bias_lr) == ("auto", 0.01, 0.1)  # what the user asked
    assert "Optimizer: AdamW(lr0=0.001, momentum=0.9, warmup_bias_lr=0) - optimizer=auto: 3 iterations <= 10000" \
        in caplog.text


def test_musgd_groups_counted_with_frozen_layers_left_out(tmp_path):
    plan = prepare_run(make_config({**TINY, "project": str(tmp_path), "optimizer": "musgd", "freeze": 10}),
                       gpus_available=0)
    choice = plan.optimizer
    assert (choice.name, choice.lr0, choice.momentum, choice.warmup_bias_lr) == ("MuSGD", 0.01, 0.937, 0.1)
    assert [(g.name, g.lr_scale) for g in choice.groups] == [(k, s) for k in ("weight", "norm", "bias", "muon")
                                                              for s in (3.0, 1.0)]
    from raytrain.engine.optim import freeze_layers
    from raytrain.models import build_model

    model = build_model("yolov8n", nc=6)
    freeze_layers(model, 10)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sum(g.params for g in choice.groups) == len(trainable)
    classes = sum(n.startswith("model.22.cv3.") for n in trainable)
    assert sum(g.params for g in choice.groups if g.lr_scale == 3.0) == classes > 0


def test_resume_trains_with_the_recorded_choice(tmp_path):
    from raytrain.data import resolve_data
    from raytrain.engine.setup import setup_rank
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    first = prepare_run(make_config({**TINY, "project": str(tmp_path), "epochs": 3}), gpus_available=0)
    save_checkpoint(first.save_dir / "weights" / "last.pt",
                    make_checkpoint(build_model("yolov8n", nc=6), [str(i) for i in range(6)], epoch=1))
    # As if the rule had picked MuSGD when the run started (e.g. on a dataset that has shrunk since): resume keeps it
    # rather than resolving auto again, and the worker builds it.
    run_file = first.save_dir / RUN_FILE
    info = json.loads(run_file.read_text())
    info["optimizer"] = {**info["optimizer"], "name": "MuSGD", "lr0": 0.01, "iterations": 20_000}
    run_file.write_text(json.dumps(info))
    plan = prepare_run(make_config({"project": str(tmp_path), "resume": True}), gpus_available=0)
    assert plan.resumed and (plan.optimizer.name, plan.optimizer.lr0, plan.optimizer.iterations) == \
        ("MuSGD", 0.01, 20_000)
    assert json.loads(run_file.read_text())["optimizer"]["name"] == "MuSGD"
    setup = setup_rank(plan.cfg, resolve_data(plan.cfg.data), device=torch.device("cpu"), save_dir=plan.save_dir,
                    choice=plan.optimizer)
    schedule = setup.lr_schedule
    assert type(setup.optimizer).__name__ == "MuSGD" and schedule.lr0 == 0.01 and schedule.warmup_bias_lr == 0.0


def test_trials_csv_and_results_show_the_resolved_optimizer(tmp_path):
    """A search over optimizer: [auto, SGD] is readable: each trial's resolved optimizer and lr0, from its run.json."""
    import csv

    import yaml

    from raytrain.tuning.experiment import load_experiment
    from raytrain.tuning.report import format_table, write_trials_csv

    exp = tmp_path / "exp"
    space = {"metric": "fitness", "mode": "max", "train": {"epochs": 2},
             "space": {"optimizer": {"type": "choice", "values": ["auto", "SGD"]}}}
    exp.mkdir()
    (exp / "tune_space.yaml").write_text(yaml.safe_dump(space))
    status = {}
    for trial_id, asked, resolved, lr0, fitness in [("a1", "auto", "AdamW", 0.001429, 0.3), ("a2", "SGD", "SGD", 0.01,
                                                                                           0.2)]:
        folder, save_dir = exp / f"trial_{trial_id}", exp / "trials" / f"trial_{trial_id}"
        folder.mkdir()
        save_dir.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"optimizer": asked}))
        (folder / "result.json").write_text(json.dumps({"epoch": 1, "fitness": fitness, "trial_id": trial_id}) + "\n")
        choice = OptimizerChoice(asked, resolved, lr0, 0.9, 0.0, 10, 3, "test")
        (save_dir / RUN_FILE).write_text(json.dumps({"optimizer": choice.to_dict()}))
        status[trial_id] = {"name": folder.name, "params": {"optimizer": asked}, "save_dir": str(save_dir),
                            "end": "completed"}
    (exp / "trial_status.yaml").write_text(yaml.safe_dump(status))
    experiment = load_experiment(exp)
    rows = list(csv.DictReader(write_trials_csv(experiment).open()))
    assert [(r["optimizer"], r["resolved_optimizer"], r["resolved_lr0"]) for r in rows] == [
        ("auto", "AdamW", "0.001429"), ("SGD", "SGD", "0.01")]
    table = format_table(experiment).splitlines()
    assert "optimizer (lr0)" in table[0] and table[1].split()[-2:] == ["AdamW", "(0.001429)"]


def test_search_spaces_take_musgd_and_keep_the_auto_guard():
    import pytest

    from raytrain.config import ConfigError
    from raytrain.tuning.space import load_space

    assert "MuSGD" in load_space("search_spaces/detect.yaml").space["optimizer"].values
    lr0 = {"type": "loguniform", "low": 1e-3, "high": 1e-2}
    load_space({"train": {"data": "shapes"}, "space": {"optimizer": ["SGD", "musgd"], "lr0": lr0}})
    with pytest.raises(ConfigError, match="optimizer=auto chooses lr0 and momentum itself"):
        load_space({"train": {"data": "shapes"}, "space": {"optimizer": ["auto", "MuSGD"], "lr0": lr0}})
    with pytest.raises(ConfigError, match=r"space.optimizer.values\[1\]: optimizer='MuSDG' .* Did you mean MuSGD\?"):
        load_space({"train": {"data": "shapes"}, "space": {"optimizer": ["SGD", "MuSDG"]}})


def test_training_docs_table_lists_every_optimizer():
    from pathlib import Path

    from raytrain.optimizers import NAMES

    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    table = text.split("### Optimizers", 1)[1].split("**`optimizer=auto`**", 1)[0]
    assert [n for n in NAMES if f"`{n}`" not in table] == []


def test_lr0_from_the_command_line_is_parsed_once_and_reaches_the_optimizer(tmp_path, monkeypatch):
    """``lr0=0.02`` from argv to the first optimizer step: parsed and checked once (make_config), then carried typed
    (Config -> the run's OptimizerChoice -> the rank's LRSchedule -> the optimizer's groups), never re-parsed."""
    from raytrain import config
    from raytrain.data import resolve_data
    from raytrain.engine.optim import apply_lr_schedule
    from raytrain.engine.setup import setup_rank

    parsed = []
    coerce = config.coerce_value
    monkeypatch.setattr(config, "coerce_value", lambda key, value, hint: (
        parsed.append(value) if key == "lr0" else None, coerce(key, value, hint))[1])
    argv = [f"{k}={v}" for k, v in TINY.items()] + ["lr0=0.02", "optimizer=SGD", "warmup_epochs=0", "epochs=2",
                                                    f"project={tmp_path}"]
    plan = prepare_run(make_config(config.parse_cli_args(argv)), gpus_available=0)
    setup = setup_rank(plan.cfg, resolve_data(plan.cfg.data), device=torch.device("cpu"), save_dir=plan.save_dir,
                       choice=plan.optimizer)
    apply_lr_schedule(setup.optimizer, setup.lr_schedule, 0, 0)
    assert parsed == [0.02]  # coerced and checked once, in make_config
    assert (plan.cfg.lr0, plan.optimizer.lr0, setup.lr_schedule.lr0) == (0.02, 0.02, 0.02)
    assert {g["lr"] for g in setup.optimizer.param_groups} == {0.02}  # epoch 0 of a linear decay, no warmup
