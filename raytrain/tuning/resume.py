"""Resuming a tune experiment as it was started: its saved space, the overrides it began with, and what may change.

``resume=True`` rebuilds the trials from the experiment's own ``tune_space.yaml`` (the validated space with the
fixed arguments resolved), not from the command given now, so a resumed experiment trains what it started training.
``tune_start.yaml`` keeps how it was started (the space file and the ``key=value`` overrides), for the Ctrl-C hint
and to tell an override repeated at resume from one that would change the experiment. The settings in
:data:`MAY_CHANGE` only locate, connect or pace the experiment and are applied at resume; any other override is
accepted when it says what the experiment already has, and refused otherwise, naming the key.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from raytrain.config import ConfigError, read_yaml_mapping
from raytrain.files import atomic_write
from raytrain.tuning.experiment import SPACE_FILE
from raytrain.tuning.space import TuneSpec, load_space

START_FILE = "tune_start.yaml"  # not .json: Tune syncs top-level .json/.pkl files back over the experiment folder
# Overrides a resumed experiment accepts and applies: where it is (name, project), how to reach Ray (address),
# how many trials run at once, the time budget (counted from the resume), the W&B mode, and a dry run of the resume.
MAY_CHANGE = ("resume", "name", "project", "exist_ok", "address", "dry_run", "max_concurrent_trials",
              "time_budget_s", "wandb_mode")


def write_start(exp_dir: Path, source: str, overrides: Mapping[str, Any]) -> Path:
    """Record how the experiment was started: the space file (absolute; ``<dict>`` from Python) and the overrides."""
    space = source if source == "<dict>" else str(Path(source).expanduser().resolve())
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    try:
        text = yaml.safe_dump({"space": space, "overrides": plain}, sort_keys=False)
    except yaml.representer.RepresenterError:  # e.g. a numpy number from Python: kept as its text, as key=value has it
        text = yaml.safe_dump({"space": space, "overrides": {k: str(v) for k, v in plain.items()}}, sort_keys=False)
    return atomic_write(exp_dir / START_FILE, text)


def read_start(exp_dir: Path) -> dict[str, Any]:
    """``tune_start.yaml`` (``{"space": ..., "overrides": {...}}``); empty for an experiment started without one."""
    path = exp_dir / START_FILE
    if not path.is_file():
        return {}
    return read_yaml_mapping(path, label=str(path), kind="tune start file", expected="space and overrides")


def resumed_spec(exp_dir: Path, overrides: Mapping[str, Any]) -> TuneSpec:
    """The experiment in ``exp_dir`` rebuilt from its saved space, for ``resume=True``.

    Args:
        exp_dir: the experiment folder (found from the project and name given now).
        overrides: the ``key=value`` overrides given now.

    Raises:
        ConfigError: an override that would change the experiment (naming it and what the experiment has).
    """
    saved_file = exp_dir / SPACE_FILE
    saved_raw = read_yaml_mapping(saved_file, label=str(saved_file), kind="tune space file",
                                  expected="the experiment's saved search space (a mapping)")
    saved = load_space(saved_raw)
    started = read_start(exp_dir).get("overrides") or {}
    for key, value in overrides.items():
        if key not in MAY_CHANGE and not _same(key, value, started, saved_raw, saved):
            raise ConfigError(_refusal(key, value, started, saved, exp_dir))
    applied = {k: v for k, v in overrides.items() if k in MAY_CHANGE}
    applied |= {"name": exp_dir.name, "project": str(exp_dir.parent), "resume": True, "exist_ok": False}
    resumed = load_space(saved_raw, applied)
    resumed.source = str(saved_file)
    return resumed


def _same(key: str, value: Any, started: Mapping[str, Any], saved_raw: dict[str, Any], saved: TuneSpec) -> bool:
    """Whether ``key=value`` leaves the experiment as it is: the override it was started with, or what it has."""
    if key in started and str(started[key]) == str(value):
        return True
    try:
        again = load_space(saved_raw, {key: value})
    except ConfigError:
        return False
    return again.to_dict() == saved.to_dict()


def _refusal(key: str, value: Any, started: Mapping[str, Any], saved: TuneSpec, exp_dir: Path) -> str:
    if key in started:
        had = f"it was started with {key}={started[key]}"
    elif key in saved.space:
        had = f"it searches {key}"
    elif key in saved.train:
        had = f"it trains with {key}={saved.train[key]}"
    else:
        had = f"it has {key}={saved.to_dict().get(key)}"
    return (f"resume=True: {key}={value} would change the experiment {exp_dir} ({had}). Resume without it, or "
            f"start a new experiment (another name=). A resume may change: {', '.join(MAY_CHANGE)}.")


def resume_command(exp_dir: Path, space: str | Path) -> str:
    """The ``raytrain tune`` command that resumes ``exp_dir`` exactly: its space file and the overrides it was started
    with (accepted again, as they match), its name and project, and ``resume=True``."""
    start = read_start(exp_dir)
    words = ["raytrain", "tune", str(start.get("space") or space)]
    skip = {"name", "project", "resume", "exist_ok"}
    words += [f"{k}={_cli_value(v)}" for k, v in (start.get("overrides") or {}).items() if k not in skip]
    words += [f"name={exp_dir.name}", f"project={exp_dir.parent}", "resume=True"]
    return " ".join(shlex.quote(w) for w in words)


def _cli_value(value: Any) -> str:
    """A value as ``key=value`` spells it (lists as YAML flow, as the CLI parses them)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


__all__ = ["MAY_CHANGE", "START_FILE", "read_start", "resume_command", "resumed_spec", "write_start"]
