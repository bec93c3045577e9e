"""Reading pickled Ultralytics checkpoints without Ultralytics: nothing from the file runs, the weights come out exact.

The refusals use hand-made pickles whose payload would create a file; the exactness checks use a faked Ultralytics
checkpoint (tests/model_helpers.py) everywhere, and real ones built with the ultralytics package where it is
installed, compared with the package's own unpickling.
"""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from model_helpers import fake_ultralytics_checkpoint
from torch import nn

from raytrain.models import CheckpointError, build_model, load_checkpoint
from raytrain.models.convert import convert
from raytrain.models.restricted_pickle import PickledObject
from raytrain.models.ultralytics_pickle import (
    UnsafePickleError,
    module_state_dict,
    read_ultralytics_checkpoint,
    unpickle_torch_archive,
)


class _Payload:
    """Unpickling this runs ``os.system("touch MARKER")``: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_zip(path: Path, pickle_bytes: bytes) -> Path:
    """A torch-style zip archive holding only ``archive/data.pkl``: for pickles written opcode by opcode."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
    return path


def test_code_in_the_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"model": _Payload(marker), "epoch": -1}, crafted)
    with pytest.raises(UnsafePickleError, match=r"crafted.pt: refused the pickled global 'posix.system'"):
        read_ultralytics_checkpoint(crafted)
    # The same payload inside a model's attributes, in a file that otherwise looks like Ultralytics'.
    hidden = fake_ultralytics_checkpoint(tmp_path / "hidden.pt", build_model("yolov8n", nc=2), monkeypatch,
                                         extra={"args": _Payload(marker)})  # an attribute of the top-level model
    with pytest.raises(UnsafePickleError, match="posix.system"):
        read_ultralytics_checkpoint(hidden)
    # Through raytrain convert, as the issue reproduced it: exit 2, the global named, no output written.
    from raytrain.cli import main as cli_main

    assert cli_main(["convert", str(crafted), str(tmp_path / "out.pt")]) == 2
    assert "posix.system" in capsys.readouterr().err
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        unpickle_torch_archive(_torch_zip(tmp_path / "eval.pt", b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."))
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_state_setting_and_storages_are_restricted(tmp_path):
    # BUILD (state setting) on a real object: refused, so no real class's __setstate__ ever runs.
    build = b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00a\x4b\x01sb."
    with pytest.raises(UnsafePickleError, match="sets the state of a OrderedDict"):
        unpickle_torch_archive(_torch_zip(tmp_path / "build.pt", build))
    # A storage class called as a function (torch.FloatStorage(10**12) would allocate): a marker, not callable.
    call = b"\x80\x02ctorch\nFloatStorage\nJ\x00\xca\x9a\x3b\x85R."
    with pytest.raises(CheckpointError, match="cannot be read.*not callable"):
        unpickle_torch_archive(_torch_zip(tmp_path / "call.pt", call))
    # A tensor rebuilt from something other than the archive's storage.
    fake = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sK\x00K\x01\x85K\x01\x85\x89"
            b"ccollections\nOrderedDict\n)RtR.")
    with pytest.raises(UnsafePickleError, match="rebuilt from a str"):
        unpickle_torch_archive(_torch_zip(tmp_path / "fake.pt", fake))
    # A broadcast view (stride 0): 4 stored bytes that would become 4 GB when converted. Refused.
    torch.save({"model": torch.zeros(1).expand(10**9)}, tmp_path / "expanded.pt")
    with pytest.raises(UnsafePickleError, match="1000000000 elements is rebuilt over 1 stored"):
        unpickle_torch_archive(tmp_path / "expanded.pt")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a torch zip archive"):
        read_ultralytics_checkpoint(plain)


def test_state_dict_as_the_module_would_give_it(tmp_path):
    """Parameters, then persistent buffers, then children; None entries and non-persistent buffers left out."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(2, 2), nn.SiLU()))
    net[1].register_buffer("scratch", torch.ones(1), persistent=False)
    net[1].register_buffer("kept", torch.arange(3))
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2.0)
    torch.save({"model": net}, tmp_path / "net.pt")
    record = unpickle_torch_archive(tmp_path / "net.pt")["model"]
    got, expected = module_state_dict(record), net.state_dict()
    assert list(got) == list(expected)  # same names, same order (BN's num_batches_tracked, kept; no scratch/bias)
    assert "1.scratch" not in got and "0.bias" not in got and "1.num_batches_tracked" in got
    assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in expected.items())
    assert isinstance(record, PickledObject) and not isinstance(record, nn.Module)  # a record, not a Sequential


def test_faked_ultralytics_checkpoint_converts_without_ultralytics(tmp_path, monkeypatch):
    model = build_model("yolov8n", nc=3)
    src = fake_ultralytics_checkpoint(tmp_path / "yolov8n.pt", model, monkeypatch,
                                      names={0: "cat", 1: "dog", 2: "bird"})
    ckpt = read_ultralytics_checkpoint(src)
    expected = model.half().state_dict()
    assert list(ckpt.state_dict) == list(expected)
    assert all(torch.equal(ckpt.state_dict[k], v) and ckpt.state_dict[k].dtype == v.dtype for k, v in expected.items())
    assert (ckpt.names, ckpt.nc, ckpt.stride, ckpt.task, ckpt.version, ckpt.source_key) == (
        ["cat", "dog", "bird"], 3, [8.0, 16.0, 32.0], "detect", "8.4.190", "model")
    assert ckpt.train_args == {"task": "detect", "imgsz": 640}
    out = load_checkpoint(convert(src, tmp_path / "converted.pt"))
    assert (out["arch"], out["nc"], out["names"]) == ("yolov8n", 3, ["cat", "dog", "bird"])
    assert all(torch.equal(out["model"][k], v.float()) for k, v in expected.items() if v.is_floating_point())


# --- against real Ultralytics checkpoints ------------------------------------------------------------------------

FAMILY_YAMLS = {"yolov8n": "yolov8n.yaml", "yolo11n": "yolo11n.yaml", "yolo26n": "yolo26n.yaml"}


@pytest.fixture(scope="module")
def ultralytics_files(tmp_path_factory):
    """One released-layout ``.pt`` per family, written as Ultralytics' trainer (save_model) and then its
    strip_optimizer write them, with randomised BN statistics so every buffer is checked, after a validation pass
    (which leaves a torch.Size in the head: a checkpoint of a trained run holds one)."""
    folder = tmp_path_factory.mktemp("ultralytics_pt")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder / "config"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    import copy

    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import IterableSimpleNamespace
    from ultralytics.utils.torch_utils import strip_optimizer

    files = {}
    torch.manual_seed(0)
    for arch, yaml_file in FAMILY_YAMLS.items():
        model = DetectionModel(yaml_file, nc=4, verbose=False)
        model.names = {i: f"n{i}" for i in range(4)}
        model.args = IterableSimpleNamespace(**DEFAULT_CFG_DICT)
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.num_batches_tracked.fill_(7)
        with torch.no_grad():  # a validation pass, as every epoch's: the head then keeps the input's torch.Size
            model.eval()(torch.zeros(1, 3, 64, 64))
        assert isinstance(model.model[-1].shape, torch.Size)
        ema = copy.deepcopy(model).half()
        last = folder / f"{arch}_last.pt"  # the trainer's layout: model None, the EMA under "ema"
        torch.save({"epoch": 3, "best_fitness": 0.5, "model": None, "ema": ema, "updates": 10, "optimizer": None,
                    "train_args": dict(DEFAULT_CFG_DICT), "train_metrics": {"fitness": 0.5}, "version": "8.4.190",
                    "date": "2026-01-01"}, last)
        stripped = folder / f"{arch}.pt"  # what a release asset or a finished run's best.pt holds
        strip_optimizer(last, stripped)
        files[arch] = (last, stripped)
    return files


def _reference_state_dict(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # Ultralytics' own way: unpickle everything
    return (ckpt.get("ema") or ckpt["model"]).state_dict()


def test_real_checkpoints_read_exactly_and_without_the_package(tmp_path, ultralytics_files):
    files = [p for pair in ultralytics_files.values() for p in pair]
    # Read in a fresh interpreter where importing ultralytics fails, so nothing of the package can be used.
    script = (
        "import sys, torch; sys.modules['ultralytics'] = None\n"
        "from raytrain.models.ultralytics_pickle import read_ultralytics_checkpoint\n"
        "out = {}\n"
        "for f in sys.argv[2:]:\n"
        "    c = read_ultralytics_checkpoint(f)\n"
        "    out[f] = (c.state_dict, c.names, c.nc, c.stride, c.source_key, c.model_class, c.train_args['imgsz'])\n"
        "torch.save(out, sys.argv[1])\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "read.pt"), *map(str, files)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    read = torch.load(tmp_path / "read.pt", weights_only=True)
    for path in files:
        state, names, nc, stride, source, model_class, imgsz = read[str(path)]
        expected = _reference_state_dict(path)
        assert list(state) == list(expected), path.name
        assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in expected.items()), path.name
        assert (names, nc, stride, model_class, imgsz) == (
            ["n0", "n1", "n2", "n3"], 4, [8.0, 16.0, 32.0], "ultralytics.nn.tasks.DetectionModel", 640)
        assert source == ("ema" if path.name.endswith("_last.pt") else "model")


@pytest.mark.parametrize("arch", list(FAMILY_YAMLS))
def test_real_checkpoints_convert(tmp_path, ultralytics_files, arch):
    _, stripped = ultralytics_files[arch]
    out = load_checkpoint(convert(stripped, tmp_path / "converted.pt"))
    assert (out["arch"], out["nc"], out["names"]) == (arch, 4, ["n0", "n1", "n2", "n3"])
    expected = _reference_state_dict(stripped)
    assert all(torch.equal(out["model"][k], v.float() if v.is_floating_point() else v) for k, v in expected.items())


def test_records_hold_what_the_pickle_said(tmp_path):
    """OrderedDict and set come through as themselves; module classes become records that store their state."""
    torch.save({"names": collections.OrderedDict(a=1), "s": {1, 2}, "m": nn.SiLU()}, tmp_path / "x.pt")
    obj = unpickle_torch_archive(tmp_path / "x.pt")
    assert obj["names"] == collections.OrderedDict(a=1) and obj["s"] == {1, 2}
    assert obj["m"].global_name == "torch.nn.modules.activation.SiLU" and obj["m"].attributes()["training"] is True


def test_a_torch_size_is_read_only_as_integers(tmp_path):
    from raytrain.models.restricted_pickle import resolve_global

    torch.save({"shape": torch.Size([1, 3, 64, 64])}, tmp_path / "size.pt")
    assert unpickle_torch_archive(tmp_path / "size.pt")["shape"] == torch.Size([1, 3, 64, 64])
    make_size = resolve_global("torch", "Size")
    for bad in ([1, "2"], [1.5], "12", [PickledObject]):
        with pytest.raises(UnsafePickleError, match="torch.Size of anything but integers"):
            make_size(bad)
