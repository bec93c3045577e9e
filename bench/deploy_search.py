"""Tuning for deployment on ``shapes``: the Pareto front of accuracy vs measured latency, what the constraints saved,
and the hypervolume the search reached against random search at the same number of trials.

Each seed runs ``search_spaces/deploy.yaml`` (NSGA-II unless ``sampler=`` says otherwise) and, with ``--random``,
the same space with ``sampler: random``. The report gives, per run: the front (trial, fitness, latency_ms, model,
imgsz), how many trials the constraints ended before training and the epochs that saved (their planned epochs), the
epochs trained, the wall time, and the 2-D hypervolume of the feasible points (fitness up, latency down) against the
reference (fitness 0, latency at the constraint's bound, else the slowest measured). Latency figures are measured on
this machine while the search trains beside them (the load average is printed with every run); every run starts from
the measurements of the runs before it (one ``measured.json``), so the arms are compared on the same latencies and
differ only in what they searched (``--own-measurements`` turns that off).

    python bench/deploy_search.py --seeds 0 num_samples=10 epochs=3 fraction=0.25   # minutes on 2 busy cores
    python bench/deploy_search.py --seeds 0 1 2 --random                            # the full comparison (hours)

Extra ``key=value`` arguments are overrides for both arms (settings such as ``num_samples=`` or training arguments).
Results: ``runs/bench/deploy_search/<timestamp>/report.json`` (the experiments beside it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from common import loadavg

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "search_spaces" / "deploy.yaml"
START = (("yolov8n", 128), ("yolo11n", 96), ("yolo26n", 128))  # --start: the first trials


def run_arm(seed: int, sampler: str | None, overrides: dict[str, Any], project: Path,
            shared: Path | None, start: bool = False) -> dict[str, Any]:
    """One search; its front, infeasible trials, epochs and hypervolume read back from the experiment folder.
    ``shared``: a ``measured.json`` to start from (updated with what this run measured)."""
    from raytrain.tuning.api import tune
    from raytrain.tuning.experiment import load_experiment
    from raytrain.tuning.measure import MEASURED_FILE
    from raytrain.tuning.pareto import constraints_of, hypervolume_2d, pareto_front, trial_points

    name = f"{sampler or 'default'}_s{seed}"
    extra: dict[str, Any] = {"sampler": sampler} if sampler else {}
    if start:  # known-good recipes first, one per family (Ultralytics' SGD defaults, no mosaic on tiny images)
        extra["points_to_evaluate"] = [{"model": m, "imgsz": size, "lr0": 0.01, "lrf": 0.01, "momentum": 0.937,
                                        "mosaic": 0.0, "scale": 0.5} for m, size in START]
    if shared is not None and shared.is_file():  # one hardware profile for every run: the same latency per kind
        (project / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, project / name / MEASURED_FILE)
    started, load_before = time.monotonic(), loadavg()
    result = tune(str(DEPLOY), name=name, project=str(project), search_seed=seed, exist_ok=True,
                  **{**overrides, **extra})
    exp = load_experiment(result.experiment_dir)
    if shared is not None and (exp.path / MEASURED_FILE).is_file():
        shutil.copyfile(exp.path / MEASURED_FILE, shared)
    points = trial_points(exp)
    front = pareto_front(points, exp.objectives)
    (first, _), (second, mode2) = exp.objectives[:2]
    bound = next((c.high for c in constraints_of(exp) if c.key == second and c.high is not None), None)
    reference = [0.0, bound if bound is not None else max(p.values[second] for p in points)]
    feasible = [[p.values[first], p.values[second]] for p in points if p.feasible]
    infeasible = [t for t in exp.trials if t.end == "infeasible"]
    saved = sum(t.epochs_planned or 0 for t in infeasible)
    trained = sum(len(f.read_text().splitlines()) for f in exp.path.glob("*/result.json")) - len(infeasible)
    return {
        "experiment": str(exp.path), "sampler": exp.space.get("sampler"), "seed": seed, "trials": len(exp.trials),
        "ends": {e: sum(t.end == e for t in exp.trials) for e in sorted({t.end for t in exp.trials})},
        "infeasible_before_training": len(infeasible), "epochs_saved": saved, "epochs_trained": trained,
        "hypervolume": hypervolume_2d(feasible, reference, ["max", mode2]), "reference": reference,
        "front": [{"trial": p.trial.name, **{k: round(v, 4) for k, v in p.values.items()},
                   "model": p.trial.params.get("model"), "imgsz": p.trial.params.get("imgsz")} for p in front],
        "families_on_front": sorted({str(p.trial.params.get("model", ""))[:-1] for p in front}),
        "wall_s": round(time.monotonic() - started, 1), "loadavg_before": load_before, "loadavg_after": loadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--random", action="store_true", help="also run random search at the same trials")
    parser.add_argument("--project", type=Path, default=ROOT / "runs" / "bench" / "deploy_search")
    parser.add_argument("--own-measurements", action="store_true",
                        help="let each run measure latency itself (default: every run reuses the first runs' "
                             "measured.json, so arms differ in their search only, not in latency noise)")
    parser.add_argument("--start", action="store_true",
                        help=f"run known-good recipes first ({', '.join(f'{m}@{s}' for m, s in START)})")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()

    import ray

    from raytrain.cluster.local import init_ray
    from raytrain.config import parse_cli_args

    overrides = parse_cli_args(args.overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    project = (args.project / stamp).resolve()  # a fresh folder: exist_ok below never reuses an old run's trials
    project.mkdir(parents=True)
    init_ray("local")
    runs, shared = [], project / "measured.json"
    try:
        for seed in args.seeds:
            for sampler in (None, "random") if args.random else (None,):
                run = run_arm(seed, sampler, overrides, project, None if args.own_measurements else shared,
                              start=args.start)
                runs.append(run)
                print(json.dumps(run, indent=1), flush=True)
    finally:
        ray.shutdown()
    summary = {}
    for sampler in sorted({r["sampler"] for r in runs}):
        volumes = [r["hypervolume"] for r in runs if r["sampler"] == sampler]
        summary[sampler] = {"hypervolume_mean": statistics.mean(volumes),
                            "hypervolume_sd": statistics.stdev(volumes) if len(volumes) > 1 else 0.0,
                            "seeds": [r["seed"] for r in runs if r["sampler"] == sampler], "hypervolumes": volumes}
    report = {"overrides": args.overrides, "runs": runs, "summary": summary}
    out = project / "report.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=1))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
