"""``raytrain export model=best.pt format=onnx|openvino|torchscript [imgsz half dynamic batch opset simplify nms
device]``: the file beside the checkpoint, checked against PyTorch (:mod:`raytrain.export.api`)."""

from __future__ import annotations

from typing import Any

from raytrain.commands.common import require_model, take_positional


def main(positional: list[str], args: dict[str, Any]) -> int:
    from raytrain.export.api import export, file_size

    args = take_positional("export", positional, args, "model")
    model = require_model("export", args)
    result = export(model, **{k: v for k, v in args.items() if k != "model"})
    size = file_size(result.path) / 1e6
    print(f"{result.meta.format}: {result.path} ({size:.1f} MB), output {result.meta.describe()}; run once on a "
          f"fixed {'x'.join(map(str, result.check_shape))} input and compared with PyTorch: {result.check.describe()}")
    return 0 if result.check.ok else 1
