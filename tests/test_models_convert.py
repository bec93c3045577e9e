"""``raytrain convert``: Ultralytics detection weights -> raytrain checkpoint, checked against the reference (every
family: test_models_families.py).

The reference comparison needs the ``ultralytics`` package and skips without it; the rest runs everywhere, using
a state_dict of our own model, whose keys are Ultralytics' by construction.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from raytrain.cli import main as cli_main
from raytrain.config import ConfigError
from raytrain.models import CheckpointError, build_model, load_checkpoint, load_model
from raytrain.models.convert import convert, infer_arch


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial BN statistics, so a wrong mapping or a wrong eps shows in the outputs."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)


@pytest.fixture(scope="module")
def ours_state_dict(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("yolov8n", nc=3)
    _randomise_batchnorm(model)
    path = tmp_path_factory.mktemp("convert") / "yolov8n_sd.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return model.eval(), path


def test_state_dict_round_trips_through_convert(tmp_path, ours_state_dict):
    model, src = ours_state_dict
    out = convert(src, tmp_path / "converted.pt", names="a,b,c")
    ckpt = load_checkpoint(out)
    assert (ckpt["arch"], ckpt["nc"], ckpt["names"], ckpt["epoch"]) == ("yolov8n", 3, ["a", "b", "c"], 0)
    assert ckpt["ema"] is None and ckpt["optimizer"] is None
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    converted = load_model(out)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        fp16 = model.half().float()  # the file held fp16 weights, as Ultralytics' releases do
        expected = fp16.decode(fp16(x))
        assert (converted.decode(converted(x)) - expected).abs().max().item() < 1e-4


def test_cli_convert(tmp_path, ours_state_dict, capsys):
    _, src = ours_state_dict
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("names:\n  0: person\n  1: car\n  2: dog\n")
    out = tmp_path / "cli.pt"
    assert cli_main(["convert", str(src), str(out), f"names={data_yaml}"]) == 0
    assert "yolov8n, nc=3" in capsys.readouterr().out
    assert load_checkpoint(out)["names"] == ["person", "car", "dog"]
    assert cli_main(["convert", str(src)]) == 2
    assert "convert needs SRC and OUT" in capsys.readouterr().err
    assert cli_main(["convert", str(src), str(tmp_path / "x.pt"), "names=a,b"]) == 2
    assert "2 class names for a model with nc=3" in capsys.readouterr().err


def test_scale_and_class_count_come_from_shapes():
    for arch, nc in (("yolov8s", 80), ("yolov8m", 2), ("yolov8x", 1)):
        assert infer_arch(build_model(arch, nc=nc).state_dict()) == (arch, nc)


def test_bad_sources_are_clear_errors(tmp_path, ours_state_dict):
    _, src = ours_state_dict
    state = torch.load(src, weights_only=True)
    broken = tmp_path / "broken.pt"
    torch.save({k: v for k, v in state.items() if "model.21." not in k}, broken)
    with pytest.raises(CheckpointError, match="not a state_dict of any registered detector.*closest is yolov8n, but "
                                              "missing: model.21"):
        convert(broken, tmp_path / "out.pt")
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(CheckpointError, match="none of model.22.cv3.0.2.weight, model.23.cv3.0.2.weight"):
        convert(unrelated, tmp_path / "out.pt")
    already = convert(src, tmp_path / "already.pt")
    with pytest.raises(CheckpointError, match="already a raytrain checkpoint"):
        convert(already, tmp_path / "out.pt")
    with pytest.raises(ConfigError, match="not found"):
        convert(tmp_path / "missing.pt", tmp_path / "out.pt")
    # A pickled model that is not an Ultralytics DetectionModel (read as records, nothing run): named and refused.
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": nn.Linear(1, 1)}, pickled)
    with pytest.raises(CheckpointError, match="holds a pickled torch.nn.modules.linear.Linear; only Ultralytics"):
        convert(pickled, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.fixture(scope="module")
def ultralytics_tasks(tmp_path_factory):
    """ultralytics.nn.tasks, with its settings file kept out of the user's home and no network."""
    old = {k: os.environ.get(k) for k in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE")}
    os.environ["YOLO_CONFIG_DIR"] = str(tmp_path_factory.mktemp("ultralytics_config"))
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        pytest.importorskip("ultralytics")
        from ultralytics.nn import tasks

        yield tasks
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize("scale", ["n", "s"])
def test_converted_model_matches_ultralytics(tmp_path, ultralytics_tasks, scale):
    torch.manual_seed(1)
    reference = ultralytics_tasks.DetectionModel(f"yolov8{scale}.yaml", nc=80, verbose=False)
    _randomise_batchnorm(reference)
    reference.eval()
    torch.save(reference.state_dict(), tmp_path / "sd.pt")
    converted = load_model(convert(tmp_path / "sd.pt", tmp_path / "converted.pt"))
    assert converted.arch == f"yolov8{scale}" and converted.nc == 80
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        expected, raw = reference(x)  # Ultralytics 8.4's eval mode: (decoded, {"boxes", "scores", "feats"})
        maps = converted(x)
        got = converted.decode(maps)
    ours_flat = torch.cat([m.flatten(2) for m in maps], 2)
    assert torch.allclose(ours_flat, torch.cat((raw["boxes"], raw["scores"]), 1), atol=1e-5)  # the same raw maps
    assert got.shape == expected.shape == (2, 84, 16 * 12 + 8 * 6 + 4 * 3)
    assert (got - expected).abs().max().item() < 1e-3


def test_pickled_ultralytics_checkpoint(tmp_path, ultralytics_tasks):
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml")  # randomly initialised: nothing is downloaded
    yolo.model.names = {i: f"class{i}" for i in range(80)}
    yolo.save(tmp_path / "ultralytics.pt")
    with pytest.raises(CheckpointError, match="Ultralytics checkpoint.*raytrain convert"):
        load_checkpoint(tmp_path / "ultralytics.pt")  # never unpickled by raytrain's loader
    converted = load_model(convert(tmp_path / "ultralytics.pt", tmp_path / "converted.pt"))
    assert converted.names[:2] == ["class0", "class1"]
    reference = torch.load(tmp_path / "ultralytics.pt", weights_only=False)["model"].float().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (converted.decode(converted(x)) - reference(x)[0]).abs().max().item() < 1e-3
