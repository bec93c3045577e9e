"""MuSGD: Muon's orthogonalised momentum step plus SGD, the optimizer Ultralytics 8.4 trains YOLO26 with.

Muon (K. Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks") replaces a matrix
parameter's momentum update by its nearest semi-orthogonal matrix, approximated with five quintic Newton-Schulz
iterations in bfloat16. MuSGD (Ultralytics 8.4.190, ``ultralytics/optim/muon.py``) adds, for the same parameters,
a plain Nesterov-SGD step on the weight-decayed gradient, and treats every other parameter with SGD alone:

- a ``muon`` group (every 2-D and 4-D tensor): ``p -= lr * muon * NS(nesterov(m1))`` then
  ``p -= lr * sgd * nesterov_sgd(g + wd * p)``, where the decay uses ``p`` *after* the Muon step and ``m1`` is an
  exponential moving average of the gradient (``m1 = beta * m1 + (1 - beta) * g``);
- any other group: ``p -= lr * nesterov_sgd(g + wd * p)`` (``torch.optim.SGD``'s rule).

Speed: the momentum arithmetic runs as ``torch._foreach_*`` calls over a whole group, and Newton-Schulz runs once
per distinct matrix shape on the stacked updates of every parameter of that shape (a batched matmul), so a step costs
a few dozen kernel launches per shape rather than per parameter. Newton-Schulz runs in bfloat16, as 8.4 does, where
the device multiplies bfloat16 matrices in hardware (GPUs; x86 CPUs with AVX512-BF16 or AMX); on other CPUs torch
emulates bfloat16 matmuls at a fraction of float32's speed (yolo26n's step: 4.9 s in bfloat16, 0.29 s in float32 on
an AVX2 EPYC core), so there it runs in float32, which differs from the bfloat16 result by bfloat16's rounding only
(:func:`newton_schulz_dtype`; ``tests/test_musgd.py`` holds both to 8.4's step).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch

LOGGER = logging.getLogger("raytrain")

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Muon's quintic: maximise the slope at 0 while staying near 1
NS_STEPS = 5
NS_EPS = 1e-7  # keeps the first normalisation finite for an all-zero update
MUON_WEIGHT, SGD_WEIGHT = 0.2, 1.0  # Ultralytics 8.4.190's weights of the two steps in a muon group


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """The precision Newton-Schulz runs in on ``device``: bfloat16 (8.4.190's) where the hardware multiplies bfloat16
    matrices (any accelerator; an x86 CPU with AVX512-BF16 or AMX), float32 on other CPUs, where torch emulates
    bfloat16 matmuls more slowly than it computes float32 ones."""
    if device.type != "cpu":
        return torch.bfloat16
    native = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return torch.bfloat16 if any(check is not None and check() for check in native) else torch.float32


def newton_schulz(updates: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximate orthogonalisation ``U V^T`` of each matrix of a batch (``U S V^T`` its SVD), in ``dtype``.

    Args:
        updates: ``(B, m, n)`` matrices, any float dtype.
        steps: quintic iterations; the coefficients bring singular values into about [0.7, 1.2] rather than to 1,
            which is what Muon needs and converges in 5 steps.
        dtype: the precision of the iterations (Muon's and 8.4's: bfloat16).

    Returns:
        ``(B, m, n)`` in ``dtype``.
    """
    a, b, c = NS_COEFFICIENTS
    x = updates.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + NS_EPS)  # Frobenius norm >= spectral norm: singular values <= 1
    wide = x.size(-2) <= x.size(-1)
    if not wide:  # iterate on the (n, m) side: the Gram matrix x x^T is then the smaller of the two
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b * G + c * G^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a * x + (b G + c G^2) x
    return x if wide else x.mT


