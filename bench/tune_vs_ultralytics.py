"""The same small search with ``raytrain tune`` and with Ultralytics' ``model.tune(use_ray=True)``, back to back.

The search (issue 12): COCO128, YOLOv8n from scratch, imgsz 64, batch 16, SGD, 3 epochs, 4 trials searching lr0, lrf,
momentum and scale (Ultralytics' default ranges for them), Optuna TPE, ASHA with grace period 1 and reduction factor
3, one CPU per trial (two at a time on a 2-core machine), dataloaders in the training process (``workers=0``), no
plots, no W&B. Each side runs in a fresh process; the Ultralytics side runs with another interpreter
(``--ultralytics-python``, a separate venv: Ultralytics must not go into the project's venv), and is skipped, saying
why, when that interpreter cannot import ultralytics and ray.tune.

Printed for each side: the wall time of the whole process and of the tune call (Ray's start included), each trial's
start-up and epochs, and the best mAP50-95 of any trial at any epoch (read from Tune's ``result.json`` files on both
sides, so the same key is compared: raytrain's fitness is mAP50-95, Ultralytics' is 0.1 mAP50 + 0.9 mAP50-95 in
older releases). A trial's in-trial start-up is ``time_this_iter_s`` of its first Tune result minus its first epoch's
own time (raytrain: ``time/epoch``; Ultralytics: the ``time`` column of its ``results.csv``); for raytrain the full
start-up from ``startup.json`` (see ``bench/trial_overhead.py``) is printed too.

The Ultralytics side runs offline: ``YOLO_OFFLINE=1`` (no network checks), ``YOLO_AUTOINSTALL=false`` (no pip at run
time), its settings in a folder of the run (``YOLO_CONFIG_DIR``) holding a placeholder ``Arial.ttf`` (plots are off,
but its dataset check looks for that font and would try to download it in every trial), and a copy of the dataset
(it writes its label cache beside the labels, and the shared dataset must stay untouched).

    python bench/tune_vs_ultralytics.py --ultralytics-python /tmp/ultra-venv/bin/python [--order ultralytics-first]

Results: ``runs/bench/tune_vs_ultralytics/<time>/`` (both experiments, logs, ``summary.json``).
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

from common import loadavg, start_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "coco128" / "data.yaml"
MAP = "metrics/mAP50-95(B)"
# Ultralytics' default ranges (ultralytics/utils/tuner.py) for the four searched arguments.
SPACE = {"lr0": (1e-5, 1e-2), "lrf": (0.01, 1.0), "momentum": (0.7, 0.98), "scale": (0.0, 0.95)}

ULTRALYTICS_SIDE = r'''
import json, sys, time
from pathlib import Path
settings = json.loads(sys.argv[1])
started = time.time()
from ray import tune
from ultralytics import YOLO
from ultralytics.utils import NUM_THREADS
import ultralytics
space = {k: tune.uniform(lo, hi) for k, (lo, hi) in settings["space"].items()}
model = YOLO("yolov8n.yaml")
called = time.time()
model.tune(use_ray=True, iterations=settings["trials"], space=space, grace_period=settings["grace"],
           gpu_per_trial=0, **settings["train"])
done = time.time()
Path(settings["out"]).write_text(json.dumps({"call_s": done - called, "imports_s": called - started,
    "cpus_per_trial": NUM_THREADS, "version": ultralytics.__version__}))
'''


def train_args(args: argparse.Namespace) -> dict[str, Any]:
    """The fixed training arguments, the same names on both sides."""
    return {"imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs, "optimizer": "SGD",
            "workers": args.workers, "plots": False}


def raytrain_space(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return {
        "name": "raytrain", "project": str(out),
        "train": {"data": str(args.data), "model": "yolov8n", **train_args(args)},
        "resources": {"workers": 1, "gpu": False, "cpus_per_worker": 1},
        "space": {k: {"type": "uniform", "low": lo, "high": hi} for k, (lo, hi) in SPACE.items()},
        "num_samples": args.trials, "sampler": "tpe", "scheduler": "asha", "grace_period": args.grace,
        "reduction_factor": 3, "wandb_mode": "disabled",
    }


def run_raytrain_side(spec_file: str) -> None:
    """In the subprocess: ``raytrain.tune`` on the space; writes its folder and the call's wall time."""
    started = time.time()
    import raytrain

    spec = json.loads(Path(spec_file).read_text())
    called = time.time()
    result = raytrain.tune(spec, start_ray=True)
    Path(spec_file).with_suffix(".out.json").write_text(json.dumps({
        "experiment_dir": str(result.experiment_dir), "call_s": time.time() - called, "imports_s": called - started}))


