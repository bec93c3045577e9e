"""Reading a tune experiment folder back: the saved space, each trial's parameters, per-epoch results and end.

Everything is read back from files, so it works for a finished experiment, a running one and one whose driver
died: ``tune_space.yaml`` (the validated space, written before trials start), ``trial_status.yaml`` (each trial's
id, parameters, run folder and how it ended, kept by the driver's :func:`~raytrain.tuning.status.make_status_callback`),
and each trial folder's ``result.json`` (Tune's per-epoch results, one JSON object per line).

How a trial ended (``end`` column): ``completed`` (ran all its epochs), ``asha-stopped`` (ASHA cut it at a rung),
``patience-stopped`` (no improvement of the metric for ``patience`` epochs), ``time-budget`` (the experiment's
``time_budget_s`` ran out while it trained), ``infeasible`` (its model broke a constraint, e.g. ``latency_ms``, when
measured before training: it trained no epoch, and the reason is in ``error``), ``error`` (failed after its
retries, or at once on an error no retry can fix), ``lost`` (started just before a killed driver last saved Tune's
state, so a resumed experiment could not continue it), ``running`` / ``pending`` (the experiment is still going, or
was interrupted: ``resume=True`` continues it).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError, read_yaml_mapping
from raytrain.keys import EPOCH, FITNESS, LOSS_NAMES

LOGGER = logging.getLogger("raytrain")
SPACE_FILE = "tune_space.yaml"
# Not .json/.pkl: Tune copies those top-level files into its driver staging folder on restore and syncs them back
# over the experiment folder, which would undo the updates made after the restore.
STATUS_FILE = "trial_status.yaml"
ENDS = ("completed", "asha-stopped", "patience-stopped", "time-budget", "infeasible", "error", "lost", "running",
        "pending")


@dataclass
class TrialRecord:
    """One trial as read from the experiment folder."""

    trial_id: str
    name: str
    params: dict[str, Any]
    end: str = "pending"  # one of ENDS
    epochs_planned: int | None = None  # the trial's own epochs
    save_dir: str | None = None  # the trial's fit run folder (weights/best.pt, results.csv)
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch results, ordered by epoch
    error: str | None = None
    stopped_at_epoch: int | None = None  # the epoch at which ASHA or the patience rule decided to stop it
    stop_reason: str | None = None  # why, in words: "stopped at rung 3 (epoch 3): 0.02 < cut-off 0.11"

    @property
    def epochs_run(self) -> int:
        """Epochs trained (Tune stops a trial asynchronously, so this can exceed ``stopped_at_epoch``)."""
        return int(self.history[-1][EPOCH]) if self.history else 0

    def values(self, metric: str) -> list[tuple[int, float]]:
        """(epoch, value) pairs of ``metric``, skipping epochs that did not report a finite value."""
        out = []
        for row in self.history:
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append((int(row[EPOCH]), float(value)))
        return out

    def final(self, metric: str) -> float | None:
        values = self.values(metric)
        return values[-1][1] if values else None

    def best(self, metric: str, mode: str) -> tuple[float | None, int | None]:
        """The best value of ``metric`` over the trial's epochs, and the epoch it came from."""
        values = self.values(metric)
        if not values:
            return None, None
        epoch, value = (max if mode == "max" else min)(values, key=lambda ev: ev[1])
        return value, epoch


@dataclass
class Experiment:
    """An experiment folder read back: the space, the objective and every trial."""

    path: Path
    space: dict[str, Any]  # the saved TuneSpec.to_dict()
    trials: list[TrialRecord]

    @property
    def metric(self) -> str:
        """The (first) objective: what trials are ranked by, as with one objective."""
        return self.objectives[0][0]

    @property
    def mode(self) -> str:
        return self.objectives[0][1]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """Every (objective, mode) of the search: several when the space's ``metric:`` is a list."""
        metric, mode = self.space.get("metric", FITNESS), self.space.get("mode", "max")
        if isinstance(metric, list):
            return list(zip(metric, mode, strict=True))
        return [(metric, mode)]

    @property
    def param_names(self) -> list[str]:
        return list(self.space.get("space", {}))

    def ranked(self) -> list[TrialRecord]:
        """Trials ordered best first by their best metric; infeasible trials (never trained: their accuracy is a
        stand-in) after those, trials without a result last."""
        sign = -1.0 if self.mode == "max" else 1.0

        def key(t: TrialRecord) -> tuple[int, float]:
            value, _ = t.best(self.metric, self.mode)
            return (2, 0.0) if value is None else (int(t.end == "infeasible"), sign * value)

        return sorted(self.trials, key=key)

    def best_trial(self) -> TrialRecord | None:
        """The best trial that trained (an infeasible one never is)."""
        ranked = [t for t in self.ranked() if t.end != "infeasible"]
        return ranked[0] if ranked and ranked[0].best(self.metric, self.mode)[0] is not None else None


