"""Export: write a checkpoint as ONNX, OpenVINO or TorchScript, then run the file once and compare with PyTorch.

Every refusal (not a checkpoint, unknown format, bad imgsz, half on the CPU, ``nms`` the model cannot honour, a
missing extra) happens before anything is written, as one line (exit 2).
"""

from __future__ import annotations

import copy
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raytrain.export.check import CheckResult, compare
from raytrain.export.graph import NMS_CANDIDATES, ExportModel
from raytrain.export.spec import (
    NMS,
    ONE2ONE,
    ExportMeta,
    anchors,
    check_format,
    exported_format,
    output_kind,
    output_path,
    require,
)
from raytrain.parsing import ConfigError, coerce_value

LOGGER = logging.getLogger("raytrain")

# key: (type, default, meaning) of the arguments raytrain export takes, with Ultralytics' names
ARGS: dict[str, tuple[Any, Any, str]] = {
    "model": (str, None, "the raytrain checkpoint (.pt) to export"),
    "format": (str, "torchscript", "onnx, openvino or torchscript"),
    "imgsz": (int | list[int], None, "input size, or [h, w] (default: the checkpoint's training imgsz)"),
    "batch": (int, 1, "batch size of a static export (the check's batch too)"),
    "dynamic": (bool, False, "free batch, height and width (multiples of the stride)"),
    "half": (bool, False, "float16 (onnx, torchscript: on a GPU only; openvino: float16 weights)"),
    "opset": (int | None, None, "ONNX opset (default: torch.onnx's)"),
    "simplify": (bool, True, "ONNX: run the exporter's onnxscript graph optimiser"),
    "nms": (bool | None, None, "unset: one-to-many output, NMS outside; False: YOLO26's NMS-free top-k; "
                               "True: NMS inside the graph"),
    "conf": (float | None, None, "nms=True: score threshold inside the graph (default 0.25)"),
    "iou": (float, 0.7, "nms=True: IoU threshold inside the graph"),
    "max_det": (int, 300, "rows of a top-k / NMS output"),
    "device": (str, "cpu", "cpu, or a GPU like 0 (needed for half with onnx/torchscript)"),
}


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the file, or OpenVINO's folder
    meta: ExportMeta
    check: CheckResult
    check_shape: tuple[int, int, int, int]


def parse_args(args: dict[str, Any]) -> dict[str, Any]:
    """The export arguments typed, with defaults; unknown keys never get here (the CLI checks them)."""
    values = {k: default for k, (_, default, _) in ARGS.items()}
    for key, value in args.items():
        if key in ARGS:
            values[key] = coerce_value(key, value, ARGS[key][0])
    return values


