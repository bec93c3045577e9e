"""Collectives across training ranks: ``torch.distributed`` when a process group with more than one rank is up (Ray
Train sets it up), the identity otherwise."""

from __future__ import annotations

from typing import Any


def _dist() -> Any:
    """torch.distributed when a process group with more than one rank is up, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def mean_over_ranks(t: Any) -> Any:
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def from_rank0(values: list[float], device: Any) -> list[float]:
    """Rank 0's ``values`` on every rank (decisions such as stopping must agree, or ``report`` would hang)."""
    import torch

    dist = _dist()
    if dist is None:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def min_over_ranks(value: int, device: Any) -> int:
    import torch

    dist = _dist()
    if dist is None:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def first_message(message: str | None) -> str | None:
    """The first rank's non-empty ``message`` (by rank), on every rank; None when no rank has one.

    Every rank must call it (a collective): ranks agree on whether one of them failed before they train together.
    """
    dist = _dist()
    if dist is None:
        return message
    messages: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    return next((m for m in messages if m), None)


__all__ = ["first_message", "from_rank0", "mean_over_ranks", "min_over_ranks"]
