"""Keep the run folder (``project/name``) on the driver's machine when rank 0 trains on another node.

Rank 0 writes ``results.csv``, ``results.png`` and ``weights/*.pt`` into the run folder. On one machine (or a shared
filesystem) that is the folder the user looks at. On a multi-node cluster rank 0 may run on a GPU node whose disk the
user never sees, so there rank 0 also puts the files it changed this epoch into the epoch's Ray checkpoint, under
``run/``, and :class:`RunFolderMirror` (a Ray Train callback on the controller, which Ray places on the driver's node)
copies them into the run folder after each report. Checkpoints already travel through shared storage, so this needs
no extra channel, and costs nothing when rank 0 is local.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ray.train import UserCallback

LOGGER = logging.getLogger("raytrain")

STAGED_FOLDER = "run"  # inside a Ray checkpoint: run-folder files changed in that epoch, by relative path


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


class RunFolderMirror(UserCallback):
    """Copies the run files rank 0 staged in a checkpoint into ``save_dir`` on the controller's (driver's) node."""

    def __init__(self, save_dir: str | Path) -> None:
        self.save_dir = Path(save_dir)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is None:
            return
        import pyarrow.fs

        source = f"{checkpoint.path.rstrip('/')}/{STAGED_FOLDER}"
        if checkpoint.filesystem.get_file_info(source).type == pyarrow.fs.FileType.NotFound:
            return  # rank 0 wrote the run folder here directly
        self.save_dir.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(source, str(self.save_dir), source_filesystem=checkpoint.filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        LOGGER.debug("Run folder %s updated from checkpoint %s", self.save_dir, checkpoint.path)
