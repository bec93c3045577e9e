"""Datasets: YAML resolution, label checking and caching, augmentation and the sharded loader.

Importing this package loads nothing heavy and touches no file; the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataSpec": "dataset_yaml",
    "DatasetError": "common",
    "datasets_dir": "common",
    "resolve_data": "resolve",
    "IMAGE_SUFFIXES": "images",
    "load_image": "images",
    "ImageRecord": "labels",
    "SplitIndex": "labels",
    "scan_split": "labels",
    "YoloDataset": "loader",
    "YoloLoader": "loader",
    "build_dataloader": "loader",
    "collate": "loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"raytrain.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'raytrain.data' has no attribute {name!r}")
