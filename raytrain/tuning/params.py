"""One searched argument of a search-space file: its YAML form, validation, Optuna sampling and distribution.

``space.lr0: {type: loguniform, low: 1e-4, high: 0.1}`` becomes ``Param("lr0", "loguniform", 1e-4, 0.1)``. The
same object samples a value during a search (:meth:`Param.suggest`) and, afterwards, gives the Optuna distribution
that value was drawn from (:meth:`Param.distribution`), so ``raytrain results`` can rebuild the study. Imports no
Optuna at module level (the CLI reads this module's key lists).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from raytrain.config import _HINTS, FIELDS, ConfigError, unknown_key_error

PARAM_TYPES = ("uniform", "loguniform", "quniform", "qloguniform", "int", "randint", "qrandint", "choice")
INT_TYPES = ("int", "randint", "qrandint")
LOG_TYPES = ("loguniform", "qloguniform")
# Arguments that say where or how a trial runs, not how it trains: fixed under train:, never searched. (patience is
# the tune-level rule; resources are fixed per trial so the cluster's capacity can be planned.)
NOT_SEARCHABLE = ("data", "project", "name", "exist_ok", "resume", "device", "num_workers", "cpus_per_worker",
                  "gpu_share", "storage", "address", "max_failures", "wandb_mode", "wandb_project", "wandb_entity",
                  "split", "source", "save_json", "plots", "verbose", "workers", "patience", "time",
                  "schedule")


@dataclass(frozen=True)
class Param:
    """One searched argument.

    ``uniform``/``loguniform`` floats in [low, high]; ``quniform``/``qloguniform`` the same rounded to a multiple
    of ``q``; ``int`` integers in [low, high]; ``randint`` integers in [low, high) (Tune's convention);
    ``qrandint`` integers in [low, high] that are multiples of ``q``; ``choice`` one of ``values``.
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple[Any, ...] = ()

    @property
    def is_int(self) -> bool:
        return self.type in INT_TYPES

    def extremes(self) -> list[tuple[str, Any]]:
        """The values that bound this parameter, each with the name of the field that set it (for errors)."""
        if self.type == "choice":
            return [(f"values[{i}]", v) for i, v in enumerate(self.values)]
        high = self.high - 1 if self.type == "randint" else self.high
        return [("low", _num(self.low, self.is_int)), ("high", _num(high, self.is_int))]

    def largest(self) -> Any:
        """The largest value this parameter can take (``max_t`` for ASHA when searching ``epochs``)."""
        return max(v for _, v in self.extremes())

    def contains(self, value: Any) -> bool:
        """True when ``value`` is a value this parameter can take (for ``points_to_evaluate``)."""
        if self.type == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        high = self.high - 1 if self.type == "randint" else self.high
        return self.low <= value <= high and (not self.is_int or float(value).is_integer())

    def suggest(self, trial: Any) -> Any:
        """Draw a value with an Optuna trial (define-by-run), rounding the q types to their step."""
        if self.type == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.is_int:
            high = int(self.high) - 1 if self.type == "randint" else int(self.high)
            step = int(self.q) if self.type == "qrandint" and self.q else 1
            return trial.suggest_int(self.name, int(self.low), high, step=step)
        if self.type == "quniform":  # Optuna has stepped floats, but not stepped log floats
            return trial.suggest_float(self.name, self.low, self.high, step=self.q)
        value = trial.suggest_float(self.name, self.low, self.high, log=self.type in LOG_TYPES)
        return self.round(value) if self.q else value

    def distribution(self) -> Any:
        """The Optuna distribution :meth:`suggest` draws from (``qloguniform``: the log float before rounding)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "choice":
            return CategoricalDistribution(list(self.values))
        if self.is_int:
            high = int(self.high) - 1 if self.type == "randint" else int(self.high)
            step = int(self.q) if self.type == "qrandint" and self.q else 1
            return IntDistribution(int(self.low), high, step=step)
        if self.type == "quniform":
            return FloatDistribution(self.low, self.high, step=self.q)
        return FloatDistribution(self.low, self.high, log=self.type in LOG_TYPES)

    def round(self, value: float) -> float:
        """``value`` rounded to a multiple of ``q`` and kept inside [low, high]."""
        rounded = round(round(value / self.q) * self.q, 12)
        return min(max(rounded, self.low), self.high)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this parameter."""
        if self.type == "choice":
            return {"type": "choice", "values": list(self.values)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        return {**out, "q": self.q} if self.q is not None else out


def _num(value: Any, is_int: bool) -> Any:
    return int(value) if is_int else float(value)


def parse_param(key: str, value: Any, where: str) -> Param:
    """``space.KEY``'s YAML value as a :class:`Param`.

    Raises:
        ConfigError: ``"{where}: space.KEY: ..."`` for an unknown or unsearchable argument, an unknown type or
            field, missing or non-numeric bounds, ``low >= high``, and float types for integer arguments.
    """
    path = f"space.{key}"
    if key not in FIELDS:
        raise ConfigError(f"{where}: {path}: {unknown_key_error(key, FIELDS)}")
    if key in NOT_SEARCHABLE:
        hint = " (the tune-level rule is the top-level 'patience:')" if key == "patience" else ""
        raise ConfigError(f"{where}: {path}: {key} says where or how a trial runs, not how it trains: fix it under "
                          f"'train:'{hint}.")
    if isinstance(value, list):  # shorthand: a plain list is a choice
        value = {"type": "choice", "values": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {path}: expected a mapping like {{type: uniform, low: 0.1, high: 0.9}} "
                          f"or a list of choices, got {value!r}.")
    unknown = set(value) - {"type", "low", "high", "q", "values"}
    if unknown:
        raise ConfigError(f"{where}: {path}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                          f"use type, low, high, q or values.")
    kind = value.get("type", "choice" if "values" in value else None)
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}: {path}: type={kind!r} is not a parameter type; use one of "
                          f"{', '.join(PARAM_TYPES)}.")
    if kind == "choice":
        values = value.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {path}: a choice needs a non-empty list of values.")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: {path}: values repeat an entry.")
        return Param(key, kind, values=tuple(values))
    return _parse_range(key, kind, value, where)


