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


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """Areas ``(...,)`` of corner boxes ``(..., 4)`` xyxy; boxes with x2 < x1 or y2 < y1 have area 0."""
    wh = (boxes_xyxy[..., 2:4] - boxes_xyxy[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Pairwise intersection over union of two sets of corner boxes.

    Args:
        boxes1_xyxy: ``(N, 4)`` boxes x1, y1, x2, y2.
        boxes2_xyxy: ``(M, 4)`` boxes in the same units.
        eps: added to the union; 0 gives COCO's IoU exactly (a pair with an empty union gets IoU 0).

    Returns:
        ``(N, M)`` IoU in [0, 1], in the inputs' dtype.
    """
    lt = torch.maximum(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])
    rb = torch.minimum(boxes1_xyxy[:, None, 2:4], boxes2_xyxy[None, :, 2:4])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(boxes1_xyxy)[:, None] + box_area(boxes2_xyxy)[None, :] - inter + eps
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def non_max_suppression(
    pred: torch.Tensor,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    *,
    multi_label: bool = False,
    max_nms: int = 30000,
) -> list[torch.Tensor]:
    """Confidence filtering and class-aware NMS of decoded model outputs.

    Args:
        pred: ``(B, 4 + nc, A)`` eval-mode model output: ``xywh`` boxes in input pixels, then per-class sigmoid
            scores, for A anchors.
        conf: keep candidates whose score is strictly above this.
        iou: suppress a box whose IoU with a higher-scoring box *of the same class* is above this.
        max_det: keep at most this many detections per image (highest scores first).
        multi_label: False keeps each anchor's best class only (prediction); True keeps every (anchor, class)
            pair above ``conf`` (as Ultralytics does for validation: a little higher mAP, more boxes).
        max_nms: before NMS, keep only this many highest-scoring candidates (bounds the NMS cost).

    Returns:
        One ``(n, 6)`` tensor per image, rows ``[x1, y1, x2, y2, score, cls]`` (``xyxy`` input pixels),
        sorted by decreasing score; ``n <= max_det``.
    """
    import torchvision  # lazily: only post-processing needs it

    out = []
    for image_pred in pred.transpose(1, 2):  # (A, 4 + nc)
        boxes = xywh2xyxy(image_pred[:, :4])
        class_scores = image_pred[:, 4:]
        if multi_label:
            anchor, cls = (class_scores > conf).nonzero(as_tuple=True)
            boxes, scores = boxes[anchor], class_scores[anchor, cls]
        else:
            scores, cls = class_scores.max(1)
            keep = scores > conf
            boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
        if scores.numel() > max_nms:
            top = scores.topk(max_nms).indices
            boxes, scores, cls = boxes[top], scores[top], cls[top]
        keep = torchvision.ops.batched_nms(boxes.float(), scores.float(), cls, iou)[:max_det]
        out.append(torch.cat((boxes[keep], scores[keep, None], cls[keep, None].to(boxes.dtype)), dim=1))
    return out


def clip_boxes(boxes_xyxy: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Corner boxes ``(..., 4)`` clipped to an image of ``shape`` = (height, width) pixels; returns a new tensor."""
    h, w = shape
    x = boxes_xyxy[..., 0::2].clamp(0, w)
    y = boxes_xyxy[..., 1::2].clamp(0, h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def scale_boxes(
    boxes_xyxy: torch.Tensor,
    ratio_pad: tuple[tuple[float, float], tuple[float, float]],
    ori_shape: tuple[int, int],
) -> torch.Tensor:
    """Map corner boxes from the letterboxed network input back to the original image, clipped to it.

    The letterbox maps original pixels to input pixels as ``x_in = x0 * gain_w + pad_w`` and
    ``y_in = y0 * gain_h + pad_h`` (the batch contract's ``ratio_pads``); this is its inverse.

    Args:
        boxes_xyxy: ``(..., 4)`` boxes x1, y1, x2, y2 in input pixels.
        ratio_pad: ``((gain_h, gain_w), (pad_w, pad_h))`` of this image.
        ori_shape: ``(h0, w0)`` of the original image.

    Returns:
        A new ``(..., 4)`` tensor of ``xyxy`` boxes in original pixels, clipped to ``[0, w0] x [0, h0]``.
    """
    (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    offset = boxes_xyxy.new_tensor([pad_w, pad_h, pad_w, pad_h])
    gain = boxes_xyxy.new_tensor([gain_w, gain_h, gain_w, gain_h])
    return clip_boxes((boxes_xyxy[..., :4] - offset) / gain, ori_shape)
