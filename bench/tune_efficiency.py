"""How much training ASHA saves: the same trials with ASHA and without early stopping.

Both experiments run exactly the same trial configs, in the same order: the space's ``points_to_evaluate`` followed by
``--samples`` configs drawn with a seeded random sampler, all passed as start points (so the sampler never adapts
differently in the two runs). The patience rule and the time budget are off in both, so only ASHA differs.

Reported for each: total epochs trained, wall time, best metric; then the ratios ASHA / no stopping. The target is
ASHA spending at most 35 % of the epochs with a best metric within 2 % of the no-stopping best.

    python bench/tune_efficiency.py                                  # the quickstart space, 8 sampled configs
    python bench/tune_efficiency.py search_spaces/detect.yaml --samples 32 address=auto data=coco.yaml
    python bench/tune_efficiency.py --samples 15 --no-stopping-only  # then bench/asha_replay.py on its experiment

Extra ``key=value`` arguments are overrides, as for ``raytrain tune``. Results: ``runs/bench/tune_efficiency.json``.
``--baseline OLD.json`` reuses the no-stopping run of an earlier report (after checking that its trials ran only
configs of this comparison), to measure a change to the early stopping without paying for the long run again; with a
larger ``--samples`` (same seed) only the configs it lacks run without stopping, and the two are reported as one.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def sample_configs(spec: Any, samples: int, seed: int) -> list[dict[str, Any]]:
    """The space's start points, then ``samples`` configs from a seeded random sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = [spec.sample_space(study.ask()) for _ in range(samples)]
    return [dict(p) for p in spec.points_to_evaluate] + drawn


def run_one(space: str, label: str, configs: list[dict[str, Any]], overrides: dict[str, Any]) -> dict[str, Any]:
    """One experiment over ``configs``; returns epochs trained, wall time, best metric and how trials ended."""
    from raytrain.tuning.api import tune

    started = time.monotonic()
    result = tune(space, **{**overrides, "name": f"bench_{label}", "points_to_evaluate": configs,
                            "num_samples": len(configs), "patience": None, "time_budget_s": None})
    wall = time.monotonic() - started
    ends: dict[str, int] = {}
    for row in result.trials:
        ends[row["end"]] = ends.get(row["end"], 0) + 1
    return {"experiment": str(result.experiment_dir), "trials": len(result.trials),
            "epochs": sum(int(row["epochs_run"]) for row in result.trials), "wall_s": round(wall, 1),
            "best": result.best_metric, "metric": result.metric, "mode": result.mode, "ends": ends}


def canon(params: dict[str, Any]) -> str:
    """A config as comparable text (floats rounded: they went through JSON and Ray)."""
    return json.dumps({k: round(v, 9) if isinstance(v, float) else v for k, v in sorted(params.items())})


