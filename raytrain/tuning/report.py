"""Writing a tune experiment's reports: ``trials.csv``, ``best.yaml`` / ``best.pt`` and the ranked text table."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from raytrain.files import atomic_write
from raytrain.tuning.experiment import Experiment, TrialRecord

LOGGER = logging.getLogger("raytrain")
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
BEST_WEIGHTS = "best.pt"


# ------------------------------------------------------------------------------------------------------ writing
def write_trials_csv(exp: Experiment, path: Path | None = None) -> Path:
    """``trials.csv``: one row per trial, best first: parameters, final and best metric, epochs run, how it ended
    (and, for a trial that ended in ``error``, why). With PBT the parameters are the trial's final values, and
    ``exploits`` / ``lineage`` say whose states it continued (``trial_00001@2``: that trial's after epoch 2)."""
    from raytrain.tuning.lineage import history, is_pbt, lineage_text

    path = path or exp.path / TRIALS_CSV
    metric = exp.metric
    pbt, rows = is_pbt(exp), history(exp)
    header = ["rank", "trial", "end", "stopped_at_epoch", "stop_reason",
              "epochs_run", "epochs_planned", f"final {metric}",
              f"best {metric}", "best_epoch", *exp.param_names, "resolved_optimizer", "resolved_lr0",
              *(("exploits", "lineage") if pbt else ()), "trial_id", "save_dir", "error"]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    for rank, t in enumerate(exp.ranked(), 1):
        best, best_epoch = t.best(metric, exp.mode)
        writer.writerow([rank, t.name, t.end, _blank(t.stopped_at_epoch), _blank(t.stop_reason),
                         t.epochs_run, _blank(trained_epochs(t)),
                         _fmt(t.final(metric)), _fmt(best), _blank(best_epoch),
                         *(_blank(t.params.get(p)) for p in exp.param_names),
                         *(resolved_optimizer(t) or ("", "")),
                         *((sum(r["trial"] == t.name for r in rows), lineage_text(rows, t.name)) if pbt else ()),
                         t.trial_id, _blank(t.save_dir), _blank(t.error)])
    return atomic_write(path, text.getvalue())  # a reader of a running experiment never sees half a table


def resolved_optimizer(t: TrialRecord) -> tuple[str, float] | None:
    """The optimizer and lr0 a trial trained with (``optimizer=auto`` resolved), from its run folder's ``run.json``;
    None before the trial has planned its run."""
    from raytrain.train.plan import RUN_FILE

    run = Path(t.save_dir) / RUN_FILE if t.save_dir else None
    if run is None or not run.is_file():
        return None
    try:
        record = json.loads(run.read_text()).get("optimizer") or {}
    except (OSError, ValueError):
        return None
    return (str(record["name"]), float(record["lr0"])) if "name" in record and "lr0" in record else None


def trained_epochs(t: TrialRecord) -> int | None:
    """The epochs a trial's run was planned with, from its own ``args.yaml`` (what it trained with, whatever the
    driver recorded); the driver's record while the run folder has none yet."""
    args = Path(t.save_dir) / "args.yaml" if t.save_dir else None
    if args is None or not args.is_file():
        return t.epochs_planned
    try:
        epochs = (yaml.safe_load(args.read_text()) or {}).get("epochs")
    except (OSError, yaml.YAMLError):
        return t.epochs_planned
    return int(epochs) if isinstance(epochs, int) else t.epochs_planned


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _blank(value: Any) -> Any:
    return "" if value is None else value


def write_best(exp: Experiment) -> TrialRecord | None:
    """``best.yaml`` (the best trial's full training config: ``raytrain fit cfg=best.yaml``) and its ``best.pt``.

    PBT: the best trial's final values, with ``schedule:`` naming ``best_schedule.yaml`` (its values per epoch along
    its lineage), so ``raytrain fit cfg=best.yaml`` replays the schedule PBT found.
    """
    from raytrain.config import make_config
    from raytrain.tuning.lineage import write_best_schedule

    best = exp.best_trial()
    if best is None:
        return None
    train = dict(exp.space.get("train", {}))
    schedule = write_best_schedule(exp, best)
    cfg = make_config(train, {k: v for k, v in best.params.items() if k in exp.param_names},
                      {"schedule": str(schedule)} if schedule else {})
    value, epoch = best.best(exp.metric, exp.mode)
    header = (f"# Best trial {best.name} ({best.trial_id}) of {exp.path}: {exp.metric}={value:.6g} at epoch {epoch} "
              f"({best.end}).\n# Train it again with: raytrain fit cfg={exp.path / BEST_YAML}\n")
    if schedule:
        header += ("# PBT changed its values during training: schedule: replays them epoch by epoch (the values "
                   "below are its final ones; schedule=null trains with them throughout).\n")
    atomic_write(exp.path / BEST_YAML, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    weights = Path(best.save_dir) / "weights" / "best.pt" if best.save_dir else None
    if weights is not None and weights.is_file():
        shutil.copyfile(weights, exp.path / BEST_WEIGHTS)
    elif best.save_dir:
        LOGGER.warning("Best trial %s has no weights at %s.", best.name, weights)
    return best


# -------------------------------------------------------------------------------------------------------- table
def format_table(exp: Experiment, limit: int | None = None) -> str:
    """The ranked trials as an aligned text table (best first)."""
    from raytrain.tuning.lineage import history, is_pbt, lineage_text

    metric = exp.metric
    params = exp.param_names
    pbt, exploits = is_pbt(exp), history(exp)
    rows = [["#", "trial", "end", "ran", f"best {metric}", f"final {metric}", *params, "optimizer (lr0)",
             *(["lineage"] if pbt else [])]]
    for rank, t in enumerate(exp.ranked()[:limit], 1):
        best, _ = t.best(metric, exp.mode)
        planned = f"/{trained_epochs(t)}" if trained_epochs(t) else ""
        rows.append([str(rank), t.name, t.end, f"{t.epochs_run}{planned}", _fmt(best), _fmt(t.final(metric)),
                     *(_short(t.params.get(p)) for p in params), _resolved_text(t),
                     *([lineage_text(exploits, t.name) or "-"] if pbt else [])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _resolved_text(t: TrialRecord) -> str:
    """``AdamW (0.001429)``: what ``optimizer=auto`` (or the searched optimizer) trained with."""
    resolved = resolved_optimizer(t)
    return f"{resolved[0]} ({resolved[1]:.4g})" if resolved else ""


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


__all__ = ["BEST_WEIGHTS", "BEST_YAML", "TRIALS_CSV", "format_table", "trained_epochs", "write_best",
           "write_trials_csv"]
