"""Latency measurement shared by ``raytrain benchmark`` and :mod:`raytrain.deploy.latency`: timed calls after
warm-up, and an in-memory exported model to time (ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raytrain.export.spec import ONE2MANY, ExportMeta

RUNTIME_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "torchscript": "torchscript"}


def time_calls(run: Callable[[], Any], *, warmup: int, runs: int, cuda: bool = False) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``run`` after ``warmup`` untimed ones (allocators, kernel choice and
    caches settle in the warm-up). On CUDA each call is followed by a synchronize, so its kernels are inside it."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def latency_runner(net: torch.nn.Module, x: torch.Tensor, *, runtime: str, threads: int) -> Callable[[], Any]:
    """A callable running ``net`` (an eval-mode, usually fused ``DetectionModel``) exported to ``runtime`` on ``x``.

    The net is exported static at ``x``'s shape with the one-to-many decoded output (what NMS-outside deployments
    run), into a temporary folder that is gone when this returns (the runtime holds the model in memory).
    """
    from raytrain.export.graph import ExportModel
    from raytrain.export.runners import load_exported
    from raytrain.export.writers import WRITERS

    if runtime not in RUNTIME_FORMATS:
        raise ValueError(f"runtime={runtime!r}: use one of {', '.join(RUNTIME_FORMATS)}")
    fmt = RUNTIME_FORMATS[runtime]
    b, _, h, w = x.shape
    meta = ExportMeta(format=fmt, arch=str(getattr(net, "arch", "")), family=str(getattr(net, "family", "")),
                      nc=int(net.nc), names=list(getattr(net, "names", [])), imgsz=[h, w],
                      stride=int(max(net.stride)), batch=b, dynamic=False, half=False, output=ONE2MANY)
    module = ExportModel(net, ONE2MANY).eval()
    suffix = {"onnx": "model.onnx", "openvino": "model_openvino_model", "torchscript": "model.torchscript"}[fmt]
    with tempfile.TemporaryDirectory(prefix="raytrain-latency-") as tmp, torch.no_grad():
        extra = {"opset": None, "simplify": True} if fmt == "onnx" else {}
        path = WRITERS[fmt](module, x.float().cpu(), Path(tmp) / suffix, meta, **extra)
        runner = load_exported(path, threads=threads)
        # every runtime has read the whole file by now (jit.load, ORT session, OpenVINO compile): the folder can go
    return lambda: runner(x)
