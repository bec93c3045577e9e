"""What MuSGD costs next to SGD on the CPU: the optimizer step alone, and a whole training epoch.

Step: each model at nc=80 with random gradients; SGD, raytrain's MuSGD and (when installed) Ultralytics 8.4.190's
MuSGD take turns, ``--steps`` steps each; the median per step of process CPU time (what a shared machine's load
inflates least: waiting for a core is not counted) and of wall time.

Epoch: raytrain's epoch (``setup_rank`` + ``train_one_epoch``, no Ray) on the built-in shapes dataset, batch 16 and
nbs 64 (an optimizer step every 4 batches, Ultralytics' defaults), without warmup (the steady state: warmup steps
more often); an SGD and a MuSGD worker alternate epochs, ``--epochs`` each, loader in-process (``workers=0``) so CPU
time covers all the work. The first epoch of each pays for allocator warm-up and is dropped. Reported: median CPU and
wall seconds per epoch and the MuSGD/SGD ratio.

On a CPU without bfloat16 instructions (no AVX512-BF16 or AMX), where MuSGD runs Newton-Schulz in float32, the step
bench also times MuSGD in 8.4's bfloat16 (``MuSGD bfloat16``, emulated by torch), and ``--bfloat16-epochs`` adds it
to the epochs.

    python bench/musgd_speed.py [--archs yolo26n yolo26s] [--steps 10] [--epoch-arch yolo26n] [--epochs 3]
                                [--imgsz 320] [--fraction 0.5] [--threads 1] [--bfloat16-epochs]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common
import torch


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _optimizers(arch: str) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
    """One copy of the model per optimizer, each with every group's lr set as the schedule would (lr0 x scale)."""
    from raytrain.engine.optim import build_optimizer, param_groups
    from raytrain.models import build_model

    model = build_model(arch, nc=80)
    out = {}
    for label, name, ns_dtype in _variants(bfloat16_too=True):
        copy_ = copy.deepcopy(model)
        opt = build_optimizer(copy_, name, momentum=0.937, weight_decay=5e-4)
        if ns_dtype is not None:
            opt.ns_dtype = ns_dtype
        for g in opt.param_groups:
            g["lr"] = 0.01 * g["lr_scale"]
        out[label] = (copy_, opt)
    try:
        from ultralytics.optim import MuSGD as UltralyticsMuSGD
    except ImportError:
        return out
    copy_ = copy.deepcopy(model)
    groups = [{"params": g.params, "lr": 0.01 * g.lr_scale, "momentum": 0.937, "nesterov": True,
               "weight_decay": 5e-4 if g.decay else 0.0, "use_muon": g.kind == "muon"}
              for g in param_groups(copy_, muon=True)]
    out["Ultralytics MuSGD"] = (copy_, UltralyticsMuSGD(groups, muon=0.2, sgd=1.0))
    return out


def _variants(bfloat16_too: bool) -> list[tuple[str, str, torch.dtype | None]]:
    """``(label, optimizer, Newton-Schulz dtype or None for MuSGD's own choice)`` to time: SGD and MuSGD, and, on a
    CPU where MuSGD runs Newton-Schulz in float32 (no bfloat16 instructions), MuSGD in 8.4's bfloat16 (emulated)."""
    from raytrain.engine.muon import newton_schulz_dtype

    out: list[tuple[str, str, torch.dtype | None]] = [("SGD", "SGD", None), ("MuSGD", "MuSGD", None)]
    if bfloat16_too and newton_schulz_dtype(torch.device("cpu")) != torch.bfloat16:
        out.append(("MuSGD bfloat16", "MuSGD", torch.bfloat16))
    return out


def bench_steps(arch: str, steps: int) -> None:
    runs = _optimizers(arch)
    for model, _ in runs.values():
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 0.01 if p.requires_grad else None
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(steps + 1):  # the first step of each creates its state: dropped
        for name, (_, opt) in runs.items():
            times[name].append(timed(opt.step))
    for name, t in times.items():
        cpu, wall = statistics.median(c for c, _ in t[1:]), statistics.median(w for _, w in t[1:])
        print(f"  {arch:8s} step  {name:18s} cpu {cpu * 1e3:7.1f} ms  wall {wall * 1e3:7.1f} ms", flush=True)


