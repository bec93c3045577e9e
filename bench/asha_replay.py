"""Replay ASHA on a finished no-stopping experiment: which rung schedule would have saved most and kept the best?

Ray's own ``ASHAScheduler``, with raytrain's tie-break (see ``raytrain.tuning.stopping.break_ties``), is fed the
per-epoch results that an experiment without early stopping recorded, in simulated time: trials start in the order they
started, ``--concurrent`` at a time, and each epoch takes as long as it took (the first one includes the trial's
start-up). Where ASHA says stop, the trial's remaining epochs are not counted and the next trial starts. Training is
seeded, so a real ASHA run trains the same curves; only the timing of the asynchronous decisions can differ.

It takes seconds where a real comparison takes an hour, so it is the way to choose ``grace_period`` and
``reduction_factor`` for a space; ``bench/tune_efficiency.py`` then measures the chosen ones for real.

    python bench/asha_replay.py runs/bench/bench_full [more no-stopping experiments ...] [--concurrent 2]
"""

from __future__ import annotations

import argparse
import heapq
from pathlib import Path
from types import SimpleNamespace


def load_curves(paths: list[Path]) -> tuple[list[list[dict[str, float]]], str, str]:
    """Per trial (in start order, experiment after experiment): its per-epoch results; and the metric and mode."""
    from raytrain.tuning.experiment import load_experiment

    curves, objective = [], None
    for path in paths:
        experiment = load_experiment(path)
        if objective not in (None, (experiment.metric, experiment.mode)):
            raise SystemExit(f"{path}: optimises {experiment.metric} ({experiment.mode}), the others {objective}.")
        objective = experiment.metric, experiment.mode
        started = []
        for trial in experiment.trials:
            if trial.end != "completed":
                raise SystemExit(f"{path}: trial {trial.name} ended '{trial.end}': replay needs complete curves, "
                                 "from an experiment run with scheduler=none and no patience or time budget.")
            first = trial.history[0]
            started.append((first.get("timestamp", 0) - first.get("time_this_iter_s", 0), trial.history))
        curves += [history for _, history in sorted(started, key=lambda s: s[0])]
    assert objective is not None
    return curves, *objective


def replay(curves: list[list[dict[str, float]]], metric: str, mode: str, *, grace: int, reduction: int,
           concurrent: int) -> tuple[list[int], float]:
    """Epochs each trial would train under ASHA, and the simulated wall time."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from raytrain.tuning.stopping import break_ties

    max_t = max(int(c[-1]["epoch"]) for c in curves)
    asha = ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t, grace_period=grace,
                         reduction_factor=reduction)
    epochs, waiting, running, clock, order = [0] * len(curves), list(range(len(curves))), [], 0.0, 0

    def start(now: float) -> None:
        nonlocal order
        index = waiting.pop(0)
        trial = SimpleNamespace(trial_id=str(index))
        asha.on_trial_add(None, trial)
        heapq.heappush(running, (now + curves[index][0].get("time_this_iter_s", 1.0), order, index, 0, trial))
        order += 1

    while waiting and len(running) < concurrent:
        start(clock)
    while running:
        clock, _, index, i, trial = heapq.heappop(running)
        result = break_ties(curves[index][i], metric, mode)
        epochs[index] = i + 1
        if i + 1 == len(curves[index]):
            asha.on_trial_complete(None, trial, result)
        elif asha.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            asha.on_trial_remove(None, trial)
        else:
            heapq.heappush(running, (clock + curves[index][i + 1].get("time_this_iter_s", 1.0), order, index,
                                     i + 1, trial))
            order += 1
            continue
        if waiting:
            start(clock)
    return epochs, clock


def best_within(curves: list[list[dict[str, float]]], epochs: list[int], metric: str, mode: str) -> float:
    """The best metric over the epochs that were trained."""
    pick = max if mode == "max" else min
    return pick(pick(row[metric] for row in curve[:n]) for curve, n in zip(curves, epochs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", type=Path, help="no-stopping experiment folders")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time, as in the real run")
    parser.add_argument("--grace", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--reduction", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    curves, metric, mode = load_curves(args.experiments)
    full = [len(c) for c in curves]
    best = best_within(curves, full, metric, mode)
    print(f"{len(curves)} trials, {sum(full)} epochs without stopping, best {metric} {best:.4f}")
    print(f"{'grace':>5} {'reduction':>9} {'epochs':>8} {'share':>6} {'best':>8} {'shortfall':>9}  trials cut early")
    for grace in args.grace:
        for reduction in args.reduction:
            epochs, _ = replay(curves, metric, mode, grace=grace, reduction=reduction, concurrent=args.concurrent)
            kept = best_within(curves, epochs, metric, mode)
            shortfall = (best - kept) / abs(best) if mode == "max" else (kept - best) / abs(best)
            cut = sum(n < f for n, f in zip(epochs, full, strict=True))
            print(f"{grace:>5} {reduction:>9} {sum(epochs):>8} {sum(epochs) / sum(full):>6.0%} {kept:>8.4f} "
                  f"{shortfall:>9.1%}  {cut}")


if __name__ == "__main__":
    main()
