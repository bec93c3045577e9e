"""Small file helpers every part of raytrain shares: atomic writes and the run-folder naming rule.

The one YAML-mapping reader is :func:`raytrain.config.read_yaml_mapping`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], Any]) -> Path:
    """Write ``path`` all at once: into a temporary file in the same folder, then ``os.replace``.

    A reader (another process, a resumed run) sees the old file or the new one, never half of one, even when the
    writer is killed or the disk fills up. ``data`` is text, bytes, or a function that writes the temporary path it
    is given (for writers that want a path, such as ``torch.save`` or ``np.save`` with a file object).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode())
            elif isinstance(data, bytes):
                f.write(data)
        if callable(data):
            data(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def next_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or the first free ``name2``, ``name3``, ... (Ultralytics' rule) unless ``exist_ok``.

    Every folder a command creates per run (fit runs, val/predict outputs, tune experiments) is named by this rule.
    """
    project = Path(project)
    path, n = project / name, 2
    while path.exists() and not exist_ok:
        path, n = project / f"{name}{n}", n + 1
    return path
