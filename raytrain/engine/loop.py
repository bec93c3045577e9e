"""The epoch loop of one training run, free of Ray: whoever runs it passes a ``report`` sink.

:func:`run_epochs` owns everything that happens between two optimizer steps' epochs: epochs numbered from 1,
``close_mosaic``, validation and fitness, ``weights/last.pt``/``best.pt``/``epochN.pt``, ``results.csv``/``.png``, the
user callbacks in their documented order, ``patience``, the ``time=`` re-plan, progress lines with an ETA, and the
trackers. Every epoch it writes the full training state into a fresh folder and calls ``report(EpochReport)``; the
folder exists only during that call, so the sink copies what it keeps (Ray Train uploads it as a checkpoint).

Each rank of a data-parallel run calls :func:`run_epochs` with its own :class:`raytrain.engine.setup.RankSetup`; the
decisions every rank must agree on (stop, a re-planned schedule) come from rank 0, and only rank 0 writes files,
logs, runs callbacks and gets a state folder. Tests and ``bench/throughput.py`` call it directly.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain import keys
from raytrain.engine.epoch import train_one_epoch
from raytrain.engine.hyper import apply_values, read_schedule, values_at
from raytrain.engine.optim import current_lrs
from raytrain.engine.ranks import from_rank0, mean_over_ranks
from raytrain.engine.setup import RankSetup
from raytrain.engine.state import RunState, checkpoint_dict, save_state

LOGGER = logging.getLogger("raytrain")


@dataclass(frozen=True)
class EpochReport:
    """What the loop reports after each epoch.

    Attributes:
        metrics: the epoch's row: every key of :data:`raytrain.keys.EPOCH_KEYS`, as floats.
        state_dir: rank 0: a folder holding the full training state (see :mod:`raytrain.engine.state`), valid during
            the ``report`` call only; None on other ranks.
        changed: rank 0: the run-folder files written this epoch (for a sink that mirrors the run folder elsewhere).
        stop: whether this was the run's last epoch (completed, patience, or time limit).
    """

    metrics: dict[str, float]
    state_dir: Path | None = None
    changed: list[Path] = field(default_factory=list)
    stop: bool = False


Report = Callable[[EpochReport], None]


def run_epochs(setup: RankSetup, state: RunState, report: Report, *, trackers: Any = None) -> RunState:
    """Train from ``state.epoch + 1`` until the schedule ends, ``patience`` runs out or the time limit is reached.

    Args:
        setup: this rank's model, data, optimizer and schedule (the model DDP-wrapped when ``setup.world > 1``).
        state: where the run stands (:func:`raytrain.engine.state.initial_state`); updated in place and returned.
        report: called once per epoch on every rank, with the same metrics on every rank.
        trackers: rank 0's experiment trackers (``log_epoch``, ``log_summary``, ``finish``), or None.

    Returns:
        ``state`` after the last epoch.
    """
    cfg, nb = setup.cfg, len(setup.train_loader)
    if setup.rank == 0 and state.epoch == 0:
        LOGGER.info("Training %s on %d %s worker(s): global batch %d, %d batches per epoch per worker, %d epochs, "
                    "imgsz %d. Run folder: %s", cfg.model, setup.world, setup.device.type, setup.global_batch, nb,
                    state.schedule_epochs, cfg.imgsz, setup.save_dir)
    setup.emit("on_train_start", state, epoch=state.epoch, metrics=state.history[-1] if state.history else {})
    last_step = state.epoch * nb - 1
    stop = state.epoch >= state.schedule_epochs
    replay = read_schedule(cfg.schedule) if cfg.schedule else None  # schedule=: per-epoch hyperparameters
    while not stop:
        epoch, started = state.epoch + 1, time.perf_counter()  # epochs from 1
        scheduled = replay_epoch(setup, replay, epoch) if replay else {}
        mosaic = not (cfg.close_mosaic and epoch > state.schedule_epochs - cfg.close_mosaic)
        if not mosaic and epoch == state.schedule_epochs - cfg.close_mosaic + 1:
            LOGGER.info("Closing mosaic for the last %d epochs.", cfg.close_mosaic)
        setup.train_loader.set_epoch(epoch, mosaic=mosaic)
        setup.loss_fn = setup.loss_fn.at_epoch(epoch, state.schedule_epochs)  # YOLO26's branch weights follow the epoch
        setup.emit("on_train_epoch_start", state, epoch=epoch)
        result = train_one_epoch(setup.model, setup.train_loader, setup.optimizer, setup.loss_fn, device=setup.device,
                                 epoch=epoch - 1,
                                 lr_schedule=dataclasses.replace(setup.lr_schedule, epochs=state.schedule_epochs),
                                 ema=setup.ema, scaler=setup.scaler, amp=setup.amp, world_size=setup.world,
                                 iteration=(epoch - 1) * nb, last_step=last_step,
                                 on_batch_end=_on_batch_end(setup, state, epoch, nb))
        last_step = result.last_step
        losses = mean_over_ranks(result.losses.clone()).tolist()
        row = {keys.EPOCH: epoch, **dict(zip(keys.train_loss_keys(setup.loss_fn.names), losses, strict=True)),
               **current_lrs(setup.optimizer), keys.TRAIN_SECONDS: result.seconds, **scheduled}
        if state.continued_from:  # the first epoch on another run's state: trackers show where it came from
            row.update(exploit_fields(state.continued_from))
            state.continued_from = ""
        setup.emit("on_train_epoch_end", state, epoch=epoch, metrics=row)
        # Decisions every rank must agree on (or the collective calls below would hang) come from rank 0.
        if cfg.time:
            state.schedule_epochs = _epochs_within_time(setup, state, epoch, started)
        final = epoch >= state.schedule_epochs
        metrics = validate(setup) if cfg.val or final else None  # every rank validates its shard
        # No validation: the lower loss is fitter.
        fit = epoch_fitness(metrics, cfg.fitness, cfg.fitness_weights) if metrics else -sum(losses)
        improved = state.best_fitness is None or fit >= state.best_fitness
        if improved:
            state.best_fitness, state.best_epoch = fit, epoch
        stop = bool(from_rank0([float(final or early_stop(epoch, state.best_epoch, cfg.patience))], setup.device)[0])
        if stop and not final:
            LOGGER.info("Stopping early: no fitness improvement in the last %d epochs (best %.4f at epoch %d; "
                        "patience=%d).", epoch - state.best_epoch, state.best_fitness, state.best_epoch, cfg.patience)
        if stop and metrics is None:
            metrics = validate(setup)
        row.update(metrics or dict.fromkeys(keys.val_keys(setup.loss_fn.names), 0.0))
        row[keys.FITNESS] = fit
        state.epoch, seconds = epoch, time.perf_counter() - started
        state.train_time += seconds
        row.update({keys.TIME: state.train_time, keys.EPOCH_SECONDS: seconds})
        state.history.append(dict(row))
        if setup.rank == 0:
            _finish_epoch(setup, state, row, report, improved=improved, stop=stop, trackers=trackers)
        else:
            report(EpochReport({k: float(v) for k, v in row.items()}, stop=stop))
    setup.emit("on_train_end", state, epoch=state.epoch, metrics=state.history[-1] if state.history else {})
    if trackers is not None:
        best = next((r for r in state.history if r[keys.EPOCH] == state.best_epoch), None)
        trackers.log_summary({**(best or {}), "best_epoch": state.best_epoch})
    return state


def replay_epoch(setup: RankSetup, replay: dict[int, dict[str, float]], epoch: int) -> dict[str, float]:
    """Apply the ``schedule=`` values in force at ``epoch`` (from 1) to ``setup``; returns them as ``hyp/KEY`` fields.

    Every epoch, not only where the file changes a value: a resumed run gets its epoch's values back.
    """
    values = values_at(replay, epoch)
    changed = apply_values(setup, values)
    if changed and setup.rank == 0:
        LOGGER.info("Epoch %d: schedule sets %s.", epoch, ", ".join(f"{k}={v:g}" for k, v in changed.items()))
    return {f"hyp/{k}": v for k, v in values.items()}


def exploit_fields(source: str) -> dict[str, float]:
    """Row fields for the first epoch a run trains on another run's state (a PBT exploit): ``pbt/exploit`` 1 and
    ``pbt/exploited_from``, the source trial's number (``trial_00003`` -> 3; -1 for a name without one)."""
    digits = source.rsplit("_", 1)[-1]
    return {"pbt/exploit": 1.0, "pbt/exploited_from": float(int(digits)) if digits.isdigit() else -1.0}


