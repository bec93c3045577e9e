"""Helpers shared by the tune tests: a tiny training setup and a space around it (no tests here)."""

from __future__ import annotations

from pathlib import Path

TRAIN = {"data": "shapes", "model": "yolov8n", "imgsz": 64, "batch": 8, "workers": 0, "fraction": 0.1,
         "optimizer": "SGD", "close_mosaic": 0, "warmup_epochs": 0, "val": False, "plots": False, "device": "cpu"}


def space(tmp_path: Path, **settings) -> dict:
    """A one-parameter space (box gain) minimising the train box loss, one trial at a time; ``settings`` on top."""
    body = {"name": "t", "project": str(tmp_path / "runs"), "train": dict(TRAIN),
            "space": {"box": {"type": "uniform", "low": 0.5, "high": 12.0}},
            "metric": "train/box_loss", "mode": "min", "max_concurrent_trials": 1, "wandb_mode": "disabled"}
    body.update(settings)
    return body

