"""Label discovery, checking and caching: every image and label file of a split is checked once.

Labels follow the YOLO convention: the label file of ``.../images/a/b.jpg`` is ``.../labels/a/b.txt`` (the last
``/images/`` component becomes ``/labels/``), one row per object, ``class x_center y_center width height``
normalised to [0, 1] (``xywh_n``). A bad file is skipped with a warning that names it and the reason; fixable
problems (tiny overshoots clipped, duplicate rows dropped) are fixed and reported. The result is cached beside the
labels (``labels/<split>.raytrain.cache``) or, when that folder is read-only, under the datasets folder, keyed by a
hash of every path, size and modification time, so a changed, added or removed file rebuilds it (see
:mod:`raytrain.data.label_cache`). Images are decoded by :mod:`raytrain.data.images`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raytrain.data.common import DatasetError
from raytrain.data.dataset_yaml import DataSpec
from raytrain.data.images import IMAGE_SUFFIXES, decode_image
from raytrain.data.label_cache import cache_path, files_hash, read_cache, write_cache

LOGGER = logging.getLogger("raytrain")

CLIP_TOLERANCE = 0.01  # coordinates up to 1% outside [0, 1] are clipped; further out, the file is rejected
ROUNDING = 1e-4  # overshoots below this are label-writing rounding (e.g. 5e-7 in COCO), not reported
MAX_WARNINGS = 20  # per scan; the rest are counted (raytrain check lists them all)


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: its path, original ``(h, w)`` and labels ``(n, 5)`` float32 ``[cls, x, y, w, h]`` xywh_n."""

    im_file: str
    shape: tuple[int, int]
    labels: np.ndarray


