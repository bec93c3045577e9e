"""AutoBatch: the largest per-GPU batch size that fits in a fraction of the GPU's memory (``batch=-1``).

A few small batches are profiled (forward + backward at the training image size); memory grows about linearly with
the batch size, so a line fitted through the measurements predicts the batch that uses ``fraction`` of the memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

LOGGER = logging.getLogger("raytrain")
CPU_FALLBACK_BATCH = 16
PROFILE_BATCHES = (1, 2, 4, 8, 16)


def fit_batch_size(batch_sizes: Sequence[int], memory: Sequence[float], total: float, fraction: float = 0.6,
                   low: int = 1, high: int = 1024) -> int:
    """Batch size whose predicted memory is ``fraction * total``, from a least-squares line through the profile.

    Args:
        batch_sizes: profiled batch sizes.
        memory: peak memory measured at each (same unit as ``total``).
        total: the device's total memory.
        fraction: share of the memory to use (0.6 leaves room for fragmentation and the loss).
        low, high: bounds of the answer.
    """
    n = len(batch_sizes)
    if n < 2:
        raise ValueError("fit_batch_size needs at least two profiled batch sizes")
    mx, my = sum(batch_sizes) / n, sum(memory) / n
    sxx = sum((x - mx) ** 2 for x in batch_sizes)
    slope = sum((x - mx) * (y - my) for x, y in zip(batch_sizes, memory, strict=True)) / sxx
    intercept = my - slope * mx
    if slope <= 0:
        return high
    return int(min(max((fraction * total - intercept) / slope, low), high))


def autobatch(model: nn.Module, imgsz: int, device: torch.device, fraction: float = 0.6, amp: bool = True) -> int:
    """Profile ``model`` on ``device`` (CUDA) and return the per-GPU batch size to use.

    Not on CUDA there is nothing to profile: returns 16 with a message. Batch sizes that run out of memory while
    profiling end the profile early.
    """
    if device.type != "cuda":
        LOGGER.info("AutoBatch: needs a CUDA device, using batch=%d on %s.", CPU_FALLBACK_BATCH, device.type)
        return CPU_FALLBACK_BATCH
    total = torch.cuda.get_device_properties(device).total_memory
    was_training = model.training
    model.train()
    sizes, peaks = [], []
    for b in PROFILE_BATCHES:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            x = torch.zeros(b, 3, imgsz, imgsz, device=device)
            with torch.autocast("cuda", enabled=amp):
                maps = model(x)  # the raw per-level maps, what the loss takes
                loss = sum(m.float().sum() for m in maps)
            loss.backward()
            sizes.append(b)
            peaks.append(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    model.train(was_training)
    if len(sizes) < 2:
        LOGGER.warning("AutoBatch: profiling failed (out of memory at small batches); using batch=%d.", sizes[0]
                       if sizes else 1)
        return sizes[0] if sizes else 1
    batch = fit_batch_size(sizes, peaks, total, fraction)
    LOGGER.info("AutoBatch: batch=%d per GPU uses about %.0f%% of %s's %.1f GiB.", batch, fraction * 100,
                torch.cuda.get_device_name(device), total / 2**30)
    return batch
