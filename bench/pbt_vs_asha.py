"""Population-based training against ASHA on ``shapes`` at the same total training epochs.

ASHA runs the quickstart space (``search_spaces/quickstart.yaml``: TPE + ASHA, ``num_samples`` trials). PBT runs the
same training setup and the quickstart's ranges for the keys PBT can mutate (lr0, lrf, momentum, weight_decay,
mosaic, scale), with the optimizer and warmup fixed to the quickstart's known-good start point (AdamW, no warmup),
``--population`` trials and as many epochs each as make its total equal ASHA's measured total (``--epochs`` fixes it
instead). Epochs are counted as reports in each trial's ``result.json`` (a PBT trial that repeats epochs after an
exploit counts them again). Each seed runs both; the report gives each arm's best metric per seed, mean and spread,
and what the best PBT schedule learned (its values at the first and last epoch, and its lineage).

    python bench/pbt_vs_asha.py                                    # 3 seeds, the quickstart budget (hours on 2 cores)
    python bench/pbt_vs_asha.py --seeds 0 --asha-samples 3 --population 3 --interval 1 \\
        epochs=3 fraction=0.05 imgsz=64                            # a few minutes: shows it works, measures nothing

Extra ``key=value`` arguments are training overrides for both arms. Results: ``runs/bench/pbt_vs_asha.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


def epochs_trained(experiment: Path) -> int:
    """Epochs actually trained: one ``result.json`` line per reported epoch, over every trial."""
    return sum(len(f.read_text().splitlines()) for f in experiment.glob("*/result.json"))


def run_asha(seed: int, samples: int | None, overrides: dict[str, Any], project: str) -> dict[str, Any]:
    from raytrain.tuning.api import tune

    started = time.monotonic()
    extra = {"num_samples": samples} if samples else {}
    result = tune(str(QUICKSTART), name=f"asha_s{seed}", project=project, search_seed=seed, exist_ok=True,
                  **extra, **overrides)
    return {"experiment": str(result.experiment_dir), "best": result.best_metric, "trials": len(result.trials),
            "epochs": epochs_trained(result.experiment_dir), "wall_s": round(time.monotonic() - started, 1)}


def pbt_space(population: int, epochs: int, interval: int, seed: int, project: str) -> dict[str, Any]:
    """The quickstart's training setup and mutable ranges, as a PBT space."""
    from raytrain.config import read_yaml_mapping
    from raytrain.engine.hyper import MUTABLE

    quick = read_yaml_mapping(QUICKSTART, label=str(QUICKSTART), expected="a space file")
    start = dict((quick.get("points_to_evaluate") or [{}])[0])
    train = {**quick["train"], "epochs": epochs, "optimizer": start.get("optimizer", "AdamW"),
             "warmup_epochs": start.get("warmup_epochs", 0.0)}
    train["close_mosaic"] = min(int(train.get("close_mosaic", 0)), max(epochs - interval - 1, 0))
    space = {k: v for k, v in quick["space"].items() if k in MUTABLE}
    point = {k: v for k, v in start.items() if k in space}
    return {"name": f"pbt_s{seed}", "project": project, "exist_ok": True, "train": train, "space": space,
            "resources": quick.get("resources", {}), "scheduler": "pbt", "population": population,
            "perturbation_interval": interval, "metric": quick.get("metric", "fitness"),
            "mode": quick.get("mode", "max"), "search_seed": seed, "points_to_evaluate": [point] if point else [],
            "wandb_mode": "disabled"}


def run_pbt(seed: int, population: int, epochs: int, interval: int, overrides: dict[str, Any],
            project: str) -> dict[str, Any]:
    from raytrain.engine.hyper import read_schedule
    from raytrain.tuning.api import tune
    from raytrain.tuning.experiment import load_experiment
    from raytrain.tuning.lineage import BEST_SCHEDULE, history, lineage_text

    started = time.monotonic()
    result = tune(pbt_space(population, epochs, interval, seed, project), **overrides)
    exp = load_experiment(result.experiment_dir)
    best = exp.best_trial()
    schedule = read_schedule(exp.path / BEST_SCHEDULE) if (exp.path / BEST_SCHEDULE).is_file() else {}
    learned = {}
    if schedule:
        first, last = schedule[min(schedule)], schedule[max(schedule)]
        learned = {k: [first.get(k), last.get(k)] for k in last}
    return {"experiment": str(exp.path), "best": result.best_metric, "trials": len(result.trials),
            "epochs": epochs_trained(exp.path), "wall_s": round(time.monotonic() - started, 1),
            "exploits": len(history(exp)), "best_trial": best.name if best else None,
            "lineage": lineage_text(history(exp), best.name) if best else "", "learned_first_last": learned}


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +/- {sd:.4f} (min {min(values):.4f}, max {max(values):.4f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=None, help="PBT epochs per trial (default: match ASHA's total)")
    parser.add_argument("--interval", type=int, default=3, help="PBT perturbation_interval (epochs)")
    parser.add_argument("--asha-samples", type=int, default=None, help="ASHA trials (default: the quickstart's)")
    parser.add_argument("--project", default=str(ROOT / "runs" / "bench" / "pbt_vs_asha"))
    parser.add_argument("overrides", nargs="*", help="key=value training overrides for both arms")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from raytrain.cluster.local import init_ray
    from raytrain.config import parse_cli_args

    overrides = parse_cli_args(args.overrides)
    init_ray("local")
    report: dict[str, Any] = {"seeds": args.seeds, "overrides": overrides, "asha": [], "pbt": []}
    for seed in args.seeds:
        asha = run_asha(seed, args.asha_samples, overrides, args.project)
        epochs = args.epochs or max(args.interval + 1, round(asha["epochs"] / args.population))
        pbt = run_pbt(seed, args.population, epochs, args.interval, overrides, args.project)
        report["asha"].append(asha)
        report["pbt"].append({**pbt, "epochs_per_trial": epochs})
        print(f"seed {seed}: ASHA best {asha['best']} in {asha['epochs']} epochs ({asha['wall_s']} s); PBT best "
              f"{pbt['best']} in {pbt['epochs']} epochs ({pbt['wall_s']} s), {pbt['exploits']} exploits", flush=True)
    out = ROOT / "runs" / "bench" / "pbt_vs_asha.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    metric = "fitness"
    print(f"\nBest {metric} per seed (higher is better), same total epochs:")
    print(f"  ASHA (quickstart): {spread([a['best'] for a in report['asha']])}; epochs "
          f"{[a['epochs'] for a in report['asha']]}")
    print(f"  PBT (population {args.population}): {spread([p['best'] for p in report['pbt']])}; epochs "
          f"{[p['epochs'] for p in report['pbt']]}")
    for p in report["pbt"]:
        print(f"  PBT {Path(p['experiment']).name}: best {p['best_trial']} (lineage: {p['lineage'] or 'none'}); "
              f"schedule first -> last epoch: " + ", ".join(f"{k} {a:.4g} -> {b:.4g}"
                                                            for k, (a, b) in p["learned_first_last"].items()))
    print(f"Report: {out}")


if __name__ == "__main__":
    main()
