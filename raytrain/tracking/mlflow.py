"""MLflow: one run per fit run or tune trial, in a local SQLite store unless ``mlflow_uri=`` names a server.

The local store is ``<project folder>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///runs/detect/mlflow.db``):
MLflow 3 refuses its old ``./mlruns`` file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set, and recommends SQLite.
The MLflow experiment is the project (like a W&B project); a tune experiment is a parent run with one child run per
trial (MLflow's ``mlflow.parentRunId`` tag), and every resolved argument is an MLflow param, so the searched ones
compare trials in MLflow's own views. MLflow picks run ids itself: the run folder's ``tracking.json`` keeps it, so a
resumed or restarted run continues its MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raytrain.keys import EPOCH, EPOCH_KEYS, FITNESS
from raytrain.tracking.base import TrackerInfo, numeric, plain_name, read_tracking_file, update_tracking_file

TOOL = "mlflow"
PARENT_TAG = "mlflow.parentRunId"
BATCH = 100  # MLflow's most params per log_batch call


def local_uri(folder: Path) -> str:
    """The default store: ``sqlite:///<folder>/mlflow.db`` (absolute: Ray workers run in a folder of their own)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"




def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str, uri: str) -> str:
    """The MLflow experiment ``name``, created when absent (parallel trials may race to create it)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A local store's artifacts go beside the database, not into the worker's working folder.
    location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if uri.startswith(
        "sqlite:///") else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another trial
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _params(values: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(str(k), "None" if v is None else str(v)[:6000]) for k, v in values.items()]


def _metrics(values: Mapping[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(plain_name(k), v, now, step) for k, v in numeric(values).items()]


def _open_run(client: Any, info: TrackerInfo, uri: str, params: Mapping[str, Any]) -> tuple[str, bool]:
    """The run to log to: the one ``tracking.json`` names for this run id in this store, else a new one.

    Returns ``(mlflow run id, continued)``.
    """
    record = read_tracking_file(info.save_dir).get(TOOL, {})
    if record.get("run_id") == info.run_id and record.get("uri") == uri:
        try:
            client.get_run(record["mlflow_run_id"])
            client.update_run(record["mlflow_run_id"], status="RUNNING")
            return record["mlflow_run_id"], True
        except Exception:  # deleted from the store: start a new run
            pass
    tags = {"raytrain.run_id": info.run_id, **({"raytrain.group": info.group} if info.group else {}),
            **({PARENT_TAG: info.parent_run_id} if info.parent_run_id else {})}
    if info.params:
        tags["raytrain.searched"] = ",".join(info.params)
    run = client.create_run(_experiment_id(client, info.project, uri), run_name=info.name, tags=tags)
    run_id = run.info.run_id
    update_tracking_file(info.save_dir, TOOL, {"run_id": info.run_id, "uri": uri, "mlflow_run_id": run_id})
    entries = _params({**params, **info.params})
    for i in range(0, len(entries), BATCH):
        client.log_batch(run_id, params=entries[i:i + BATCH])
    return run_id, False


class MlflowLogger:
    """One run's MLflow run (a :class:`raytrain.tracking.base.Tracker`).

    A continued run also skips epochs its MLflow run already holds (an epoch logged, then the worker died before
    the checkpoint that would have counted it), so each epoch has one point.
    """

    def __init__(self, info: TrackerInfo, config: Mapping[str, Any], *, done_epochs: int = 0) -> None:
        self.uri = info.mlflow_uri or local_uri(Path(info.save_dir).parent)
        self.client = _client(self.uri)
        self.run_id, continued = _open_run(self.client, info, self.uri, config)
        self.last_epoch = max(done_epochs, self._logged_epochs() if continued else 0)

    def _logged_epochs(self) -> int:
        history = self.client.get_metric_history(self.run_id, FITNESS)
        return max((m.step for m in history), default=0)

    def log_epoch(self, row: Mapping[str, float], epoch: int) -> None:
        if epoch <= self.last_epoch:
            return
        self.client.log_batch(self.run_id, metrics=_metrics(row, epoch))
        self.last_epoch = epoch

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self.client.log_batch(self.run_id, metrics=_metrics({f"best/{k}": v for k, v in metrics.items()},
                                                            self.last_epoch))

    def finish(self, end: str) -> None:
        self.client.set_tag(self.run_id, "raytrain.end", end)
        self.client.set_tag(self.run_id, "raytrain.epochs_run", str(self.last_epoch))
        # A trial ASHA or patience stopped is a normal result of a search; only an error is a failed run.
        self.client.set_terminated(self.run_id, status="FAILED" if end == "error" else "FINISHED")


def finish_stopped_run(info: TrackerInfo, rows: Sequence[Mapping[str, Any]], end: str) -> None:
    """From the tune driver: log a killed trial's epochs its MLflow run lacks, and close the run with ``end``."""
    logger = MlflowLogger(info, {})
    for row in rows:
        logger.log_epoch({k: row[k] for k in EPOCH_KEYS if k in row}, int(row[EPOCH]))
    logger.finish(end)


def start_experiment(*, experiment_dir: Path, name: str, project: str, mlflow_uri: str | None,
                     params: Sequence[str]) -> dict[str, str]:
    """The parent run of a tune experiment (continued when the experiment resumes); returns its id and the store."""
    uri = mlflow_uri or local_uri(Path(experiment_dir).parent)
    info = TrackerInfo(save_dir=Path(experiment_dir), name=name, run_id=f"tune:{name}", project=project)
    client = _client(uri)
    run_id, _ = _open_run(client, info, uri, {"searched": ",".join(params)})
    client.set_tag(run_id, "raytrain.searched", ",".join(params))
    return {"parent_run_id": run_id, "mlflow_uri": uri}


def finish_experiment(*, experiment_dir: Path, end: str, best: Mapping[str, float] | None = None) -> None:
    """Close a tune experiment's parent run, with the best trial's metrics when given."""
    record = read_tracking_file(Path(experiment_dir)).get(TOOL)
    if not record:
        return
    client = _client(record["uri"])
    if best:
        client.log_batch(record["mlflow_run_id"], metrics=_metrics({f"best/{k}": v for k, v in best.items()}, 0))
    client.set_tag(record["mlflow_run_id"], "raytrain.end", end)
    client.set_terminated(record["mlflow_run_id"], status="FAILED" if end == "error" else "FINISHED")
