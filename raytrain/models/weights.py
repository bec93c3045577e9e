"""Ultralytics' weight names (``model=yolo26n.pt``, ``pretrained=yolo11s.pt``, ...) as Ultralytics resolves them.

For a name ``<arch>.pt`` of a registered architecture (:data:`raytrain.models.registry.ARCHS`), given without a
folder:

1. a file of that name in the working directory wins, as in Ultralytics (a raytrain checkpoint is used as it is; an
   Ultralytics one is converted);
2. otherwise the official release asset Ultralytics downloads is fetched once, from the same URL
   (``https://github.com/ultralytics/assets/releases/download/v8.4.0/<name>``; ``$RAYTRAIN_WEIGHTS_URL`` replaces the
   part before the name, e.g. for a mirror), atomically, refused when under 100 kB (Ultralytics' own floor) or not a
   torch archive, and its sha256 recorded beside it;
3. the Ultralytics file is converted once (the restricted unpickler: nothing in the file runs) into a raytrain
   checkpoint named after its sha256, which the run then loads.

Files live in ``$RAYTRAIN_WEIGHTS``, else ``$XDG_CACHE_HOME/raytrain/weights`` (``~/.cache/raytrain/weights``):
``downloads/<name>`` + ``downloads/<name>.sha256`` and ``converted/<stem>-<sha256[:16]>.pt``. A file lock per name
keeps two processes on one node from fetching or converting the same file at once. Everything here runs on the
driver, before Ray starts; runs receive the converted file's absolute path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

from raytrain.config import ConfigError
from raytrain.models.checkpoint import FORMAT, CheckpointError
from raytrain.models.registry import ARCHS

LOGGER = logging.getLogger("raytrain")

RELEASE_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0"  # attempt_download_asset's release
URL_ENV = "RAYTRAIN_WEIGHTS_URL"
CACHE_ENV = "RAYTRAIN_WEIGHTS"
MIN_BYTES = 100_000  # Ultralytics refuses a download under 1e5 bytes (an error page, a truncated file)


def release_arch(value: str) -> str | None:
    """The architecture of an Ultralytics weight name (``"yolo26n.pt"`` -> ``"yolo26n"``), else None (a path with a
    folder, another name, not ``.pt``)."""
    if not isinstance(value, str) or Path(value).name != value or not value.endswith(".pt"):
        return None
    arch = value[: -len(".pt")]
    return arch if arch in ARCHS else None


def weights_dir() -> Path:
    """raytrain's weights cache: ``$RAYTRAIN_WEIGHTS``, else ``$XDG_CACHE_HOME/raytrain/weights``. Nothing created."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache).expanduser() / "raytrain" / "weights").resolve()


def release_url(name: str) -> str:
    """Where Ultralytics downloads the asset ``name`` (``$RAYTRAIN_WEIGHTS_URL`` replaces the release URL)."""
    return f"{(os.environ.get(URL_ENV) or RELEASE_URL).rstrip('/')}/{name}"


def resolve_weights(value: str, *, key: str) -> str:
    """The file a run loads for ``model=value`` / ``pretrained=value``.

    An Ultralytics weight name resolves as the module docstring says (local file, else download; converted once)
    to an absolute path; any other value comes back unchanged (a missing file is ``inspect_checkpoint``'s to report).

    Raises:
        CheckpointError: one line naming ``key=value``: the download failed (with the URL and where to put the file
            by hand), was too small or not a torch file, or the file does not convert.
    """
    arch = release_arch(value)
    path = Path(value)
    if arch is None:
        return value
    if path.is_file() and _is_raytrain_checkpoint(path):
        return str(path.resolve())
    from filelock import FileLock

    cache = weights_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{value}.lock"), timeout=3600):
        if path.is_file():
            source, digest = path.resolve(), sha256_of(path)
        else:
            source, digest = _downloaded(value, key=key, cache=cache)
        return str(_converted(source, digest, key=f"{key}={value}", cache=cache))


def ultralytics_weights(values: dict[str, object]) -> dict[str, str]:
    """Of ``{"model": ..., "pretrained": ...}``, the values that are Ultralytics' weight names (``yolo26n.pt``),
    each mapped to the raytrain checkpoint converted from the local file or the release asset."""
    return {key: resolve_weights(value, key=key) for key, value in values.items()
            if isinstance(value, str) and release_arch(value)}


def _converted_path(cache: Path, stem: str, digest: str) -> Path:
    return cache / "converted" / f"{stem}-{digest[:16]}.pt"


def _downloaded(name: str, *, key: str, cache: Path) -> tuple[Path, str]:
    """The release asset ``name`` in ``cache/downloads`` and its sha256, fetched once. A converted copy of the recorded
    sha256 is enough (the run loads that, checked by ``inspect_checkpoint``); otherwise a cached download whose bytes
    no longer match the recorded sha256 is fetched again."""
    from raytrain.data.download import fetch

    target = cache / "downloads" / name
    record = target.with_name(f"{name}.sha256")
    recorded = _recorded_sha(record) if record.is_file() else ""
    if recorded and _converted_path(cache, target.stem, recorded).is_file():
        return target, recorded
    if target.is_file() and recorded and recorded == sha256_of(target):
        return target, recorded
    if target.is_file():
        LOGGER.warning("%s does not match its recorded sha256 (or has none); downloading it again.", target)
    url = release_url(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fetch(url, target)
    except ConfigError as e:  # a DatasetError (network, HTTP) from the shared download code: say what to do here
        raise CheckpointError(f"{key}={name}: {e} Or put {name} (Ultralytics' file) in the working "
                              f"directory.") from None
    size = target.stat().st_size
    if size < MIN_BYTES or not zipfile.is_zipfile(target):
        target.unlink()
        what = f"only {size} bytes" if size < MIN_BYTES else "not a torch zip archive"
        raise CheckpointError(f"{key}={name}: the download from {url} is {what}, not Ultralytics' weights; removed.")
    digest = sha256_of(target)
    record.write_text(f"{digest}  {name}\n")
    LOGGER.info("Downloaded %s (%d bytes, sha256 %s) to %s", url, size, digest, target)
    return target, digest


def _converted(source: Path, digest: str, *, key: str, cache: Path) -> Path:
    """The raytrain checkpoint converted from the Ultralytics file ``source`` (sha256 ``digest``), converted once."""
    from raytrain.models.convert import convert

    out = _converted_path(cache, source.stem, digest)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        convert(source, out)
    except ConfigError as e:
        raise CheckpointError(f"{key}: {source} does not convert to a raytrain checkpoint: {e}") from None
    LOGGER.info("Converted %s to %s", source, out)
    return out


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded_sha(record: Path) -> str:
    text = record.read_text().split()
    return text[0] if text else ""


def _is_raytrain_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a raytrain checkpoint, judged from its pickle's bytes (the format tag; nothing unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return pkl is not None and FORMAT.encode() in archive.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False
