"""Comet: an online experiment when Comet has an API key here, else an offline archive in ``<run folder>/comet/``.

The key is found the way Comet finds it (``COMET_API_KEY`` or ``~/.comet.config``) on the machine that logs; it is
never passed on. Upload an offline archive later with ``comet upload <run folder>/comet/*.zip``. The experiment key
derives from the run id, so a resumed run continues the same Comet experiment (online, or when its archives are
uploaded). A tune trial is tagged with its experiment's name and logs its searched parameters as parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH, EPOCH_KEYS
from raytrain.tracking.base import TrackerInfo, numeric

FOLDER = "comet"


def experiment_key(run_id: str) -> str:
    """Comet's experiment key for a run: 32 alphanumeric characters, stable for the run id."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:32]


def has_comet_credentials() -> bool:
    """True when Comet has an API key on this machine (environment or its config file)."""
    import comet_ml

    return bool(comet_ml.config.get_config().get_string(None, "comet.api_key"))


class CometLogger:
    """One run's Comet experiment (a :class:`raytrain.tracking.base.Tracker`)."""

    def __init__(self, info: TrackerInfo, config: Mapping[str, Any], *, done_epochs: int = 0) -> None:
        import comet_ml

        online = has_comet_credentials()
        folder = Path(info.save_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)  # Comet refuses an offline directory that does not exist
        # Only what raytrain logs: no code, git, environment or console capture, no automatic framework logging.
        settings = comet_ml.ExperimentConfig(
            offline_directory=str(folder), name=info.name,
            tags=[info.group] if info.group else [], log_code=False, log_graph=False, parse_args=False,
            log_git_metadata=False, log_git_patch=False, log_env_details=False, log_env_gpu=False,
            log_env_host=False, log_env_cpu=False, log_env_network=False, log_env_disk=False,
            auto_output_logging=False, auto_param_logging=False, auto_metric_logging=False, auto_log_co2=False,
            display_summary_level=0)
        self.experiment = comet_ml.start(project_name=info.project, experiment_key=experiment_key(info.run_id),
                                         online=online, mode="get_or_create", experiment_config=settings)
        self.last_epoch = done_epochs
        if not done_epochs:
            self.experiment.log_parameters({**config, **info.params})

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None:
        self.experiment.log_metrics(numeric(row), step=epoch, epoch=epoch)
        self.last_epoch = epoch

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self.experiment.log_metrics(numeric(metrics), prefix="best", step=self.last_epoch)

    def finish(self, end: str) -> None:
        self.experiment.log_others({"end": end, "epochs_run": self.last_epoch})
        self.experiment.end()


def finish_stopped_run(info: TrackerInfo, rows: Sequence[Mapping[str, Any]], end: str) -> None:
    """From the tune driver: a killed trial's offline archive was never written; log its epochs and end."""
    logger = CometLogger(info, {})
    for row in rows:
        logger.log_epoch({k: row[k] for k in EPOCH_KEYS if k in row}, int(row[EPOCH]))
    logger.finish(end)
