"""The YOLO detectors (one registry of families: YOLOv8, YOLO11, YOLO26), their checkpoints and the Ultralytics
weight converter (``raytrain.models.convert``).

Names load on first use, so reading the registry (``raytrain.models.registry``: model names for ``--help`` and
config checks) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(("CheckpointError", "inspect_checkpoint", "load_checkpoint", "load_model", "make_checkpoint",
                     "model_from_checkpoint", "save_checkpoint", "transfer_weights"), "raytrain.models.checkpoint"),
    **dict.fromkeys(("bbox2dist", "decode_predictions", "dist2bbox", "make_anchors"), "raytrain.models.head"),
    **dict.fromkeys(("DetectionModel", "build_model"), "raytrain.models.detector"),
    **dict.fromkeys(("ARCHS", "FAMILIES", "check_arch", "family_of", "list_models"), "raytrain.models.registry"),
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'raytrain.models' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