def run_process(label: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float) -> float:
    """Run one side; returns the process's wall time (exits with the log's tail when it fails)."""
    print(f"[{label}] running, load {loadavg()} ...", flush=True)
    started = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
    wall = time.monotonic() - started
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"[{label}] failed (exit {rc}); log {log}:\n{tail}")
    print(f"[{label}] done in {wall:.1f} s, load {loadavg()}", flush=True)
    return wall


def tune_rows(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """Tune trial id -> its ``result.json`` rows (one per report)."""
    trials: dict[str, list[dict[str, Any]]] = {}
    for result in sorted(experiment.glob("*/result.json")):
        rows = []
        for line in result.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        rows = [r for r in rows if isinstance(r, dict) and "trial_id" in r]
        if rows:
            trials[str(rows[0]["trial_id"])] = rows
    return trials


def summarize(trials: dict[str, list[dict[str, Any]]], first_epoch_s: dict[str, float],
              startups: dict[str, float]) -> list[dict[str, Any]]:
    """One row per trial: epochs run, best mAP50-95, in-trial start-up, full start-up (where known)."""
    out = []
    for trial_id, rows in trials.items():
        maps = [float(r[MAP]) for r in rows if isinstance(r.get(MAP), (int, float))]
        first = rows[0]
        epoch_s = first_epoch_s.get(trial_id)
        out.append({"trial": trial_id, "epochs": max(int(r.get("epoch", 0)) for r in rows),
                    "best_map50_95": max(maps) if maps else None,
                    "in_trial_startup_s": float(first["time_this_iter_s"]) - epoch_s if epoch_s else None,
                    "startup_s": startups.get(trial_id), "first_epoch_s": epoch_s})
    return out


def raytrain_figures(experiment: Path) -> list[dict[str, Any]]:
    trials = tune_rows(experiment)
    import yaml

    status_file = experiment / "trial_status.yaml"
    status = yaml.safe_load(status_file.read_text()) if status_file.is_file() else {}
    startups = {}
    for trial_id, info in (status or {}).items():
        marks = Path(info.get("save_dir", "")) / "startup.json"
        if marks.is_file() and "started_at" in info:
            startups[str(trial_id)] = json.loads(marks.read_text())["first_step"] - float(info["started_at"])
    epoch_s = {t: float(rows[0]["time/epoch"]) for t, rows in trials.items() if "time/epoch" in rows[0]}
    return summarize(trials, epoch_s, startups)


def ultralytics_figures(project: Path) -> list[dict[str, Any]]:
    """Ultralytics' Tune experiment is ``project/tune``; trial ``<id>`` trains in ``project/tune_<id>``."""
    trials = tune_rows(project / "tune")
    epoch_s = {}
    for trial_id in trials:
        results = project / f"tune_{trial_id.split('_')[-1]}" / "results.csv"
        if results.is_file():
            with results.open() as f:
                rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
            if rows and rows[0].get("time"):
                epoch_s[trial_id] = float(rows[0]["time"])
    return summarize(trials, epoch_s, {})


def print_side(label: str, side: dict[str, Any]) -> None:
    def f(v: Any) -> str:
        return f"{v:9.4g}" if isinstance(v, float) else f"{'-' if v is None else v:>9}"

    print(f"\n[{label}] process wall {side['wall_s']:.1f} s, tune call {side['call_s']:.1f} s")
    print(f"{'trial':<28}{'epochs':>9}{'mAP50-95':>9}{'in-trial':>9}{'start-up':>9}{'epoch 1':>9}")
    for r in side["trials"]:
        print(f"{r['trial']:<28}{r['epochs']:>9}{f(r['best_map50_95'])}{f(r['in_trial_startup_s'])}"
              f"{f(r['startup_s'])}{f(r['first_epoch_s'])}")


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), float)]
    return statistics.median(values) if values else None


