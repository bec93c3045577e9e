"""What the step after the backward pass costs: the optimizer step and the EMA update, per training batch.

On a CPU with one thread (a quickstart trial) and a small model, these add up to a sizeable share of a batch:
the default torch AdamW loops over the model's ~180 tensors in Python. Times, alternating, on one model with made-up
gradients, the optimizers raytrain builds (:func:`raytrain.engine.optim.build_optimizer`: fused where torch has a
fused kernel) against the same torch optimizers built per-tensor (torch's CPU default), the EMA update against a
per-tensor loop, and, for scale, one forward and backward pass of a batch. Prints milliseconds (medians)::

    python bench/optimizer_step.py --model yolov8n --batch 8 --imgsz 128 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import loadavg

from raytrain.engine.ema import ModelEMA
from raytrain.engine.optim import build_optimizer
from raytrain.models import build_model


def per_tensor_ema(ema: ModelEMA, model: torch.nn.Module) -> None:
    """The EMA update as it was (round 3): one ``mul_`` and ``add_`` per tensor."""
    d = 0.9
    model_state = model.state_dict()
    with torch.no_grad():
        for key, value in ema.ema.state_dict().items():
            new = model_state[key].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1 - d)
            else:
                value.copy_(new)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a quickstart trial has one)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, nc=6)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    print(f"{args.model}, {sum(1 for _ in model.parameters())} tensors, {args.threads} thread(s); load {loadavg()}")
    rows: list[tuple[str, float, float]] = []
    for name in ("SGD", "AdamW"):
        built = build_optimizer(model, name, momentum=0.9, weight_decay=5e-4)
        kwargs = {"momentum": 0.9, "nesterov": True} if name == "SGD" else {"betas": (0.9, 0.999)}
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in built.param_groups]
        per_tensor = type(built)(groups, lr=1e-3, **kwargs)  # the same groups, torch's CPU default: per tensor
        for opt in (built, per_tensor):
            for g in opt.param_groups:
                g["lr"] = 1e-3
        rows.append((f"{name} step (fused={bool(built.defaults.get('fused'))})", median_ms(built.step, args.repeats),
                     median_ms(per_tensor.step, args.repeats)))
    ema = ModelEMA(model)
    rows.append(("EMA update", median_ms(lambda: ema.update(model), args.repeats),
                 median_ms(lambda: per_tensor_ema(ema, model), args.repeats)))
    x = torch.randn(args.batch, 3, args.imgsz, args.imgsz)
    model.train()

    def forward_backward() -> None:
        out = model(x)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().sum() for o in outputs if torch.is_tensor(o)).backward()

    batch_ms = median_ms(forward_backward, max(3, args.repeats // 4))
    print(f"{'':34s} {'raytrain':>9s} {'per-tensor':>11s} {'ratio':>6s}")
    for label, mine, old in rows:
        print(f"{label:34s} {mine:8.2f}  {old:10.2f}  {mine / old:6.2f}")
    print(f"forward + backward, batch {args.batch} at {args.imgsz}: {batch_ms:.1f} ms; load {loadavg()}")


if __name__ == "__main__":
    main()
