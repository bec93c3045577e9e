"""ClearML: an online task when ClearML has credentials here, else an offline session in ``<run folder>/clearml/``.

Credentials are ClearML's own (``CLEARML_API_ACCESS_KEY`` / ``CLEARML_API_SECRET_KEY`` or ``clearml.conf``) on the
machine that logs; they are never passed on. An offline session is moved into the run folder when the run finishes;
import it later with ``clearml-task``'s ``Task.import_offline_session(<zip>)``. ClearML's automatic framework,
console and resource capture stay off: it logs what raytrain gives it. A tune trial is tagged with its experiment's
name and its searched parameters are the task's hyperparameters (section ``params``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH, EPOCH_KEYS
from raytrain.tracking.base import TrackerInfo, numeric, read_tracking_file, update_tracking_file

FOLDER = "clearml"
TOOL = "clearml"


def has_clearml_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """True when ClearML could reach a server without a prompt: API keys in the environment, or a clearml.conf."""
    environ = os.environ if environ is None else environ
    if environ.get("CLEARML_API_ACCESS_KEY") and environ.get("CLEARML_API_SECRET_KEY"):
        return True
    conf = environ.get("CLEARML_CONFIG_FILE") or str(Path.home() / "clearml.conf")
    return Path(conf).is_file()


class ClearMLLogger:
    """One run's ClearML task (a :class:`raytrain.tracking.base.Tracker`).

    Online, a resumed run continues the task ``tracking.json`` names; offline, each attempt is a session of its own.
    """

    def __init__(self, info: TrackerInfo, config: Mapping[str, Any], *, done_epochs: int = 0) -> None:
        from clearml import Task

        self.save_dir, self.online = Path(info.save_dir), has_clearml_credentials()
        Task.set_offline(not self.online)
        # Report from a thread, not ClearML's reporting subprocess (its clearml.conf key development.
        # report_use_subprocess): closing a task otherwise waits ~10 s on that process, in a Ray worker or on the
        # tune driver, for each run.
        Task._report_subprocess_enabled = False
        record = read_tracking_file(self.save_dir).get(TOOL, {})
        previous = record.get("task_id") if self.online and record.get("run_id") == info.run_id else None
        self.task = Task.init(project_name=info.project, task_name=info.name, tags=[info.group] if info.group else None,
                              reuse_last_task_id=False, continue_last_task=previous or False,
                              auto_connect_arg_parser=False, auto_connect_frameworks=False,
                              auto_resource_monitoring=False, auto_connect_streams=False)
        if self.online:
            update_tracking_file(self.save_dir, TOOL, {"run_id": info.run_id, "task_id": self.task.id})
        self.last_epoch = done_epochs
        if not done_epochs:
            if info.params:
                self.task.connect(dict(info.params), name="params")
            self.task.connect_configuration(dict(config), name="args")

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None:
        logger = self.task.get_logger()
        for key, value in numeric(row).items():
            title, _, series = key.rpartition("/")  # metrics/mAP50(B): plot "metrics", series "mAP50(B)"
            logger.report_scalar(title or series, series, value, iteration=epoch)
        self.last_epoch = epoch

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        logger = self.task.get_logger()
        for key, value in numeric(metrics).items():
            logger.report_single_value(f"best/{key}", value)

    def finish(self, end: str) -> None:
        self.task.set_parameter("raytrain/end", end)
        self.task.set_parameter("raytrain/epochs_run", self.last_epoch)
        offline_folder = None if self.online else Path(self.task.get_offline_mode_folder())
        self.task.close()
        archive = offline_folder.with_suffix(".zip") if offline_folder else None
        if archive is not None and archive.is_file():  # keep the session with the run it belongs to
            (self.save_dir / FOLDER).mkdir(parents=True, exist_ok=True)
            shutil.move(str(archive), self.save_dir / FOLDER / archive.name)
            shutil.rmtree(offline_folder, ignore_errors=True)


def finish_stopped_run(info: TrackerInfo, rows: Sequence[Mapping[str, Any]], end: str) -> None:
    """From the tune driver: a killed trial's offline session was never closed; log its epochs and end."""
    logger = ClearMLLogger(info, {})
    for row in rows:
        logger.log_epoch({k: row[k] for k in EPOCH_KEYS if k in row}, int(row[EPOCH]))
    logger.finish(end)
