"""What a trial measures of its model before it trains: latency, parameters, GFLOPs; once per experiment and kind.

Latency and size depend only on the architecture, the class count and ``imgsz``, so they are measured before
training, on the device the trial trains on, once per distinct (model, classes, imgsz, runtime, threads, device kind)
in an experiment, and reused by every later trial of that kind: trials of one architecture are compared on one
number, and a neighbour trial's load cannot reorder them. The figures live in ``<experiment>/measured.json``; a file
lock makes a second trial of the same kind wait for the first one's measurement instead of timing next to it. A trial
on another machine than the driver keeps its own copy there (its device kind may differ anyway).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from raytrain.keys import GFLOPS, LATENCY_IQR_MS, LATENCY_MS, PARAMS
from raytrain.models.registry import is_checkpoint
from raytrain.tuning.objectives import DeploySpec

LOGGER = logging.getLogger("raytrain")
MEASURED_FILE = "measured.json"  # in the experiment folder: measurement key -> figures


def architecture(model: str) -> str:
    """The architecture name of ``model=``: a name as it is, a checkpoint's ``arch``."""
    if not is_checkpoint(model):
        return model.removesuffix(".yaml")
    from raytrain.models.checkpoint import load_checkpoint

    return str(load_checkpoint(model)["arch"])


def measurement_key(arch: str, nc: int, imgsz: int, deploy: DeploySpec, device_kind: str) -> str:
    return f"{arch} nc={nc} imgsz={imgsz} runtime={deploy.runtime} threads={deploy.threads} on {device_kind}"


def measure_model(model: str, nc: int, imgsz: int, deploy: DeploySpec, device: Any,
                  experiment_dir: str | Path, *, latency: bool = True) -> dict[str, float]:
    """The measured values a trial reports (:data:`raytrain.keys.DEPLOY_KEYS` it needs, and the latency's spread),
    from the experiment's ``measured.json`` when this kind was measured already, else measured now and kept there.

    Args:
        model: the trial's ``model=`` (a name or a checkpoint file).
        nc: the dataset's class count.
        imgsz: the trial's image size (square).
        deploy: what to measure and how (runtime, threads).
        device: the trial's training device (latency in ``torch`` runs there; onnxruntime/openvino on the CPU).
        experiment_dir: the experiment folder.
        latency: False: the size only (params, GFLOPs), e.g. to check size constraints before paying for a timing.
    """
    from filelock import FileLock

    from raytrain.deploy.latency import device_kind
    from raytrain.files import atomic_write

    folder = Path(experiment_dir)
    folder.mkdir(parents=True, exist_ok=True)
    arch = architecture(model)
    timed = latency and LATENCY_MS in deploy.measured
    kind = device_kind(device if deploy.runtime == "torch" else "cpu")
    key = measurement_key(arch, nc, imgsz, deploy, kind)
    with FileLock(str(folder / f"{MEASURED_FILE}.lock")):
        table = read_measured(folder)
        entry = table.get(key)
        if entry is None or (timed and "latency" not in entry):
            entry = _measure(arch, nc, imgsz, deploy, device, timed)
            table[key] = entry
            atomic_write(folder / MEASURED_FILE, json.dumps(table, indent=1))
        else:
            LOGGER.info("Reusing the measurement of %s (%s).", key, "latency, size" if timed else "size")
    values = {PARAMS: float(entry["params"]), GFLOPS: float(entry["gflops"])}
    if timed:
        values.update({LATENCY_MS: float(entry["latency"]["median_ms"]),
                       LATENCY_IQR_MS: float(entry["latency"]["iqr_ms"])})
    return values


def read_measured(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``measured.json`` of an experiment folder (empty when absent or unreadable)."""
    path = Path(folder) / MEASURED_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _measure(arch: str, nc: int, imgsz: int, deploy: DeploySpec, device: Any, timed: bool) -> dict[str, Any]:
    from raytrain.deploy import latency as timing
    from raytrain.deploy.profile import count_gflops, count_params
    from raytrain.models import build_model

    started = time.perf_counter()
    model = build_model(arch, nc=nc).eval()
    entry: dict[str, Any] = {"arch": arch, "nc": nc, "imgsz": imgsz, "params": count_params(model),
                             "gflops": count_gflops(model, imgsz)}
    if timed:
        latency = timing.measure_latency(model, imgsz, runtime=deploy.runtime, device=device, threads=deploy.threads,
                                         warmup=timing.WARMUP_RUNS, runs=timing.TIMED_RUNS)
        entry["latency"] = latency.to_dict()
        LOGGER.info("Measured %s at imgsz %d (%s, %d thread(s), %s): %.3f ms median over %d runs (IQR %.3f ms).",
                    arch, imgsz, deploy.runtime, deploy.threads, latency.device, latency.median_ms, latency.runs,
                    latency.iqr_ms)
    entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return entry


__all__ = ["MEASURED_FILE", "architecture", "measure_model", "measurement_key", "read_measured"]
