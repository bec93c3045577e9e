"""``raytrain tune [SPACE.yaml] [key=value ...]``: search (:func:`raytrain.tuning.api.tune`), print the ranked
trials; exit 130 when interrupted (with the command that continues it), 1 when trials ended in error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError


def main(positional: list[str], args: dict[str, Any]) -> int:
    """``raytrain tune SPACE.yaml [key=value ...]``: start (or connect to) Ray with the dashboard, then tune."""
    from raytrain.tuning.api import tune
    from raytrain.tuning.resume import resume_command

    if len(positional) > 1:
        raise ConfigError("usage: raytrain tune SPACE.yaml [key=value ...] (one search-space file)")
    space = positional[0] if positional else default_space()
    result = tune(space, start_ray=True, **args)
    if result is None:  # dry_run=True: the plan is printed
        return 0
    unfinished = _print_summary(result)
    if unfinished:  # interrupted (Ctrl-C): Tune saved its state
        print(f"{unfinished} trial(s) unfinished. Continue with: {resume_command(result.experiment_dir, space)}")
        return 130
    failed = [t for t in result.trials if t["end"] == "error"]
    if failed:  # a search with failed trials is not a success: say so last, and exit non-zero
        from raytrain.tuning.report import TRIALS_CSV

        count = "Every trial" if len(failed) == len(result.trials) else f"{len(failed)} of {len(result.trials)} trials"
        first = next((str(t["error"]) for t in failed if t.get("error")), "")
        print(f"{count} ended in error{f' (first: {first})' if first else ''}; each one's reason is in the error "
              f"column of {result.experiment_dir / TRIALS_CSV}.", file=sys.stderr)
        return 1
    return 0


def default_space() -> Path:
    """``search_spaces/quickstart.yaml`` next to the package (what ``raytrain tune`` with no file runs)."""
    path = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    if not path.is_file():
        raise ConfigError("usage: raytrain tune SPACE.yaml [key=value ...] (the quickstart space was not found "
                          f"at {path})")
    return path


def _print_summary(result: Any) -> int:
    """Print the ranked trials and where the outputs are; returns how many trials did not finish."""
    from raytrain.tuning.experiment import load_experiment
    from raytrain.tuning.report import BEST_YAML, TRIALS_CSV, format_table

    exp = load_experiment(result.experiment_dir)
    print(format_table(exp))
    if len(exp.objectives) > 1:  # several objectives: the trade-offs found (pareto.csv, pareto/, pareto_front.png)
        from raytrain.commands.results import print_front

        print_front(exp)
    if result.best_metric is not None:
        print(f"\nBest {result.metric}: {result.best_metric:.6g}. Config: {result.experiment_dir / BEST_YAML} "
              f"(raytrain fit cfg={result.experiment_dir / BEST_YAML})")
    print(f"Results: {result.experiment_dir / TRIALS_CSV}; 'raytrain results {result.experiment_dir}' redraws them.")
    return sum(t.end in ("running", "pending") for t in exp.trials)