def orthogonalized(updates: list[torch.Tensor], dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Muon's update of each tensor: Newton-Schulz of the tensor flattened to ``(shape[0], -1)``, scaled by
    ``sqrt(max(1, shape[-2] / shape[-1]))``, in the tensor's shape and dtype.

    The scale follows 8.4.190: it uses the tensor's last two dimensions, which for a conv filter
    ``(out, in, kh, kw)`` is ``kh / kw`` (1 for square kernels), for a linear weight ``out / in``. Tensors of one
    flattened shape are orthogonalised together in one batched call, in ``dtype`` (None: the device's
    :func:`newton_schulz_dtype`).
    """
    by_shape: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, u in enumerate(updates):
        by_shape[(u.shape[0], u[0].numel(), u.shape[-2] / u.shape[-1], u.device, u.dtype)].append(i)
    out: list[torch.Tensor] = [updates[0]] * len(updates)
    for (rows, cols, ratio, device, out_dtype), members in by_shape.items():
        stacked = torch.stack([updates[i].reshape(rows, cols) for i in members])  # (B, rows, cols), a copy
        ortho = newton_schulz(stacked, dtype=dtype or newton_schulz_dtype(device)).to(out_dtype)
        ortho.mul_(max(1.0, ratio) ** 0.5)
        for i, matrix in zip(members, ortho.unbind(0), strict=True):
            out[i] = matrix.view(updates[i].shape)
    return out


class MuSGD(torch.optim.Optimizer):
    """Muon + SGD (see the module docstring); groups with ``muon=True`` get both steps, others SGD only.

    Args:
        params: parameter groups as :func:`raytrain.engine.optim.build_optimizer` makes them (``muon`` flag per group).
        lr: default learning rate (the schedule sets every group's ``lr`` before each step).
        momentum: SGD momentum, also Muon's ``beta``.
        weight_decay: L2 added to the gradient of the SGD step.
        nesterov: Nesterov momentum for both steps.
        muon, sgd: the weights of the Muon and SGD steps in a muon group (Ultralytics 8.4.190: 0.2 and 1.0).
        ns_dtype: the precision of Newton-Schulz; None: :func:`newton_schulz_dtype` of the parameters' device.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.0, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = True, muon: float = MUON_WEIGHT, sgd: float = SGD_WEIGHT,
                 ns_dtype: torch.dtype | None = None) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"MuSGD: lr={lr}, momentum={momentum}, weight_decay={weight_decay} must be >= 0")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov,
                    "muon": False}
        super().__init__(params, defaults)
        self.muon_weight, self.sgd_weight = muon, sgd
        self.ns_dtype = ns_dtype
        devices = {p.device for g in self.param_groups if g["muon"] for p in g["params"]}
        if ns_dtype is None and any(newton_schulz_dtype(d) != torch.bfloat16 for d in devices):
            LOGGER.info("MuSGD: Newton-Schulz in float32, not Ultralytics' bfloat16: this CPU has no bfloat16 "
                        "matrix instructions (AVX512-BF16, AMX), and emulated bfloat16 is many times slower.")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step for every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            lr, beta, nesterov = group["lr"], group["momentum"], group["nesterov"]
            sgd_lr = lr
            if group["muon"]:
                averages = self._buffers(params, "muon_buffer")
                torch._foreach_lerp_(averages, grads, 1 - beta)  # m1 = beta m1 + (1 - beta) g
                ahead = torch._foreach_lerp(grads, averages, beta) if nesterov else averages
                torch._foreach_add_(params, orthogonalized(list(ahead), self.ns_dtype), alpha=-lr * self.muon_weight)
                sgd_lr = lr * self.sgd_weight
            _sgd_step(params, grads, self._buffers(params, "momentum_buffer"), lr=sgd_lr, momentum=beta,
                      weight_decay=group["weight_decay"], nesterov=nesterov)
        return loss

    def _buffers(self, params: list[torch.Tensor], key: str) -> list[torch.Tensor]:
        """Each parameter's state tensor ``key``, created as zeros on first use."""
        out = []
        for p in params:
            state = self.state[p]
            if key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.append(state[key])
        return out


def _sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor], *, lr: float,
              momentum: float, weight_decay: float, nesterov: bool) -> None:
    """``torch.optim.SGD``'s step (no dampening) over lists; decay uses the parameters as they are now."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    step = torch._foreach_add(grads, buffers, alpha=momentum) if nesterov else buffers
    torch._foreach_add_(params, step, alpha=-lr)


__all__ = ["MUON_WEIGHT", "NS_COEFFICIENTS", "NS_STEPS", "SGD_WEIGHT", "MuSGD", "newton_schulz", "newton_schulz_dtype",
           "orthogonalized"]
