"""Exported vs PyTorch outputs on one fixed input: the check ``raytrain export`` runs after writing a file.

Tolerances are absolute, per output part: boxes in input pixels, scores in [0, 1]. A one-to-many output is compared
element by element. Top-k and NMS rows are compared as sets: an exported row must have a PyTorch row of the same
class with a score and box within tolerance, except rows whose score ties (within tolerance) with the last row
kept, where the cut may fall on either side of equal scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raytrain.export.spec import ONE2MANY, ExportMeta

# (boxes px, scores) max absolute difference, by (format, half)
TOLERANCES: dict[tuple[str, bool], tuple[float, float]] = {
    ("onnx", False): (0.02, 2e-4),
    ("openvino", False): (0.02, 2e-4),
    ("torchscript", False): (0.02, 2e-4),  # PyTorch's kernels, but BN-fused weights: rounding differs as much
    ("onnx", True): (1.0, 1e-2),  # float16 on a GPU
    ("torchscript", True): (1.0, 1e-2),
    ("openvino", True): (0.5, 5e-3),  # float16 weights, float32 arithmetic
}


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    box_diff: float  # max |difference| of matched boxes (px)
    score_diff: float  # max |difference| of matched scores
    tolerance: tuple[float, float]
    unmatched: int  # top-k / NMS rows without a counterpart (0 for one-to-many)

    def describe(self) -> str:
        tb, ts = self.tolerance
        text = (f"max |diff| boxes {self.box_diff:.2g} px, scores {self.score_diff:.2g} "
                f"(tolerance {tb:g} px, {ts:g})")
        if self.unmatched:
            text += f", {self.unmatched} rows without a PyTorch counterpart"
        return text + (": OK" if self.ok else ": MISMATCH")


def compare(exported: torch.Tensor, reference: torch.Tensor, meta: ExportMeta) -> CheckResult:
    """Compare an exported file's output with the PyTorch :class:`ExportModel`'s on the same input."""
    tol = TOLERANCES[(meta.format, meta.half)]
    exported, reference = exported.float().cpu(), reference.float().cpu()
    if exported.shape != reference.shape:
        return CheckResult(False, float("inf"), float("inf"), tol, 0)
    if meta.output == ONE2MANY:  # (B, 4 + nc, A)
        box = (exported[:, :4] - reference[:, :4]).abs().max().item()
        score = (exported[:, 4:] - reference[:, 4:]).abs().max().item()
        return CheckResult(box <= tol[0] and score <= tol[1], box, score, tol, 0)
    box = score = 0.0
    unmatched = 0
    for rows, ref in zip(exported, reference, strict=True):  # (max_det, 6) per image
        rows, ref = rows[rows[:, 4] > 0], ref[ref[:, 4] > 0]
        b, s, missing = _match_rows(rows, ref, tol)
        box, score, unmatched = max(box, b), max(score, s), unmatched + missing
    return CheckResult(unmatched == 0 and box <= tol[0] and score <= tol[1], box, score, tol, unmatched)


def _match_rows(rows: torch.Tensor, ref: torch.Tensor, tol: tuple[float, float]) -> tuple[float, float, int]:
    """Max box and score differences of ``rows`` (n, 6) matched to ``ref`` (m, 6), and the rows left unmatched
    (not counting ties with the lowest kept score on either side)."""
    if not len(rows) or not len(ref):
        return 0.0, 0.0, abs(len(rows) - len(ref))
    same_cls = rows[:, None, 5] == ref[None, :, 5]
    score_d = (rows[:, None, 4] - ref[None, :, 4]).abs()
    box_d = (rows[:, None, :4] - ref[None, :, :4]).abs().amax(-1)
    ok = same_cls & (score_d <= tol[1]) & (box_d <= tol[0])
    matched = ok.any(1)
    cut = min(rows[:, 4].min().item(), ref[:, 4].min().item())
    missing = int((~matched & (rows[:, 4] > cut + tol[1])).sum())
    missing += int((~ok.any(0) & (ref[:, 4] > cut + tol[1])).sum())
    big = torch.where(ok, box_d, torch.full_like(box_d, float("inf"))).amin(1)
    small = torch.where(ok, score_d, torch.full_like(score_d, float("inf"))).amin(1)
    return (big[matched].max().item() if matched.any() else 0.0,
            small[matched].max().item() if matched.any() else 0.0, missing)
