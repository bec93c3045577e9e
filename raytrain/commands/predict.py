"""``raytrain predict model=CKPT source=FILE|FOLDER [imgsz conf iou max_det project name]``: detections drawn on
each image and ``predictions.json`` in the run folder."""

from __future__ import annotations

import json
import logging
from typing import Any

from raytrain.commands.common import new_run_dir, open_for, require_model, take_positional
from raytrain.config import ConfigError

LOGGER = logging.getLogger("raytrain")


def main(positional: list[str], args: dict[str, Any]) -> int:
    import cv2
    import numpy as np

    from raytrain.data import DatasetError, load_image
    from raytrain.engine.predict import detections_json, draw_detections, list_images, predict_image

    args = take_positional("predict", positional, args, "source")
    require_model("predict", args)
    if not args.get("source"):
        raise ConfigError("raytrain predict needs source=IMAGE or source=FOLDER.")
    files = list_images(args["source"])  # before the model: a wrong path fails at once
    run = open_for("predict", args, trained_keys=("imgsz",), defaults={"name": "predict"})
    cfg, model = run.cfg, run.model
    names = list(getattr(model, "names", None) or [str(i) for i in range(model.nc)])
    conf = 0.25 if cfg.conf is None else cfg.conf
    save_dir = new_run_dir(cfg)
    results = []
    for file in files:
        try:
            image_rgb = load_image(str(file))
        except DatasetError:
            LOGGER.warning("Skipping %s: not a readable image.", file)
            continue
        det = predict_image(model, image_rgb, imgsz=cfg.imgsz, device=run.device, conf=conf, iou=cfg.iou,
                            max_det=cfg.max_det, nms=cfg.nms)
        image_bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(save_dir / file.name), draw_detections(image_bgr, det, names))
        results.append(detections_json(file, image_rgb.shape[:2], det, names))
        counts = np.bincount(det[:, 5].long().numpy(), minlength=len(names)) if len(det) else np.zeros(0, int)
        found = ", ".join(f"{n} {names[c] if c < len(names) else c}" for c, n in enumerate(counts) if n)
        LOGGER.info("%s: %s", file.name, found or "no detections")
    (save_dir / "predictions.json").write_text(json.dumps(results, indent=1))
    print(f"{len(results)} images, {sum(len(r['detections']) for r in results)} detections; saved to {save_dir}")
    return 0
