"""Training throughput (images/s): ``raytrain fit`` through Ray Train, the same epoch loop without Ray, and Ultralytics.

The three run the same work: YOLOv8n, ``imgsz`` 320, batch 16, on the CPU, over COCO128's 128 training images.
Throughput is training images per second of the epoch loop (validation and start-up excluded): the median over the
epochs after the first (which pays for allocator warm-up and loader start). Ray's start-up is reported separately.
The Ray run uses one worker with all of this machine's CPUs, so it does exactly the work of the direct loop, which
runs before and after it: if those two disagree, the machine's load changed and the script says so.

    python bench/throughput.py [--data ../shared/datasets/coco128/data.yaml] [--epochs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"


def _config(args: argparse.Namespace, project: Path):
    from raytrain.config import make_config

    return make_config({
        "data": str(args.data), "model": "yolov8n", "imgsz": args.imgsz, "batch": args.batch, "device": "cpu",
        "epochs": args.epochs, "workers": args.workers, "cpus_per_worker": os.cpu_count() or 1, "val": False,
        "plots": False, "project": str(project), "close_mosaic": 0, "wandb_mode": "disabled", "verbose": False,
    })


def direct(args: argparse.Namespace, project: Path) -> list[float]:
    """Images/s of each epoch of the same epoch loop (``raytrain.engine.loop.run_epochs``) called without Ray."""
    import torch

    from raytrain import keys
    from raytrain.data import resolve_data
    from raytrain.engine.loop import run_epochs
    from raytrain.engine.setup import setup_rank
    from raytrain.engine.state import initial_state
    from raytrain.train.plan import resolve_config

    cfg = resolve_config(_config(args, project), gpus_available=0)
    setup = setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=project / "direct")
    images = len(setup.train_loader.dataset)
    rates: list[float] = []

    def report(epoch_report) -> None:
        rates.append(images / epoch_report.metrics[keys.TRAIN_SECONDS])
        print(f"  direct  epoch {len(rates)}: {rates[-1]:.1f} images/s", flush=True)

    run_epochs(setup, initial_state(setup), report)
    return rates


def record_train_time(state) -> None:
    """Callback (runs on the Ray worker): append the epoch's training seconds to a file in the run folder."""
    with (state.save_dir / "train_times.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": state.epoch, "seconds": state.metrics["time/train"]}) + "\n")


def through_ray(args: argparse.Namespace, project: Path, images: int) -> tuple[list[float], float]:
    """Images/s of each epoch of ``raytrain.fit`` on one Ray Train worker, and the wall time of the whole fit."""
    import raytrain

    start = time.perf_counter()
    # start_ray: the local Ray exactly as `raytrain fit` starts it (and stops it afterwards)
    result = raytrain.fit(_config(args, project), name="ray", start_ray=True,
                          callbacks={"on_train_epoch_end": record_train_time})
    wall = time.perf_counter() - start
    times = [json.loads(line)["seconds"] for line in (result.save_dir / "train_times.jsonl").read_text().splitlines()]
    rates = [images / s for s in times]
    for epoch, rate in enumerate(rates, 1):
        print(f"  ray     epoch {epoch}: {rate:.1f} images/s", flush=True)
    return rates, wall


def ultralytics(args: argparse.Namespace, project: Path, images: int) -> list[float] | None:
    """Images/s per epoch of Ultralytics' own trainer, or None when ultralytics is not importable."""
    try:
        from ultralytics import YOLO
    except ImportError:
        return None
    import yaml

    # Ultralytics resolves a relative ``path:`` against the working directory: give it an absolute one.
    data = yaml.safe_load(args.data.read_text())
    data["path"] = str((args.data.parent / data.get("path", ".")).resolve())
    data_file = project / "ultralytics_data.yaml"
    data_file.write_text(yaml.safe_dump(data))
    model = YOLO("yolov8n.yaml")
    marks: list[float] = []
    model.add_callback("on_train_epoch_start", lambda trainer: marks.append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: marks.append(time.perf_counter()))
    model.train(data=str(data_file), imgsz=args.imgsz, batch=args.batch, epochs=args.epochs, device="cpu",
                workers=args.workers, val=False, plots=False, project=str(project), name="ultralytics",
                close_mosaic=0, amp=False, verbose=False)
    seconds = [b - a for a, b in zip(marks[::2], marks[1::2], strict=False)]
    return [images / s for s in seconds]


def direct_beside_idle_ray(args: argparse.Namespace, project: Path) -> list[float]:
    """The direct loop while an idle local Ray (dashboard on, as ``raytrain fit`` starts it) runs beside it.

    Separates the cost of Ray's daemons sharing the CPU (raylet, GCS, dashboard, log monitor) from the cost of
    running the loop inside Ray Train (its worker, controller and helper actors).
    """
    import ray

    from raytrain.cluster.local import init_ray

    init_ray("local")
    try:
        time.sleep(10)  # let Ray finish starting its processes
        return direct(args, project)
    finally:
        ray.shutdown()


def steady(rates: list[float]) -> float:
    """Median over the epochs after the first (all of them when there is only one): robust to a busy machine."""
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="dataloader processes")
    parser.add_argument("--skip-ultralytics", action="store_true")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found: pass --data path/to/coco128/data.yaml")
    os.environ.setdefault("WANDB_MODE", "disabled")
    from raytrain.data import resolve_data, scan_split

    with tempfile.TemporaryDirectory(prefix="raytrain-bench-") as tmp:
        project = Path(tmp)
        print(f"YOLOv8n, imgsz {args.imgsz}, batch {args.batch}, CPU ({os.cpu_count()} cores), {args.data}")
        before = direct(args, project / "before")
        images = len(scan_split(resolve_data(str(args.data)), "train").records)  # what one epoch trains on
        ray_rates, wall = through_ray(args, project, images)
        after = direct(args, project / "after")  # the direct loop again: shows whether the machine's load changed
        print("the direct loop beside an idle local Ray:", flush=True)
        beside = direct_beside_idle_ray(args, project / "beside")
        ultra = None
        if not args.skip_ultralytics:
            try:
                ultra = ultralytics(args, project, images)
            except Exception as e:  # an optional comparison: report it and keep the figures above
                print(f"ultralytics failed: {type(e).__name__}: {e}")
    plain = before[1:] + after[1:] or before + after
    overhead = 100 * (1 - steady(ray_rates) / statistics.median(plain))
    drift = abs(steady(before) - steady(after)) / max(steady(before), steady(after))
    print()
    print(f"direct loop (no Ray)   {statistics.median(plain):7.1f} images/s   (before {steady(before):.1f}, "
          f"after {steady(after):.1f})")
    print(f"raytrain fit (Ray)     {steady(ray_rates):7.1f} images/s   overhead {overhead:+.1f} % "
          f"(target <= 5 %); whole fit() {wall:.0f} s incl. Ray start-up and validation")
    print(f"direct beside idle Ray {steady(beside):7.1f} images/s   (Ray's daemons sharing the CPU: "
          f"{100 * (1 - steady(beside) / statistics.median(plain)):+.1f} %; running inside Ray Train on top: "
          f"{100 * (1 - steady(ray_rates) / steady(beside)):+.1f} %)")
    if drift > 0.1:
        print(f"WARNING: the direct loop ran {100 * drift:.0f} % faster or slower after the Ray run than before: "
              f"the machine's load changed, so the overhead figure is not reliable. Run again on an idle machine.")
    if ultra is None:
        print("ultralytics            not importable (pip install ultralytics to compare)")
    else:
        print(f"ultralytics            {steady(ultra):7.1f} images/s")


if __name__ == "__main__":
    main()
