"""raytrain checkpoints: weights_only round trip, EMA choice, atomic writes, clear errors, weight transfer, and the
driver-side check of every file a run will load (inspect_checkpoint)."""

from __future__ import annotations

import pickle

import pytest
import torch
from model_helpers import ultralytics_pickle

from raytrain.config import Config, ConfigError
from raytrain.models import (
    CheckpointError,
    build_model,
    inspect_checkpoint,
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
        assert torch.equal(loaded.decode(loaded(x)), with_ema.eval().decode(with_ema(x)))


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


# --- inspect_checkpoint: one line naming the argument, the file, what it is and what to do ---

@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained_ckpt):
    """A real raytrain checkpoint (yolov8n, nc=2) on disk."""
    return save_checkpoint(tmp_path_factory.mktemp("inspect") / "last.pt", trained_ckpt)


def _inspect_error(path, key="model", nc=None) -> str:
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(path, key=key, nc=nc)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{key}={path}")  # one line, naming the argument and file
    return message


def test_inspect_returns_the_checkpoint(saved):
    for key in ("model", "pretrained", "resume"):
        ckpt = inspect_checkpoint(saved, key=key, nc=2)
        assert (ckpt["arch"], ckpt["nc"], ckpt["epoch"]) == ("yolov8n", 2, 3)
    assert inspect_checkpoint(saved, key="pretrained", nc=80)["nc"] == 2  # matching tensors transfer: any nc


@pytest.mark.parametrize("key", ["model", "pretrained", "resume"])
def test_inspect_names_files_that_are_no_checkpoint(tmp_path, key):
    random_file = tmp_path / "random.pt"
    random_file.write_bytes(bytes(np_random_bytes(1000)))
    assert "is not a PyTorch checkpoint file" in _inspect_error(random_file, key)
    text = tmp_path / "notes.pt"
    text.write_text("epochs: 10\nlr0: 0.01\n")
    assert "is a text file (it begins 'epochs: 10'), not a checkpoint" in _inspect_error(text, key)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    message = _inspect_error(empty, key)
    assert "is an empty file (0 bytes)" in message
    what_to_do = {"model": "model=yolov8n", "pretrained": "pretrained=False", "resume": "weights/last.pt"}[key]
    assert what_to_do in message
    assert "no such file" in _inspect_error(tmp_path / "missing.pt", key)
    assert "is a folder, not a checkpoint file" in _inspect_error(tmp_path, key)


def np_random_bytes(n: int) -> bytes:
    """Seeded random bytes that start with neither a zip nor a pickle header (as a random file almost surely does)."""
    import numpy as np

    data = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert data[:1] not in (b"P", b"\x80")
    return data


def test_inspect_names_a_truncated_raytrain_checkpoint(tmp_path, saved):
    data = saved.read_bytes()
    for keep in (len(data) // 2, 4096):  # cut among the tensors, or just after the header
        truncated = tmp_path / f"last_{keep}.pt"
        truncated.write_bytes(data[:keep])
        message = _inspect_error(truncated, "resume")
        assert "is a damaged raytrain checkpoint" in message and "(truncated? e.g. the disk filled up" in message
        assert "weights/epochN.pt" in message
    other = tmp_path / "other_truncated.pt"
    torch.save({"weights": torch.zeros(1000)}, other)
    other.write_bytes(other.read_bytes()[:2000])
    assert "is a damaged PyTorch file (truncated?" in _inspect_error(other, "pretrained")


def test_inspect_points_an_ultralytics_pickle_to_convert(tmp_path, monkeypatch):
    path = ultralytics_pickle(tmp_path / "yolov8n.pt", monkeypatch)
    message = _inspect_error(path, "model")
    assert "is an Ultralytics checkpoint" in message and f"raytrain convert {path} converted.pt" in message


def test_inspect_checks_the_class_count_and_the_arch(tmp_path, saved, trained_ckpt):
    message = _inspect_error(saved, "model", nc=3)
    assert "predicts 2 classes but the dataset has 3" in message and f"model=yolov8n pretrained={saved}" in message
    assert "predicts 2 classes but the dataset has 80: resume with the dataset" in _inspect_error(saved, "resume", 80)
    future = tmp_path / "yolov9n.pt"
    torch.save({**trained_ckpt, "arch": "yolov9n"}, future)
    assert "unknown arch 'yolov9n'" in _inspect_error(future, "pretrained")
    state_dict = tmp_path / "state_dict.pt"
    torch.save(build_model("yolov8n", nc=1).state_dict(), state_dict)
    assert f"plain state_dict (355 tensors), not a raytrain checkpoint. If it is an Ultralytics " \
           f"DetectionModel state_dict (YOLOv8, YOLO11, YOLO26), convert it: raytrain convert {state_dict}" \
           in _inspect_error(state_dict)
