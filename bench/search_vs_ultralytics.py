"""Does the search pay? The shipped quickstart search against Ultralytics' own genetic ``model.tune()``, on the same
data, training arguments, start point and ranges, then each side's best config retrained with ``raytrain fit``.

raytrain runs ``search_spaces/quickstart.yaml`` as shipped (TPE, ASHA, patience), once per search seed. Ultralytics
8.4's ``Tuner`` (in-process, one trial at a time; on a CPU its training kept one core busy) gets the quickstart's
``train:`` arguments, its start point (``points_to_evaluate``) as the first iteration, and its ranges for the
continuous keys; the optimizer is the quickstart's (AdamW; the start point's where a space searches it: Ultralytics
cannot search a choice). Its mutations come from an unseeded generator, so its runs are independent draws. Two modes:

* ``equal-trials``: both sides run the quickstart's ``num_samples`` trials (``--trials`` overrides both); the
  quickstart's 5-minute ``time_budget_s`` is lifted, so raytrain runs every trial;
* ``equal-time``: raytrain runs as many trials as fit in the wall time Ultralytics took in the same run index
  (``time_budget_s`` = that wall time, ``num_samples`` = ``--max-trials``); ``--ultralytics-walls`` gives those
  times from an earlier report instead of running Ultralytics again (its 16 trials take ~20 minutes a run).

Printed per run: best fitness (mAP50-95; Ultralytics 8.4's fitness is mAP50-95 too), wall time, trials, epochs
trained; mean and spread per side. ``--retrain-seeds 0 1`` then trains each run's best config with ``raytrain fit``
(the quickstart's training arguments, so only the searched values differ) once per training seed and reports the
best fitness of each fit, so a search is judged by what its config trains to, not by one lucky run.

The Ultralytics side runs in another interpreter (``--ultralytics-python``; Ultralytics is never a raytrain
dependency; its Tuner needs ``polars`` besides its usual imports) offline, with its tracker integrations off
(the quickstart has W&B disabled on raytrain's side), with its settings in the
output folder and its own copy of the dataset (it writes label caches beside the labels). Every step writes its JSON
into the output folder; ``--resume FOLDER`` reuses the steps found there.

    python bench/search_vs_ultralytics.py --ultralytics-python /work/venv/bin/python --runs 3 \\
        --modes equal-trials equal-time --retrain-seeds 0 1
    python bench/search_vs_ultralytics.py ... --runs 1 --trials 2 epochs=2     # minutes: shows it works

Extra ``key=value`` arguments override the quickstart's training arguments on both sides.
"""

from __future__ import annotations

import argparse
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
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"
RANGE_TYPES = ("uniform", "loguniform", "quniform", "qloguniform")

ULTRALYTICS_SIDE = r'''
import json, sys, time
from pathlib import Path
s = json.loads(sys.argv[1])
from ultralytics.utils import SETTINGS
SETTINGS.update({k: False for k in ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune",
                                    "tensorboard", "wandb") if k in SETTINGS})  # no trackers, as on raytrain's side
from ultralytics import YOLO
started = time.time()
YOLO(s["model"]).tune(iterations=s["trials"], space={k: tuple(v) for k, v in s["space"].items()}, **s["train"])
Path(s["out"]).write_text(json.dumps({"call_s": time.time() - started}))
'''

RAYTRAIN_SIDE = r'''
import json, sys, time
from pathlib import Path
s = json.loads(sys.argv[1])
import raytrain
started = time.time()
result = raytrain.tune(s["space"], start_ray=True, **s["overrides"])
Path(s["out"]).write_text(json.dumps({"call_s": time.time() - started, "experiment": str(result.experiment_dir)}))
'''

RETRAIN_SIDE = r'''
import csv, json, sys
from pathlib import Path
import ray
s = json.loads(sys.argv[1])
import raytrain
from raytrain.cluster.local import init_ray
init_ray(None)
out = []
for job in s["jobs"]:
    result = raytrain.fit(**job["cfg"])
    with (Path(result.save_dir) / "results.csv").open() as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    best = max(float(r["metrics/mAP50-95(B)"]) for r in rows)  # the quickstart's fitness; results.csv has no column
    out.append({**job, "best": best, "save_dir": str(result.save_dir)})
    Path(s["out"]).write_text(json.dumps(out, indent=1))
ray.shutdown()
'''


