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
import os
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


def _split_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(benchmark's own typed arguments, the Config arguments)."""
    own = {k: coerce_value(k, args[k], hint) if k in args else default for k, (hint, default) in EXTRA.items()}
    unknown = [f for f in own["formats"] if f != "pt" and f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats={','.join(own['formats'])}: {unknown[0]} is not one of pt, {', '.join(FORMATS)}.")
    if own["runs"] < 1 or (own["threads"] is not None and own["threads"] < 1):
        raise ConfigError(f"runs={own['runs']} threads={own['threads']}: both must be at least 1.")
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


def benchmark(model: str, **args: Any) -> tuple[list[dict[str, Any]], Path]:
    """Export ``model`` (a checkpoint) to each format into the benchmark folder and measure each; returns the rows
    (see :data:`COLUMNS`) and the folder holding the exports and ``benchmark.csv``."""
    from raytrain.config import make_config
    from raytrain.data import YoloDataset, build_dataloader, resolve_data, scan_split
    from raytrain.engine.devices import select_device
    from raytrain.export.api import export
    from raytrain.export.load import open_model
    from raytrain.export.runners import load_exported
    from raytrain.files import next_run_dir

    own, config_args = _split_args(args)
    own["threads"] = own["threads"] or torch.get_num_threads()
    opened = open_model(str(model))
    if opened.meta is not None:
        raise ConfigError(f"model={model}: benchmark exports the checkpoint itself; give the .pt.")
    base = {"name": "benchmark", "project": "runs/benchmark", **opened.trained}
    cfg = make_config(base, {**config_args, "model": str(model)}, where=["checkpoint", "arguments"])
    device = select_device(cfg.device)
    spec = resolve_data(cfg.data)
    dataset = YoloDataset(scan_split(spec, cfg.split), cfg.imgsz, augment=False, hyp=cfg)
    pt = opened.model(device, cfg.imgsz)
    if len(dataset.names) != pt.nc:
        raise ConfigError(f"data={cfg.data} has {len(dataset.names)} classes but model={model} predicts {pt.nc}.")
    names = [dataset.names[i] for i in range(pt.nc)]
    loader = build_dataloader(dataset, cfg.batch if cfg.batch > 0 else 16, shuffle=False,
                              workers=min(cfg.workers, os.cpu_count() or 1), seed=cfg.seed)
    x = (dataset[0]["img"][None].float() / 255).to(device)  # the one fixed image every format is timed on
    save_dir = next_run_dir(Path(cfg.project).expanduser().resolve(), cfg.name, cfg.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
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
                rows.append(_row(fmt, path, model_, loader, names, x, cfg, own, device))
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
    return rows, save_dir


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


def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain benchmark model=best.pt [formats=pt,onnx,openvino,torchscript data imgsz ...]``."""
    if "model" not in args and positional:
        args = {**args, "model": positional[0]}
    if "model" not in args:
        raise ConfigError("raytrain benchmark needs model=CHECKPOINT.pt (a raytrain checkpoint).")
    model = str(args.pop("model"))
    rows, save_dir = benchmark(model, **args)
    first = next((r for r in rows if not r["error"]), None)
    threads = first["threads"] if first else "?"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(format_rows(rows))
    print(f"Latency: model call only, batch 1, after warm-up, {threads} threads, {rows[0].get('runs', '')} timed runs "
          f"(load average {load}); mAP on the val split with the same letterbox and post-processing. "
          f"CSV: {save_dir / 'benchmark.csv'}")
    return 0 if all(not r["error"] for r in rows) else 1
