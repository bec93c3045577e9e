"""One exporter per format, each writing its file (or OpenVINO folder) all at once, metadata inside.

A failed export leaves nothing: each writer works on a temporary name beside the target and renames it at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from raytrain.export.spec import ExportMeta, anchors, require
from raytrain.files import atomic_write

TORCHSCRIPT_META = "config.txt"  # the _extra_files entry holding the metadata JSON (Ultralytics' name too)


def _dynamic_dims(meta: ExportMeta) -> dict[int, object]:
    """``torch.export`` dims for images (B, 3, H, W) of a dynamic export: batch free, H and W multiples of the stride,
    and no side so small that a square input has fewer than ``meta.min_anchors`` anchors (a top-k of ``max_det``
    rows, or NMS's candidates, needs that many)."""
    from torch.export import Dim

    blocks = 1
    while anchors(blocks * meta.stride, blocks * meta.stride) < meta.min_anchors:
        blocks += 1
    h = Dim("height_blocks", min=blocks, max=256)
    w = Dim("width_blocks", min=blocks, max=256)
    return {0: Dim("batch", min=1, max=1024), 2: meta.stride * h, 3: meta.stride * w}


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path, meta: ExportMeta, *, opset: int | None,
               simplify: bool) -> Path:
    """``torch.onnx.export`` with the dynamo exporter (``torch.export`` + onnxscript); metadata in
    ``metadata_props``. ``simplify`` runs the exporter's onnxscript graph optimiser (constant folding, dead code)."""
    onnx = require("onnx", "format=onnx")
    require("onnxscript", "format=onnx (torch.onnx's dynamo exporter)")

    def write(tmp: Path) -> None:
        torch.onnx.export(module, (example,), str(tmp), dynamo=True, input_names=["images"],
                          output_names=["output0"], opset_version=opset, optimize=simplify, verbose=False,
                          external_data=False,  # one file (YOLO weights are far below protobuf's 2 GB)
                          dynamic_shapes={"images": _dynamic_dims(meta)} if meta.dynamic else None)
        proto = onnx.load(str(tmp))
        for key, value in meta.to_strings().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def write_openvino(module: nn.Module, example: torch.Tensor, path: Path, meta: ExportMeta) -> Path:
    """OpenVINO's converter on the PyTorch module (``openvino.convert_model`` + ``save_model``): a folder holding
    ``<stem>.xml`` and ``.bin``; metadata in ``rt_info["model_info"]`` (the xml's ``<rt_info>``). ``half``
    compresses the weights to float16 (inputs and outputs stay float32, as in Ultralytics)."""
    ov = require("openvino", "format=openvino")
    shape = [-1, 3, -1, -1] if meta.dynamic else list(example.shape)
    converted = ov.convert_model(module, example_input=example, input=[shape])
    for key, value in meta.to_strings().items():
        converted.set_rt_info(value, ["model_info", key])
    stem = path.name.removesuffix("_openvino_model")

    def write(folder: Path) -> None:
        ov.save_model(converted, str(folder / f"{stem}.xml"), compress_to_fp16=meta.half)

    return _atomic_folder(path, write)


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path, meta: ExportMeta) -> Path:
    """``torch.jit.trace``; metadata as the ``config.txt`` extra file. The trace follows input shapes (anchors are
    built from the feature-map sizes), so a dynamic export takes other batch sizes and image sizes too."""
    traced = torch.jit.trace(module, example, check_trace=False, strict=False)
    extra = {TORCHSCRIPT_META: json.dumps(meta.to_strings())}
    return atomic_write(path, lambda tmp: traced.save(str(tmp), _extra_files=extra))


WRITERS: dict[str, Callable[..., Path]] = {"onnx": write_onnx, "openvino": write_openvino,
                                           "torchscript": write_torchscript}


def _atomic_folder(path: Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder beside ``path``, then put it in place of ``path`` (an older export is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        if path.exists():  # os.replace cannot replace a non-empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            shutil.rmtree(old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