def quickstart(overrides: dict[str, Any]) -> dict[str, Any]:
    """The quickstart space file as data, with the training overrides applied."""
    from raytrain.parsing import read_yaml_mapping

    quick = read_yaml_mapping(QUICKSTART, label=str(QUICKSTART), expected="a space file")
    return {**quick, "train": {**quick["train"], **overrides}}


def run_process(label: str, cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> float:
    """Run one side's process; returns its wall time (exits with the log's tail when it fails)."""
    print(f"[{label}] running, load {loadavg()} ...", flush=True)
    started = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, env=env, cwd=log.parent, stdout=f, stderr=subprocess.STDOUT,
                            timeout=timeout).returncode
    wall = time.monotonic() - started
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"[{label}] failed (exit {rc}); log {log}:\n{tail}")
    print(f"[{label}] done in {wall:.0f} s, load {loadavg()}", flush=True)
    return wall


def step(out: Path, name: str, compute: Any) -> dict[str, Any]:
    """A step's result: read back from ``out/name.json`` when an earlier (resumed) report has it, else computed."""
    path = out / f"{name}.json"
    if path.is_file():
        print(f"[{name}] reused from {path}")
        return json.loads(path.read_text())
    result = compute()
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


# ------------------------------------------------------------------------------------------------ Ultralytics
def ultralytics_data(quick: dict[str, Any], out: Path) -> Path:
    """A copy of the dataset, with an absolute ``path``, that Ultralytics may write its label caches into."""
    import yaml

    from raytrain.data.resolve import resolve_data

    spec = resolve_data(str(quick["train"]["data"]))
    target = out / "ultralytics_data"
    if not target.is_dir():
        shutil.copytree(spec.root, target / "dataset", ignore=shutil.ignore_patterns("*.cache"))
        data = yaml.safe_load(spec.yaml_file.read_text())
        data["path"] = str(target / "dataset")
        (target / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return target / "data.yaml"


def ultralytics_run(args: argparse.Namespace, quick: dict[str, Any], out: Path, run: int) -> dict[str, Any]:
    """One Ultralytics Tuner run: its best fitness and hyperparameters, wall time, trials, epochs."""
    config = out / "ultralytics_config"
    config.mkdir(exist_ok=True)
    (config / "Arial.ttf").write_bytes(b"")  # its dataset check looks for this font and would download it
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(config),
           "PYTHONPATH": ""}
    start = dict(quick["points_to_evaluate"][0])
    optimizer = start.get("optimizer", quick["train"].get("optimizer", "auto"))  # a choice Ultralytics cannot search
    space = {k: [p["low"], p["high"]] for k, p in quick["space"].items() if p.get("type") in RANGE_TYPES}
    train = {k: v for k, v in quick["train"].items() if k not in ("data", "model")}
    project = out / f"ultralytics_r{run}"
    settings = {"model": f"{quick['train']['model']}.yaml", "trials": args.trials or quick["num_samples"],
                "space": space, "out": str(out / f"ultralytics_r{run}.out.json"),
                "train": {**train, **{k: v for k, v in start.items() if k in space}, "optimizer": optimizer,
                          "data": str(ultralytics_data(quick, out)), "device": "cpu", "plots": False,
                          "project": str(project), "name": "tune"}}
    load = loadavg()
    wall = run_process(f"ultralytics run {run}", [str(args.ultralytics_python), "-c", ULTRALYTICS_SIDE,
                                                   json.dumps(settings)], env, out / f"ultralytics_r{run}.log",
                       args.timeout)
    results = [json.loads(line) for line in (project / "tune" / "tune_results.ndjson").read_text().splitlines()
               if line.strip()]
    best = max(results, key=lambda r: r.get("fitness") or 0.0)
    return {"best": best.get("fitness"), "hyperparameters": {**best["hyperparameters"],
                                                             "optimizer": optimizer},
            "wall_s": round(wall, 1), "trials": len(results), "epochs": len(results) * int(train["epochs"]),
            "fitness_per_trial": [r.get("fitness") for r in results], "load": [load, loadavg()]}


