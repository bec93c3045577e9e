"""raytrain checkpoints: plain tensors and plain Python data, written atomically, read with ``weights_only=True``.

Loading a checkpoint never runs pickled code. A checkpoint is a dict (see DEVELOPERS.md, "Model"):
``format="raytrain.detect"``, ``version=1``, ``arch``, ``nc``, ``names``, ``model`` (state_dict, CPU float32),
``ema`` (state_dict or None), ``ema_updates``, ``optimizer``, ``scaler``, ``epoch`` (last completed, from 1; 0 for
converted weights), ``best_fitness``, ``config`` (``Config.to_dict()``; empty for converted weights), ``metrics``
(flat dict) and ``date`` (ISO text).
"""

from __future__ import annotations

import datetime
import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raytrain.config import ConfigError
from raytrain.files import atomic_write
from raytrain.models.detector import DetectionModel, build_model
from raytrain.models.registry import ARCHS

FORMAT = "raytrain.detect"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "arch", "nc", "names", "model")


class CheckpointError(ConfigError):
    """A file that is not a usable raytrain checkpoint; the message says what it is and what to do."""


def plain_state_dict(module_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state_dict with floating tensors in float32 (integer buffers keep their dtype)."""
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    out = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        out[key] = (value.float() if value.is_floating_point() else value).clone()
    return out


def make_checkpoint(model: DetectionModel, names: list[str] | None = None, *,
                    ema: nn.Module | Mapping[str, torch.Tensor] | None = None, ema_updates: int = 0,
                    optimizer: dict | None = None, scaler: dict | None = None, epoch: int = 0,
                    best_fitness: float | None = None, config: dict | None = None,
                    metrics: dict | None = None) -> dict[str, Any]:
    """Build a checkpoint dict in the contract's layout from a model (and optional training state).

    Args:
        model: the (unwrapped, unfused) detector.
        names: class names; defaults to ``model.names``.
        ema: the EMA model or its state_dict.
        ema_updates: number of EMA updates so far.
        optimizer: ``optimizer.state_dict()``.
        scaler: ``GradScaler.state_dict()``.
        epoch: last completed epoch, counted from 1 (0 = no training yet).
        best_fitness: best fitness so far.
        config: ``Config.to_dict()`` of the run.
        metrics: flat dict of the latest metrics.

    Returns:
        The checkpoint dict, ready for :func:`save_checkpoint`.
    """
    names = list(model.names if names is None else names)
    if len(names) != model.nc:
        raise ValueError(f"{len(names)} class names for a model with nc={model.nc}.")
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "nc": model.nc,
        "names": [str(n) for n in names],
        "model": plain_state_dict(model),
        "ema": None if ema is None else plain_state_dict(ema),
        "ema_updates": int(ema_updates),
        "optimizer": optimizer,
        "scaler": scaler,
        "epoch": int(epoch),
        "best_fitness": None if best_fitness is None else float(best_fitness),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_checkpoint(path: str | Path, ckpt: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically (:func:`raytrain.files.atomic_write`), flushed to the disk before the rename.

    A crash or a full disk mid-write leaves the previous file intact, never a truncated one.
    """
    _check_layout(dict(ckpt), str(path))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(dict(ckpt), f)
            f.flush()
            os.fsync(f.fileno())  # the bytes reach the disk before the rename makes them the checkpoint

    return atomic_write(path, write)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a raytrain checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a usable raytrain checkpoint (empty, text, damaged or truncated, an
            Ultralytics pickle, a plain state_dict, something else); the message says what it is and what to do.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found.")
    return _read_checkpoint(path, str(path), "use a raytrain checkpoint (written by raytrain fit or raytrain convert)")


# What to do instead, per argument that names a checkpoint (the end of every inspect_checkpoint message).
WHAT_TO_DO = {
    "model": "use a raytrain checkpoint (from raytrain fit or raytrain convert), a name such as model=yolov8n "
             "(random init) or Ultralytics' weights by name (model=yolov8n.pt)",
    "pretrained": "use a raytrain checkpoint (from raytrain fit or raytrain convert), or pretrained=False",
    "resume": "use a run's weights/last.pt (or an earlier weights/epochN.pt), or resume=True for the newest run",
}
CLASS_COUNT_KEYS = ("model", "resume")  # pretrained= copies the tensors whose shapes match, so any nc is fine there


def inspect_checkpoint(path: str | Path, *, key: str, nc: int | None = None) -> dict[str, Any]:
    """Open a checkpoint a run will load (``model=``, ``pretrained=``, ``resume=``) and check it, on the driver.

    Args:
        path: the file.
        key: the argument that names it (``model``, ``pretrained``, ``resume``); messages start ``key=path``.
        nc: the dataset's class count; for ``model=`` and ``resume=`` the checkpoint must have as many classes
            (``pretrained=`` transfers the matching tensors, so its class count is not checked). None: no check.

    Returns:
        The checkpoint dict, as :func:`load_checkpoint` returns it.

    Raises:
        CheckpointError: one line naming ``key=path``, what the file is (missing, empty, text, not a PyTorch file, a
            damaged raytrain checkpoint, an Ultralytics pickle, a plain state_dict, an unknown arch, another class
            count) and what to do.
    """
    where = f"{key}={path}"
    todo = WHAT_TO_DO.get(key, WHAT_TO_DO["pretrained"])
    file = Path(path).expanduser()
    if file.is_dir():
        raise CheckpointError(f"{where} is a folder, not a checkpoint file; {todo}.")
    if not file.is_file():
        raise CheckpointError(f"{where}: no such file; {todo}.")
    ckpt = _read_checkpoint(file, where, todo)
    if nc is not None and key in CLASS_COUNT_KEYS and int(ckpt["nc"]) != nc:
        instead = (f"use model={ckpt['arch']} pretrained={path} to start from its weights (the tensors that fit "
                   f"transfer)" if key == "model" else "resume with the dataset the run was trained on")
        raise CheckpointError(f"{where} predicts {ckpt['nc']} classes but the dataset has {nc}: {instead}.")
    return ckpt


def _read_checkpoint(path: Path, where: str, todo: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of an existing file, every failure turned into a one-line CheckpointError."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where} is an empty file (0 bytes), not a checkpoint; {todo}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, KeyError, ... for files torch cannot read
        raise _unloadable_error(path, where, todo, e) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a raytrain checkpoint (a dict with "
                              f"format='{FORMAT}'); {todo}.")
    _check_layout(obj, where, path)
    return obj


def _unloadable_error(path: Path, where: str, todo: str, error: Exception) -> CheckpointError:
    """Say what a file ``torch.load(weights_only=True)`` cannot read is, from its bytes (nothing unpickled)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):  # a zip archive without its end
        if FORMAT.encode() in head:  # torch writes data.pkl, which holds the format tag, first
            return CheckpointError(f"{where} is a damaged raytrain checkpoint: the file ends early or is corrupt "
                                   f"(truncated? e.g. the disk filled up while it was written); {todo}.")
        return CheckpointError(f"{where} is a damaged PyTorch file (truncated? e.g. the disk filled up); {todo}.")
    if isinstance(error, pickle.UnpicklingError) and is_pickle_file(path):  # pickled objects weights_only refuses
        return _unreadable_error(path, where)
    if head.startswith(b"PK\x03\x04"):
        return CheckpointError(f"{where} is a zip archive torch cannot read as a checkpoint ({type(error).__name__}: "
                               f"{_first_line(error)}); {todo}.")
    if _looks_like_text(head):
        first = head.decode("utf-8", errors="replace").strip().splitlines()[0][:40] if head.strip() else ""
        return CheckpointError(f"{where} is a text file (it begins {first!r}), not a checkpoint; {todo}.")
    return CheckpointError(f"{where} is not a PyTorch checkpoint file (neither a torch zip archive nor a pickle); "
                           f"{todo}.")


def _looks_like_text(head: bytes) -> bool:
    """True when the first bytes of a file are UTF-8 text without control characters other than whitespace."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut by the 4096-byte window
            return False
        text = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f" for c in text)


def _check_layout(obj: dict[str, Any], where: str, file: str | Path | None = None) -> None:
    """Raise a CheckpointError naming ``where`` unless ``obj`` has the layout of a raytrain checkpoint this raytrain
    reads (``file``: the path to show in the convert hint, default ``where``)."""
    if obj.get("format") != FORMAT:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(
                f"{where} is a plain state_dict ({len(obj)} tensors), not a raytrain checkpoint. If it is an "
                f"Ultralytics DetectionModel state_dict (YOLOv8, YOLO11, YOLO26), convert it: raytrain convert "
                f"{file or where} converted.pt")
        found = f"format={obj['format']!r}" if "format" in obj else f"keys {sorted(map(str, obj))[:8]}"
        raise CheckpointError(f"{where} is not a raytrain checkpoint (expected format='{FORMAT}', found {found}).")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{where} is a raytrain checkpoint of version {version!r}; this raytrain reads up to "
                              f"version {VERSION}: upgrade raytrain.")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{where} is an incomplete raytrain checkpoint: missing {', '.join(missing)}.")
    if obj["arch"] not in ARCHS:
        raise CheckpointError(f"{where}: unknown arch {obj['arch']!r} (this raytrain builds {', '.join(ARCHS)}); "
                              f"a newer raytrain may have written it: upgrade raytrain, or train this scale again.")


def is_pickle_file(path: str | Path) -> bool:
    """True for a torch zip archive or a raw pickle (protocol 2+), judged from the first bytes only."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _unreadable_error(path: Path, where: str) -> CheckpointError:
    """The error for a file ``weights_only`` refuses: say whose pickle it is, without unpickling it."""
    globals_used = _pickle_globals(path)
    if any(g.startswith("ultralytics") for g in globals_used):
        return CheckpointError(
            f"{where} is an Ultralytics checkpoint (pickled Python objects), not a raytrain checkpoint; raytrain never "
            f"unpickles code when loading. Convert it once: raytrain convert {path} converted.pt "
            f"(see 'raytrain convert --help'), then use the converted file.")
    what = f" (it references {', '.join(sorted(globals_used)[:3])})" if globals_used else ""
    return CheckpointError(f"{where} contains pickled Python objects{what}, not a raytrain checkpoint; raytrain "
                           f"loads only tensors and plain data, so it cannot be read safely.")


def _pickle_globals(path: Path) -> set[str]:
    """Module names referenced by the pickle inside a torch zip file, read with pickletools (nothing executed)."""
    names: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pkl = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if pkl is None:
                    return names
                data = archive.read(pkl)
        else:
            data = Path(path).read_bytes()
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":  # arg is "module name"
                names.add(".".join(str(arg).split(" ")))
            elif isinstance(arg, str):
                strings.append(arg)
            if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # an unreadable archive: we only lose the nicer message
        return names
    return names


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def model_from_checkpoint(ckpt: Mapping[str, Any], ema: bool = True) -> DetectionModel:
    """Rebuild the detector stored in a checkpoint dict.

    Args:
        ckpt: a dict from :func:`load_checkpoint` or :func:`make_checkpoint`.
        ema: use the EMA weights when the checkpoint has them (what validation and inference want).

    Returns:
        The model in train mode, float32 on the CPU, with ``names`` set from the checkpoint.
    """
    _check_layout(dict(ckpt), "checkpoint")
    model = build_model(ckpt["arch"], nc=int(ckpt["nc"]))
    state = ckpt["ema"] if ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state, strict=True)
    model.names = list(ckpt["names"])
    return model


def load_model(path: str | Path) -> DetectionModel:
    """The detector saved in a raytrain checkpoint (EMA weights when present), in eval mode on the CPU."""
    return model_from_checkpoint(load_checkpoint(path), ema=True).eval()


def transfer_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Copy the tensors of ``state_dict`` whose name and shape match ``model``'s; leave the rest as they are.

    Used by ``pretrained=CKPT`` when the class count differs: everything but the class-output convolutions of the
    head transfers.

    Args:
        model: the model to update in place.
        state_dict: tensors by name; a whole raytrain checkpoint dict is accepted too (its EMA weights when present,
            else its model weights).

    Returns:
        (n_transferred, n_total): tensors copied, and tensors in the model's state_dict.
    """
    if state_dict.get("format") == FORMAT:
        state_dict = state_dict["ema"] if state_dict.get("ema") is not None else state_dict["model"]
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items()
                if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)
