"""``raytrain benchmark model=best.pt formats=pt,onnx,openvino,torchscript``: per format, the file's size, its mAP on
the dataset's val split and its batch-1 latency, measured the same way for every format.

Same inputs and post-processing for all: one val loader (letterbox as ``raytrain val``) and ``evaluate`` with the
same ``conf``/``iou``/``max_det``/``nms``; latency is the model call alone (pre-processing and NMS are the same code
for every format) on one fixed letterboxed val image, after warm-up, with the same thread count for torch, ONNX
Runtime and OpenVINO. ``pt`` is the checkpoint's model in PyTorch (scored unfused, as ``raytrain val``; timed
BN-fused, as the exports are).
"""

from __future__ import annotations

import copy
import csv
import logging
import statistics
from pathlib import Path
from typing import Any

import torch

from raytrain.export.spec import BENCHMARK_KEYS, FORMATS
from raytrain.parsing import ConfigError, coerce_value

LOGGER = logging.getLogger("raytrain")
COLUMNS = ("format", "file", "size_mb", "mAP50-95", "mAP50", "latency_ms_median", "latency_ms_p90", "threads",
           "runs", "error")
EXTRA: dict[str, tuple[Any, Any]] = {  # key: (type, default) of benchmark's own arguments
    "formats": (list[str], ["pt", *FORMATS]),
    "half": (bool, False),
    "dynamic": (bool, False),
    "nms": (bool | None, None),
    "threads": (int | None, None),  # default: torch's current intra-op thread count
    "runs": (int, 100),  # timed runs (after runs // 10 + 2 warm-up runs)
}
assert set(EXTRA) == set(BENCHMARK_KEYS)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def benchmark_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(benchmark's own typed arguments, threads filled in; the Config arguments)."""
    own = {k: coerce_value(k, args[k], hint) if k in args else default for k, (hint, default) in EXTRA.items()}
    unknown = [f for f in own["formats"] if f != "pt" and f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats={','.join(own['formats'])}: {unknown[0]} is not one of pt, {', '.join(FORMATS)}.")
    if own["runs"] < 1 or (own["threads"] is not None and own["threads"] < 1):
        raise ConfigError(f"runs={own['runs']} threads={own['threads']}: both must be at least 1.")
    own["threads"] = own["threads"] or torch.get_num_threads()
    return own, {k: v for k, v in args.items() if k not in EXTRA}


def _row(fmt: str, path: Path, model: Any, loader: Any, names: list[str], x: torch.Tensor, cfg: Any,
         own: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One format's figures: size, mAP through ``evaluate``, latency of ``model(x)``."""
    from raytrain.engine.validate import evaluate
    from raytrain.export.api import file_size
    from raytrain.export.timing import time_calls

    conf = 0.001 if cfg.conf is None else cfg.conf
    result = evaluate(model, loader, device=device, names=names, conf=conf, iou=cfg.iou, max_det=cfg.max_det,
                      nms=own["nms"])
    timed = model
    if fmt == "pt":  # timed as deployed: BN folded into the convolutions, like every export
        timed = copy.deepcopy(model).fuse()
    with torch.inference_mode():
        times = time_calls(lambda: timed(x), warmup=own["runs"] // 10 + 2, runs=own["runs"],
                           cuda=device.type == "cuda")
    return {"format": fmt, "file": str(path), "size_mb": round(file_size(path) / 1e6, 2),
            "mAP50-95": round(result.metrics["metrics/mAP50-95(B)"], 4),
            "mAP50": round(result.metrics["metrics/mAP50(B)"], 4),
            "latency_ms_median": round(statistics.median(times), 2), "latency_ms_p90": round(percentile(times, 0.9), 2),
            "threads": own["threads"], "runs": own["runs"], "error": ""}


def measure(model: Path, pt: Any, data: Any, cfg: Any, own: dict[str, Any], device: torch.device,
            save_dir: Path) -> list[dict[str, Any]]:
    """Export the checkpoint ``model`` (open as ``pt``) to each of ``own["formats"]`` into ``save_dir``, measure each
    on ``data`` (a :class:`raytrain.commands.common.ValData`), write ``benchmark.csv``; returns the rows (see
    :data:`COLUMNS`). ``own``: benchmark's own arguments (:func:`benchmark_args`), threads set."""
    from raytrain.export.api import export
    from raytrain.export.runners import load_exported

    x = (data.dataset[0]["img"][None].float() / 255).to(device)  # the one fixed image every format is timed on
    rows = []
    previous = torch.get_num_threads()
    torch.set_num_threads(own["threads"])
    try:
        for fmt in own["formats"]:
            try:
                if fmt == "pt":
                    model_, path = pt, Path(model)
                else:
                    exported = export(model, out_dir=save_dir, format=fmt, imgsz=cfg.imgsz, half=own["half"],
                                      dynamic=own["dynamic"], nms=own["nms"], max_det=cfg.max_det,
                                      device=cfg.device or "cpu")
                    if not exported.check.ok:
                        LOGGER.warning("%s: the exported file differs from PyTorch: %s", fmt, exported.check.describe())
                    path = exported.path
                    model_ = load_exported(path, device=str(device), threads=own["threads"])
                rows.append(_row(fmt, path, model_, data.loader, data.names, x, cfg, own, device))
            except ConfigError:
                raise
            except Exception as e:  # one format failing (a converter bug) does not hide the others' figures
                LOGGER.warning("%s: %s", fmt, e)
                rows.append({**dict.fromkeys(COLUMNS, ""), "format": fmt, "error": str(e).splitlines()[0][:200]})
    finally:
        torch.set_num_threads(previous)
    with open(save_dir / "benchmark.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The table ``raytrain benchmark`` prints."""
    header = f"{'Format':<12}{'Size MB':>9}{'mAP50-95':>10}{'mAP50':>8}{'ms median':>11}{'ms p90':>9}  Error"
    lines = [header]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['format']:<12}{'':>9}{'':>10}{'':>8}{'':>11}{'':>9}  {r['error']}")
        else:
            lines.append(f"{r['format']:<12}{r['size_mb']:>9.1f}{r['mAP50-95']:>10.4f}{r['mAP50']:>8.4f}"
                         f"{r['latency_ms_median']:>11.2f}{r['latency_ms_p90']:>9.2f}")
    return "\n".join(lines)


__all__ = ["COLUMNS", "benchmark_args", "format_rows", "measure", "percentile"]
