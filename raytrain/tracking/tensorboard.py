"""TensorBoard event files in ``<run folder>/tensorboard/``, written with tensorboardX (a core dependency).

``tensorboard --logdir runs`` then shows fit runs and tune trials side by side (each trial's run folder sits under
its experiment). A tune trial also writes its searched parameters as TensorBoard hparams, so the HParams dashboard
compares trials. Viewing needs the ``tensorboard`` package (``pip install 'raytrain[tensorboard]'``); writing does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH, EPOCH_KEYS, FITNESS, MAP50, MAP50_95
from raytrain.tracking.base import TrackerInfo, numeric, plain_name

FOLDER = "tensorboard"
HPARAM_METRICS = (FITNESS, MAP50_95, MAP50)  # the columns of the HParams table (their latest values)


def log_dir(save_dir: Path) -> Path:
    """Where a run's event files go."""
    return Path(save_dir) / FOLDER


def _hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard hparams take bool, number or text; anything else (a list) is shown as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardLogger:
    """One run's event files (a :class:`raytrain.tracking.base.Tracker`).

    A resumed run opens a new event file with ``purge_step`` = the first epoch it logs, so TensorBoard hides any
    later step an earlier attempt wrote after its last checkpoint: every epoch appears once.
    """

    def __init__(self, info: TrackerInfo, config: Mapping[str, Any], *, done_epochs: int = 0) -> None:
        from tensorboardX import SummaryWriter

        # Event files are named by the second they start in: the suffix keeps a quick restart from overwriting one.
        self.writer = SummaryWriter(logdir=str(log_dir(info.save_dir)), purge_step=done_epochs + 1 if done_epochs
                                    else None, flush_secs=30, filename_suffix=f".{os.getpid()}.{done_epochs}")
        self.last_epoch = done_epochs
        if info.params and not done_epochs:  # hparams once per trial, beside its scalars (same folder)
            self._write_hparams(info.params)
        if config and not done_epochs:
            self.writer.add_text("args", "\n".join(f"    {k}: {v}" for k, v in config.items()), 0)

    def _write_hparams(self, params: Mapping[str, Any]) -> None:
        from tensorboardX.summary import hparams

        # add_hparams() would write them to a sub-run of its own; the session must be this run for the HParams
        # dashboard to pair the parameters with this run's scalars.
        metrics = {plain_name(k): 0.0 for k in HPARAM_METRICS}
        for summary in hparams({k: _hparam_value(v) for k, v in params.items()}, metrics):
            self.writer.file_writer.add_summary(summary)

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None:
        for key, value in numeric(row).items():
            self.writer.add_scalar(plain_name(key), value, epoch)
        # tensorboardX writes from a background thread within milliseconds; this flushes what it wrote, so a trial
        # killed later keeps every epoch it logged.
        self.writer.flush()
        self.last_epoch = epoch

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        for key, value in numeric(metrics).items():
            self.writer.add_scalar(f"best/{plain_name(key)}", value, self.last_epoch)

    def finish(self, end: str) -> None:
        self.writer.add_text("end", end, self.last_epoch)
        self.writer.close()


def finish_stopped_run(info: TrackerInfo, rows: Sequence[Mapping[str, Any]], end: str) -> None:
    """A trial Tune killed flushed each epoch's scalars as it logged them: only its end is missing."""
    started = log_dir(info.save_dir).is_dir()
    logger = TensorBoardLogger(info, {}, done_epochs=int(rows[-1][EPOCH]) if rows and started else 0)
    if not started:  # killed before its worker opened the event file: the driver writes the epochs Tune received
        for row in rows:
            logger.log_epoch({k: row[k] for k in EPOCH_KEYS if k in row}, int(row[EPOCH]))
    logger.finish(end)