# -------------------------------------------------------------------------------------------------- raytrain
def raytrain_run(args: argparse.Namespace, overrides: dict[str, Any], out: Path, label: str,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """One quickstart search (``extra``: the search seed, and for equal time the budget): best, wall, trials, epochs."""
    from raytrain.tuning.experiment import load_experiment

    settings = {"space": str(QUICKSTART), "out": str(out / f"{label}.out.json"),
                "overrides": {**overrides, **extra, "name": label, "project": str(out), "exist_ok": True}}
    load = loadavg()
    wall = run_process(f"raytrain {label}", [sys.executable, "-c", RAYTRAIN_SIDE, json.dumps(settings)],
                       {**os.environ, "PYTHONPATH": str(ROOT)}, out / f"{label}.log", args.timeout)
    experiment = Path(json.loads((out / f"{label}.out.json").read_text())["experiment"])
    exp = load_experiment(experiment)
    best = exp.best_trial()
    ends: dict[str, int] = {}
    for t in exp.trials:
        ends[t.end] = ends.get(t.end, 0) + 1
    return {"best": best.best(exp.metric, exp.mode)[0] if best else None, "best_trial": best.name if best else None,
            "params": best.params if best else {}, "best_yaml": str(experiment / "best.yaml"),
            "wall_s": round(wall, 1), "trials": len(exp.trials), "epochs": sum(t.epochs_run for t in exp.trials),
            "ends": ends, "experiment": str(experiment), "load": [load, loadavg()]}


# --------------------------------------------------------------------------------------------------- retrain
def retrain(args: argparse.Namespace, quick: dict[str, Any], out: Path, runs: dict[str, dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """Each run's best config trained with ``raytrain fit`` once per ``--retrain-seeds`` seed, one after another."""
    jobs = []
    for label, run in runs.items():
        params = run.get("params") if label.startswith("raytrain") else run.get("hyperparameters")
        if not params:
            continue
        for seed in args.retrain_seeds:
            cfg = {**quick["train"], **params, "seed": seed, "project": str(out / "retrain"),
                   "name": f"{label}_seed{seed}", "exist_ok": True, "plots": False, "cpus_per_worker": 2,
                   "wandb_mode": "disabled"}
            jobs.append({"run": label, "seed": seed, "cfg": cfg})
    settings = {"jobs": jobs, "out": str(out / "retrain.out.json")}
    load = loadavg()
    wall = run_process(f"retrain {len(jobs)} configs", [sys.executable, "-c", RETRAIN_SIDE, json.dumps(settings)],
                       {**os.environ, "PYTHONPATH": str(ROOT)}, out / "retrain.log", args.timeout * len(jobs))
    fits = json.loads((out / "retrain.out.json").read_text())
    return [{**{k: v for k, v in f.items() if k != "cfg"}, "wall_s_all": round(wall, 1), "load": [load, loadavg()]}
            for f in fits]


# ---------------------------------------------------------------------------------------------------- report
def spread(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +/- {sd:.3f} (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def print_mode(mode: str, rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    print(f"\n{mode}: run | raytrain best, wall s, trials, epochs | Ultralytics best, wall s, trials, epochs | loads")
    def cells(run: dict[str, Any]) -> str:
        best = "-" if run["best"] is None else f"{run['best']:.4f}"
        return f"{best} {run['wall_s']:6.0f} {run['trials'] or '-':>4} {run['epochs'] or '-':>4}"

    for i, (r, u) in enumerate(rows):
        print(f"  {i} | {cells(r)} | {cells(u)} | raytrain {r['load']} ultralytics {u['load']}")
    print(f"  raytrain    {spread([r['best'] for r, _ in rows])}; wall {spread([r['wall_s'] for r, _ in rows])}")
    print(f"  Ultralytics {spread([u['best'] for _, u in rows])}; wall {spread([u['wall_s'] for _, u in rows])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ultralytics-python", type=Path, required=True, help="a Python that imports ultralytics")
    parser.add_argument("--runs", type=int, default=3, help="runs per side: raytrain search seeds 0..runs-1")
    parser.add_argument("--modes", nargs="+", choices=("equal-trials", "equal-time"), default=["equal-trials"])
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default: the quickstart's)")
    parser.add_argument("--max-trials", type=int, default=200, help="equal-time: raytrain's num_samples cap")
    parser.add_argument("--retrain-seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--project", type=Path, default=ROOT / "runs" / "bench" / "search_vs_ultralytics")
    parser.add_argument("--resume", type=Path, help="an earlier output folder: reuse the steps it finished")
    parser.add_argument("--only", choices=("ultralytics", "raytrain-equal-trials"),
                        help="run only this side's searches (two processes on one --resume folder can then run the "
                        "sides at the same time, under the same load)")
    parser.add_argument("--only-runs", type=int, nargs="+", help="with --only: these run indices (search seeds)")
    parser.add_argument("--ultralytics-walls", type=float, nargs="+", metavar="S",
                        help="equal-time without running Ultralytics: its wall seconds per run index, as an earlier "
                        "report measured them (its searches and retrains are then not part of this report)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per search")
    parser.add_argument("overrides", nargs="*", help="key=value training overrides for both sides")
    args = parser.parse_args()
    from raytrain.config import parse_cli_args

    overrides = parse_cli_args(args.overrides)
    quick = quickstart(overrides)
    out = (args.resume or args.project / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("command:", " ".join([sys.executable, *sys.argv]), f"\noutput {out}; cpus {os.cpu_count()}; load {loadavg()}")
    extra = {"num_samples": args.trials} if args.trials else {}
    extra["time_budget_s"] = None  # equal trials: every trial runs (the quickstart stops at 5 minutes)
    runs: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {"command": sys.argv, "modes": {}}
    indices = args.only_runs if args.only and args.only_runs else range(args.runs)
    if args.only == "raytrain-equal-trials":
        for r in indices:
            label = f"raytrain_equal-trials_s{r}"
            step(out, label, lambda label=label, r=r: raytrain_run(args, overrides, out, label,
                                                                   {"search_seed": r, **extra}))
        return
    if args.ultralytics_walls:
        if args.modes != ["equal-time"] or len(args.ultralytics_walls) != args.runs:
            parser.error("--ultralytics-walls: one wall time per run (--runs), with --modes equal-time only")
        for r, wall in enumerate(args.ultralytics_walls):  # no search, no config to retrain: only the time
            runs[f"ultralytics_r{r}"] = {"best": None, "wall_s": wall, "trials": None, "epochs": None,
                                         "load": "(earlier report)", "hyperparameters": {}}
    for r in [] if args.ultralytics_walls else indices:
        runs[f"ultralytics_r{r}"] = step(out, f"ultralytics_r{r}", lambda r=r: ultralytics_run(args, quick, out, r))
    if args.only == "ultralytics":
        return
    for mode in args.modes:
        rows = []
        for r in range(args.runs):
            ultra = runs[f"ultralytics_r{r}"]
            budget = {"search_seed": r, **extra} if mode == "equal-trials" else {
                "search_seed": r, "num_samples": args.max_trials, "time_budget_s": ultra["wall_s"]}  # its own budget
            label = f"raytrain_{mode}_s{r}"
            runs[label] = step(out, label, lambda label=label, budget=budget: raytrain_run(
                args, overrides, out, label, budget))
            rows.append((runs[label], ultra))
        report["modes"][mode] = rows
        print_mode(mode, rows)
    if args.retrain_seeds:
        fits = step(out, "retrain", lambda: {"fits": retrain(args, quick, out, runs)})["fits"]
        report["retrain"] = fits
        print("\nretrained with raytrain fit (best fitness of each fit; seeds " +
              " ".join(map(str, args.retrain_seeds)) + "):")
        for prefix in [*(f"raytrain_{m}" for m in args.modes), "ultralytics"]:
            mine = [f for f in fits if f["run"].startswith(prefix)]
            print(f"  {prefix:<26} {spread([f['best'] for f in mine])}: " +
                  ", ".join(f"{f['run'].rsplit('_', 1)[-1]}/seed{f['seed']} {f['best']:.4f}" for f in mine))
    (out / "summary.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\nload {loadavg()}; summary {out / 'summary.json'}")


if __name__ == "__main__":
    main()
