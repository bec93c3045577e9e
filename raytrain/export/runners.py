"""An exported file as a model: ``runner(images)`` runs it, ``runner.detect(out, ...)`` turns its output into
detections exactly as ``DetectionModel.detect`` does, so ``evaluate`` and ``predict_image`` take a runner as they
take the ``.pt``'s model (same letterbox, same NMS, same ``conf``/``iou``/``max_det``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrain.export.spec import NMS, ONE2MANY, ONE2ONE, ExportMeta, anchors, exported_format, require
from raytrain.export.writers import TORCHSCRIPT_META
from raytrain.ops import non_max_suppression
from raytrain.parsing import ConfigError


class ExportedModel:
    """Base runner: shape checks, dtype, detection. Subclasses implement ``_run`` (float array in, array out).

    Attributes:
        meta: the file's :class:`ExportMeta`; ``nc``, ``names``, ``stride``, ``imgsz``, ``arch`` mirror it.
        path: the file (for OpenVINO, the ``.xml``).
    """

    def __init__(self, path: Path, meta: ExportMeta) -> None:
        self.path, self.meta = path, meta
        self.nc, self.names, self.arch, self.stride = meta.nc, list(meta.names), meta.arch, meta.stride
        self.imgsz = tuple(meta.imgsz)
        self.input_dtype = np.float16 if meta.half and meta.format != "openvino" else np.float32

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) float in [0, 1] -> the file's output as a float32 tensor on the images' device.

        A static export takes its own batch size only: other batches (a val loader's, its shorter last batch) run in
        chunks of that size, the last one padded with blank images whose outputs are dropped.
        """
        self.check_input(tuple(images.shape))
        chunks = [images] if self.meta.dynamic else list(images.split(self.meta.batch))
        outs = []
        for chunk in chunks:
            n = len(chunk)
            if n < self.meta.batch and not self.meta.dynamic:
                chunk = torch.cat((chunk, chunk.new_zeros(self.meta.batch - n, *chunk.shape[1:])))
            outs.append(self._forward(chunk)[:n])
        return torch.cat(outs).to(images.device)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self._run(images.detach().cpu().numpy().astype(self.input_dtype, copy=False))
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Refuse, in one line, an input the file cannot take (a static export has one image size)."""
        _, _, h, w = shape
        m = self.meta
        if m.dynamic:
            if h % m.stride or w % m.stride:
                raise ConfigError(f"model={self.path.name} takes image sides that are multiples of {m.stride}; "
                                  f"got {h}x{w}.")
            if anchors(h, w) < m.min_anchors:
                raise ConfigError(f"model={self.path.name} needs inputs with at least {m.min_anchors} anchors (its "
                                  f"{m.max_det}-row output); {h}x{w} has {anchors(h, w)}: use a larger imgsz.")
            return
        if (h, w) != tuple(m.imgsz):
            size = m.imgsz[0] if m.imgsz[0] == m.imgsz[1] else m.imgsz
            raise ConfigError(f"model={self.path.name} is a static export for imgsz={size}; got {h}x{w} inputs. Use "
                              f"imgsz={size}, or export with dynamic=True.")

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def detect(self, out: torch.Tensor, *, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
               nms: bool | None = None, multi_label: bool = False) -> list[torch.Tensor]:
        """Detections per image, rows ``[x1, y1, x2, y2, score, cls]`` in input pixels, as ``DetectionModel.detect``.

        A one-to-many file gets raytrain's NMS here (``nms`` unset or True); a top-k or NMS file already holds the
        rows, of which those above ``conf`` are kept. ``nms`` asking for what the file does not hold is refused.
        """
        kind = self.meta.output
        if kind == ONE2MANY:
            if nms is False:
                raise ConfigError(f"nms=False needs the NMS-free output, but {self.path.name} holds the one-to-many "
                                  "output: export with nms=False (YOLO26 only), or leave nms unset.")
            return non_max_suppression(out, conf, iou, max_det, multi_label=multi_label)
        if nms is True and kind == ONE2ONE:
            raise ConfigError(f"{self.path.name} is an NMS-free export (nms=False): it has no one-to-many output to "
                              "suppress; leave nms unset, or export again without nms=False.")
        if nms is False and kind == NMS:
            raise ConfigError(f"{self.path.name} has NMS inside the graph (exported with nms=True); nms=False needs "
                              "an NMS-free export (nms=False, YOLO26).")
        return [rows[:max_det][rows[:max_det, 4] > conf] for rows in out]


class OnnxModel(ExportedModel):
    """An ``.onnx`` file in ONNX Runtime (CUDA when the device is a GPU and onnxruntime-gpu is installed)."""

    def __init__(self, path: Path, meta: ExportMeta, *, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(path, meta)
        ort = require("onnxruntime", "running an .onnx file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": images})[0]


class OpenVINOModel(ExportedModel):
    """An OpenVINO ``.xml``/``.bin`` pair compiled for the CPU, in float32 (OpenVINO would pick bfloat16 on CPUs
    that have it, which moves scores by about 1e-2: not what was checked)."""

    def __init__(self, path: Path, meta: ExportMeta, model: Any, *, threads: int | None = None) -> None:
        super().__init__(path, meta)
        ov = require("openvino", "running an OpenVINO model")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(model, "CPU", config)

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self.compiled(images)[0]


class TorchScriptModel(ExportedModel):
    """A ``.torchscript`` file through ``torch.jit.load`` (on the given device)."""

    def __init__(self, path: Path, meta: ExportMeta, module: torch.jit.ScriptModule, *, device: str = "cpu") -> None:
        super().__init__(path, meta)
        self.script, self.device = module.eval(), torch.device(device)  # not "module": DDP unwrapping looks for it

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = torch.float16 if self.meta.half else torch.float32
        with torch.no_grad():
            return self.script(images.to(self.device, dtype)).float().cpu()


def _openvino_xml(path: Path) -> Path:
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ConfigError(f"model={path}: an OpenVINO folder holds one .xml; found {len(xmls)}.")
        return xmls[0]
    return path


def read_meta(path: str | Path) -> ExportMeta:
    """The metadata of an exported file, without starting a runtime session (TorchScript: loads the module)."""
    return _open(Path(path).expanduser().resolve(), "cpu", read_only=True)[0]


def load_exported(path: str | Path, *, device: str = "cpu", threads: int | None = None) -> ExportedModel:
    """The runner for an exported file (``.onnx``, ``.torchscript``, OpenVINO ``.xml`` or its folder).

    Raises:
        ConfigError: missing file, not an exported raytrain file, or the runtime not installed (one line each).
    """
    path = Path(path).expanduser().resolve()
    meta, fmt, handle = _open(path, device)
    if fmt == "onnx":
        return OnnxModel(path, meta, device=device, threads=threads)
    if fmt == "openvino":
        return OpenVINOModel(_openvino_xml(path), meta, handle, threads=threads)
    return TorchScriptModel(path, meta, handle, device=device)


def _open(path: Path, device: str, read_only: bool = False) -> tuple[ExportMeta, str, Any]:
    """(metadata, format, what the runner needs: OpenVINO's model, the TorchScript module, or None)."""
    fmt = exported_format(path)
    if fmt is None:
        raise ConfigError(f"model={path}: not an exported model (.onnx, .torchscript, an OpenVINO .xml or folder).")
    if not path.exists():
        raise ConfigError(f"model={path}: no such file.")
    if fmt == "onnx":
        onnx = require("onnx", "reading an .onnx file")
        proto = onnx.load(str(path), load_external_data=False)
        return ExportMeta.from_strings({p.key: p.value for p in proto.metadata_props}, str(path)), fmt, None
    if fmt == "openvino":
        ov = require("openvino", "reading an OpenVINO model")
        model = ov.Core().read_model(str(_openvino_xml(path)))
        info = model.get_rt_info()["model_info"] if model.has_rt_info(["model_info"]) else {}
        meta = ExportMeta.from_strings({k: v.astype(str) for k, v in dict(info).items()}, str(path))
        return meta, fmt, model
    extra = {TORCHSCRIPT_META: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(f"model={path}: not a TorchScript file ({str(e).splitlines()[0]}).") from e
    return ExportMeta.from_strings(json.loads(extra[TORCHSCRIPT_META] or "{}"), str(path)), fmt, module
