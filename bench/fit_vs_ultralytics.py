"""The same training recipe with ``raytrain fit`` and with Ultralytics' ``yolo train``, over seeds, side by side.

For one model name (``yolo26n``, ``yolo11n``, ``yolov8n`` ...) from random weights on the built-in ``shapes`` dataset
(or ``--data``), each seed trains once with each tool, alternating the order from seed to seed so a drift of the
machine's speed does not favour one side: the same epochs, imgsz, batch, nbs, optimizer, seed, dataloaders in the
training process (``workers=0``), no plots, on the CPU. Each side runs in a fresh process; Ultralytics with another
interpreter (``--ultralytics-python``, a venv of its own: it is never installed into raytrain's), offline
(``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=false``, its settings in the run folder) and on a copy of the dataset (it
writes label caches beside the labels).

Printed per seed and side: the final and best mAP50-95 (from each run's ``results.csv``, the same column on both
sides), the wall time of the process, and training throughput: images seen per second of the run's own epoch time
(``time`` column: epochs, validation included, on both sides); then per side the mean and spread (sample standard
deviation) over the seeds, and the ratios raytrain / Ultralytics.

    python bench/fit_vs_ultralytics.py --model yolo26n --ultralytics-python /work/ultra-venv/bin/python \\
        [--seeds 0 1 2] [--epochs 20] [--imgsz 160] [--batch 16] [--nbs 16] [--optimizer SGD] [--fraction 1.0]

Results: ``runs/bench/fit_vs_ultralytics/<time>/`` (both sides' run folders, logs, ``summary.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import loadavg

ROOT = Path(__file__).resolve().parents[1]
MAP = "metrics/mAP50-95(B)"

ULTRALYTICS_SIDE = r'''
import json, sys
from ultralytics import YOLO
settings = json.loads(sys.argv[1])
YOLO(settings["model"] + ".yaml").train(**settings["train"])
'''


def recipe(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The training arguments both tools take under the same names."""
    return {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "nbs": args.nbs,
            "optimizer": args.optimizer, "seed": seed, "workers": 0, "plots": False, "device": "cpu",
            "fraction": args.fraction, "pretrained": False}


def read_results(folder: Path, images: int) -> dict[str, float]:
    """Final and best mAP50-95 and images/s of a run folder's results.csv (Ultralytics' column names)."""
    with (folder / "results.csv").open(newline="") as f:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    seconds = rows[-1]["time"]
    return {"final": rows[-1][MAP], "best": max(r[MAP] for r in rows), "epochs": len(rows),
            "epoch_time_s": seconds, "images_per_s": images * len(rows) / seconds}


def run_raytrain(args: argparse.Namespace, out: Path, seed: int, data: Path) -> Path:
    folder = out / f"raytrain_seed{seed}"
    command = [sys.executable, "-m", "raytrain.cli", "fit", f"data={data}", f"model={args.model}",
               *(f"{k}={v}" for k, v in recipe(args, seed).items()), f"cpus_per_worker={args.threads}",
               "loggers=none", f"project={out}", f"name={folder.name}"]
    _run(command, out / f"{folder.name}.log", env={})
    return folder


def run_ultralytics(args: argparse.Namespace, out: Path, seed: int, data: Path) -> Path:
    folder = out / f"ultralytics_seed{seed}"
    config = out / "ultralytics_config"
    config.mkdir(exist_ok=True)
    (config / "Arial.ttf").touch()  # its dataset check looks for this font (and would download it)
    settings = {"model": args.model, "train": {**recipe(args, seed), "data": str(data), "project": str(out),
                                                "name": folder.name, "exist_ok": True, "val": True}}
    env = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(config),
           "OMP_NUM_THREADS": str(args.threads)}
    _run([str(args.ultralytics_python), "-c", ULTRALYTICS_SIDE, json.dumps(settings)], out / f"{folder.name}.log", env)
    return folder


def _run(command: list[str], log: Path, env: dict[str, str]) -> None:
    with log.open("w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=log.parent)
    if done.returncode:
        raise SystemExit(f"{command[0]} failed ({done.returncode}); see {log}")


def ultralytics_copy(data_yaml: Path, out: Path) -> Path:
    """A copy of the dataset for Ultralytics, whose label caches must not land in raytrain's dataset folder."""
    import yaml

    from raytrain.data import resolve_data

    spec = resolve_data(str(data_yaml))
    root = out / "dataset"
    shutil.copytree(spec.root, root)
    relative = {split: [str(Path(p).relative_to(spec.root)) for p in getattr(spec, split)]
                for split in ("train", "val")}
    text = yaml.safe_dump({"path": str(root), **relative, "names": dict(spec.names)})
    (root / "data.yaml").write_text(text)
    return root / "data.yaml"


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for side, rows in runs.items():
        out[side] = {}
        for key in ("final", "best", "images_per_s"):
            values = [r[key] for r in rows]
            out[side][f"{key}_mean"] = statistics.mean(values)
            out[side][f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--data", default="shapes", help="a dataset name or YAML [shapes, generated on first use]")
    parser.add_argument("--ultralytics-python", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nbs", type=int, default=16)
    parser.add_argument("--optimizer", default="SGD")
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=max(os.cpu_count() or 1, 1), help="CPU threads per side")
    parser.add_argument("--project", type=Path, default=ROOT / "runs" / "bench" / "fit_vs_ultralytics")
    args = parser.parse_args()
    from raytrain.data import resolve_data

    spec = resolve_data(args.data)
    out = (args.project / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True)
    print("command:", " ".join([sys.executable, *sys.argv]), "| load before:", loadavg())
    theirs = ultralytics_copy(spec.yaml_file, out)
    images = round(_count_images(spec) * args.fraction)
    runs: dict[str, list[dict[str, float]]] = {"raytrain": [], "ultralytics": []}
    for i, seed in enumerate(args.seeds):
        order = ("raytrain", "ultralytics") if i % 2 == 0 else ("ultralytics", "raytrain")
        for side in order:
            started = time.perf_counter()
            folder = (run_raytrain(args, out, seed, spec.yaml_file) if side == "raytrain"
                      else run_ultralytics(args, out, seed, theirs))
            row = {**read_results(folder, images), "wall_s": time.perf_counter() - started, "seed": seed}
            runs[side].append(row)
            print(f"seed {seed} {side:>11}: mAP50-95 final {row['final']:.3f} best {row['best']:.3f}, "
                  f"{row['images_per_s']:.1f} img/s, wall {row['wall_s']:.0f} s | load {loadavg()}", flush=True)
    summary = summarise(runs)
    for side, s in summary.items():
        print(f"{side:>11}: mAP50-95 final {s['final_mean']:.3f} +/- {s['final_sd']:.3f}, best {s['best_mean']:.3f} "
              f"+/- {s['best_sd']:.3f}; {s['images_per_s_mean']:.1f} +/- {s['images_per_s_sd']:.1f} img/s")
    ratio = summary["raytrain"]["images_per_s_mean"] / summary["ultralytics"]["images_per_s_mean"]
    print(f"throughput raytrain / Ultralytics: {ratio:.2f}x | load after: {loadavg()}")
    (out / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                  "runs": runs, "summary": summary, "throughput_ratio": ratio},
                                                 indent=2))
    return 0


def _count_images(spec: Any) -> int:
    from raytrain.data import scan_split

    return len(scan_split(spec, "train").records)


if __name__ == "__main__":
    raise SystemExit(main())