# ------------------------------------------------------------------------------------------------------ reading
def read_result_json(path: Path) -> list[dict[str, Any]]:
    """Tune's ``result.json`` rows, one per epoch (the last report of an epoch wins; a half-written line is skipped)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the driver may be writing this line right now
        if isinstance(row, dict) and isinstance(row.get(EPOCH), (int, float)):
            by_epoch[int(row[EPOCH])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_status(path: Path) -> dict[str, dict[str, Any]]:
    """``trial_status.yaml``: trial id -> what the driver recorded about it (empty when absent or unreadable)."""
    if not path.is_file():
        return {}
    try:
        data = read_yaml_mapping(path, label=str(path), kind="trial status file", expected="trial id: record")
    except ConfigError as e:  # the table can still be rebuilt from the trial folders
        LOGGER.warning("%s; reading trials from their folders only.", e)
        return {}
    return {str(k): v for k, v in data.items()}


def load_experiment(path: str | Path) -> Experiment:
    """Read a tune experiment folder (finished, running, or interrupted).

    Raises:
        ConfigError: when ``path`` is not a raytrain tune experiment folder.
    """
    path = Path(path).expanduser().resolve()
    space_file = path / SPACE_FILE
    if not space_file.is_file():
        raise ConfigError(f"{path}: not a raytrain tune experiment ({SPACE_FILE} not found).")
    space = read_yaml_mapping(space_file, label=str(space_file), kind="tune space file",
                              expected="the experiment's saved search space (a mapping)")
    status = read_status(path / STATUS_FILE)
    trials: dict[str, TrialRecord] = {}
    for trial_id, info in status.items():
        trials[trial_id] = TrialRecord(trial_id=trial_id, name=info.get("name", trial_id),
                                       params=dict(info.get("params", {})), end=info.get("end", "pending"),
                                       epochs_planned=info.get("epochs"), save_dir=info.get("save_dir"),
                                       error=info.get("error"), stopped_at_epoch=info.get("stopped_at_epoch"),
                                       stop_reason=info.get("stop_reason"))
    for params_file in sorted(path.glob("*/params.json")):
        folder = params_file.parent
        rows = read_result_json(folder / "result.json")
        trial_id = rows[-1].get("trial_id") if rows else None
        record = trials.get(trial_id) if trial_id else None
        if record is None:
            record = next((t for t in trials.values() if t.name == folder.name), None)
        if record is None:  # the driver died before recording it: rebuild from Tune's files
            params = json.loads(params_file.read_text())
            record = TrialRecord(trial_id=trial_id or folder.name, name=folder.name,
                                 params={k: params[k] for k in space.get("space", {}) if k in params},
                                 end="running" if rows else "pending")
            trials[record.trial_id] = record
        record.history = [_numbers(r) for r in rows]
    for record in trials.values():
        record.history = _merge_fit_history(record, space.get("train", {}))
    return Experiment(path=path, space=space, trials=sorted(trials.values(), key=lambda t: t.name))


def _merge_fit_history(record: TrialRecord, train: dict[str, Any]) -> list[dict[str, float]]:
    """Tune's per-epoch results completed with the trial's own ``results.csv``.

    When the driver is killed, Tune's copy of ``result.json`` can miss the last epochs it had received (it is synced
    to the experiment folder periodically), while the fit run folder's ``results.csv`` is rewritten every epoch from
    the checkpointed history. Epochs Tune has keep Tune's values; the others come from the CSV, with ``fitness``
    recomputed the way fit computes it.
    """
    csv_file = Path(record.save_dir) / "results.csv" if record.save_dir else None
    if csv_file is None or not csv_file.is_file():
        return record.history
    from raytrain.engine.results import read_results_csv

    try:
        fit_rows = read_results_csv(csv_file)
    except (OSError, ValueError, KeyError):
        return record.history
    by_epoch = {int(r[EPOCH]): _with_fitness(r, train) for r in fit_rows}
    for row in record.history:
        by_epoch[int(row[EPOCH])] = {**by_epoch.get(int(row[EPOCH]), {}), **row}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _with_fitness(row: dict[str, float], train: dict[str, Any]) -> dict[str, float]:
    from raytrain.metrics import fitness

    if FITNESS in row:
        return row
    validated = any(row.get(k) for k in row if k.startswith("metrics/"))
    if validated or train.get("val", True):
        value = fitness(row, key=train.get("fitness", "mAP50-95"), weights=train.get("fitness_weights"))
    else:  # fit without validation ranks epochs by the summed train losses (lower is fitter)
        value = -sum(row.get(f"train/{n}", 0.0) for n in LOSS_NAMES)
    return {**row, FITNESS: value}


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


__all__ = ["ENDS", "SPACE_FILE", "STATUS_FILE", "Experiment", "TrialRecord", "load_experiment", "read_result_json",
           "read_status"]
