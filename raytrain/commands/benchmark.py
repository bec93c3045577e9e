"""``raytrain benchmark model=best.pt [formats=pt,onnx,openvino,torchscript data imgsz ...]``: per export format the
file's size, mAP on the val split and batch-1 latency (:mod:`raytrain.export.benchmark`); a table and a CSV."""

from __future__ import annotations

import os
from typing import Any

from raytrain.commands.common import new_run_dir, open_for, require_model, take_positional, val_data
from raytrain.config import ConfigError


def main(positional: list[str], args: dict[str, Any]) -> int:
    from raytrain.export.benchmark import benchmark_args, format_rows, measure

    args = take_positional("benchmark", positional, args, "model")
    require_model("benchmark", args)
    own, config_args = benchmark_args(args)
    run = open_for("benchmark", config_args, defaults={"name": "benchmark", "project": "runs/benchmark"})
    if run.source.meta is not None:
        raise ConfigError(f"model={args['model']}: benchmark exports the checkpoint itself; give the .pt.")
    data = val_data(run.cfg, run.model.nc)
    save_dir = new_run_dir(run.cfg)
    rows = measure(run.cfg.model, run.model, data, run.cfg, own, run.device, save_dir)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(format_rows(rows))
    print(f"Latency: model call only, batch 1, after warm-up, {own['threads']} threads, {own['runs']} timed runs "
          f"(load average {load}); mAP on the val split with the same letterbox and post-processing. "
          f"CSV: {save_dir / 'benchmark.csv'}")
    return 0 if all(not r["error"] for r in rows) else 1
