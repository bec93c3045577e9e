"""The YOLOv8 detector, its checkpoints and the Ultralytics weight converter (``raytrain.models.convert``)."""

from raytrain.models.checkpoint import (
    CheckpointError,
    inspect_checkpoint,
    load_checkpoint,
    load_model,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    transfer_weights,
)
from raytrain.models.head import bbox2dist, decode_predictions, dist2bbox, make_anchors
from raytrain.models.yolov8 import SCALES, DetectionModel, build_model

__all__ = [
    "SCALES",
    "CheckpointError",
    "DetectionModel",
    "bbox2dist",
    "build_model",
    "decode_predictions",
    "dist2bbox",
    "inspect_checkpoint",
    "load_checkpoint",
    "load_model",
    "make_anchors",
    "make_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "transfer_weights",
]