def early_stop(epoch: int, best_epoch: int, patience: int) -> bool:
    """True when ``patience`` epochs passed since the best fitness (``epoch`` and ``best_epoch`` from 1)."""
    return epoch - best_epoch >= patience


def epoch_fitness(metrics: dict[str, float], key: str, weights: dict[str, float] | None = None) -> float:
    """The number that picks ``best.pt`` and drives ``patience`` (``fitness=`` names the metric; ``fitness_weights=``,
    when set, weighs several instead)."""
    from raytrain.metrics import fitness

    return float(fitness(metrics, key=key, weights=weights))


def validate(setup: RankSetup) -> dict[str, float]:
    """Validate the EMA weights; every rank takes part (``evaluate`` gathers the shards' matches)."""
    from raytrain.engine.validate import evaluate

    result = evaluate(setup.ema.ema, setup.val_loader, device=setup.device, names=setup.names, iou=setup.cfg.iou,
                      max_det=setup.cfg.max_det, loss_fn=setup.loss_fn, nms=setup.cfg.nms)
    return {k: float(result.metrics.get(k, 0.0)) for k in keys.val_keys(setup.loss_fn.names)}


def _epochs_within_time(setup: RankSetup, state: RunState, epoch: int, started: float) -> int:
    """Rank 0's answer (shared with every rank) to: how many epochs fit in ``time=`` hours?"""
    from raytrain.engine.optim import epochs_within_time

    fits = epochs_within_time(setup.cfg.time, state.train_time + time.perf_counter() - started, epoch)
    fits = int(from_rank0([float(fits)], setup.device)[0])
    if fits != state.schedule_epochs:
        LOGGER.info("time=%gh: %d epochs fit; the learning-rate schedule now spans %d epochs.", setup.cfg.time, fits,
                    fits)
    return fits


