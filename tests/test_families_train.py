"""YOLO11 and YOLO26 end to end without Ray: a few epochs on a tiny dataset write results.csv (with the family's loss
columns), best.pt and last.pt; ``raytrain val`` and ``predict`` run on the checkpoint with NMS and, for YOLO26, with
the NMS-free head; a converted checkpoint fine-tunes (``model=converted.pt``) and ``freeze=`` counts the family's
layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raytrain import keys
from raytrain.cli import main as cli_main
from raytrain.config import make_config
from raytrain.engine.loop import run_epochs
from raytrain.engine.results import read_results_csv
from raytrain.engine.setup import setup_rank
from raytrain.engine.state import initial_state
from raytrain.models import build_model, load_checkpoint
from raytrain.models.checkpoint import make_checkpoint, save_checkpoint


def _train(tiny_data: Path, save_dir: Path, **overrides):
    from raytrain.data import resolve_data

    cfg = make_config({"data": str(tiny_data), "imgsz": 32, "batch": 4, "nbs": 4, "workers": 0, "device": "cpu",
                       "optimizer": "SGD", "warmup_epochs": 0.5, "close_mosaic": 0, "plots": True,
                       "project": str(save_dir), "epochs": 2, **overrides})
    setup = setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=save_dir)
    return setup, run_epochs(setup, initial_state(setup), lambda report: None)


@pytest.mark.parametrize(("arch", "distance"), [("yolo11n", "dfl_loss"), ("yolo26n", "l1_loss")])
def test_a_family_trains_and_its_checkpoint_validates_and_predicts(tiny_data, tmp_path, arch, distance, capsys):
    run = tmp_path / "run"
    setup, state = _train(tiny_data, run, model=arch)
    assert state.epoch == 2 and setup.loss_fn.names == ("box_loss", "cls_loss", distance)
    rows = read_results_csv(run / "results.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert list(rows[0]) == list(keys.results_columns(setup.loss_fn.names))
    assert (run / "results.png").stat().st_size > 0
    ckpt = load_checkpoint(run / "weights" / "best.pt")
    assert ckpt["arch"] == arch and load_checkpoint(run / "weights" / "last.pt")["epoch"] == 2
    variants = ["nms=True", "nms=False"] if arch == "yolo26n" else ["nms=True"]
    for nms in variants:
        name = f"val_{nms.split('=')[1]}"
        assert cli_main(["val", f"model={run / 'weights' / 'best.pt'}", "batch=2", "workers=0", "device=cpu", nms,
                         f"project={tmp_path}", f"name={name}"]) == 0
        summary = json.loads((tmp_path / name / "metrics.json").read_text())
        assert 0.0 <= summary[keys.MAP50_95] <= 1.0 and summary["images"] == 4
        images = tiny_data.parent / "images" / "val"
        assert cli_main(["predict", f"model={run / 'weights' / 'best.pt'}", f"source={images}", "device=cpu",
                         "conf=0.0", "max_det=5", nms, f"project={tmp_path}", f"name=p_{name}"]) == 0
    if arch == "yolo11n":  # an NMS-free head is YOLO26's alone: one line, exit 2
        capsys.readouterr()
        assert cli_main(["val", f"model={run / 'weights' / 'best.pt'}", "workers=0", "device=cpu", "nms=False",
                         f"project={tmp_path}"]) != 0


def test_a_converted_checkpoint_fine_tunes_with_frozen_layers(tiny_data, tmp_path):
    from raytrain.data import resolve_data

    torch.manual_seed(3)
    start = build_model("yolo26n", nc=resolve_data(str(tiny_data)).nc)
    converted = save_checkpoint(tmp_path / "yolo26n_converted.pt", make_checkpoint(start))
    setup, _ = _train(tiny_data, tmp_path / "ft", model=str(converted), freeze=23, epochs=1)
    trainable = {n.split(".")[1] for n, p in setup.model.named_parameters() if p.requires_grad}
    assert trainable == {"23"}  # freeze=23 keeps only the Detect layer (23 in YOLO11/YOLO26) training
    backbone = "model.0.conv.weight"
    assert torch.equal(setup.model.state_dict()[backbone], start.state_dict()[backbone])  # frozen and transferred
