"""Replay ASHA on a finished no-stopping experiment: which rung schedule would have saved most and kept the best?

raytrain's rung rule (``raytrain.tuning.stopping.RungRule``: warmup trials judged after their warmup, near-ties kept)
and, with ``--rule ray``, Ray's own ``ASHAScheduler`` with the validation-loss tie-break raytrain used before it, are
fed the per-epoch results that an experiment without early stopping recorded, in simulated time: trials start in the
order they started, ``--concurrent`` at a time, and each epoch takes as long as it took (the first one includes the
trial's start-up). Where ASHA says stop, the trial's remaining epochs are not counted and the next trial starts.
Training is seeded, so a real ASHA run trains the same curves; only the timing of the asynchronous decisions can
differ.

It takes seconds where a real comparison takes an hour, so it is the way to choose ``grace_period`` and
``reduction_factor`` for a space; ``bench/tune_efficiency.py`` then measures the chosen ones for real.

    python bench/asha_replay.py runs/bench/bench_full [more no-stopping experiments ...] [--concurrent 2] \
        [--rule raytrain ray] [--batches 32]

A trial's warmup end is what it reported (``warmup_end_epoch``); trials that predate that report are given
``max(round(warmup_epochs * --batches), --warmup-floor) / --batches`` (``--warmup-floor 100`` for runs trained before
raytrain's warmup followed Ultralytics 8.4, which has no floor).
Also printed: each trial's best metric, which trial won without stopping, and where each rule stopped it.
"""

from __future__ import annotations

import argparse
import heapq
from pathlib import Path
from types import SimpleNamespace


def load_curves(paths: list[Path], completed_only: bool = False
                ) -> tuple[list[list[dict[str, float]]], list[dict], str, str]:
    """Per trial (in start order, experiment after experiment): its per-epoch results and its parameters; and the
    metric and mode. ``completed_only``: skip trials not completed yet (replay a running experiment's first ones)."""
    from raytrain.tuning.experiment import load_experiment

    curves, params, objective = [], [], None
    for path in paths:
        experiment = load_experiment(path)
        if objective not in (None, (experiment.metric, experiment.mode)):
            raise SystemExit(f"{path}: optimises {experiment.metric} ({experiment.mode}), the others {objective}.")
        objective = experiment.metric, experiment.mode
        started = []
        for trial in experiment.trials:
            if trial.end != "completed" and completed_only:
                print(f"{path}: {trial.name} skipped (ended '{trial.end}')")
                continue
            if trial.end != "completed":
                raise SystemExit(f"{path}: trial {trial.name} ended '{trial.end}': replay needs complete curves, "
                                 "from an experiment run with scheduler=none and no patience or time budget.")
            first = trial.history[0]
            started.append((first.get("timestamp", 0) - first.get("time_this_iter_s", 0), trial.history,
                            {**trial.params, "name": trial.name}))
        started.sort(key=lambda s: s[0])
        curves += [history for _, history, _ in started]
        params += [p for _, _, p in started]
    assert objective is not None
    return curves, params, *objective


def warmup_ends(curves: list[list[dict[str, float]]], params: list[dict], batches: int, floor: int) -> list[float]:
    """The epoch each trial's warmup ended at: as reported, else ``max(round(warmup_epochs * batches), floor)``
    iterations (capped to all epochs but the last) over ``batches`` an epoch."""
    from raytrain.tuning.trial import WARMUP_END

    out = []
    for curve, p in zip(curves, params, strict=True):
        reported = curve[0].get(WARMUP_END)
        w = min(float(p.get("warmup_epochs", 0.0)), len(curve) - 1)
        iterations = max(round(w * batches), floor) if w > 0 else 0
        out.append(float(reported) if reported is not None else iterations / batches)
    return out


def ray_tie_break(result: dict[str, float], metric: str, mode: str) -> dict[str, float]:
    """The rule raytrain used before its RungRule: equal metrics ranked by validation loss (1e-9 per unit)."""
    losses = [result.get(k) for k in ("val/box_loss", "val/cls_loss", "val/dfl_loss")]
    if result.get(metric) is None or None in losses or metric.startswith(("val/", "train/")):
        return result
    nudge = 1e-9 * float(sum(losses))
    return {**result, metric: float(result[metric]) - nudge if mode == "max" else float(result[metric]) + nudge}


class RayASHA:
    """Ray's ASHAScheduler behind the interface the replay drives (judge -> stop or not)."""

    def __init__(self, metric: str, mode: str, max_t: int, grace: int, reduction: int) -> None:
        from ray.tune.schedulers import ASHAScheduler

        self.metric, self.mode = metric, mode
        self.asha = ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t, grace_period=grace,
                                  reduction_factor=reduction)

    def add(self, trial: SimpleNamespace) -> None:
        self.asha.on_trial_add(None, trial)

    def stops(self, trial: SimpleNamespace, row: dict[str, float], warmup: float, last: bool) -> bool:
        from ray.tune.schedulers import TrialScheduler

        result = ray_tie_break(row, self.metric, self.mode)
        if last:
            self.asha.on_trial_complete(None, trial, result)
            return False
        stop = self.asha.on_trial_result(None, trial, result) == TrialScheduler.STOP
        if stop:
            self.asha.on_trial_remove(None, trial)
        return stop


