"""The one list of detector families and model names; everything that lists or checks ``model=`` reads it.

``list_models()`` (as timm's) gives every buildable name; ``family_of`` maps a name to its
:class:`raytrain.models.spec.FamilySpec`; ``check_arch`` refuses an unknown name with a suggestion. A new family is
one :class:`FamilySpec` added to :data:`raytrain.models.families.FAMILY_LIST`.
"""

from __future__ import annotations

import difflib

from raytrain.models.families import FAMILY_LIST
from raytrain.models.spec import FamilySpec
from raytrain.parsing import ConfigError

FAMILIES: dict[str, FamilySpec] = {f.name: f for f in FAMILY_LIST}
ARCHS: tuple[str, ...] = tuple(arch for f in FAMILY_LIST for arch in f.archs)
DEFAULT_ARCH = "yolo26n"  # what model= means when unset, as in Ultralytics 8.4
_FAMILY_OF = {arch: f for f in FAMILY_LIST for arch in f.archs}


def list_models(family: str | None = None) -> list[str]:
    """Every buildable model name (``yolov8n`` ... ``yolo26x``), or one family's."""
    return [a for a in ARCHS if family is None or _FAMILY_OF[a].name == family]


def family_of(arch: str) -> FamilySpec:
    """The family of a model name (``yolo11s`` -> YOLO11); a ConfigError with a suggestion for unknown names."""
    return _FAMILY_OF[check_arch(arch)]


def scale_of(arch: str) -> str:
    """The scale letter of a model name (``yolo11s`` -> ``s``)."""
    return check_arch(arch)[len(family_of(arch).name):]


def is_checkpoint(model: object) -> bool:
    """What ``model=`` names, decided by this one rule: a checkpoint file (``*.pt``: a raytrain checkpoint or an
    Ultralytics name such as ``yolo26n.pt``) when True, else an architecture (``yolo26n``, ``yolo26n.yaml``)."""
    return isinstance(model, str) and model.endswith(".pt")


def check_arch(name: str) -> str:
    """``name`` if it is a registered model name (a trailing ``.yaml`` is dropped), else a one-line ConfigError
    naming the families and the closest name."""
    arch = name[: -len(".yaml")] if isinstance(name, str) and name.endswith(".yaml") else name
    if arch in _FAMILY_OF:
        return arch
    close = difflib.get_close_matches(str(arch), ARCHS, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    families = ", ".join(f"{f.title} ({f.name}{'/'.join(f.scales)})" for f in FAMILY_LIST)
    raise ConfigError(f"model={name!r} is not a known architecture: use one of {families}.{hint}")
