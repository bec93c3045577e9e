"""Helpers shared by the checkpoint tests: files that are not raytrain checkpoints (no tests here)."""

from __future__ import annotations

from pathlib import Path


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