def _imgsz(value: int | list[int] | None, trained: Any, stride: int) -> list[int]:
    """[h, w] from imgsz= (int or [h, w]), else the checkpoint's training size; sides must be multiples of stride."""
    size = value if value is not None else (trained or 640)
    hw = [size, size] if isinstance(size, int) else list(size)
    if len(hw) != 2 or any(not isinstance(s, int) or s <= 0 for s in hw):
        raise ConfigError(f"imgsz={size!r}: give one size or [height, width] in pixels.")
    if any(s % stride for s in hw):
        up = [-(-s // stride) * stride for s in hw]
        raise ConfigError(f"imgsz={size}: every side must be a multiple of the model's stride {stride} "
                          f"(e.g. imgsz={up[0] if up[0] == up[1] else up}).")
    return hw


def _device(name: str, half: bool, fmt: str) -> torch.device:
    dev = torch.device("cpu" if name in ("", "cpu") else f"cuda:{name}" if name.isdigit() else name)
    if half and fmt != "openvino" and dev.type != "cuda":
        raise ConfigError(f"half=True with format={fmt} needs a GPU (float16 convolutions are a GPU feature here): "
                          "add device=0 on a GPU machine, or export float32.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU is visible on this machine.")
    return dev


def plan_export(values: dict[str, Any]) -> tuple[dict[str, Any], ExportMeta, Path]:
    """Every check, nothing written: the checkpoint, the metadata and the output path."""
    from raytrain import __version__
    from raytrain.models.checkpoint import inspect_checkpoint
    from raytrain.models.registry import family_of

    if not values["model"]:
        raise ConfigError("raytrain export needs model=CHECKPOINT.pt (a raytrain checkpoint, e.g. best.pt).")
    if exported_format(values["model"]):
        raise ConfigError(f"model={values['model']} is already an exported model: export from the .pt checkpoint.")
    fmt = check_format(values["format"])
    ckpt = inspect_checkpoint(str(values["model"]), key="model")  # or a one-line error naming the file
    family = family_of(ckpt["arch"])
    stride = int(max(family.strides))
    trained = ckpt.get("config") or {}
    hw = _imgsz(values["imgsz"], trained.get("imgsz"), stride)
    kind = output_kind(values["nms"])
    if kind == ONE2ONE and not family.end2end:
        raise ConfigError(f"nms=False exports the NMS-free one-to-one head, which {ckpt['arch']} does not have "
                          "(only YOLO26 does): leave nms unset for NMS outside, or nms=True for NMS inside.")
    if values["batch"] < 1 or values["max_det"] < 1:
        raise ConfigError(f"batch={values['batch']} max_det={values['max_det']}: both must be at least 1.")
    _device(values["device"], values["half"], fmt.name)
    for module in fmt.modules:
        require(module, f"format={fmt.name}")
    if fmt.name != "onnx" and (values["opset"] is not None):
        LOGGER.warning("opset=%s is an ONNX setting; format=%s ignores it.", values["opset"], fmt.name)
    conf = (0.25 if values["conf"] is None else values["conf"]) if kind == NMS else None
    candidates = min(NMS_CANDIDATES, anchors(*hw)) if kind == NMS else None
    need = {ONE2ONE: values["max_det"], NMS: candidates}.get(kind, 0) if values["dynamic"] else 0
    if anchors(*hw) < need:
        raise ConfigError(f"dynamic=True with nms={values['nms']}: the {values['max_det']}-row output needs inputs "
                          f"with at least {need} anchors, imgsz={values['imgsz']} has {anchors(*hw)}; use a larger "
                          "imgsz or a smaller max_det.")
    meta = ExportMeta(
        format=fmt.name, arch=ckpt["arch"], family=family.name, nc=int(ckpt["nc"]), names=list(ckpt["names"]),
        imgsz=hw, stride=stride, batch=values["batch"], dynamic=values["dynamic"], half=values["half"], output=kind,
        max_det=values["max_det"], conf=conf, iou=values["iou"] if kind == NMS else None, candidates=candidates,
        min_anchors=need,
        train={k: trained[k] for k in ("data", "imgsz", "single_cls") if k in trained}, version=__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return ckpt, meta, output_path(Path(values["model"]).expanduser().resolve(), fmt)


def check_input(meta: ExportMeta) -> torch.Tensor:
    """The fixed input the check runs: seeded noise; a dynamic export is checked at another batch size than it was
    traced with, so a batch dimension frozen by mistake is caught."""
    batch = meta.batch + 1 if meta.dynamic else meta.batch
    return torch.rand(batch, 3, *meta.imgsz, generator=torch.Generator().manual_seed(0))


def export(model: str | Path, *, out_dir: str | Path | None = None, **args: Any) -> ExportResult:
    """Export a checkpoint (see :data:`ARGS` for the arguments) beside it, or into ``out_dir``; returns the written
    path and the check's result."""
    from raytrain.export.runners import load_exported
    from raytrain.export.writers import WRITERS
    from raytrain.models.checkpoint import model_from_checkpoint

    values = parse_args({**args, "model": str(model)})
    ckpt, meta, path = plan_export(values)
    if out_dir is not None:
        path = Path(out_dir).expanduser().resolve() / path.name
    # OpenVINO converts on the CPU (its float16 is a weight compression, not a CUDA model)
    device = torch.device("cpu") if meta.format == "openvino" else _device(values["device"], meta.half, meta.format)
    settings = {"max_det": meta.max_det, "conf": meta.conf or 0.25, "iou": meta.iou or 0.7,
                "candidates": meta.candidates or NMS_CANDIDATES}
    reference = ExportModel(model_from_checkpoint(ckpt).eval(), meta.output, **settings)
    module = ExportModel(copy.deepcopy(reference.model).fuse(), meta.output, **settings).eval()
    dtype = torch.float16 if meta.half and meta.format != "openvino" else torch.float32
    module = module.to(device, dtype)
    example = check_input(meta)[: meta.batch].to(device, dtype)
    extra = {"opset": values["opset"], "simplify": values["simplify"]} if meta.format == "onnx" else {}
    LOGGER.info("Exporting %s (%s) to %s: input %s, output %s", values["model"], meta.arch, meta.format,
                tuple(example.shape), meta.describe())
    with torch.no_grad():
        WRITERS[meta.format](module, example, path, meta, **extra)
        images = check_input(meta)
        got = load_exported(path, device=str(device))(images.to(device))
        want = reference(images)
    return ExportResult(path, meta, compare(got, want, meta), tuple(images.shape))


def file_size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder (OpenVINO's .xml + .bin)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
