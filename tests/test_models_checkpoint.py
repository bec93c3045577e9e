"""raytrain checkpoints: weights_only round trip, EMA choice, atomic writes, clear errors, weight transfer."""

from __future__ import annotations

import pickle

import pytest
import torch

from raytrain.config import Config, ConfigError
from raytrain.models import (
    CheckpointError,
    build_model,
    load_checkpoint,
    load_model,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    transfer_weights,
)


class Pickled:
    """An arbitrary Python object: weights_only loading must refuse it."""


@pytest.fixture(scope="module")
def trained_ckpt():
    """A checkpoint with distinct model and EMA weights, optimizer state and a config, like the training loop's."""
    torch.manual_seed(0)
    model = build_model("yolov8n", nc=2)
    ema = build_model("yolov8n", nc=2)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.01)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.rand(1, 3, 64, 64))[0].sum().backward()
    optimizer.step()
    return make_checkpoint(model, ["cat", "dog"], ema=ema, ema_updates=7, optimizer=optimizer.state_dict(), epoch=3,
                           best_fitness=0.25, config=Config(epochs=3).to_dict(), metrics={"metrics/mAP50(B)": 0.5})


def test_round_trip_with_weights_only(tmp_path, trained_ckpt):
    path = save_checkpoint(tmp_path / "weights" / "last.pt", trained_ckpt)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and data only
    assert raw["format"] == "raytrain.detect" and raw["version"] == 1
    ckpt = load_checkpoint(path)
    assert (ckpt["arch"], ckpt["nc"], ckpt["names"], ckpt["epoch"]) == ("yolov8n", 2, ["cat", "dog"], 3)
    assert ckpt["ema_updates"] == 7 and ckpt["best_fitness"] == 0.25 and ckpt["config"]["epochs"] == 3
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    for key, value in trained_ckpt["model"].items():
        assert torch.equal(ckpt["model"][key], value)


def test_model_from_checkpoint_prefers_ema(tmp_path, trained_ckpt):
    key = "model.0.conv.weight"
    with_ema = model_from_checkpoint(trained_ckpt, ema=True)
    without = model_from_checkpoint(trained_ckpt, ema=False)
    assert torch.equal(with_ema.state_dict()[key], trained_ckpt["ema"][key])
    assert torch.equal(without.state_dict()[key], trained_ckpt["model"][key])
    assert with_ema.names == ["cat", "dog"]
    loaded = load_model(save_checkpoint(tmp_path / "best.pt", trained_ckpt))
    assert not loaded.training and loaded.nc == 2
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), with_ema.eval()(x))


def test_save_replaces_an_existing_file(tmp_path, trained_ckpt):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")
    save_checkpoint(path, trained_ckpt)
    assert load_checkpoint(path)["epoch"] == 3
    with pytest.raises(CheckpointError, match="not a raytrain checkpoint"):
        save_checkpoint(path, {"model": {}})
    assert load_checkpoint(path)["epoch"] == 3 and len(list(tmp_path.iterdir())) == 1


def test_non_checkpoint_files_are_clear_errors(tmp_path):
    random_file = tmp_path / "random.pt"
    random_file.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint file"):
        load_checkpoint(random_file)

    state_dict = tmp_path / "state_dict.pt"
    torch.save(build_model("yolov8n", nc=1).state_dict(), state_dict)
    with pytest.raises(CheckpointError, match="plain state_dict.*raytrain convert"):
        load_checkpoint(state_dict)

    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Pickled()}, pickled)
    with pytest.raises(CheckpointError, match="pickled Python objects.*Pickled"):
        load_checkpoint(pickled)

    other = tmp_path / "other.pt"
    torch.save({"epoch": 1, "weights": [1, 2]}, other)
    with pytest.raises(CheckpointError, match="expected format='raytrain.detect'"):
        load_checkpoint(other)

    with pytest.raises(FileNotFoundError, match="missing.pt not found"):
        load_checkpoint(tmp_path / "missing.pt")
    assert issubclass(CheckpointError, ConfigError)  # the CLI turns it into a clean one-line error


def test_loading_never_unpickles_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled code ran",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(Boom(), f, protocol=2)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_newer_versions_and_missing_fields_are_refused(tmp_path, trained_ckpt):
    path = tmp_path / "future.pt"
    torch.save({**trained_ckpt, "version": 99}, path)
    with pytest.raises(CheckpointError, match="version 99.*upgrade raytrain"):
        load_checkpoint(path)
    torch.save({k: v for k, v in trained_ckpt.items() if k != "names"}, path)
    with pytest.raises(CheckpointError, match="missing names"):
        load_checkpoint(path)


def test_transfer_weights_when_class_count_differs(trained_ckpt):
    model = build_model("yolov8n", nc=5)
    n_transferred, n_total = transfer_weights(model, trained_ckpt["model"])
    # Everything but the three class-output convolutions (weight + bias each) of the head.
    assert (n_transferred, n_total) == (355 - 6, 355)
    assert torch.equal(model.state_dict()["model.22.cv2.1.2.bias"], trained_ckpt["model"]["model.22.cv2.1.2.bias"])
    assert model.state_dict()["model.22.cv3.0.2.weight"].shape[0] == 5
    # A whole checkpoint works too (its EMA weights).
    assert transfer_weights(model, trained_ckpt) == (349, 355)
    assert torch.equal(model.state_dict()["model.0.conv.weight"], trained_ckpt["ema"]["model.0.conv.weight"])
    assert transfer_weights(build_model("yolov8s", nc=2), trained_ckpt["model"])[0] < 100  # other scale: BN only
    # From 80 classes the class branch is wider (max(64, min(nc, 100)) channels in yolov8n), so all of cv3 is new:
    # 3 levels x (2 Convs x 5 tensors + weight + bias) = 36 differ; the scalar BN counters still transfer.
    assert transfer_weights(build_model("yolov8n", nc=3), build_model("yolov8n", nc=80).state_dict()) == (319, 355)
