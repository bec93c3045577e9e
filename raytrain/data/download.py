"""Downloading datasets: the built-in ones (:mod:`raytrain.data.catalog`) and any YAML with a ``download:`` URL.

A download goes to a temporary file, is extracted into a temporary folder with every member checked (no absolute
paths, no ``..``, no links or special files pointing outside), and is moved into place with a rename, so an
interrupted download never leaves half a dataset. A file lock beside the dataset folder keeps two processes on one
node from downloading the same dataset at once. Offline, the error names the URL and where to put the files.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from raytrain.data.common import DatasetError, datasets_dir, is_writable_dir
from raytrain.files import atomic_write

LOGGER = logging.getLogger("raytrain")

CHUNK = 1 << 16


def ensure_yaml_download(yaml_file: Path, raw: dict[str, Any], root: Path) -> Path:
    """Fetch a YAML's ``download`` archive when its splits are missing; return the root that now holds them.

    The archive goes to the YAML's ``path`` (or, when that folder's parent is read-only, to
    ``<datasets>/<name>``). Only ``http(s)://`` archive URLs are accepted: raytrain never runs code from a YAML.
    """
    url = str(raw["download"]).strip()
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DatasetError(f"{yaml_file}: 'download' must be an http(s) URL of a .zip or .tar archive, got {url!r}.")
    dest = root
    if not is_writable_dir(_existing_parent(root)):
        dest = datasets_dir() / root.name
    required = [str(Path(v).expanduser()) for s in ("train", "val", "test") for v in _as_list(raw.get(s))]
    download_dataset(url, dest, required=required)
    return dest


def _as_list(value: Any) -> list[str]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def download_dataset(url: str, dest: Path, *, extra_files: dict[str, str] | None = None,
                     required: list[str] = (), timeout: float = 30.0) -> Path:
    """Download and safely extract the archive at ``url`` into ``dest``, atomically and under a file lock.

    A single top-level folder in the archive becomes ``dest``; otherwise the archive's contents do. A copy of the
    archive placed by hand at ``<dest's parent>/<archive name>`` is used instead of the network.

    Args:
        url: http(s) URL of a .zip, .tar, .tar.gz or .tgz archive.
        dest: the dataset folder to create (or, when it exists, to add the archive's top-level entries to).
        extra_files: ``{relative name: text}`` written into the dataset before it is moved into place.
        required: paths relative to ``dest`` that must exist afterwards (checked; skips the download if present).
        timeout: seconds to wait for the server.

    Raises:
        DatasetError: download failed or offline (with the URL and where to put the files), unsafe or broken
            archive, or required paths missing after extraction.
    """
    from filelock import FileLock

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock"), timeout=3600):
        if required and all((dest / r).exists() for r in required):
            return dest  # another process finished it while we waited
        archive_name = Path(urllib.parse.urlparse(url).path).name or "dataset.zip"
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            manual = dest.parent / archive_name
            archive = manual if manual.is_file() else tmp / archive_name
            if archive is not manual:
                fetch(url, archive, timeout=timeout, dest=dest)
            content = extract_archive(archive, tmp / "extracted")
            for rel, text in (extra_files or {}).items():
                (content / rel).write_text(text)
            _move_into_place(content, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    missing = [r for r in required if not (dest / r).exists()]
    if missing:
        raise DatasetError(f"{url} was extracted to {dest} but it lacks {', '.join(missing)}.")
    return dest


def fetch(url: str, path: Path, *, timeout: float = 30.0, dest: Path | None = None) -> Path:
    """Download ``url`` to ``path`` (atomically: :func:`raytrain.files.atomic_write`) with a progress bar on stderr.

    Raises:
        DatasetError: network or HTTP failure, or a truncated transfer; the message gives the URL and, with
            ``dest``, where to put the files by hand.
    """
    def download(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            with _progress(total, f"Downloading {url}") as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        if total and done != total:
            raise OSError(f"transfer interrupted: got {done} of {total} bytes")

    try:
        return atomic_write(path, download)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, urllib.error.HTTPError):
            why = f"HTTP {e.code} {e.reason}."
        else:
            why = f"{getattr(e, 'reason', e)}. Offline? Download it on a machine with internet access."
        where = (f" To install it by hand, unzip the archive so that {dest} holds the dataset, or put the archive "
                 f"at {dest.parent / path.name}, then run again.") if dest else ""
        raise DatasetError(f"could not download {url}: {why}{where}") from e


def _progress(total: int, desc: str):
    """A byte progress bar on stderr (tqdm, which Ray installs; a plain one otherwise); silent when not a tty."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=not sys.stderr.isatty(), leave=False)


class _PlainProgress:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.enabled = sys.stderr.isatty()

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            sys.stderr.write("\n")

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            share = f" {100 * self.done / self.total:5.1f}%" if self.total else ""
            sys.stderr.write(f"\r{self.desc}: {self.done / 2**20:.1f} MiB{share}")


def _check_member(name: str, link_target: str | None = None) -> None:
    """Reject archive member names (and link targets) that could land outside the extraction folder."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DatasetError(f"unsafe archive member {name!r}: absolute path.")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise DatasetError(f"unsafe archive member {name!r}: '..' in its path.")
    if link_target is not None:
        if link_target.startswith(("/", "\\")):
            raise DatasetError(f"unsafe archive member {name!r}: link to the absolute path {link_target!r}.")
        depth = 0
        for part in [*PurePosixPath(name).parent.parts, *PurePosixPath(link_target.replace("\\", "/")).parts]:
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            if depth < 0:
                raise DatasetError(f"unsafe archive member {name!r}: link {link_target!r} points outside.")


def extract_archive(archive: Path, target: Path) -> Path:
    """Extract a .zip or .tar(.gz) after checking every member; return the dataset folder inside ``target``.

    Raises:
        DatasetError: a broken archive or an unsafe member (absolute path, ``..``, escaping link, device file).
    """
    target.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                _check_member(info.filename, z.read(info).decode() if is_link else None)
                if is_link:
                    raise DatasetError(f"unsupported archive member {info.filename!r}: symbolic link.")
            try:
                z.extractall(target)
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"{archive}: broken zip archive ({e}).") from e
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise DatasetError(f"unsafe archive member {m.name!r}: special file.")
                _check_member(m.name, m.linkname if m.issym() else None)
                if m.islnk():
                    _check_member(m.linkname)
            t.extractall(target, filter="data")
    else:
        raise DatasetError(f"{archive}: not a zip or tar archive.")
    entries = [p for p in target.iterdir() if p.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def _move_into_place(content: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(content, dest)  # one rename: the dataset appears whole or not at all
        return
    for entry in content.iterdir():  # dest exists (e.g. holds the YAML): add what is not there yet
        if (dest / entry.name).exists():
            LOGGER.warning("%s already exists; keeping it instead of the downloaded copy.", dest / entry.name)
            continue
        os.replace(entry, dest / entry.name)
