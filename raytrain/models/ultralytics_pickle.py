"""Reading a pickled Ultralytics checkpoint without Ultralytics, and without running anything stored in the file.

An Ultralytics ``.pt`` is ``torch.save`` of a dict whose ``"model"``/``"ema"`` entry is a whole
``ultralytics.nn.tasks.DetectionModel`` object (plus ``train_args``, ``version``, ...). It is unpickled by
:mod:`raytrain.models.restricted_pickle` into a tree of inert records, and from that tree :func:`module_state_dict`
rebuilds exactly what ``model.state_dict()`` would give (parameters, then persistent buffers, then children,
recursively) and :func:`read_ultralytics_checkpoint` the metadata Ultralytics stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raytrain.models.checkpoint import CheckpointError
from raytrain.models.restricted_pickle import PickledObject, UnsafePickleError, unpickle_torch_archive

__all__ = ["UltralyticsCheckpoint", "UnsafePickleError", "module_state_dict", "read_ultralytics_checkpoint",
           "unpickle_torch_archive"]


@dataclass(frozen=True)
class UltralyticsCheckpoint:
    """What a pickled Ultralytics checkpoint holds, as plain data.

    Attributes:
        state_dict: tensors by dotted name, in ``model.state_dict()`` order and dtype (fp16 in Ultralytics' files).
        model_class: the pickled model's class, e.g. ``"ultralytics.nn.tasks.DetectionModel"``.
        source_key: the checkpoint entry the model came from (``"ema"`` when set, else ``"model"``, as Ultralytics).
        names: class names by index, or None when the model has none.
        nc: class count (the model YAML's ``nc``, else ``len(names)``), or None.
        yaml_dict: the model's architecture YAML as a dict (``model.yaml``), or None.
        stride: the head strides, e.g. ``[8.0, 16.0, 32.0]``, or None.
        train_args: the training arguments stored with the checkpoint (``train_args``), plain values.
        task: ``model.task`` / ``train_args["task"]`` when present.
        version: the Ultralytics version that wrote the file, when recorded.
    """

    state_dict: dict[str, torch.Tensor]
    model_class: str
    source_key: str
    names: list[str] | None = None
    nc: int | None = None
    yaml_dict: dict[str, Any] | None = None
    stride: list[float] | None = None
    train_args: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    version: str | None = None



def module_state_dict(module: PickledObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """What ``module.state_dict()`` gives for the pickled module: parameters, persistent buffers, then children.

    Mirrors ``nn.Module._save_to_state_dict`` and its recursion: ``None`` entries are skipped, buffers named in
    ``_non_persistent_buffers_set`` are left out, names are dotted paths. Tensors are detached, dtypes kept.
    """
    out: dict[str, torch.Tensor] = {}
    _collect(module, prefix, out, ancestors=())
    return out


def _collect(module: Any, prefix: str, out: dict[str, torch.Tensor], ancestors: tuple[int, ...]) -> None:
    where = prefix.rstrip(".") or "the model"
    if not isinstance(module, PickledObject):
        raise CheckpointError(f"{where} is a {type(module).__name__}, not a pickled module")
    if id(module) in ancestors:  # a module shared by two paths is fine, one inside itself is a crafted file
        raise CheckpointError(f"{where} contains itself")
    attrs = module.attributes()
    params, buffers = attrs.get("_parameters") or {}, attrs.get("_buffers") or {}
    skip, children = attrs.get("_non_persistent_buffers_set") or set(), attrs.get("_modules") or {}
    if not all(isinstance(m, Mapping) for m in (params, buffers, children)):
        raise CheckpointError(f"{where} ({module.global_name}) has no module layout")
    for name, tensor in [*params.items(), *((n, b) for n, b in buffers.items() if n not in skip)]:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        out[prefix + name] = tensor.detach()
    for name, child in children.items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, (*ancestors, id(module)))


def read_ultralytics_checkpoint(path: str | Path) -> UltralyticsCheckpoint:
    """Read a pickled Ultralytics checkpoint (``yolo26n.pt``, a run's ``best.pt``) safely, without Ultralytics.

    Args:
        path: the ``.pt`` file (a torch zip archive).

    Returns:
        The state_dict of the checkpoint's model (``"ema"`` when set, else ``"model"``, as Ultralytics picks) and the
        metadata Ultralytics stores with it.

    Raises:
        UnsafePickleError: the file names a global that is not model data (nothing of it ran).
        CheckpointError: not a torch archive, damaged, or no pickled model inside.
    """
    obj = unpickle_torch_archive(path)
    ckpt = obj if isinstance(obj, Mapping) else {"model": obj}
    source_key = "ema" if ckpt.get("ema") is not None else "model"
    model = ckpt.get(source_key)
    if not isinstance(model, PickledObject):
        keys = sorted(map(str, ckpt))[:8]
        raise CheckpointError(f"{path}: no pickled model in this checkpoint (keys: {keys}); a plain state_dict "
                              f"file converts as it is")
    attrs = model.attributes()
    yaml_dict = _plain(attrs.get("yaml")) if isinstance(attrs.get("yaml"), Mapping) else None
    names = _names(attrs.get("names"))
    nc = yaml_dict.get("nc") if yaml_dict else None
    train_args = _plain(ckpt.get("train_args"))
    return UltralyticsCheckpoint(
        state_dict=module_state_dict(model),
        model_class=model.global_name,
        source_key=source_key,
        names=names,
        nc=int(nc) if isinstance(nc, int) else (len(names) if names else None),
        yaml_dict=yaml_dict,
        stride=_stride(attrs.get("stride")),
        train_args=train_args if isinstance(train_args, dict) else {},
        task=_text(attrs.get("task")) or _text(train_args.get("task") if isinstance(train_args, dict) else None),
        version=_text(ckpt.get("version")),
    )


def _plain(value: Any) -> Any:
    """Metadata as plain data: records of namespaces (``IterableSimpleNamespace``) become dicts, others their name."""
    if isinstance(value, PickledObject):
        attrs = value.attributes()
        return {str(k): _plain(v) for k, v in attrs.items()} if attrs else repr(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _names(value: Any) -> list[str] | None:
    if isinstance(value, Mapping) and all(isinstance(k, int) for k in value):
        return [str(value[k]) for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return None


def _stride(value: Any) -> list[float] | None:
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.flatten().tolist()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
