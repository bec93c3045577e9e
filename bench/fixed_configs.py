"""Does one setting matter? Fixed configs of a space file, each over several training seeds, side by side.

Every combination of the ``--set`` values (a grid), on top of ``--base`` (a config, e.g. a search's winner), is
trained once per ``--seeds`` seed as one ``raytrain tune`` experiment of the space file's ``train:`` arguments, with
no early stopping, no patience and no time budget, so each config runs all its epochs and only the listed values
differ. Printed: best fitness per seed, mean and sample standard deviation per config, ranked; the experiment folder
keeps trials.csv and each trial's results.csv.

    python bench/fixed_configs.py --seeds 0 1 2 --set warmup_bias_lr=0.0,0.1 \\
        --base optimizer=AdamW lr0=0.003292 lrf=0.004395 momentum=0.9472 weight_decay=0.001196 warmup_epochs=2.47 \\
        mosaic=0.2627 scale=0.3496

Extra settings go to the experiment as overrides (``-- epochs=18``): anything ``raytrain tune`` accepts.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import loadavg

ROOT = Path(__file__).resolve().parents[1]


def grid(sets: list[str], base: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Every combination of the ``key=v1,v2`` values over ``base``, once per seed."""
    from raytrain.config import parse_cli_args

    axes = {k: [parse_cli_args([f"{k}={v}"])[k] for v in values.split(",")]
            for k, values in (s.split("=", 1) for s in sets)}
    combos = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())] or [{}]
    return [{**base, **combo, "seed": seed} for combo in combos for seed in seeds]


def as_space(space_file: Path, configs: list[dict[str, Any]], name: str, project: Path) -> dict[str, Any]:
    """The space file with the configs as its only trials (start points over a space of exactly their values)."""
    from raytrain.parsing import read_yaml_mapping

    spec = read_yaml_mapping(space_file, label=str(space_file), expected="a space file")
    keys = sorted({k for c in configs for k in c})
    for drop in ("points_to_evaluate", "grace_period", "reduction_factor", "n_startup_trials", "time_budget_s"):
        spec.pop(drop, None)
    return {**spec, "name": name, "project": str(project), "sampler": "random", "scheduler": "none",
            "patience": None, "num_samples": len(configs), "points_to_evaluate": configs,
            "space": {k: {"type": "choice", "values": sorted({c[k] for c in configs}, key=str)} for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "quickstart.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=V1,V2", help="values to compare (a grid)")
    parser.add_argument("--base", nargs="*", default=[], metavar="KEY=V", help="the config the values change")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="fixed_configs")
    parser.add_argument("--project", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for the experiment")
    args = parser.parse_args()
    import yaml

    import raytrain
    from raytrain.config import parse_cli_args

    configs = grid(args.set, parse_cli_args(args.base), args.seeds)
    print(f"{len(configs)} trials ({len(configs) // len(args.seeds)} configs x seeds {args.seeds}); load {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / f"{args.name}.yaml"
        space.write_text(yaml.safe_dump(as_space(args.space, configs, args.name, args.project.resolve())))
        result = raytrain.tune(str(space), start_ray=True, **parse_cli_args(args.overrides))
    with (Path(result.experiment_dir) / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    varied = [s.split("=", 1)[0] for s in args.set]
    by_config: dict[tuple[str, ...], list[tuple[str, float]]] = {}
    for row in rows:
        by_config.setdefault(tuple(row[k] for k in varied), []).append((row["seed"], float(row["best fitness"])))
    print(f"\n{' '.join(varied) or 'config'} | best fitness per seed | mean +/- sd   (load {loadavg()})")
    for key, runs in sorted(by_config.items(), key=lambda kv: -statistics.mean(v for _, v in kv[1])):
        values = [v for _, v in sorted(runs)]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{' '.join(key) or 'base'} | {' '.join(f'{v:.3f}' for v in values)} | "
              f"{statistics.mean(values):.3f} +/- {sd:.3f}")
    print(f"experiment: {result.experiment_dir}")


if __name__ == "__main__":
    main()
