"""Keep the run folder (``project/name``) on the driver's machine when rank 0 trains on another node.

Rank 0 writes ``results.csv``, ``results.png`` and ``weights/*.pt`` into the run folder. On one machine (or a shared
filesystem) that is the folder the user looks at. On a multi-node cluster rank 0 may run on a GPU node whose disk the
user never sees, so there rank 0 also puts the files it changed this epoch into the epoch's Ray checkpoint, under
``run/``, and :class:`RunFolderMirror` (a Ray Train callback on the controller, which Ray places on the driver's node)
copies them into the run folder after each report. Checkpoints already travel through shared storage, so this needs
no extra channel, and costs nothing when rank 0 is local.

A tune trial's run folder belongs on the tune driver's machine, but Ray places a one-worker trial's process (which
trains) and a multi-worker trial's process (which runs its Train controller) on any node. A one-worker trial away
from the driver stages its run files in its Tune checkpoint, a multi-worker trial's rank 0 in its Train checkpoint
(whose path comes with each result), and :class:`TrialFolderMirror` (a Tune callback, on the driver) copies them in.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ray.train import UserCallback
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY  # Ray Train's checkpoint path in a Tune result

LOGGER = logging.getLogger("raytrain")

STAGED_FOLDER = "run"  # inside a Ray checkpoint: run-folder files changed in that epoch, by relative path
TRACKER_FOLDERS = ("tensorboard",)  # small per-run tracker files a trial's run folder also carries to the driver


def current_node_id() -> str:
    """The Ray node id of the calling process ('' outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def stage_run_files(save_dir: Path, files: Iterable[Path], checkpoint_dir: Path) -> list[str]:
    """Copy ``files`` (inside ``save_dir``) into ``checkpoint_dir/run/`` keeping their relative paths.

    Returns the relative paths staged; missing files are skipped (e.g. no ``results.png`` with ``plots=False``).
    """
    staged = []
    for file in files:
        file = Path(file)
        if not file.is_file():
            continue
        rel = file.resolve().relative_to(Path(save_dir).resolve())
        target = Path(checkpoint_dir) / STAGED_FOLDER / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
        staged.append(rel.as_posix())
    return staged


def trial_run_files(save_dir: Path, changed: Iterable[Path]) -> list[Path]:
    """What a trial on another node stages each epoch: the files changed this epoch (results, plots, weights) and the
    run folder's other small files (``args.yaml``, ``run.json``, ``startup.json``, the TensorBoard events), which
    the trial, not the driver, writes."""
    save_dir = Path(save_dir)
    extra = [p for p in sorted(save_dir.iterdir()) if p.is_file()] if save_dir.is_dir() else []
    for folder in TRACKER_FOLDERS:
        extra += sorted(p for p in (save_dir / folder).rglob("*") if p.is_file())
    return list(dict.fromkeys([*map(Path, changed), *extra]))


def copy_staged(checkpoint: Any, save_dir: str | Path) -> bool:
    """Copy the run files staged in ``checkpoint`` (Ray Train's or Tune's, on any storage Ray supports) into
    ``save_dir`` on this machine; False when it holds none (the run folder was written here directly)."""
    import pyarrow.fs

    source = f"{checkpoint.path.rstrip('/')}/{STAGED_FOLDER}"
    if checkpoint.filesystem.get_file_info(source).type == pyarrow.fs.FileType.NotFound:
        return False
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(source, str(save_dir), source_filesystem=checkpoint.filesystem,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())
    LOGGER.debug("Run folder %s updated from checkpoint %s", save_dir, checkpoint.path)
    return True


class RunFolderMirror(UserCallback):
    """Copies the run files rank 0 staged in a checkpoint into ``save_dir`` on the controller's (driver's) node."""

    def __init__(self, save_dir: str | Path) -> None:
        self.save_dir = Path(save_dir)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is not None:
            copy_staged(checkpoint, self.save_dir)


class TrialFolderMirror(Callback):
    """A Tune callback (on the driver): copies the run files a trial away from the driver staged into its run folder
    here, ``trials_dir / name_of(trial)``: a one-worker trial's from each Tune checkpoint, a multi-worker trial's
    (rank 0 staged them in its Ray Train checkpoint) from the checkpoint path that comes with each result."""

    def __init__(self, trials_dir: str | Path, name_of: Callable[[Any], str]) -> None:
        self.trials_dir, self.name_of = Path(trials_dir), name_of

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        copy_staged(checkpoint, self.trials_dir / self.name_of(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        path = result.get(CHECKPOINT_PATH_KEY)
        if path:
            from ray.train import Checkpoint

            copy_staged(Checkpoint(path), self.trials_dir / self.name_of(trial))


TUNE_LOG_FILES = ("result.json", "progress.csv")  # what Tune's JSON and CSV loggers write per trial


class TuneLogKeeper(Callback):
    """Keeps Tune's own per-trial logs (``result.json``, ``progress.csv``) whole when a trial restarts in this run.

    Tune writes them in the driver's staging folder and copies that folder to the experiment's storage every few
    minutes; when a trial starts again from a checkpoint (a PBT exploit, a retry after a failure), its loggers first
    copy the storage's copy back over the staging one, so the epochs it reported since the last copy vanish from both
    (seen on a loaded machine: an exploited trial's rows before and right after the exploit). Registered before Tune's
    loggers, this puts the staging copy into storage just before they do. A driver that resumes a killed experiment
    has no staging copy yet: nothing is copied and Tune restores from storage as it should."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not trial.checkpoint or not trial.local_path:
            return
        import pyarrow.fs

        storage = trial.storage.storage_filesystem
        for name in TUNE_LOG_FILES:
            local = Path(trial.local_path) / name
            if not local.is_file():
                continue
            remote = f"{trial.storage.trial_fs_path.rstrip('/')}/{name}"
            if isinstance(storage, pyarrow.fs.LocalFileSystem) and Path(remote).resolve() == local.resolve():
                continue  # staging is the storage itself: nothing can be lost
            try:
                pyarrow.fs.copy_files(str(local), remote, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                      destination_filesystem=storage)
            except OSError as e:  # Tune then restores the older copy: rows since its last copy are lost
                LOGGER.warning("Could not keep %s of %s before its restart: %s", name, trial, e)
