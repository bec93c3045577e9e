"""``raytrain val model=CKPT [data imgsz batch conf iou nms split save_json project name]``: COCO metrics of a
checkpoint or an exported file on a dataset split; ``metrics.json`` (and ``predictions.json``) in the run folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from raytrain.commands.common import new_run_dir, open_for, take_positional, val_data

LOGGER = logging.getLogger("raytrain")


def main(positional: list[str], args: dict[str, Any]) -> int:
    from raytrain.engine.validate import evaluate, format_table

    args = take_positional("val", positional, args, "model")
    # Unless given, validate on the dataset and image size the checkpoint was trained (or the file exported) with.
    run = open_for("val", args, defaults={"name": "val"})
    cfg = run.cfg
    data = val_data(cfg, run.model.nc)
    conf = 0.001 if cfg.conf is None else cfg.conf
    result = evaluate(run.model, data.loader, device=run.device, names=data.names, conf=conf, iou=cfg.iou,
                      max_det=cfg.max_det, save_json=cfg.save_json, nms=cfg.nms)
    save_dir = new_run_dir(cfg)
    print(format_table(result.metrics, result.per_class, len(data.dataset), cfg.verbose))
    print("Speed: " + ", ".join(f"{v:.1f} ms {k}" for k, v in result.speed.items() if k != "loss") + " per image")
    summary = {"model": str(Path(cfg.model).expanduser().resolve()), "data": str(data.spec.yaml_file),
               "split": cfg.split, "imgsz": cfg.imgsz, "conf": conf, "iou": cfg.iou, "images": len(data.dataset),
               **result.metrics, "per_class": result.per_class, "speed": result.speed}
    (save_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if result.predictions is not None:
        (save_dir / "predictions.json").write_text(json.dumps(result.predictions))
    LOGGER.info("Results saved to %s", save_dir)
    return 0