def bench_epochs(args: argparse.Namespace, project: Path) -> None:
    from raytrain.config import make_config
    from raytrain.data import resolve_data
    from raytrain.engine.epoch import train_one_epoch
    from raytrain.engine.setup import setup_rank
    from raytrain.train.plan import resolve_config

    setups = {}
    for label, name, ns_dtype in _variants(bfloat16_too=args.bfloat16_epochs):
        folder = label.replace(" ", "-")
        cfg = resolve_config(make_config({
            "data": "shapes", "model": args.epoch_arch, "imgsz": args.imgsz, "batch": 16, "nbs": 64,
            "fraction": args.fraction, "optimizer": name, "warmup_epochs": 0, "workers": 0, "device": "cpu",
            "project": str(project), "name": folder, "close_mosaic": 0, "plots": False, "val": False,
            "cpus_per_worker": args.threads}), gpus_available=0)
        setups[label] = setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=project / folder)
        if ns_dtype is not None:
            setups[label].optimizer.ns_dtype = ns_dtype
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    steps = {name: 0 for name in setups}
    for epoch in range(args.epochs + 1):
        for name, w in setups.items():
            w.train_loader.set_epoch(epoch + 1)
            first = epoch * len(w.train_loader)

            def run(w=w, first=first, epoch=epoch):
                return train_one_epoch(w.model, w.train_loader, w.optimizer, w.loss_fn, device=w.device, epoch=epoch,
                                       lr_schedule=w.lr_schedule, ema=w.ema, scaler=w.scaler, iteration=first,
                                       last_step=first - 1)

            times[name].append(timed(run))
            steps[name] = len(w.train_loader) // w.lr_schedule.accumulate(first)
            print(f"  epoch {epoch} {name:14s} cpu {times[name][-1][0]:7.1f} s  wall {times[name][-1][1]:7.1f} s  "
                  f"(load {common.loadavg()})", flush=True)
    med = {name: (statistics.median(c for c, _ in t[1:]), statistics.median(w for _, w in t[1:]))
           for name, t in times.items()}
    batches = len(setups["SGD"].train_loader)
    print(f"\n{args.epoch_arch} epoch, imgsz {args.imgsz}, {batches} batches of 16, {steps['SGD']} optimizer steps, "
          f"median of {args.epochs}:")
    for name, (cpu, wall) in med.items():
        print(f"  {name:14s} cpu {cpu:7.1f} s  wall {wall:7.1f} s")
    for name in (n for n in med if n != "SGD"):
        print(f"  {name} / SGD: cpu {med[name][0] / med['SGD'][0]:.3f}x  wall {med[name][1] / med['SGD'][1]:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="*", default=["yolo26n", "yolo26s"],
                        help="models of the step bench (none: skip it)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--epoch-arch", default="yolo26n")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a loaded machine OpenMP's spinning threads inflate CPU time)")
    parser.add_argument("--skip-epochs", action="store_true")
    parser.add_argument("--bfloat16-epochs", action="store_true",
                        help="on a CPU without bfloat16 instructions, also time MuSGD epochs in 8.4's bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import shlex
    import sys

    print("command:", shlex.join([sys.executable, *sys.argv]))
    from raytrain.engine.muon import newton_schulz_dtype

    ns = str(newton_schulz_dtype(torch.device("cpu"))).removeprefix("torch.")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, MuSGD's Newton-Schulz in {ns}, load {common.loadavg()}",
          flush=True)
    for arch in args.archs:
        bench_steps(arch, args.steps)
    if not args.skip_epochs:
        with tempfile.TemporaryDirectory() as tmp:
            bench_epochs(args, Path(tmp))
    print(f"load at the end: {common.loadavg()}")


if __name__ == "__main__":
    main()
