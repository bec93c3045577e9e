"""Latency of a detector measured, not estimated: batch 1, a fixed number of threads, median over timed runs.

What is timed: one pass of the network and its box decoding (the graph ``raytrain export`` writes with NMS outside,
:class:`raytrain.export.graph.ExportModel` ``one2many``) at batch 1 on a ``(1, 3, imgsz, imgsz)`` input, in the
runtime the model is deployed with: ``torch`` (the BN-fused eval-mode module under ``torch.inference_mode``, on the
given device), ``onnxruntime`` or ``openvino`` (that graph exported by :mod:`raytrain.export` to a temporary file and
run back by its runner, on the CPU). Not timed: pre-processing and NMS, whose cost depends on the trained weights'
scores, not on the architecture (the measurement runs before training).

Runs: :data:`WARMUP_RUNS` untimed (allocator, kernel selection, caches), then :data:`TIMED_RUNS` timed one by one
with ``time.perf_counter`` (on CUDA after a synchronize, so a run's kernels are inside its time); the median is the
figure, the quartiles and extremes are kept beside it.
"""

from __future__ import annotations

import importlib.util
import platform
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError

WARMUP_RUNS = 10
TIMED_RUNS = 50
RUNTIME_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino"}  # runtime -> raytrain export format


@dataclass(frozen=True)
class Latency:
    """One latency measurement (milliseconds) and how it was taken."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup: int
    threads: int
    runtime: str
    device: str  # the device kind: "cpu: <processor>" or the CUDA device's name
    imgsz: int

    @property
    def iqr_ms(self) -> float:
        """The interquartile range: the spread of the timed runs."""
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "iqr_ms": self.iqr_ms}


def device_kind(device: Any) -> str:
    """What a latency figure was measured on: ``cuda: NVIDIA H200`` or ``cpu: <processor name>``.

    Trials on the same kind of device share a measurement; a figure from another kind is never reused.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {_cpu_name()}"


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def runtime_problem(runtime: str) -> str | None:
    """Why ``runtime`` cannot time a model here (one line), or None when it can."""
    if runtime == "torch":
        return None
    fmt = RUNTIME_FORMATS.get(runtime)
    if fmt is None:
        return f"{runtime!r} is not a runtime; use torch, onnxruntime or openvino."
    if importlib.util.find_spec("raytrain.export") is None:
        return (f"{runtime} latency needs raytrain's exporter (raytrain.export), which this version does not have; "
                f"use latency_runtime: torch.")
    from raytrain.export.spec import FORMATS

    missing = [m for m in FORMATS[fmt].modules if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{runtime} latency exports to {fmt} and needs {', '.join(missing)}: pip install 'raytrain[export]' "
                f"(or use latency_runtime: torch).")
    return None


def measure_latency(model: Any, imgsz: int, *, runtime: str = "torch", device: Any = "cpu", threads: int = 1,
                    warmup: int = WARMUP_RUNS, runs: int = TIMED_RUNS) -> Latency:
    """Time ``model`` at batch 1 (see the module docstring).

    Args:
        model: a :class:`raytrain.models.DetectionModel` (not changed: a fused copy is timed, with its decoding).
        imgsz: the square input size.
        runtime: ``torch``, ``onnxruntime`` or ``openvino``.
        device: where to run it (``onnxruntime``/``openvino`` run on the CPU).
        threads: CPU threads of the runtime during the measurement (torch's intra-op threads are set for the
            measurement and restored after).
        warmup, runs: untimed and timed runs.

    Raises:
        ConfigError: the runtime cannot run here (one line).
    """
    import copy

    import torch

    problem = runtime_problem(runtime)
    if problem:
        raise ConfigError(f"latency_runtime={runtime}: {problem}")
    device = torch.device(device) if runtime == "torch" else torch.device("cpu")
    from raytrain.export.graph import ExportModel
    from raytrain.export.spec import ONE2MANY
    from raytrain.export.timing import time_calls

    net = copy.deepcopy(model).float().eval().to(device)
    net.fuse()
    graph = ExportModel(net, ONE2MANY).eval()
    x = torch.rand(1, 3, imgsz, imgsz, device=device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="raytrain-latency-") as folder:
            run = _torch_runner(graph, x) if runtime == "torch" else \
                _exported_runner(graph, x, runtime, threads, Path(folder))
            times = time_calls(run, warmup=warmup, runs=runs, cuda=device.type == "cuda")
    finally:
        torch.set_num_threads(previous)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return Latency(median_ms=statistics.median(times), p25_ms=q1, p75_ms=q3, min_ms=min(times), max_ms=max(times),
                   runs=runs, warmup=warmup, threads=threads, runtime=runtime, device=device_kind(device),
                   imgsz=imgsz)


def _torch_runner(graph: Any, x: Any) -> Callable[[], Any]:
    import torch

    def run() -> Any:
        with torch.inference_mode():
            return graph(x)

    return run


def _exported_runner(graph: Any, x: Any, runtime: str, threads: int, folder: Path) -> Callable[[], Any]:
    """``graph`` exported by raytrain's writer for ``runtime`` into ``folder`` and loaded by its runner (with
    ``threads`` intra-op threads); the callable runs it on ``x``."""
    import torch

    from raytrain.export.runners import load_exported
    from raytrain.export.spec import FORMATS, ONE2MANY, ExportMeta
    from raytrain.export.writers import WRITERS

    fmt = FORMATS[RUNTIME_FORMATS[runtime]]
    net = graph.model
    names = getattr(net, "names", None) or [str(i) for i in range(int(net.nc))]
    names = list(names.values()) if isinstance(names, dict) else list(names)
    meta = ExportMeta(format=fmt.name, arch=str(getattr(net, "arch", "")), family=str(getattr(net, "family", "")),
                      nc=int(net.nc), names=[str(n) for n in names], imgsz=[int(x.shape[2]), int(x.shape[3])],
                      stride=int(max(float(s) for s in net.stride)), batch=1, dynamic=False, half=False,
                      output=ONE2MANY)
    path = folder / f"model{fmt.suffix}"
    extra = {"opset": None, "simplify": True} if fmt.name == "onnx" else {}
    with torch.no_grad():
        written = WRITERS[fmt.name](graph, x, path, meta, **extra)
    runner = load_exported(written, threads=threads)
    return lambda: runner(x)


__all__ = ["TIMED_RUNS", "WARMUP_RUNS", "Latency", "device_kind", "measure_latency", "runtime_problem"]
