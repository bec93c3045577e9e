"""``raytrain convert SRC OUT``: Ultralytics YOLOv8 / YOLO11 / YOLO26 detection weights -> a raytrain checkpoint.

Our layer indices and state_dict keys are Ultralytics', so conversion is a key-for-key copy after checking every
name and shape. The class count comes from the class-output convolution of the family's Detect layer
(``model.22.cv3.0.2.weight`` for YOLOv8, ``model.23...`` for YOLO11/YOLO26); family and scale from comparing every
key and shape with each registered architecture (built on the meta device, no memory): YOLO11 and YOLO26 m and l
have equally wide stems and differ only in depth, and YOLO26 alone has the ``one2one_*`` branch.

Two sources are accepted:

- a file holding a plain ``DetectionModel.state_dict()`` (tensors only), read with ``weights_only=True``;
- an Ultralytics ``.pt`` checkpoint (pickled Python objects), read without the ``ultralytics`` package by a
  restricted unpickler (:mod:`raytrain.models.ultralytics_pickle`): nothing stored in the file runs, and a file naming
  any other global (function, class) is refused with that name.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from raytrain.config import ConfigError, read_yaml_mapping
from raytrain.models.checkpoint import FORMAT, CheckpointError, is_pickle_file, make_checkpoint, save_checkpoint
from raytrain.models.detector import DetectionModel, build_model
from raytrain.models.registry import ARCHS, FAMILIES
from raytrain.models.ultralytics_pickle import read_ultralytics_checkpoint

LOGGER = logging.getLogger("raytrain")


def class_key(detect_index: int) -> str:
    """The class-output convolution of the first level, whose out-channels are nc."""
    return f"model.{detect_index}.cv3.0.2.weight"


def read_source(src: str | Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The detection state_dict in ``src`` and the class names when the file has them.

    Raises:
        CheckpointError: not a detection state_dict or Ultralytics checkpoint, or a pickled checkpoint
            naming a global outside the allow-list (refused before anything runs).
    """
    src = Path(src).expanduser()
    if not src.is_file():
        raise ConfigError(f"convert: {src} not found.")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not is_pickle_file(src):
            raise CheckpointError(f"{src} is not a PyTorch file (neither a torch zip archive nor a pickle).") from None
        return _read_pickled_ultralytics(src)
    except Exception as e:  # RuntimeError, EOFError, ... for files that are not torch files
        raise CheckpointError(f"{src} is not a PyTorch file ({type(e).__name__}).") from None
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        raise CheckpointError(f"{src} is already a raytrain checkpoint: use it directly (model= or pretrained=).")
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), None
        for key in ("ema", "model", "state_dict"):  # a dict wrapping a state_dict, e.g. {"model": sd}
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner), _names_list(obj.get("names"))
    raise CheckpointError(f"{src} holds a {type(obj).__name__} that is not a state_dict of tensors; expected an "
                          f"Ultralytics DetectionModel state_dict (YOLOv8, YOLO11 or YOLO26).")