@dataclass
class SplitIndex:
    """The checked contents of one split.

    Attributes:
        split: train, val or test.
        names: class id -> name.
        records: usable images (backgrounds included), in sorted path order.
        skipped: ``(file, reason)`` for every image or label file that was left out.
        notes: ``(file, what was fixed)`` for files kept after a fix (duplicate rows dropped, boxes clipped).
        backgrounds: usable images without objects (empty or missing label file).
        missing_labels: images without a label file (counted in ``backgrounds`` too).
        duplicates: duplicate label rows dropped.
        clipped: boxes clipped to the image after a small overshoot.
        cache_file: where the scan was cached (None if it could not be written).
        from_cache: whether this index was read from the cache.
    """

    split: str
    names: dict[int, str]
    records: list[ImageRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    backgrounds: int = 0
    missing_labels: int = 0
    duplicates: int = 0
    clipped: int = 0
    cache_file: Path | None = None
    from_cache: bool = False

    @property
    def images(self) -> int:
        """Number of usable images."""
        return len(self.records)

    @property
    def instances(self) -> int:
        """Number of labelled objects."""
        return sum(len(r.labels) for r in self.records)

    def class_counts(self) -> np.ndarray:
        """``(nc,)`` int64 instances per class id."""
        cls = [r.labels[:, 0] for r in self.records if len(r.labels)]
        if not cls:
            return np.zeros(len(self.names), np.int64)
        return np.bincount(np.concatenate(cls).astype(np.int64), minlength=len(self.names))


def img2label_path(im_file: str) -> str:
    """The label file of an image: the last ``/images/`` component becomes ``/labels/``, the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = im_file.rpartition(sa)
    path = f"{head}{sb}{tail}" if sep else im_file
    return os.path.splitext(path)[0] + ".txt"


def list_images(sources: Iterable[Path]) -> list[str]:
    """Absolute, sorted, unique image paths of a split's sources.

    Args:
        sources: folders (searched recursively for image files), ``.txt`` files listing one image path per line
            (relative lines resolve against the list's folder; listed files need not exist: they are reported
            as skipped later), or single image files.
    """
    files: set[str] = set()
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files.update(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif source.suffix.lower() == ".txt" and source.is_file():
            for line in source.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    files.add(os.path.normpath(source.parent / Path(line).expanduser()))
        elif source.suffix.lower() in IMAGE_SUFFIXES and source.is_file():
            files.add(str(source))
        else:
            raise DatasetError(f"image source {source} is not a folder, a .txt list of images or an image file.")
    return sorted(files)


def orphan_labels(sources: Iterable[Path], images: list[str]) -> list[str]:
    """Label files under the labels folder of each folder source that belong to no image of the split."""
    expected = {img2label_path(f) for f in images}
    orphans: set[str] = set()
    for source in sources:
        source = Path(source)
        if not source.is_dir():
            continue
        label_dir = Path(img2label_path(str(source / "x.jpg"))).parent
        if label_dir != source and label_dir.is_dir():
            orphans.update(str(p) for p in label_dir.rglob("*.txt") if str(p) not in expected)
    return sorted(orphans)


@dataclass
class _Checked:
    im_file: str
    shape: tuple[int, int] = (0, 0)
    labels: np.ndarray | None = None
    skip: str = ""  # reason, empty when usable
    has_label_file: bool = True
    duplicates: int = 0
    clipped: int = 0


def parse_label_rows(text: str, nc: int) -> tuple[np.ndarray, int, int]:
    """Parse and check the rows of one label file.

    Args:
        text: the file's text, one ``class x y w h`` row per line (or ``class x1 y1 x2 y2 ...`` polygon rows,
            whose envelope becomes the box); blank lines are ignored.
        nc: number of classes; ids must be integers in ``[0, nc)``.

    Returns:
        ``(labels, duplicates, clipped)``: labels ``(n, 5)`` float32 ``[cls, x, y, w, h]`` xywh_n with duplicate
        rows dropped (first kept) and boxes overshooting by up to 1% clipped to [0, 1]; the number of dropped
        duplicates and of clipped boxes.

    Raises:
        ValueError: with the reason (line number first) for a row that makes the file unusable.
    """
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_number(t))
            raise ValueError(f"line {number}: non-numeric value {bad!r}") from None
        if not all(np.isfinite(values)):
            raise ValueError(f"line {number}: non-finite value")
        if len(values) == 5:
            rows.append(values)
        elif len(values) >= 7 and len(values) % 2 == 1:  # polygon: its envelope
            xy = np.asarray(values[1:]).reshape(-1, 2)
            (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
            rows.append([values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        else:
            raise ValueError(f"line {number}: {len(values)} columns, expected 5 (class x_center y_center width height)")
        cls = rows[-1][0]
        if cls != int(cls) or not 0 <= cls < nc:
            raise ValueError(f"line {number}: class id {tokens[0]} outside names (0-{nc - 1})")
        _, x, y, w, h = rows[-1]
        x1, y1, x2, y2 = x - w / 2, y - h / 2, x + w / 2, y + h / 2
        if w < 0 or h < 0 or min(x1, y1) < -CLIP_TOLERANCE or max(x2, y2) > 1 + CLIP_TOLERANCE:
            raise ValueError(f"line {number}: box outside the image (coordinates must be normalised to [0, 1])")
        if w * h <= 0:
            raise ValueError(f"line {number}: zero-area box")
    if not rows:
        return np.zeros((0, 5), np.float32), 0, 0
    labels = np.asarray(rows, np.float64)
    xyxy = np.concatenate((labels[:, 1:3] - labels[:, 3:5] / 2, labels[:, 1:3] + labels[:, 3:5] / 2), 1)
    clipped_xyxy = xyxy.clip(0, 1)
    clipped = int((np.abs(clipped_xyxy - xyxy) > ROUNDING).any(1).sum())  # rounding noise is clipped silently
    labels[:, 1:3] = (clipped_xyxy[:, :2] + clipped_xyxy[:, 2:]) / 2
    labels[:, 3:5] = clipped_xyxy[:, 2:] - clipped_xyxy[:, :2]
    if (labels[:, 3:5] <= 0).any():
        raise ValueError("zero-area box after clipping to the image")
    labels = labels.astype(np.float32)
    _, first = np.unique(labels, axis=0, return_index=True)
    keep = np.sort(first)
    return labels[keep], len(labels) - len(keep), clipped


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def check_image_label(im_file: str, nc: int) -> _Checked:
    """Decode one image and parse its label file; never raises (the reason goes to ``skip``)."""
    result = _Checked(im_file)
    if not os.path.isfile(im_file):
        result.skip = "image not found"
        return result
    img = decode_image(im_file)
    if img is None:
        result.skip = "unreadable or corrupt image"
        return result
    result.shape = (int(img.shape[0]), int(img.shape[1]))
    lb_file = img2label_path(im_file)
    if not os.path.isfile(lb_file):
        result.has_label_file = False
        result.labels = np.zeros((0, 5), np.float32)
        return result
    try:
        with open(lb_file, encoding="utf-8-sig") as f:  # tolerate a byte-order mark
            text = f.read()
        result.labels, result.duplicates, result.clipped = parse_label_rows(text, nc)
    except (OSError, UnicodeDecodeError) as e:
        result.skip = f"unreadable label file {lb_file} ({e})"
    except ValueError as e:
        result.skip = f"label file {lb_file}: {e}"
    return result


def _index_arrays(index: SplitIndex) -> dict[str, np.ndarray]:
    """A scan as the plain arrays of its cache file (labels of all images concatenated, ``counts`` per image)."""
    labels = np.concatenate([r.labels for r in index.records]) if index.records else np.zeros((0, 5), np.float32)
    return {
        "im_files": np.asarray([r.im_file for r in index.records], dtype=str),
        "shapes": np.asarray([r.shape for r in index.records], np.int64).reshape(-1, 2),
        "counts": np.asarray([len(r.labels) for r in index.records], np.int64),
        "labels": labels.astype(np.float32).reshape(-1, 5),
        "skipped": np.asarray(index.skipped, dtype=str).reshape(-1, 2),
        "notes": np.asarray(index.notes, dtype=str).reshape(-1, 2),
        "stats": np.asarray([index.backgrounds, index.missing_labels, index.duplicates, index.clipped], np.int64),
    }


def _index_from_arrays(split: str, names: dict[int, str], data: dict[str, np.ndarray]) -> SplitIndex:
    """The inverse of :func:`_index_arrays`."""
    ends = np.cumsum(data["counts"])
    labels = np.split(data["labels"], ends[:-1]) if len(ends) else []
    records = [ImageRecord(str(f), (int(s[0]), int(s[1])), lb)
               for f, s, lb in zip(data["im_files"], data["shapes"], labels, strict=True)]
    backgrounds, missing, duplicates, clipped = (int(v) for v in data["stats"])
    return SplitIndex(split, names, records, [tuple(map(str, r)) for r in data["skipped"]],
                      [tuple(map(str, r)) for r in data["notes"]], backgrounds, missing, duplicates, clipped)


def _build_index(split: str, names: dict[int, str], images: list[str], orphans: list[str],
                 workers: int) -> SplitIndex:
    nc = len(names)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # cv2 decoding releases the GIL
        results = list(pool.map(lambda f: check_image_label(f, nc), images))
    index = SplitIndex(split, names, [])
    for r in results:
        if r.skip:
            index.skipped.append((r.im_file, r.skip))
            continue
        assert r.labels is not None
        index.records.append(ImageRecord(r.im_file, r.shape, r.labels))
        index.backgrounds += len(r.labels) == 0
        index.missing_labels += not r.has_label_file
        index.duplicates += r.duplicates
        index.clipped += r.clipped
        fixes = [f"{n} {what}" for n, what in ((r.duplicates, "duplicate rows dropped"),
                                               (r.clipped, "boxes clipped to the image")) if n]
        if fixes:
            index.notes.append((img2label_path(r.im_file), ", ".join(fixes)))
    index.skipped += [(f, "label file without image") for f in orphans]
    return index


def _warn(index: SplitIndex) -> None:
    messages = [f"skipped {f}: {reason}" for f, reason in index.skipped]
    messages += [f"fixed {f}: {what}" for f, what in index.notes]
    for message in messages[:MAX_WARNINGS]:
        LOGGER.warning("%s: %s", index.split, message)
    if len(messages) > MAX_WARNINGS:
        LOGGER.warning("%s: ... and %d more (run 'raytrain check' for the full list).", index.split,
                       len(messages) - MAX_WARNINGS)


def scan_split(spec: DataSpec, split: str, *, strict: bool = True, workers: int | None = None,
               warn: bool = True) -> SplitIndex:
    """Check every image and label file of a split, or read the result from its cache.

    Args:
        spec: the resolved dataset.
        split: train, val or test.
        strict: raise when the split has no usable image (``raytrain check`` passes False to report instead).
        workers: threads that decode images (default: up to 8, one per CPU).
        warn: log skipped and fixed files as warnings (``raytrain check`` prints them itself).

    Returns:
        The split's :class:`SplitIndex`; skipped files and fixes are logged as warnings.

    Raises:
        DatasetError: the split is absent, or (``strict``) has no usable image.
    """
    sources = spec.sources(split)
    images = list_images(sources)
    orphans = orphan_labels(sources, images)
    digest = files_hash(images, [img2label_path(f) for f in images], orphans, spec.nc)
    primary, fallback = cache_path(sources, img2label_path)
    cached = read_cache((primary, fallback), digest)
    if cached is not None:
        index = _index_from_arrays(split, spec.names, cached[1])
        index.cache_file, index.from_cache = cached[0], True
    else:
        index = _build_index(split, spec.names, images, orphans, workers or min(8, os.cpu_count() or 1))
        index.cache_file = write_cache(primary, fallback, digest, _index_arrays(index))
    if warn and index.from_cache and (index.skipped or index.notes):  # the scan that built the cache listed them
        LOGGER.warning("%s: %d files skipped, %d fixed (see 'raytrain check' for the list).", split,
                       len(index.skipped), len(index.notes))
    elif warn:
        _warn(index)
    if strict and not index.records:
        where = ", ".join(map(str, sources))
        raise DatasetError(f"{spec.yaml_file}: '{split}' has no usable image in {where} "
                           f"({len(images)} found, {len(index.skipped)} skipped).")
    return index
