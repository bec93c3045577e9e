"""The module that is exported: images in, one tensor out (decoded boxes and scores, the top-k, or NMS'd rows).

Everything here is traceable by ``torch.export`` (the ONNX dynamo exporter), OpenVINO's PyTorch frontend and
``torch.jit.trace`` with a free batch size: no Python loop over images, no shape-dependent Python branches.
"""

from __future__ import annotations

import torch
import torchvision  # at import, not inside the traced code: its first import runs ops torch.jit.trace cannot record
from torch import nn

from raytrain.export.spec import NMS, ONE2MANY, ONE2ONE
from raytrain.models.head import decode_predictions
from raytrain.ops import xywh2xyxy

NMS_CANDIDATES = 1000  # per image, the highest-scoring anchors that enter the embedded NMS (bounds its cost)


class ExportModel(nn.Module):
    """A detector with its output step attached.

    Args:
        model: an eval-mode :class:`raytrain.models.DetectionModel` (fused or not).
        output: ``ONE2MANY`` -> (B, 4 + nc, A) as ``model.decode``; ``ONE2ONE`` -> (B, max_det, 6) as
            ``model.detect(nms=False)`` before its ``conf`` filter; ``NMS`` -> (B, max_det, 6) rows after NMS, zero
            rows after the last detection.
        max_det, conf, iou: the ``ONE2ONE`` / ``NMS`` settings baked into the graph.
        candidates: ``NMS``: anchors per image that enter NMS (a dynamic export takes inputs with at least this many).
    """

    def __init__(self, model: nn.Module, output: str, *, max_det: int = 300, conf: float = 0.25,
                 iou: float = 0.7, candidates: int = NMS_CANDIDATES) -> None:
        super().__init__()
        self.model = model
        self.output = output
        self.max_det, self.conf, self.iou, self.candidates = max_det, conf, iou, candidates

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) float in [0, 1] -> the output tensor (see the class docstring)."""
        raw = self.model(images)
        if self.output == ONE2MANY:
            return self.model.decode(raw)
        if self.output == ONE2ONE:
            head = self.model.head
            decoded = decode_predictions(raw["one2one"], head.strides, self.model.reg_max, xywh=False)
            return top_k_rows(decoded, self.max_det)
        if self.output == NMS:
            return embedded_nms(self.model.decode(raw), conf=self.conf, iou=self.iou, max_det=self.max_det,
                                candidates=self.candidates)
        raise ValueError(f"unknown output {self.output!r}")


def top_k_rows(decoded_xyxy: torch.Tensor, max_det: int) -> torch.Tensor:
    """:func:`raytrain.models.head.top_k_detections` written with advanced indexing instead of ``gather`` (OpenVINO's
    GatherElements wants index and data shapes to agree): the ``max_det`` best anchors by best-class score, then the
    ``max_det`` best (anchor, class) pairs among them.

    Args:
        decoded_xyxy: (B, 4 + nc, A) corner boxes in input pixels + sigmoid scores.
        max_det: rows per image (``min(max_det, A)``).

    Returns:
        (B, k, 6) rows ``[x1, y1, x2, y2, score, cls]``, score-descending.
    """
    preds = decoded_xyxy.transpose(1, 2)  # (B, A, 4 + nc)
    b, a, c = preds.shape
    nc = c - 4
    k = min(max_det, a)
    image = torch.arange(b, device=preds.device)[:, None]
    anchor = preds[..., 4:].amax(-1).topk(k, dim=1).indices  # (B, k)
    picked = preds[image, anchor]  # (B, k, 4 + nc)
    score, flat = picked[..., 4:].reshape(b, k * nc).topk(k, dim=1)  # (B, k)
    boxes = picked[..., :4][image, flat // nc]
    return torch.cat((boxes, score[..., None], (flat % nc)[..., None].to(score.dtype)), dim=-1)


def embedded_nms(decoded: torch.Tensor, *, conf: float, iou: float, max_det: int,
                 candidates: int = NMS_CANDIDATES) -> torch.Tensor:
    """Class-aware NMS on the whole batch at once, as rows of a fixed-size tensor (what a graph can return).

    The same selection as :func:`raytrain.ops.non_max_suppression` with ``multi_label=False`` (each anchor's best
    class), except that only the ``candidates`` best anchors per image enter NMS. The batch is suppressed in one
    ``torchvision.ops.nms`` call, each (image, class) pair shifted to its own region so that boxes of different
    images or classes never overlap; the survivors are then placed per image in score order.

    Args:
        decoded: (B, 4 + nc, A) ``xywh`` input pixels + sigmoid scores (``model.decode``).
        conf: keep scores strictly above this.
        iou: suppress a box whose IoU with a better box of the same class and image is above this.
        max_det: rows per image.
        candidates: anchors per image that enter NMS.

    Returns:
        (B, max_det, 6) rows ``[x1, y1, x2, y2, score, cls]`` in input pixels, score-descending; rows after an
        image's last detection are zeros.
    """
    b, _, a = decoded.shape
    preds = decoded.transpose(1, 2)  # (B, A, 4 + nc)
    best, cls = preds[..., 4:].max(-1)  # (B, A) each anchor's best class
    best, anchor = best.topk(min(candidates, a), dim=1)  # (B, k)
    image = torch.arange(b, device=decoded.device)[:, None]
    # Advanced indexing, not gather: OpenVINO's GatherElements needs the data and index shapes to agree.
    boxes = xywh2xyxy(preds[..., :4][image, anchor])  # (B, k, 4)
    cls = cls[image, anchor].to(boxes.dtype)
    score = torch.where(best > conf, best, torch.zeros_like(best))
    # Images and classes apart: a shift larger than any coordinate (boxes of an untrained model leave the image).
    span = boxes.detach().abs().amax(dim=(0, 1, 2)) * 2 + 1  # dims given: ONNX's amax needs them
    group = image.to(boxes.dtype) * (preds.shape[2] - 3) + cls  # (B, k): a distinct number per (image, class)
    keep = torchvision.ops.nms((boxes + (group * span)[..., None]).reshape(-1, 4).float(),
                               score.reshape(-1).float(), iou)
    rows = torch.cat((boxes, score[..., None], cls[..., None]), dim=2).reshape(-1, 6)[keep]  # (N, 6)
    owner = image.expand_as(score).reshape(-1)[keep]  # (N,) the image of each row
    order = torch.argsort(owner.to(rows.dtype) * 2 - rows[:, 4])  # by image, then by score (scores are in [0, 1])
    rows, owner = rows[order], owner[order]
    # Each row's place among its image's rows: a running count per image (no per-image loop, no sort stability).
    onehot = (owner[:, None] == torch.arange(b, device=decoded.device)[None]).to(torch.int64)  # (N, B)
    place = (onehot.cumsum(0) * onehot).sum(1) - 1
    kept = (place < max_det) & (rows[:, 4] > 0)
    slot = torch.where(kept, owner * max_det + place, torch.full_like(place, b * max_det))
    out = torch.zeros(b * max_det + 1, 6, dtype=rows.dtype, device=rows.device)  # the last row collects the rest
    out = out.scatter(0, slot[:, None].expand(-1, 6), rows)
    return out[:-1].reshape(b, max_det, 6)
