"""``raytrain convert SRC OUT [names=a,b,c | names=data.yaml]``: Ultralytics detection weights to a raytrain
checkpoint (:mod:`raytrain.models.convert`)."""

from __future__ import annotations

from typing import Any

from raytrain.config import ConfigError


def main(positional: list[str], args: dict[str, Any]) -> int:
    from raytrain.models.checkpoint import load_checkpoint
    from raytrain.models.convert import convert
    from raytrain.models.registry import family_of

    if len(positional) != 2:
        raise ConfigError("convert needs SRC and OUT: raytrain convert yolov8n_state_dict.pt yolov8n_raytrain.pt")
    src, out = positional
    path = convert(src, out, names=args.get("names"))
    ckpt = load_checkpoint(path)
    print(f"Converted {src} -> {path}: {family_of(ckpt['arch']).title} {ckpt['arch']}, nc={ckpt['nc']}, "
          f"{len(ckpt['model'])} tensors. "
          f"Fine-tune with: raytrain fit model={ckpt['arch']} pretrained={path} data=...")
    return 0
