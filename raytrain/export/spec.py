"""What an export is: the formats, the metadata every exported file carries, and which output it holds.

The metadata makes a file self-describing: running it needs neither the ``.pt`` nor a side file. It is stored as
text key/values (ONNX ``metadata_props``, OpenVINO ``rt_info["model_info"]``, TorchScript's ``_extra_files``), one
JSON value per key.
"""

from __future__ import annotations

import difflib
import importlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

from raytrain.parsing import ConfigError

EXTRA_HINT = "pip install 'raytrain[export]'"
# The keys raytrain export / benchmark take beyond the Config fields (the CLI checks keys against these; importing
# this module costs nothing)
EXPORT_KEYS = ("format", "half", "dynamic", "opset", "simplify", "nms")
BENCHMARK_KEYS = ("formats", "half", "dynamic", "nms", "threads", "runs")

# Which tensor the exported graph returns (metadata key "output"):
ONE2MANY = "one2many"  # (B, 4 + nc, A): xywh input pixels + sigmoid scores of the one-to-many branch; NMS outside
ONE2ONE = "one2one"  # (B, max_det, 6): YOLO26's NMS-free one-to-one top-k, rows [x1, y1, x2, y2, score, cls]
NMS = "nms"  # (B, max_det, 6): NMS inside the graph, same rows, zero rows after the last detection
OUTPUTS = (ONE2MANY, ONE2ONE, NMS)


@dataclass(frozen=True)
class Format:
    """One export format."""

    name: str  # format= value
    suffix: str  # what is appended to the checkpoint's stem: best.onnx, best_openvino_model/, best.torchscript
    runtime: str  # what runs it back
    modules: tuple[str, ...]  # what the exporter and runtime import (all in the export extra)


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", "ONNX Runtime", ("onnx", "onnxscript", "onnxruntime")),
    "openvino": Format("openvino", "_openvino_model", "OpenVINO", ("openvino",)),
    "torchscript": Format("torchscript", ".torchscript", "TorchScript (torch.jit)", ()),
}
GPU_ONLY = {"engine": "TensorRT (format=engine) needs an NVIDIA GPU and TensorRT, and is not available in raytrain"}


def check_format(name: str) -> Format:
    """The :class:`Format` called ``name``, or a one-line ConfigError with a suggestion."""
    if name in FORMATS:
        return FORMATS[name]
    if name in GPU_ONLY:
        raise ConfigError(f"format={name}: {GPU_ONLY[name]}; use one of {', '.join(FORMATS)}.")
    close = difflib.get_close_matches(str(name).lower(), list(FORMATS), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise ConfigError(f"format={name!r} is not an export format: use one of {', '.join(FORMATS)}.{hint}")


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` of the export extra, or raise the one-line error naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{what} needs the {module} package: {EXTRA_HINT}") from e


def anchors(h: int, w: int, strides: tuple[float, ...] = (8, 16, 32)) -> int:
    """Anchor count ``A`` of an ``h x w`` input (sides multiples of the largest stride)."""
    return sum(int(h // s) * int(w // s) for s in strides)


def output_kind(nms: bool | None) -> str:
    """Ultralytics 8.4's ``nms``: unset -> the one-to-many output for NMS outside; False -> the NMS-free one-to-one
    top-k (YOLO26); True -> NMS inside the graph."""
    return {None: ONE2MANY, False: ONE2ONE, True: NMS}[nms]


@dataclass(frozen=True)
class ExportMeta:
    """Everything a runner needs to use an exported file (and what ``raytrain val`` defaults to)."""

    format: str
    arch: str  # e.g. "yolo26n"
    family: str  # e.g. "yolo26"
    nc: int
    names: list[str]
    imgsz: list[int]  # [h, w] the file was exported at (the only input size unless dynamic)
    stride: int  # the largest output stride: input sides must be multiples of it
    batch: int  # the batch size of a static export
    dynamic: bool  # batch, height and width free (multiples of stride)
    half: bool  # float16 inputs and outputs
    output: str  # one of OUTPUTS
    max_det: int = 300  # rows of a ONE2ONE / NMS output
    conf: float | None = None  # NMS's score threshold inside the graph (output NMS)
    iou: float | None = None  # NMS's IoU threshold inside the graph (output NMS)
    candidates: int | None = None  # NMS: anchors per image that enter the embedded NMS
    min_anchors: int = 0  # a dynamic top-k / NMS export takes only inputs with at least this many anchors
    train: dict[str, Any] = field(default_factory=dict)  # data / imgsz / single_cls the checkpoint was trained with
    version: str = ""  # raytrain's version that wrote it
    date: str = ""

    def to_strings(self) -> dict[str, str]:
        """One JSON text per field (ONNX and OpenVINO store text key/values)."""
        return {"raytrain_" + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_strings(cls, values: dict[str, str], where: str) -> ExportMeta:
        """The inverse of :meth:`to_strings`; a file without our keys is refused in one line."""
        known = {f.name for f in fields(cls)}
        got = {k.removeprefix("raytrain_"): v for k, v in values.items() if k.startswith("raytrain_")}
        if "output" not in got:
            raise ConfigError(f"model={where} holds no raytrain export metadata: export it with raytrain export "
                              "(files from other tools are not read, since their output layout is unknown).")
        return cls(**{k: json.loads(v) for k, v in got.items() if k in known})

    def describe(self) -> str:
        """``(1, 84, 8400) one-to-many`` style summary of the output."""
        b, a = ("B", "A") if self.dynamic else (self.batch, anchors(*self.imgsz))
        if self.output == ONE2MANY:
            return f"({b}, {4 + self.nc}, {a}) one-to-many, decoded (NMS at run time)"
        if self.output == ONE2ONE:
            rows = self.max_det if self.dynamic else min(self.max_det, a)
            return f"({b}, {rows}, 6) NMS-free one-to-one top-k"
        return f"({b}, {self.max_det}, 6) NMS inside the graph"


def exported_format(path: str | Path) -> str | None:
    """The format of an exported file by its name (``.onnx``, ``.torchscript``, an OpenVINO ``.xml`` or its
    ``*_openvino_model`` folder), None for anything else (a ``.pt``)."""
    p = Path(path)
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix == ".torchscript":
        return "torchscript"
    if p.suffix == ".xml" or p.name.endswith("_openvino_model") or (p.is_dir() and any(p.glob("*.xml"))):
        return "openvino"
    return None


def output_path(checkpoint: Path, fmt: Format) -> Path:
    """Where ``fmt`` of ``checkpoint`` goes: beside it, as Ultralytics does (``best.onnx``, ``best_openvino_model``)."""
    return checkpoint.with_name(checkpoint.stem + fmt.suffix)
