"""What every data module shares: the dataset error type and raytrain's datasets folder.

A module of its own so that the dataset YAML reader, the built-in datasets (``shapes``, downloads) and the label and
image caches import it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from raytrain.config import ConfigError


class DatasetError(ConfigError):
    """A dataset that cannot be used (bad YAML, missing split, no usable image); the message names file and key."""


def datasets_dir() -> Path:
    """raytrain's datasets folder: ``$RAYTRAIN_DATASETS``, else ``$XDG_CACHE_HOME/raytrain/datasets``
    (``~/.cache/raytrain/datasets``). Nothing is created here."""
    env = os.environ.get("RAYTRAIN_DATASETS")
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache).expanduser() / "raytrain" / "datasets").resolve()


def is_writable_dir(path: str | Path) -> bool:
    """Whether raytrain may write into the folder ``path``.

    A folder without any write permission bit counts as read-only even for root (who bypasses permission checks),
    so a dataset shared read-only (e.g. ``../shared/datasets``) is never written to, whoever runs raytrain.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return os.path.isdir(path) and bool(mode & 0o222) and os.access(path, os.W_OK)
