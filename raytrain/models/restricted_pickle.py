"""A restricted unpickler for torch zip archives: every pickled class becomes an inert record, nothing runs.

A pickle may name *any* global and call it, so unpickling a file with its classes importable runs whatever the file
says. Here every global goes through one gate (:func:`resolve_global`):

- Ultralytics' classes (any ``ultralytics.*`` name) and the ``torch.nn`` module classes they contain become
  :class:`PickledObject` records: calling one only stores its arguments, "setting its state" only stores the state.
  Nothing from ``ultralytics`` is imported, so the package need not be installed;
- torch's tensor-rebuild functions are replaced by wrappers that check their arguments before building the tensor
  from the archive's own bytes (storages are read from the zip here, never constructed from pickled arguments);
- plain containers (``OrderedDict``, ``set``), dtypes, ``torch.Size`` (of integers), numpy scalars (decoded from
  their bytes), paths (as text) and ``getattr`` (recorded, not performed) cover the metadata Ultralytics stores;
- anything else is refused with an :class:`UnsafePickleError` naming the global, before it is called.

The unpickler is Python's own pure-Python one with ``BUILD`` (state setting) restricted to records, so no
``__setstate__`` of a real class runs either.
"""

from __future__ import annotations

import collections
import math
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from raytrain.models.checkpoint import CheckpointError


class UnsafePickleError(CheckpointError):
    """The pickle names a global (function, class) that is neither a model record nor tensor data: refused."""


