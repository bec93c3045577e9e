"""Schedule files: per-epoch values of the hyperparameters that may change while a run trains.

``schedule=`` (fit) replays one, e.g. a PBT experiment's ``best_schedule.yaml``; :mod:`raytrain.engine.hyper` applies
the values to a live run. Plain data and YAML only (no torch, no Config), so the config can validate a file early.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from raytrain.parsing import ConfigError, read_yaml_mapping

# Hyperparameters that can change between epochs, by what they act on. The learning-rate scale (lr0, lrf) and
# momentum act through the schedule, weight_decay on the optimizer's weight group, the gains on the loss, the rest
# on the training dataset's augmentation.
SCHEDULE_KEYS = ("lr0", "lrf", "momentum")
OPTIMIZER_KEYS = ("weight_decay",)
LOSS_KEYS = ("box", "cls", "dfl")
AUGMENT_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                "fliplr", "mosaic", "mixup")
MUTABLE = (*SCHEDULE_KEYS, *OPTIMIZER_KEYS, *LOSS_KEYS, *AUGMENT_KEYS)


def read_schedule(path: str | Path) -> dict[int, dict[str, float]]:
    """Read a schedule file: ``{epoch (from 1): {hyperparameter: value}}``, epochs ascending.

    The file is YAML with an ``epochs:`` mapping; an epoch lists the values that apply from its start until the next
    listed epoch (so a file may list only the epochs where something changes)::

        epochs:
          1: {lr0: 0.01, mixup: 0.1}
          4: {lr0: 0.012, mixup: 0.3}

    Raises:
        ConfigError: naming the file and the entry for a missing file, a bad epoch, an unknown key or a non-number.
    """
    label = f"schedule={path}"
    raw = read_yaml_mapping(path, label=label, kind="schedule file", expected="a mapping with 'epochs:'")
    epochs = raw.get("epochs")
    if not isinstance(epochs, dict) or not epochs:
        raise ConfigError(f"{label}: epochs: expected a mapping of epoch: {{hyperparameter: value}}.")
    out: dict[int, dict[str, float]] = {}
    for epoch, values in epochs.items():
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ConfigError(f"{label}: epochs.{epoch}: epochs are integers from 1.")
        if not isinstance(values, dict):
            raise ConfigError(f"{label}: epochs.{epoch}: expected a mapping of hyperparameter: value.")
        for key, value in values.items():
            if key not in MUTABLE:
                raise ConfigError(f"{label}: epochs.{epoch}.{key}: only hyperparameters that can change between "
                                  f"epochs can be scheduled: {', '.join(MUTABLE)}.")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{label}: epochs.{epoch}.{key}: expected a number, got {value!r}.")
        out[epoch] = {k: float(v) for k, v in values.items()}
    return dict(sorted(out.items()))


def values_at(schedule: Mapping[int, Mapping[str, float]], epoch: int) -> dict[str, float]:
    """The values in force at ``epoch``: every key's value from the latest listed epoch at or before it."""
    values: dict[str, float] = {}
    for listed, entry in schedule.items():
        if listed > epoch:
            break
        values.update(entry)
    return values


def write_schedule(path: str | Path, per_epoch: Mapping[int, Mapping[str, float]], header: str = "") -> Path:
    """Write per-epoch values as a schedule file :func:`read_schedule` reads back (``header``: comment lines)."""
    import yaml

    from raytrain.files import atomic_write

    body = {"epochs": {int(e): {k: float(v) for k, v in values.items()} for e, values in sorted(per_epoch.items())}}
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return atomic_write(path, comments + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))


__all__ = ["AUGMENT_KEYS", "LOSS_KEYS", "MUTABLE", "OPTIMIZER_KEYS", "SCHEDULE_KEYS", "read_schedule", "values_at",
           "write_schedule"]
