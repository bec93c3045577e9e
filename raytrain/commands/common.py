"""The prologue every command handler shares: its positional argument, the model opened once, the config, the
device, the validation data, the run folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytrain.config import Config, ConfigError, make_config


def take_positional(command: str, positional: list[str], args: dict[str, Any], key: str) -> dict[str, Any]:
    """``raytrain val best.pt`` as ``model=best.pt``: the one positional argument under ``key`` unless given."""
    if len(positional) > 1:
        raise ConfigError(f"raytrain {command} takes one positional argument ({key}), not {len(positional)}: "
                          f"{' '.join(positional)}")
    return {**args, key: positional[0]} if positional and key not in args else dict(args)


def require_model(command: str, args: dict[str, Any]) -> str:
    """The ``model=`` a command needs, with the error that says so."""
    if not args.get("model"):
        raise ConfigError(f"raytrain {command} needs model=CHECKPOINT.pt (a raytrain checkpoint, an Ultralytics "
                          "name such as yolo26n.pt, or an exported file).")
    return str(args["model"])


@dataclass
class Opened:
    """A command's model, opened once, and the config made from what it was trained with under the arguments."""

    cfg: Config
    model: Any  # the model on ``device`` (a DetectionModel or an exported file's runner)
    device: Any  # torch.device
    source: Any  # the :class:`raytrain.export.load.OpenedModel` (its ``meta`` is set for an exported file)


def open_for(command: str, args: dict[str, Any], *, trained_keys: tuple[str, ...] | None = None,
             defaults: dict[str, Any] | None = None) -> Opened:
    """Resolve ``model=`` (an Ultralytics name is fetched and converted once), open it, make the config.

    Unless the arguments say otherwise, the command runs with what the checkpoint was trained (or the file exported)
    with: all of it, or only ``trained_keys`` of it; ``defaults`` (e.g. the command's run-folder name) lie under both.
    """
    from raytrain.engine.devices import select_device
    from raytrain.export.load import open_model
    from raytrain.models.weights import resolve_weights

    model = resolve_weights(require_model(command, args), key="model")
    source = open_model(model)  # a checkpoint or an exported .onnx/OpenVINO/.torchscript; one-line errors
    trained = {k: v for k, v in source.trained.items() if trained_keys is None or k in trained_keys}
    cfg = make_config({**(defaults or {}), **trained}, {**args, "model": model}, where=["checkpoint", "arguments"])
    device = select_device(cfg.device)
    return Opened(cfg, source.model(device, cfg.imgsz), device, source)


@dataclass
class ValData:
    """The split a command scores on, checked against the model's classes."""

    spec: Any  # the resolved DataSpec
    dataset: Any
    loader: Any
    names: list[str]


def val_data(cfg: Config, nc: int) -> ValData:
    """``cfg.split`` of ``cfg.data`` letterboxed as validation does; its classes must be the model's ``nc``."""
    from raytrain.data import YoloDataset, build_dataloader, resolve_data, scan_split

    spec = resolve_data(cfg.data)
    dataset = YoloDataset(scan_split(spec, cfg.split), cfg.imgsz, augment=False, hyp=cfg)
    if len(dataset.names) != nc:
        raise ConfigError(f"data={cfg.data} has {len(dataset.names)} classes (single_cls={cfg.single_cls}) but "
                          f"model={cfg.model} predicts {nc}.")
    loader = build_dataloader(dataset, cfg.batch if cfg.batch > 0 else 16, shuffle=False,
                              workers=min(cfg.workers, os.cpu_count() or 1), seed=cfg.seed)
    return ValData(spec, dataset, loader, [dataset.names[i] for i in range(nc)])


def new_run_dir(cfg: Config) -> Path:
    """The command's run folder (``project/name``, ``name2``, ... unless ``exist_ok``), created."""
    from raytrain.files import next_run_dir

    save_dir = next_run_dir(Path(cfg.project).expanduser().resolve(), cfg.name, cfg.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    return save_dir


__all__ = ["Opened", "ValData", "new_run_dir", "open_for", "require_model", "take_positional", "val_data"]
