"""``raytrain export`` and ``raytrain benchmark``: a checkpoint to ONNX, OpenVINO or TorchScript, run back through ONNX
Runtime, OpenVINO or TorchScript with the ``.pt``'s pre- and post-processing.

Modules: ``spec`` (formats, the metadata every file carries, which output it holds), ``graph`` (the module that is
exported: decoding, the NMS-free top-k or embedded NMS), ``writers`` (one exporter per format, atomic), ``runners``
(an exported file as a model ``evaluate`` and ``predict`` accept), ``check`` (exported vs PyTorch outputs),
``api`` (``raytrain export``), ``benchmark``. The exporters and runtimes are the ``export`` extra, imported only
when used.
"""

from __future__ import annotations

from typing import Any


def latency_runner(net: Any, x: Any, *, runtime: str, threads: int) -> Any:
    """:func:`raytrain.export.timing.latency_runner`, imported when called (nothing is imported with the package)."""
    from raytrain.export.timing import latency_runner as run

    return run(net, x, runtime=runtime, threads=threads)