class OurRule:
    """raytrain's RungRule behind the same interface (``floor``: its TIE_FLOOR, None for the default)."""

    def __init__(self, metric: str, mode: str, max_t: int, grace: int, reduction: int,
                 floor: float | None = None) -> None:
        from raytrain.tuning.stopping import TIE_FLOOR, RungRule, asha_rungs

        self.metric = metric
        self.rule = RungRule(asha_rungs(grace, max_t, reduction), reduction, mode,
                             floor=TIE_FLOOR if floor is None else floor)

    def add(self, trial: SimpleNamespace) -> None:
        pass

    def stops(self, trial: SimpleNamespace, row: dict[str, float], warmup: float, last: bool) -> bool:
        reason = self.rule.judge(trial.trial_id, int(row["epoch"]), float(row[self.metric]), warmup)
        return reason is not None and not last


def replay(curves: list[list[dict[str, float]]], metric: str, mode: str, *, grace: int, reduction: int,
           concurrent: int, rule: str = "raytrain", warmups: list[float] | None = None,
           floor: float | None = None) -> tuple[list[int], float]:
    """Epochs each trial would train under ``rule`` (raytrain or ray), and the simulated wall time."""
    max_t = max(int(c[-1]["epoch"]) for c in curves)
    judge = OurRule(metric, mode, max_t, grace, reduction, floor) if rule == "raytrain" else RayASHA(
        metric, mode, max_t, grace, reduction)
    warmups = warmups or [0.0] * len(curves)
    epochs, waiting, running, clock, order = [0] * len(curves), list(range(len(curves))), [], 0.0, 0

    def start(now: float) -> None:
        nonlocal order
        index = waiting.pop(0)
        trial = SimpleNamespace(trial_id=str(index))
        judge.add(trial)
        heapq.heappush(running, (now + curves[index][0].get("time_this_iter_s", 1.0), order, index, 0, trial))
        order += 1

    while waiting and len(running) < concurrent:
        start(clock)
    while running:
        clock, _, index, i, trial = heapq.heappop(running)
        epochs[index] = i + 1
        last = i + 1 == len(curves[index])
        if not judge.stops(trial, curves[index][i], warmups[index], last) and not last:
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
    parser.add_argument("--rule", nargs="+", choices=("raytrain", "ray"), default=["raytrain", "ray"])
    parser.add_argument("--floor", type=float, nargs="+", default=[None],
                        help="raytrain rule: TIE_FLOOR values to try (default: the library's)")
    parser.add_argument("--no-warmup-rule", action="store_true", help="raytrain rule: judge warmup trials too")
    parser.add_argument("--warmup-floor", type=int, default=0, help="the warmup rule's floor in iterations for "
                        "trials that did not report their warmup end (100 before raytrain followed Ultralytics 8.4)")
    parser.add_argument("--completed-only", action="store_true", help="skip trials that have not completed")
    parser.add_argument("--batches", type=int, default=32, help="batches an epoch, for trials that did not report "
                        "their warmup end (the quickstart: 250 images / 8 = 32)")
    args = parser.parse_args()
    curves, params, metric, mode = load_curves(args.experiments, args.completed_only)
    warmups = [0.0] * len(curves) if args.no_warmup_rule else warmup_ends(curves, params, args.batches,
                                                                          args.warmup_floor)
    full = [len(c) for c in curves]
    best = best_within(curves, full, metric, mode)
    pick = max if mode == "max" else min
    bests = [pick(row[metric] for row in c) for c in curves]
    winner = bests.index(best)
    print(f"{len(curves)} trials, {sum(full)} epochs without stopping, best {metric} {best:.4f} "
          f"({params[winner]['name']}, warmup to epoch {warmups[winner]:.2f})")
    order = sorted(range(len(curves)), key=lambda i: bests[i], reverse=mode == "max")
    print("trials by best " + metric + ": " + ", ".join(
        f"{params[i]['name']} {bests[i]:.4f} (w {warmups[i]:.2f}, {params[i].get('optimizer', '?')})" for i in order))
    print(f"{'rule':>14} {'grace':>5} {'reduction':>9} {'epochs':>8} {'share':>6} {'best':>8} {'shortfall':>9}  "
          "cut early; top-3 trials' epochs")
    variants = [(r, f) for r in args.rule for f in (args.floor if r == "raytrain" else [None])]
    for rule, floor in variants:
        label = rule if floor is None else f"{rule} {floor:g}"
        for grace in args.grace:
            for reduction in args.reduction:
                epochs, _ = replay(curves, metric, mode, grace=grace, reduction=reduction,
                                   concurrent=args.concurrent, rule=rule, warmups=warmups, floor=floor)
                kept = best_within(curves, epochs, metric, mode)
                shortfall = (best - kept) / abs(best) if mode == "max" else (kept - best) / abs(best)
                cut = sum(n < f for n, f in zip(epochs, full, strict=True))
                top = " ".join(f"{epochs[i]}/{full[i]}" for i in order[:3])
                print(f"{label:>14} {grace:>5} {reduction:>9} {sum(epochs):>8} {sum(epochs) / sum(full):>6.0%} "
                      f"{kept:>8.4f} {shortfall:>9.1%}  {cut}; {top}")


if __name__ == "__main__":
    main()
