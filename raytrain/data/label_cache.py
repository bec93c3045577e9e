"""The label-scan cache file: where it lives, the hash that invalidates it, and reading and writing it.

A scan's result is stored as plain NumPy arrays in an ``.npz`` (read with ``allow_pickle=False``) beside the labels
(``labels/<split>.raytrain.cache``) or, when that folder is read-only, under the datasets folder. It is keyed by a
hash of every image and label path with its size and modification time, so a changed, added or removed file
rebuilds it. Turning a scan into arrays and back is the label module's business; this one only stores them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from raytrain.data.common import datasets_dir, is_writable_dir
from raytrain.files import atomic_write

LOGGER = logging.getLogger("raytrain")
CACHE_VERSION = 1


def _stat_key(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def files_hash(images: Iterable[str], label_files: Iterable[str], orphans: Iterable[str], nc: int) -> str:
    """Hash of every image and label path with its size and mtime, the class count and the cache version.

    Args:
        images: the split's image files.
        label_files: the label file of each image (in the same order).
        orphans: label files without an image (their names only).
        nc: number of classes (a label valid for 3 classes may not be for 2).
    """
    h = hashlib.sha256(f"v{CACHE_VERSION}|nc={nc}".encode())
    for image, label in zip(images, label_files, strict=True):
        h.update(_stat_key(image).encode())
        h.update(_stat_key(label).encode())
    for f in orphans:
        h.update(f"orphan|{f}".encode())
    return h.hexdigest()


def cache_path(sources: list[Path], img2label_path: Callable[[str], str]) -> tuple[Path, Path]:
    """Primary cache file (beside the first source's labels) and the fallback under the datasets folder.

    Args:
        sources: the split's image sources (folders, ``.txt`` lists or images).
        img2label_path: the image -> label file rule (a folder's labels folder is that of an image inside it).
    """
    first = Path(sources[0])
    if first.is_dir():
        label_dir = Path(img2label_path(str(first / "x.jpg"))).parent
        primary = label_dir.parent / f"{label_dir.name}.raytrain.cache"
    else:
        primary = first.with_name(f"{first.stem}.raytrain.cache")
    if len(sources) > 1:
        tag = hashlib.sha1("|".join(map(str, sources)).encode()).hexdigest()[:8]
        primary = primary.with_name(f"{primary.name[: -len('.raytrain.cache')]}-{tag}.raytrain.cache")
    fallback_tag = hashlib.sha1(str(primary).encode()).hexdigest()[:16]
    return primary, datasets_dir() / "label-cache" / f"{fallback_tag}-{primary.name}"


def read_cache(paths: Iterable[Path], digest: str) -> tuple[Path, dict[str, np.ndarray]] | None:
    """The first of ``paths`` that holds a cache of this version and ``digest``, with its arrays; None if none does."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) == CACHE_VERSION and str(z["hash"]) == digest:
                    return path, {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError):  # a damaged or foreign file: scan again
            continue
    return None


def write_cache(primary: Path, fallback: Path, digest: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
    """Write the arrays (plus version and digest) atomically to ``primary``, or to ``fallback`` when ``primary``'s
    folder is read-only or the write fails; the path written, or None (with a warning) when neither could be."""
    buffer = io.BytesIO()
    np.savez(buffer, version=np.asarray(CACHE_VERSION), hash=np.asarray(digest), **arrays)
    for path in (primary, fallback):
        if path is primary and not is_writable_dir(path.parent):
            continue
        try:
            return atomic_write(path, buffer.getvalue())
        except OSError as e:
            LOGGER.debug("cannot write label cache %s: %s", path, e)
    LOGGER.warning("could not write the label cache (%s or %s); the split is checked again next time.",
                   primary, fallback)
    return None