class PickledObject:
    """An inert stand-in for an object of a pickled class: it records its arguments and state, and does nothing.

    One subclass per pickled global (:func:`record_class`), so ``type(obj).global_name`` says what it stood for.
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls the class: arguments kept by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def class_name(self) -> str:
        return self.global_name.rsplit(".", 1)[-1]

    def attributes(self) -> dict[str, Any]:
        """The pickled ``__dict__`` (protocol 2 keeps ``(dict, slots)`` tuples for slotted classes)."""
        state = self.state[0] if isinstance(self.state, tuple) and len(self.state) == 2 else self.state
        return dict(state) if isinstance(state, Mapping) else {}

    def __repr__(self) -> str:
        return f"<pickled {self.global_name}>"


_RECORD_CLASSES: dict[str, type[PickledObject]] = {}


def record_class(global_name: str) -> type[PickledObject]:
    """The (cached) record class standing for ``global_name``, e.g. ``ultralytics.nn.modules.conv.Conv``."""
    if global_name not in _RECORD_CLASSES:
        _RECORD_CLASSES[global_name] = type(global_name.rsplit(".", 1)[-1], (PickledObject,),
                                            {"global_name": global_name, "__module__": __name__})
    return _RECORD_CLASSES[global_name]


class AttributeReference(PickledObject):
    """``getattr(obj, name)`` as pickled (Ultralytics pickles e.g. bound ``forward`` methods): recorded, not run."""

    global_name = "builtins.getattr"


@dataclass(frozen=True)
class _StorageType:
    """A pickled storage class (``torch.HalfStorage`` ...): only its dtype is used, it is never constructed."""

    dtype: torch.dtype


@dataclass(frozen=True)
class _TensorType:
    """``torch.Tensor`` / ``torch.nn.Parameter`` as named by ``_rebuild_from_type_v2``: a marker, never called."""

    name: str


def _checked_tensor_args(storage: Any, offset: Any, size: Any, stride: Any, hooks: Any) -> None:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"a tensor is rebuilt from a {type(storage).__name__}, not from a storage of the file")
    if not isinstance(offset, int) or not _int_tuple(size) or not _int_tuple(stride):
        raise UnsafePickleError("a tensor is rebuilt with a non-integer offset, size or stride")
    if hooks:  # torch never saves hooks; a file that has them is not one torch wrote
        raise UnsafePickleError("a tensor carries backward hooks")


def _int_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> torch.Tensor:
    """torch's ``_rebuild_tensor_v2`` after checking that it gets a storage of this file and integer geometry."""
    _checked_tensor_args(storage, storage_offset, size, stride, backward_hooks)
    if metadata:  # conj/neg bits: never in a model's weights
        raise UnsafePickleError(f"a tensor carries metadata {sorted(map(str, metadata))}")
    elements, available = math.prod(size), storage._size() - storage_offset  # _size: .size() without a warning
    if elements > max(available, 0):  # a stride-0 view: a few bytes that become gigabytes when converted to float
        raise UnsafePickleError(f"a tensor of {elements} elements is rebuilt over {available} stored ones")
    # torch checks the geometry against the storage size (set_), so no read goes past the file's bytes.
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), bool(requires_grad),
                                           collections.OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> torch.nn.Parameter:
    """``torch._utils._rebuild_parameter(_with_state)``: a Parameter around a rebuilt tensor (python attrs dropped)."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise UnsafePickleError("a Parameter is rebuilt from something other than a plain tensor of the file")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


_REBUILDERS = (_rebuild_tensor_v2, _rebuild_parameter)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    """torch's wrapper for tensors with Python state: rebuild with one of the checked functions, drop the state."""
    if func not in _REBUILDERS or not isinstance(new_type, _TensorType) or not isinstance(args, tuple):
        raise UnsafePickleError("_rebuild_from_type_v2 names something other than a tensor rebuild")
    return func(*args)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar (Ultralytics stores some metrics so) as a Python number, decoded from its bytes."""
    import numpy as np

    code = dtype.args[0] if isinstance(dtype, PickledObject) and dtype.args else None
    if not isinstance(code, str) or code[:1] not in ("f", "i", "u", "b") or not isinstance(data, bytes):
        return record_class("numpy.core.multiarray.scalar")(dtype, data)  # kept inert (e.g. an object dtype)
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else "<"
    decoded = np.dtype(code).newbyteorder(">" if order == ">" else "<")
    if decoded.itemsize != len(data):
        raise UnsafePickleError(f"a numpy {code} scalar with {len(data)} bytes")
    return np.frombuffer(data, dtype=decoded)[0].item()


def _path_text(*parts: Any) -> str:
    """A pickled ``pathlib`` path, as text (either OS's flavour)."""
    if not all(isinstance(p, str) for p in parts):
        raise UnsafePickleError("a pickled path with non-text parts")
    windows = any("\\" in p or p[1:2] == ":" for p in parts)
    return str((PureWindowsPath if windows else PurePosixPath)(*parts))


def _record_getattr(obj: Any, name: Any) -> AttributeReference:
    """Pickled ``getattr(record, name)``: kept as a reference, never looked up."""
    if not isinstance(name, str) or not isinstance(obj, (PickledObject, type)):
        raise UnsafePickleError(f"getattr on a {type(obj).__name__}")
    if isinstance(obj, type) and not issubclass(obj, PickledObject):
        raise UnsafePickleError(f"getattr on the class {obj.__name__}")
    return AttributeReference(obj, name)


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol 2 pickles ``bytes``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode other than the protocol-2 bytes form")
    return text.encode("latin1")


def _torch_size(dims: Any = ()) -> torch.Size:
    """``torch.Size(dims)``: a tuple of ints (an Ultralytics head keeps the last input's shape as one, ``Detect.shape``,
    so every checkpoint saved after a validation pass holds one)."""
    if not _int_tuple(dims):
        raise UnsafePickleError("torch.Size of anything but integers")
    return torch.Size(dims)


_PLAIN_GLOBALS: dict[str, Callable[..., Any]] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.getattr": _record_getattr,
    "torch.Size": _torch_size,
    "_codecs.encode": _latin1_bytes,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    **{f"{m}.{c}": _path_text for m in ("pathlib", "pathlib._local")
       for c in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")},
}
_MARKERS: dict[str, Any] = {"torch.Tensor": _TensorType("Tensor"),
                            "torch.nn.parameter.Parameter": _TensorType("Parameter")}
_RECORDED = ("numpy.dtype",)  # besides ultralytics.*: a dtype record is read back by _numpy_scalar


def resolve_global(module: str, name: str) -> Any:
    """What a pickled global ``module.name`` becomes here; an UnsafePickleError naming it when it is not allowed."""
    module = "builtins" if module == "__builtin__" else module  # protocol-2 pickles spell Python 2's name
    full = f"{module}.{name}"
    if full in _PLAIN_GLOBALS:
        return _PLAIN_GLOBALS[full]
    if full in _MARKERS:
        return _MARKERS[full]
    if module.split(".")[0] == "ultralytics" or full in _RECORDED or _is_torch_module_class(module, name):
        return record_class(full)
    if module == "torch":
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
        if isinstance(value, type) and issubclass(value, torch.storage._LegacyStorage):
            return _StorageType(value._dtype)  # _dtype: the same, without the deprecation warning of .dtype
        if value is torch.UntypedStorage:
            return _StorageType(torch.uint8)
    raise UnsafePickleError(f"refused the pickled global '{full}': only Ultralytics' classes, torch.nn modules, "
                            f"tensors and plain data are read, and nothing named in the file is run")


def _is_torch_module_class(module: str, name: str) -> bool:
    """``torch.nn.modules.<sub>.<Class>`` naming an nn.Module subclass (looked up, never imported or called)."""
    if not module.startswith("torch.nn.modules."):
        return False
    import sys

    value = getattr(sys.modules.get(module), name, None)
    return isinstance(value, type) and issubclass(value, torch.nn.Module)


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD can be restricted
    """Unpickles ``data.pkl`` of a torch zip archive through :func:`resolve_global`, storages from the archive."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        import io

        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name)

    def persistent_load(self, pid: Any) -> torch.storage.TypedStorage:
        """``("storage", storage type, key, location, numel)``: the bytes of ``data/<key>`` in the archive."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnsafePickleError(f"an unexpected persistent id {str(pid)[:80]}")
        _, storage_type, key, _, numel = pid
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
        name = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"the archive lacks {name}, which the pickle refers to (a damaged file?)") from None
        nbytes = numel * torch._utils._element_size(dtype)
        if info.file_size != nbytes:
            raise CheckpointError(f"{name} holds {info.file_size} bytes, the pickle expects {nbytes}")
        raw = bytearray(self._archive.read(name)) if nbytes else None
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        return torch.storage.TypedStorage(wrap_storage=flat.untyped_storage(), dtype=dtype, _internal=True)

    def _load_build(self) -> None:
        """BUILD (set an object's state) only on records, so no real class's ``__setstate__`` runs."""
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, PickledObject):
            raise UnsafePickleError(f"the pickle sets the state of a {type(target).__name__}")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = _load_build


def unpickle_torch_archive(path: str | Path) -> Any:
    """The object ``torch.save`` wrote to the zip archive ``path``, with every class a record (nothing run).

    Raises:
        UnsafePickleError: the pickle names a global outside the allow-list (the message names it).
        CheckpointError: not a torch zip archive, big-endian, or damaged.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch zip archive (a file saved by torch before 1.6, or not a torch "
                              f"file): re-save it with a current torch, or convert a plain state_dict")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip archive but not a torch file (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise CheckpointError(f"{path} was saved on a big-endian machine; convert it there")
        try:
            return _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix).load()
        except CheckpointError as e:  # UnsafePickleError too: the same kind, now naming the file
            raise type(e)(f"{path}: {e}") from None
        except Exception as e:  # a malformed pickle: EOF, bad opcode, stack underflow, a wrapper's TypeError ...
            raise CheckpointError(f"{path}: its pickle cannot be read ({type(e).__name__}: {e})") from None