def raytrain_side(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    spec_file = out / "raytrain.json"
    spec_file.write_text(json.dumps(raytrain_space(args, out)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wall = run_process("raytrain", [sys.executable, str(Path(__file__).resolve()), "--raytrain-side", str(spec_file)],
                       env, ROOT, out / "raytrain.log", args.timeout)
    info = json.loads(spec_file.with_suffix(".out.json").read_text())
    return {**info, "wall_s": wall, "trials": raytrain_figures(Path(info["experiment_dir"]))}


def ultralytics_data(args: argparse.Namespace, out: Path) -> Path:
    """A copy of the dataset with an absolute ``path`` (Ultralytics reads relative ones under its datasets folder)."""
    import yaml

    data = yaml.safe_load(args.data.read_text())
    copy = out / "ultralytics_data"
    shutil.copytree((args.data.parent / data.get("path", ".")).resolve(), copy / "dataset")
    data["path"] = str(copy / "dataset")
    target = copy / "data.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def ultralytics_side(args: argparse.Namespace, out: Path) -> dict[str, Any] | str:
    """Run Ultralytics' Ray Tune search, or say why it cannot run here."""
    if not args.ultralytics_python:
        return "no --ultralytics-python given (a Python with ultralytics and ray[tune], outside the project's venv)"
    project = out / "ultralytics"
    config = out / "ultralytics_config"  # its settings file goes here, not to the user's ~/.config
    config.mkdir()
    (config / "Arial.ttf").write_bytes(b"")  # placeholder: plots are off; saves a download attempt per trial
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(config),
           "PYTHONPATH": ""}
    probe = subprocess.run([str(args.ultralytics_python), "-c", "import ultralytics, ray.tune, optuna; "
                            "print(ultralytics.__version__)"], capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        return f"{args.ultralytics_python} cannot import ultralytics, ray.tune and optuna: " + \
            (probe.stderr.strip().splitlines() or ["?"])[-1]
    version = (probe.stdout.strip().splitlines() or ["?"])[-1]  # after the settings banner of a first import
    result = out / "ultralytics.out.json"
    settings = {"space": SPACE, "trials": args.trials, "grace": args.grace, "out": str(result),
                "train": {"data": str(ultralytics_data(args, out)), **train_args(args), "device": "cpu",
                          "project": str(project), "name": "tune"}}
    wall = run_process(f"ultralytics {version}",
                       [str(args.ultralytics_python), "-c", ULTRALYTICS_SIDE, json.dumps(settings)],
                       env, out, out / "ultralytics.log", args.timeout)
    info = json.loads(result.read_text())
    return {**info, "wall_s": wall, "trials": ultralytics_figures(project)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ultralytics-python", type=Path, help="a Python with ultralytics, ray[tune] and optuna")
    parser.add_argument("--order", choices=("raytrain-first", "ultralytics-first"), default="raytrain-first")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--grace", type=int, default=1, help="ASHA's grace period (epochs)")
    parser.add_argument("--workers", type=int, default=0, help="dataloader processes per trial (0: in the trial)")
    parser.add_argument("--project", type=Path, default=ROOT / "runs" / "bench" / "tune_vs_ultralytics")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per side")
    parser.add_argument("--raytrain-side", help=argparse.SUPPRESS)  # internal: the raytrain subprocess
    args = parser.parse_args()
    if args.raytrain_side:
        return run_raytrain_side(args.raytrain_side)
    out = start_report(args)
    print(f"settings: yolov8n from scratch, {args.data}, imgsz {args.imgsz}, batch {args.batch}, SGD, {args.epochs} "
          f"epochs, {args.trials} trials over {', '.join(SPACE)} (uniform, Ultralytics' ranges), Optuna TPE, ASHA "
          f"grace {args.grace} rf 3, 1 CPU per trial, workers={args.workers}, plots off; cpus {os.cpu_count()}; "
          f"{args.order}; load {loadavg()}; output {out}")
    sides: dict[str, Any] = {}
    for name in (("raytrain", "ultralytics") if args.order == "raytrain-first" else ("ultralytics", "raytrain")):
        sides[name] = raytrain_side(args, out) if name == "raytrain" else ultralytics_side(args, out)
    for name, side in sides.items():
        if isinstance(side, str):
            print(f"\n[{name}] skipped: {side}")
        else:
            print_side(name, side)
    print(f"\n{'':<34}{'raytrain':>12}{'ultralytics':>12}")
    rows = [("process wall (s)", lambda s: s["wall_s"]), ("tune call wall (s)", lambda s: s["call_s"]),
            ("trials", lambda s: len(s["trials"])),
            ("epochs trained", lambda s: sum(r["epochs"] for r in s["trials"])),
            ("median in-trial start-up (s)", lambda s: median_of(s["trials"], "in_trial_startup_s")),
            ("median start-up (s)", lambda s: median_of(s["trials"], "startup_s")),
            ("median first epoch (s)", lambda s: median_of(s["trials"], "first_epoch_s")),
            ("best mAP50-95", lambda s: max((r["best_map50_95"] for r in s["trials"]
                                            if r["best_map50_95"] is not None), default=None))]
    for label, get in rows:
        cells = []
        for name in ("raytrain", "ultralytics"):
            value = None if isinstance(sides[name], str) else get(sides[name])
            cells.append(f"{value:12.3f}" if isinstance(value, float) else f"{'-' if value is None else value:>12}")
        print(f"{label:<34}{''.join(cells)}")
    if not isinstance(sides["ultralytics"], str):
        a, b = sides["raytrain"]["wall_s"], sides["ultralytics"]["wall_s"]
        print(f"\nraytrain wall {a:.1f} s vs Ultralytics {b:.1f} s: target (raytrain <= Ultralytics) "
              f"{'met' if a <= b else 'NOT met'}; load {loadavg()}")
    (out / "summary.json").write_text(json.dumps({"command": sys.argv, "sides": sides}, indent=1, default=str))


if __name__ == "__main__":
    main()