def _on_batch_end(setup: RankSetup, state: RunState, epoch: int, batches: int) -> Callable[[int, Any], None] | None:
    """Rank 0's per-batch hook: the ``on_train_batch_end`` callbacks and, in a terminal, a progress bar."""
    if setup.rank != 0:
        return None
    progress = _batch_progress(epoch, state.schedule_epochs, batches) if setup.interactive else None

    def on_batch_end(i: int, losses: Any) -> None:
        if progress is not None:
            progress(i, losses)
        setup.emit("on_train_batch_end", state, epoch=epoch, batch=i,
               metrics=dict(zip(keys.train_loss_keys(setup.loss_fn.names), losses.tolist(), strict=True)))

    return on_batch_end


def _finish_epoch(setup: RankSetup, state: RunState, row: dict[str, float], report: Report, *, improved: bool,
                  stop: bool, trackers: Any) -> None:
    """Rank 0: write the run folder (csv, png, last/best), report the metrics with the full state, then log them to
    the trackers."""
    from raytrain.engine.results import plot_results, write_results_csv

    epoch, cfg, save_dir = int(row[keys.EPOCH]), setup.cfg, setup.save_dir
    write_results_csv(save_dir / "results.csv", state.history)
    changed = [save_dir / "results.csv"]
    if cfg.plots:
        changed.append(plot_results(save_dir / "results.csv"))
    small = checkpoint_dict(setup.model, setup.ema, setup.names, state=state, cfg=cfg, metrics=row)
    changed += save_weights(save_dir, small, improved=improved, epoch=epoch, save_period=cfg.save_period)
    setup.emit("on_model_save", state, epoch=epoch, metrics=row)
    eta = 0.0 if stop else (state.schedule_epochs - epoch) * state.train_time / len(state.history)
    LOGGER.info(_progress_line(epoch, state.schedule_epochs, row, row[keys.EPOCH_SECONDS], eta))
    setup.emit("on_fit_epoch_end", state, epoch=epoch, metrics=row)
    with tempfile.TemporaryDirectory(prefix="raytrain-state-") as folder:
        save_state(Path(folder), setup, state, row)
        report(EpochReport({k: float(v) for k, v in row.items()}, Path(folder), changed, stop))
    # Logged once the epoch's state is saved: a run restarted from its last state (which trackers are told of) never
    # logs an epoch twice. (A trial Tune stops inside its report never gets here: the driver logs that epoch.)
    if trackers is not None:
        trackers.log_epoch(row, epoch)
    if stop:
        LOGGER.info("%d epochs completed in %.3f hours. Results saved to %s", epoch, state.train_time / 3600,
                    save_dir)


def save_weights(save_dir: Path, ckpt: dict[str, Any], *, improved: bool, epoch: int, save_period: int) -> list[Path]:
    """``weights/last.pt`` every epoch, ``best.pt`` when fitness improved, ``epochN.pt`` every ``save_period``;
    returns the files written."""
    import shutil

    from raytrain.models.checkpoint import save_checkpoint

    weights = save_dir / "weights"
    last = weights / "last.pt"
    save_checkpoint(last, ckpt)
    written = [last]
    if improved:
        shutil.copyfile(last, weights / "best.pt")
        written.append(weights / "best.pt")
    if save_period > 0 and epoch % save_period == 0:
        shutil.copyfile(last, weights / f"epoch{epoch}.pt")
        written.append(weights / f"epoch{epoch}.pt")
    return written


def _progress_line(epoch: int, epochs: int, row: dict[str, float], seconds: float, eta: float) -> str:
    losses = "  ".join(f"{k.split('/')[1].removesuffix('_loss')} {v:.3f}" for k, v in row.items()
                       if k.startswith("train/") and k.endswith("_loss"))  # box, cls, then dfl or l1
    return (f"Epoch {epoch}/{epochs}  {losses}  P {row[keys.PRECISION]:.3f}  R {row[keys.RECALL]:.3f}  "
            f"mAP50 {row[keys.MAP50]:.3f}  mAP50-95 {row[keys.MAP50_95]:.3f}  {seconds:.1f}s/epoch  ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _batch_progress(epoch: int, epochs: int, batches: int) -> Callable[[int, Any], None]:
    """A batch progress bar for interactive terminals: one line per 10 % (Ray forwards worker output by line)."""
    marks = {max(round(batches * k / 10) - 1, 0) for k in range(1, 11)}

    def show(i: int, losses: Any) -> None:
        if i in marks:
            done = (i + 1) / batches
            box, cls, dfl = losses.tolist()
            print(f"  {epoch}/{epochs} [{'=' * round(done * 20):<20}] {i + 1}/{batches}  "
                  f"box {box:.3f} cls {cls:.3f} dfl {dfl:.3f}", flush=True)

    return show
