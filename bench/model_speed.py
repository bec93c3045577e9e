"""Time YOLOv8 training steps (forward + backward) and inference (forward + decoding) on this machine.

Run: ``python bench/model_speed.py [--arch yolov8n] [--imgsz 320] [--batch 16 1] [--iters 5] [--device cpu]``.
Prints milliseconds per iteration and images per second for each batch size. The backward pass uses a stand-in
loss (the mean of every raw output), so this measures the network alone, not the loss or the assigner.
"""

from __future__ import annotations

import argparse
import time

import torch

from raytrain.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(model: torch.nn.Module, x: torch.Tensor, iters: int, warmup: int = 1) -> float:
    """Median seconds of one forward + backward (train mode) over ``iters`` timed runs."""
    model.train()
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        outs = model(x)
        loss = sum(o.float().mean() for o in outs)
        loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def time_inference(model: torch.nn.Module, x: torch.Tensor, iters: int, warmup: int = 1) -> float:
    """Median seconds of one inference (eval-mode forward, then decoding: ``model.decode(model(x))``) over ``iters``
    timed runs."""
    model.eval()
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        model.decode(model(x))
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="yolov8n")
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(args.arch, nc=args.nc).to(device)
    print(f"{args.arch} nc={args.nc} imgsz={args.imgsz} device={device} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} (median of {args.iters} iterations after 1 warm-up)")
    for batch in args.batch:
        x = torch.rand(batch, 3, args.imgsz, args.imgsz, device=device)
        train_s = time_train_step(model, x, args.iters)
        infer_s = time_inference(model, x, args.iters)
        print(f"batch {batch:3d}: forward+backward {train_s * 1e3:9.1f} ms/iter {batch / train_s:7.1f} img/s | "
              f"inference {infer_s * 1e3:9.1f} ms/iter {batch / infer_s:7.1f} img/s")


if __name__ == "__main__":
    main()