def _parse_range(key: str, kind: str, value: dict[str, Any], where: str) -> Param:
    """The numeric types: bounds (and ``q``) present, finite, ordered, integral where the type needs it."""
    path = f"space.{key}"
    bounds = {}
    for name in ("low", "high", *(("q",) if kind.startswith("q") else ())):
        number = value.get(name)
        if isinstance(number, str):  # YAML reads 1e-3 (no dot) as text
            with contextlib.suppress(ValueError):
                number = float(number)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ConfigError(f"{where}: {path}: {kind} needs a number for {name}, got {value.get(name)!r}.")
        bounds[name] = number
    if "q" in value and "q" not in bounds:
        raise ConfigError(f"{where}: {path}: q only applies to quniform, qloguniform and qrandint.")
    low, high, q = bounds["low"], bounds["high"], bounds.get("q")
    if low >= high:
        raise ConfigError(f"{where}: {path}: low >= high ({low} >= {high}).")
    if kind in LOG_TYPES and low <= 0:
        raise ConfigError(f"{where}: {path}: loguniform needs low > 0, got low={low}.")
    if q is not None and q <= 0:
        raise ConfigError(f"{where}: {path}: q must be positive, got {q}.")
    if kind in INT_TYPES:
        if not all(float(b).is_integer() for b in bounds.values()):
            raise ConfigError(f"{where}: {path}: {kind} needs integer low, high and q.")
        if kind == "randint" and high - low < 1:
            raise ConfigError(f"{where}: {path}: randint excludes high; [{low}, {high}) holds no integer.")
    elif _HINTS[key] is int:
        raise ConfigError(f"{where}: {path}: {key} is an integer argument; use type int, randint or qrandint "
                          f"(or choice), not {kind}.")
    return Param(key, kind, low=low, high=high, q=q)


__all__ = ["INT_TYPES", "NOT_SEARCHABLE", "PARAM_TYPES", "Param", "parse_param"]
