"""Box formats, IoU, NMS and letterbox mapping: pure tensor functions.

Formats: ``xyxy`` = (x1, y1, x2, y2) corners; ``xywh`` = (x_center, y_center, width, height).
"""

from __future__ import annotations

import torch


def xywh2xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre/size boxes ``(..., 4)`` xywh to corner boxes ``(..., 4)`` xyxy, same units."""
    xy, wh = boxes[..., :2], boxes[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), dim=-1)


def xyxy2xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corner boxes ``(..., 4)`` xyxy to centre/size boxes ``(..., 4)`` xywh, same units."""
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:4]
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim=-1)
