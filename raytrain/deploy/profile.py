"""A model's size and compute: parameters, and GFLOPs from torch's own FLOP counter (not a hand count)."""

from __future__ import annotations

from typing import Any


def count_params(model: Any) -> int:
    """Every parameter of ``model`` (trainable or not), as Ultralytics' model info counts them."""
    return int(sum(p.numel() for p in model.parameters()))


def count_gflops(model: Any, imgsz: int) -> float:
    """GFLOPs of one forward pass of ``model`` on a ``(1, 3, imgsz, imgsz)`` input, in eval mode.

    :class:`torch.utils.flop_counter.FlopCounterMode` counts a multiply-add as 2 FLOPs (so YOLOv8n at 640 is 8.7,
    the figure Ultralytics prints) and counts convolutions and matrix products only: BatchNorm, activations and the
    head's decoding are not in it. The model's train/eval mode is restored afterwards.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, 3, imgsz, imgsz, device=param.device, dtype=param.dtype)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops()) / 1e9


__all__ = ["count_gflops", "count_params"]
