"""Helpers shared by tests: files that are not raytrain checkpoints, a tiny conv net, a random YOLO dataset (no tests
here)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def ultralytics_pickle(path: Path, monkeypatch) -> Path:
    """A pickle of Ultralytics' DetectionModel class, faked so no ultralytics is needed (a pickle records only the
    class's module and name); afterwards the fake modules are gone, as on a machine without ultralytics."""
    import sys
    import types

    import torch

    tasks = types.ModuleType("ultralytics.nn.tasks")

    class DetectionModel:
        pass

    DetectionModel.__module__, DetectionModel.__qualname__ = tasks.__name__, "DetectionModel"
    tasks.DetectionModel = DetectionModel
    for name in ("ultralytics", "ultralytics.nn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, tasks.__name__, tasks)
    torch.save({"model": DetectionModel(), "epoch": -1}, path)
    for name in (tasks.__name__, "ultralytics.nn", "ultralytics"):
        monkeypatch.delitem(sys.modules, name)
    return path


def fake_ultralytics_checkpoint(path: Path, model, monkeypatch, *, names: dict | None = None,
                                extra: dict | None = None) -> Path:
    """An Ultralytics-layout ``.pt`` (as its trainer and strip_optimizer write it) without ultralytics installed.

    ``model`` (a raytrain DetectionModel, whose keys are Ultralytics' by construction) is copied into a tree of
    stand-in classes named like Ultralytics' (``ultralytics.nn.tasks.DetectionModel``, ``...modules.<our class>``)
    while torch.nn modules stay themselves, in fp16, and saved as ``{"model": tree, "ema": None, "train_args": ...}``.
    ``extra``: more attributes of the top-level model, pickled as they are (e.g. a crafted payload).
    The stand-in modules are removed from ``sys.modules`` afterwards, as on a machine without ultralytics.
    """
    import collections
    import copy
    import sys
    import types

    import torch

    created: dict[str, types.ModuleType] = {}

    def stand_in(module_name: str, class_name: str) -> type:
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in created:
                created[name] = types.ModuleType(name)
                monkeypatch.setitem(sys.modules, name, created[name])
        cls = getattr(created[module_name], class_name, None)
        if cls is None:
            cls = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
            setattr(created[module_name], class_name, cls)
        return cls

    def copy_tree(module: nn.Module, top: bool = False) -> object:
        if type(module).__module__.startswith("torch.nn."):
            out = copy.copy(module)  # a real torch.nn module, pickled as itself; its own __dict__
        elif top:
            out = object.__new__(stand_in("ultralytics.nn.tasks", "DetectionModel"))
            out.__dict__.update({k: v for k, v in module.__dict__.items() if k.startswith("_")})
        else:  # module bookkeeping and plain values; raytrain-only attributes (e.g. its family spec) left out
            out = object.__new__(stand_in("ultralytics.nn.modules.block", type(module).__name__))
            out.__dict__.update({k: v for k, v in module.__dict__.items()
                                 if k.startswith("_") or isinstance(v, (bool, int, float, str, torch.Tensor))})
        out.__dict__["_modules"] = collections.OrderedDict(
            (k, None if v is None else copy_tree(v)) for k, v in module._modules.items())
        return out

    half = copy.deepcopy(model).half()
    tree = copy_tree(half, top=True)
    tree.__dict__.update(yaml={"nc": model.nc, "scale": model.arch[-1]}, stride=half.stride.float(), task="detect",
                         names=names if names is not None else {i: f"class{i}" for i in range(model.nc)},
                         **(extra or {}))
    torch.save({"date": "2026-01-01", "version": "8.4.190", "epoch": -1, "model": tree, "ema": None,
                "optimizer": None, "train_args": {"task": "detect", "imgsz": 640}}, path)
    for name in created:
        monkeypatch.delitem(sys.modules, name)
    return path


def write_yolo_dataset(root: Path, images: dict) -> Path:
    """A 2-class YOLO dataset under ``root``: random-pixel JPEGs ``images/<stem>.jpg`` of the given (h, w), their label
    rows ``(cls, x, y, w, h)`` in ``labels/<stem>.txt``, and ``data.yaml`` (train = val = images); returns the YAML."""
    import cv2
    import numpy as np
    import yaml

    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for stem, ((h, w), labels) in images.items():
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        (root / "labels" / f"{stem}.txt").write_text("".join(f"{c} {x} {y} {bw} {bh}\n" for c, x, y, bw, bh in labels))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "names": ["a", "b"]}))
    return data


class Tiny(nn.Module):
    """Conv, BatchNorm, Linear: one weight, norm and bias group each, for optimizer and EMA tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))
