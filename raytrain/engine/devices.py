"""Devices: what ``device=`` means, how many training workers a run gets, and the batch each of them trains on.

Pure functions of the arguments and of the GPUs available (the caller counts them: Ray's cluster resources for a
Ray run, ``torch.cuda.device_count()`` for a local one), so the driver plans a run before anything starts and the
same rules serve ``raytrain val``/``predict``, which run in the caller's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raytrain.config import ConfigError


@dataclass(frozen=True)
class DevicePlan:
    """How many training workers, and on what (``cpu``, ``cuda`` with one GPU each, or ``mps``)."""

    accelerator: str
    num_workers: int
    gpu_ids: tuple[int, ...] | None = None  # the GPUs ``device=`` named (local runs show Ray only these)
    note: str = ""  # a warning to show (e.g. GPUs asked for but none available)


def parse_gpu_ids(device: str) -> list[int] | None:
    """``'0,1'`` -> ``[0, 1]``; ``'cuda:1'`` -> ``[1]``; None when ``device`` names no GPU indices.

    Raises:
        ConfigError: anything else (``device=gpu``, negative or repeated indices).
    """
    text = str(device).lower().replace("cuda:", "").replace("cuda", "").replace(" ", "").strip(",")
    if not text or text in ("cpu", "mps"):
        return None
    try:
        ids = [int(p) for p in text.split(",") if p]
    except ValueError:
        raise ConfigError(f"device={device!r} is not valid: use cpu, mps, a GPU index like 0, "
                          f"or a list like 0,1.") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"device={device!r} is not valid: GPU indices must be distinct and 0 or more.")
    return ids


def plan_devices(device: str, num_workers: int | None, gpus_available: int) -> DevicePlan:
    """Workers and accelerator for ``device`` / ``num_workers`` given the GPUs that can be scheduled.

    ``cpu``: ``num_workers`` CPU workers (default 1). ``mps``: one local worker on Apple silicon. ``0,1``: one GPU
    worker per listed GPU (``num_workers`` overrides the count on a cluster). ``''``: every GPU, else the CPU.
    GPUs named (``device=0``) where there are none are an error, as in Ultralytics: a cluster job that asked for
    GPUs must not train on CPUs, 50 times slower.
    """
    device = device.strip().lower()
    if device == "cpu":
        return DevicePlan("cpu", num_workers or 1)
    if device == "mps":
        note = "device=mps runs one local worker; num_workers ignored." if (num_workers or 1) > 1 else ""
        return DevicePlan("mps", 1, note=note)
    ids = parse_gpu_ids(device)
    if gpus_available <= 0:
        if ids:
            raise ConfigError(f"device={device}: asks for GPU {','.join(map(str, ids))}, but there is no GPU here "
                              f"(Ray sees none, and none can be added): use device=cpu, or run where the GPUs are.")
        return DevicePlan("cpu", num_workers or 1)
    wanted = num_workers or (len(ids) if ids else gpus_available)
    if wanted > gpus_available:
        raise ConfigError(f"device={device or repr('')} / num_workers={num_workers}: {wanted} GPU workers asked for, "
                          f"but Ray sees {gpus_available} GPU(s).")
    return DevicePlan("cuda", wanted, gpu_ids=tuple(ids) if ids else None)


def check_local_gpu_ids(device: str, gpu_count: int) -> None:
    """``device=`` GPU indices against this machine's ``gpu_count`` CUDA devices (a local run, val, predict): an index
    that does not exist is a ConfigError naming the ones that do."""
    ids = parse_gpu_ids(device) or []
    missing = [i for i in ids if i >= gpu_count]
    if missing:
        present = f"GPUs {', '.join(map(str, range(gpu_count)))}" if gpu_count else "no CUDA GPU"
        raise ConfigError(f"device={device}: GPU {','.join(map(str, missing))} does not exist; this machine has "
                          f"{present}. Use device=cpu or an index that exists.")


def per_worker_batch(batch: int, num_workers: int) -> int:
    """The batch each worker trains on; the global ``batch`` must divide evenly between workers."""
    if batch % num_workers:
        raise ConfigError(f"batch={batch} does not divide between {num_workers} workers: use a multiple of "
                          f"{num_workers} (e.g. batch={max(num_workers, batch // num_workers * num_workers)}).")
    return batch // num_workers


def select_device(device: str = "") -> Any:
    """The one ``torch.device`` a single-process command (val, predict) runs on.

    ``''`` or ``cuda`` -> the first GPU if any, else the CPU; ``cpu``; ``mps``; ``0`` or ``0,1`` -> that list's
    first GPU (``cuda:0``).
    """
    import torch

    text = str(device).strip().lower()
    if text in ("", "cuda"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text in ("cpu", "mps"):
        return torch.device(text)
    ids = parse_gpu_ids(text)
    check_local_gpu_ids(text, torch.cuda.device_count())
    return torch.device(f"cuda:{ids[0]}")
