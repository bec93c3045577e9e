"""Parsing argument values and files, shared by every place that reads them: no Config here, so nothing cycles.

Values are parsed with ``yaml.safe_load`` (never ``eval``) and coerced to a declared type; every failure is a
:class:`ConfigError` naming the key or file and what is allowed. :mod:`raytrain.config` builds the typed Config on top.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names the key and what is allowed."""


def did_you_mean(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def unknown_key_error(key: str, valid: Iterable[str], where: str = "") -> ConfigError:
    """The error for a key that is not a valid argument, with "did you mean" suggestions."""
    origin = f" in {where}" if where else ""
    return ConfigError(f"'{key}'{origin} is not a valid raytrain argument.{did_you_mean(key, valid)}"
                       f" See 'raytrain --help' for the full list.")


def parse_value(text: str) -> Any:
    """Parse one CLI value safely: YAML scalars (numbers, true/false, null, lists), else the string itself."""
    if text.lower() in ("none", "null"):
        return None
    if not text:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, list, str)) else text


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("NoneType", "None").replace("<class '", "").replace("'>", "")


def coerce_value(key: str, value: Any, hint: Any) -> Any:
    """Coerce a parsed value to the field's declared type, or raise a ConfigError naming key, value, type."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        # Prefer an exact type match before trying conversions (e.g. bool before str).
        for option in options:
            if option is not type(None) and _matches(value, option):
                return coerce_value(key, value, option)
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} is not a valid value: expected {_type_name(hint)}.")
    if origin is list:
        (item,) = typing.get_args(hint)
        if value is None or value == "":  # loggers=none
            value = []
        if isinstance(value, str):  # "a,b", or one item
            value = [parse_value(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} is not a valid value: expected a list.")
        return [coerce_value(key, v, item) for v in value]
    if origin is dict:  # fitness_weights={mAP50-95: 0.9, mAP50: 0.1} on the command line, or a YAML mapping
        return _mapping(key, value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}={value!r} is not a valid value: expected True or False.")
    if hint in (int, float):
        return _number(key, value, hint)
    if hint is str:
        if isinstance(value, (list, tuple)):  # e.g. device=[0, 1] from a YAML file
            return ",".join(str(v) for v in value)
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not a valid value: expected text.")
        return str(value)
    return value



def _mapping(key: str, value: Any, hint: Any) -> dict[str, Any]:
    """``value`` (a mapping, or its YAML text like ``{a: 1, b: 2}``) as a dict with its values coerced."""
    if isinstance(value, str):
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{key}={value!r} is not a valid value: expected a mapping like {{name: value, ...}}.")
    key_type, value_type = typing.get_args(hint) or (str, Any)
    return {coerce_value(key, k, key_type): value[k] if value_type is Any else coerce_value(key, value[k], value_type)
            for k in value}


def _number(key: str, value: Any, kind: type) -> int | float:
    """``value`` as an int (a whole float or a numeric string too) or a float; never a bool."""
    if not isinstance(value, bool):
        if kind is float and isinstance(value, (int, float)):
            return float(value)
        if kind is int and (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return int(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
    raise ConfigError(f"{key}={value!r} is not a valid value: expected {'an integer' if kind is int else 'a number'}.")

def _matches(value: Any, option: Any) -> bool:
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        return isinstance(value, float)
    if option is str:
        return isinstance(value, str)
    return typing.get_origin(option) is list and isinstance(value, (list, tuple))


def read_yaml_mapping(path: str | Path, *, label: str, expected: str, kind: str = "file") -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty one).

    Raises:
        ConfigError: ``"{label}: ..."`` for a missing file, a binary file, invalid YAML, or anything but a mapping
            (``expected`` says what should be there).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{label}: {kind} not found.")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a text file (it is not UTF-8); expected {expected}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected {expected}, got {type(data).__name__}.")
    return data