def reuse_baseline(path: Path, configs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The no-stopping figures of an earlier report, and the configs it did not run (to run now).

    A larger ``--samples`` with the same seed draws the earlier configs first, so a baseline can be extended.
    """
    from raytrain.tuning.experiment import load_experiment

    full = json.loads(path.read_text())["no_stopping"]
    ran = [canon(t.params) for e in full["experiment"].split(",") for t in load_experiment(e).trials]
    wanted = [canon(c) for c in configs]
    if not set(ran) <= set(wanted):
        raise SystemExit(f"--baseline {path}: its trials ran configs that are not in this comparison (another "
                         f"space, seed or override); run without --baseline.")
    return full, [c for c, key in zip(configs, wanted, strict=True) if key not in ran]


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two no-stopping experiments over disjoint configs, reported as one."""
    best = [r["best"] for r in (a, b) if r["best"] is not None]
    ends = {k: a["ends"].get(k, 0) + b["ends"].get(k, 0) for k in {*a["ends"], *b["ends"]}}
    return {**a, "experiment": f"{a['experiment']},{b['experiment']}", "trials": a["trials"] + b["trials"],
            "epochs": a["epochs"] + b["epochs"], "wall_s": round(a["wall_s"] + b["wall_s"], 1),
            "best": (max if a["mode"] == "max" else min)(best) if best else None, "ends": ends}


def compare(asha: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """Ratios ASHA / no stopping, and whether the targets are met."""
    epochs = asha["epochs"] / full["epochs"] if full["epochs"] else float("nan")
    wall = asha["wall_s"] / full["wall_s"] if full["wall_s"] else float("nan")
    a, f = asha["best"], full["best"]
    if a is None or f is None:
        gap = float("nan")
    else:  # relative shortfall of ASHA's best (positive = worse), whatever the direction
        gap = (f - a) / abs(f) if full["mode"] == "max" else (a - f) / abs(f)
        gap = gap if f else float("nan")
    return {"epochs_ratio": round(epochs, 3), "wall_ratio": round(wall, 3), "best_shortfall": round(gap, 4),
            "target_epochs_met": epochs <= 0.35, "target_best_met": round(gap, 9) <= 0.02}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("space", nargs="?", default=str(ROOT / "search_spaces" / "quickstart.yaml"))
    parser.add_argument("--samples", type=int, default=8, help="random configs after the start points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/tune_efficiency.json")
    parser.add_argument("--baseline", type=Path, help="reuse the no-stopping run of this earlier report")
    parser.add_argument("--no-stopping-only", action="store_true",
                        help="run only the no-stopping arm (then replay ASHA on it with bench/asha_replay.py)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for raytrain tune")
    args = parser.parse_args()
    if "=" in args.space:  # only overrides were given: argparse filled the optional space with the first one
        args.overrides.insert(0, args.space)
        args.space = parser.get_default("space")

    import ray

    from raytrain.cli import setup_logging
    from raytrain.cluster.local import init_ray
    from raytrain.config import parse_cli_args
    from raytrain.tuning.space import load_space

    setup_logging()
    logging.getLogger("raytrain").setLevel(logging.WARNING)
    overrides = parse_cli_args(args.overrides)
    overrides.setdefault("project", "runs/bench")
    overrides.setdefault("wandb_mode", "disabled")
    spec = load_space(args.space, overrides)
    configs = sample_configs(spec, args.samples, args.seed)
    init_ray(spec.address)
    try:
        if args.baseline:
            full, missing = reuse_baseline(args.baseline, configs)
            if missing:
                print(f"The baseline ran {len(configs) - len(missing)} of the {len(configs)} configs: running the "
                      f"other {len(missing)} without early stopping.", flush=True)
                full = merge(full, run_one(args.space, "full", missing, {**overrides, "scheduler": "none"}))
        else:
            full = run_one(args.space, "full", configs, {**overrides, "scheduler": "none"})
        if args.no_stopping_only:
            print(f"no stopping: {full}\nReplay ASHA on it: python bench/asha_replay.py {full['experiment']}")
            return
        asha = run_one(args.space, "asha", configs, {**overrides, "scheduler": "asha"})
    finally:
        ray.shutdown()
    report = {"space": args.space, "configs": len(configs), "seed": args.seed, "asha": asha, "no_stopping": full,
              **compare(asha, full)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"{'':14}{'epochs':>8}{'wall s':>9}   best {full['metric']}")
    for label, r in (("ASHA", asha), ("no stopping", full)):
        print(f"{label:14}{r['epochs']:>8}{r['wall_s']:>9.0f}   {r['best']}   {r['ends']}")
    print(f"ASHA / no stopping: epochs {report['epochs_ratio']:.0%} (target <= 35 %: "
          f"{'met' if report['target_epochs_met'] else 'missed'}), wall time {report['wall_ratio']:.0%}, best "
          f"metric shortfall {report['best_shortfall']:.2%} (target <= 2 %: "
          f"{'met' if report['target_best_met'] else 'missed'}). Written to {out}")


if __name__ == "__main__":
    main()