def _read_pickled_ultralytics(src: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The model of a pickled Ultralytics checkpoint, read by the restricted unpickler (no code from the file runs;
    the ``ultralytics`` package is not needed)."""
    ckpt = read_ultralytics_checkpoint(src)
    if ckpt.model_class != "ultralytics.nn.tasks.DetectionModel":
        raise CheckpointError(f"{src} holds a pickled {ckpt.model_class}; only Ultralytics detection models "
                              f"(ultralytics.nn.tasks.DetectionModel) convert to raytrain.")
    return ckpt.state_dict, ckpt.names


def _names_list(names: Any) -> list[str] | None:
    """Class names from a list or an {index: name} dict (Ultralytics' and dataset YAML's forms)."""
    if isinstance(names, Mapping):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


def _signature(arch: str, nc: int) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of ``arch`` with ``nc`` classes and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(arch, nc=nc).state_dict().items()}


def _differences(state: Mapping[str, torch.Tensor], own: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps ``state`` from loading into a model whose keys and shapes are ``own``, one phrase per kind."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {own[k]})" for k in own if k in state and
             tuple(state[k].shape) != own[k]]
    return [f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """(arch, nc) of an Ultralytics detection state_dict: nc from the class-output conv of the family's Detect layer,
    the architecture as the registered one whose every key and shape match."""
    candidates = [(f, int(state_dict[class_key(f.detect_index)].shape[0])) for f in FAMILIES.values()
                  if class_key(f.detect_index) in state_dict]
    if not candidates:
        keys = ", ".join(class_key(i) for i in sorted({f.detect_index for f in FAMILIES.values()}))
        raise CheckpointError(f"not an Ultralytics detection state_dict of {', '.join(FAMILIES)}: none of {keys} "
                              f"(found keys like {list(state_dict)[:3]}).")
    stem = tuple(state_dict["model.0.conv.weight"].shape) if "model.0.conv.weight" in state_dict else None
    closest: tuple[int, str, list[str]] | None = None
    for family, nc in candidates:
        # The stem's width rules most scales out without building them (m and l stems are equally wide).
        likely = [a for a in family.archs
                  if stem is None or stem[0] == family.scales[a[-1]].channels(family.layers[0].channels)]
        for arch in likely or family.archs:
            problems = _differences(state_dict, _signature(arch, nc))
            if not problems:
                return arch, nc
            count = sum(p.count(",") + 1 for p in problems)
            if closest is None or count < closest[0]:
                closest = (count, arch, problems)
    _, arch, problems = closest
    raise CheckpointError(f"not a state_dict of any registered detector ({', '.join(ARCHS)}); closest is {arch}, "
                          f"but {'; '.join(problems)}. YOLOv5/YOLOv9/YOLOv10 and segment/pose models do not convert.")


def model_from_ultralytics(state_dict: Mapping[str, torch.Tensor]) -> DetectionModel:
    """Our detector holding an Ultralytics detection state_dict of any registered family, after checking every key
    and shape."""
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    arch, nc = infer_arch(state)
    model = build_model(arch, nc=nc)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model


def parse_names(value: Any, nc: int) -> list[str] | None:
    """``names=`` as a list, comma-separated text or a dataset YAML path (its ``names``); checked against nc."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        data = read_yaml_mapping(value, label=f"names={value}", expected="a dataset YAML mapping with 'names'")
        names = _names_list(data.get("names"))
        if names is None:
            raise ConfigError(f"names={value}: the file has no 'names' list or mapping.")
    elif isinstance(value, str):
        names = [n.strip() for n in value.split(",")]
    else:
        names = _names_list(value)
    if names is None or len(names) != nc:
        count = "no" if names is None else len(names)
        raise ConfigError(f"names: got {count} class names for a model with nc={nc}.")
    return names


def convert(src: str | Path, out: str | Path, names: Any = None) -> Path:
    """Convert Ultralytics YOLOv8 / YOLO11 / YOLO26 detection weights in ``src`` to a raytrain checkpoint at ``out``.

    Args:
        src: a plain DetectionModel state_dict file, or an Ultralytics .pt (read safely, without ultralytics).
        out: where to write the raytrain checkpoint.
        names: class names (list, "a,b,c", or a dataset YAML); default: the checkpoint's, else "0", "1", ...

    Returns:
        ``out`` as a Path.
    """
    if Path(src).expanduser().resolve() == Path(out).expanduser().resolve():
        raise ConfigError("convert: OUT must differ from SRC.")
    state, found_names = read_source(src)
    model = model_from_ultralytics(state)
    chosen = parse_names(names, model.nc) or found_names
    if chosen is None:
        LOGGER.warning("No class names in %s; using '0'..'%d' (pass names=a,b,... or names=data.yaml).",
                       src, model.nc - 1)
    elif len(chosen) != model.nc:
        raise CheckpointError(f"{src}: {len(chosen)} class names for nc={model.nc}; pass names= explicitly.")
    model.names = chosen or model.names
    return save_checkpoint(out, make_checkpoint(model))
