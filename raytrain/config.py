"""The one typed training config: defaults, safe parsing of ``key=value`` and YAML, validation, ``args.yaml``.

Argument names and defaults follow Ultralytics YOLO, so a CLI ``key=value``, a ``cfg=`` YAML file and a search
space all speak the same names. Values are parsed with ``yaml.safe_load`` (never ``eval``) and coerced to the
declared type; an unknown key fails with the closest valid names, a bad value fails naming the key, the value and
what is allowed, all before any compute starts.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import typing
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raytrain.export.spec import exported_format  # the names of exported files (imports no torch)
from raytrain.models.registry import DEFAULT_ARCH, check_arch, is_checkpoint, list_models
from raytrain.optimizers import NAMES, check_optimizer, optimizer_help
from raytrain.parsing import (  # re-exported: the names every caller knows from raytrain.config
    ConfigError,
    coerce_value,
    did_you_mean,
    parse_value,
    read_yaml_mapping,
    unknown_key_error,
)

LOGGER = logging.getLogger("raytrain")

OPTIMIZERS = NAMES  # every optimizer= value: the optimizer table's names and auto (raytrain.optimizers)
CACHE_MODES = (False, "ram", "disk")
WANDB_MODES = ("", "online", "offline", "disabled")
LOGGERS = ("wandb", "tensorboard", "mlflow", "comet", "clearml")  # experiment trackers (raytrain.tracking)
FITNESS_KEYS = ("mAP50-95", "mAP50", "precision", "recall", "f1")


def _arg(default: Any, help: str, group: str = "train") -> Any:
    """A config field with its one-line meaning and the group it belongs to (for ``--help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "group": group})
    return field(default=default, metadata={"help": help, "group": group})


@dataclass
class Config:
    """Every training, validation, prediction and Ray/W&B argument, with Ultralytics' names and defaults."""

    # --- what to train ---
    model: str = _arg(DEFAULT_ARCH, f"model: a name built from scratch ({', '.join(list_models())}), a "
                                    f"checkpoint .pt, or Ultralytics' weights by name (yolo26n.pt ...: downloaded and "
                                    f"converted once)")
    data: str = _arg("shapes", "dataset: YAML path, or built-in name (shapes offline; coco8.yaml, coco128.yaml, "
                     "coco.yaml, ... downloaded as in Ultralytics)")
    epochs: int = _arg(100, "number of epochs to train")
    time: float | None = _arg(None, "training time limit in hours; overrides epochs when set")
    patience: int = _arg(100, "stop after this many epochs without fitness improvement")
    batch: int = _arg(16, "global batch size, split across workers (-1 = AutoBatch on GPU)")
    imgsz: int = _arg(640, "train/val image size in pixels (rounded up to a multiple of 32)")
    device: str = _arg("", "'cpu', a GPU list like '0' or '0,1', 'mps', or '' for all local GPUs or the CPU")
    workers: int = _arg(8, "dataloader worker processes per training worker")
    project: str = _arg("runs/detect", "folder holding the run folders")
    name: str = _arg("train", "run folder name (train, train2, ... unless exist_ok)")
    exist_ok: bool = _arg(False, "reuse project/name instead of picking a fresh name")
    pretrained: bool | str = _arg(True, "load weights from model= when it is a checkpoint, or from this .pt path "
                                     "(or Ultralytics' weights by name, e.g. yolo26n.pt)")
    optimizer: str = _arg("auto", optimizer_help())
    verbose: bool = _arg(True, "print per-class tables and details")
    seed: int = _arg(0, "random seed; data, augmentation and init randomness derive from it")
    deterministic: bool = _arg(True, "use deterministic torch algorithms where available")
    single_cls: bool = _arg(False, "train as a single-class detector")
    cos_lr: bool = _arg(False, "cosine instead of linear learning-rate decay")
    close_mosaic: int = _arg(10, "turn mosaic off for the last N epochs (0 = never)")
    resume: bool | str = _arg(False, "resume the newest run in project (its last.pt written last, whatever its name), "
                                     "or the run of this last.pt or run folder")
    amp: bool = _arg(True, "mixed precision on CUDA (always off on CPU)")
    fraction: float = _arg(1.0, "fraction of the train split to use, in (0, 1]")
    freeze: int | list[int] | None = _arg(None, "freeze the first N model layers, or the layers in this list")
    cache: bool | str = _arg(False, "cache images: False, ram (decoded, resized) or disk (.npy beside images)")
    # --- hyperparameters ---
    lr0: float = _arg(0.01, "initial learning rate", "hyp")
    lrf: float = _arg(0.01, "final learning rate as a fraction of lr0, in (0, 1]", "hyp")
    momentum: float = _arg(0.937, "SGD momentum / Adam beta1", "hyp")
    weight_decay: float = _arg(0.0005, "weight decay (scaled by batch / nbs)", "hyp")
    warmup_epochs: float = _arg(3.0, "warmup epochs (fractions allowed)", "hyp")
    warmup_momentum: float = _arg(0.8, "initial momentum during warmup", "hyp")
    warmup_bias_lr: float = _arg(0.1, "initial bias learning rate during warmup", "hyp")
    nbs: int = _arg(64, "nominal batch size: gradients accumulate to it, weight decay scales by it", "hyp")
    box: float = _arg(7.5, "box (CIoU) loss gain", "hyp")
    cls: float = _arg(0.5, "classification (BCE) loss gain", "hyp")
    dfl: float = _arg(1.5, "distribution focal loss gain", "hyp")
    hsv_h: float = _arg(0.015, "HSV hue augmentation (fraction)", "hyp")
    hsv_s: float = _arg(0.7, "HSV saturation augmentation (fraction)", "hyp")
    hsv_v: float = _arg(0.4, "HSV value augmentation (fraction)", "hyp")
    degrees: float = _arg(0.0, "rotation augmentation (+/- degrees)", "hyp")
    translate: float = _arg(0.1, "translation augmentation (+/- fraction)", "hyp")
    scale: float = _arg(0.5, "scale augmentation (+/- gain)", "hyp")
    shear: float = _arg(0.0, "shear augmentation (+/- degrees)", "hyp")
    perspective: float = _arg(0.0, "perspective augmentation (+/- fraction, 0-0.001)", "hyp")
    flipud: float = _arg(0.0, "vertical flip probability", "hyp")
    fliplr: float = _arg(0.5, "horizontal flip probability", "hyp")
    mosaic: float = _arg(1.0, "4-image mosaic probability", "hyp")
    mixup: float = _arg(0.0, "mixup probability", "hyp")
    schedule: str | None = _arg(None, "replay per-epoch hyperparameters from this YAML file (a PBT experiment's "
                                      "best_schedule.yaml); they override the values above from each listed epoch",
                                "hyp")
    # --- validation, saving, prediction ---
    val: bool = _arg(True, "validate every epoch (False: only after the last)", "val")
    split: str = _arg("val", "dataset split for raytrain val: val, test or train", "val")
    save_json: bool = _arg(False, "raytrain val: also write COCO-format predictions.json", "val")
    save_period: int = _arg(-1, "also save weights/epochN.pt every N epochs (-1 = off)", "val")
    plots: bool = _arg(True, "write plots (results.png, ...)", "val")
    conf: float | None = _arg(None, "confidence threshold (default 0.001 for val, 0.25 for predict)", "val")
    iou: float = _arg(0.7, "NMS IoU threshold", "val")
    max_det: int = _arg(300, "maximum detections per image", "val")
    nms: bool | None = _arg(None, "unset: NMS on the one-to-many head (every family); False: YOLO26's NMS-free "
                                  "one-to-one head, top max_det; True: NMS (embedded in exports)", "val")
    fitness: str = _arg("mAP50-95", "metric that picks best.pt and early stopping: mAP50-95, mAP50, ...", "val")
    fitness_weights: dict[str, float] | None = _arg(None, "your own fitness: weights of mAP50-95, mAP50, precision, "
                                                          "recall, f1 (e.g. {mAP50-95: 0.9, mAP50: 0.1}); replaces "
                                                          "fitness for best.pt, patience and tune", "val")
    source: str = _arg("", "raytrain predict: image file or folder", "val")
    # --- Ray ---
    num_workers: int | None = _arg(None, "training workers (default: one per GPU in device, or 1 on CPU)", "ray")
    cpus_per_worker: float = _arg(1.0, "CPUs reserved for each training worker", "ray")
    gpu_share: float = _arg(1.0, "share of a GPU each GPU worker reserves, in (0, 1]: 0.25 packs four on one GPU "
                                 "(one worker only); AutoBatch sizes the batch to the share", "ray")
    worker_resources: dict[str, float] | None = _arg(None, "other Ray resources each training worker reserves, e.g. "
                                                           "{memory: 8e9} (bytes) or a custom one such as {a10g: 1}; "
                                                           "workers go only to nodes that offer them", "ray")
    storage: str | None = _arg(None, "Ray storage: shared path or s3:// / gs:// URI (default: project folder)", "ray")
    max_failures: int = _arg(3, "worker-group restarts from the last checkpoint before the run fails", "ray")
    address: str | None = _arg(None, "Ray cluster address (default: RAY_ADDRESS, else start Ray locally)", "ray")
    # --- experiment trackers ---
    loggers: list[str] = _arg(["wandb", "tensorboard"], "trackers: wandb, tensorboard, mlflow, comet, clearml, or none",
                              "tracking")
    wandb_mode: str = _arg("", "online, offline or disabled ('' = $WANDB_MODE when set, else online with credentials, "
                               "else offline)", "tracking")
    wandb_project: str | None = _arg(None, "W&B project (default: the project folder's name)", "tracking")
    wandb_entity: str | None = _arg(None, "W&B entity (team or user)", "tracking")
    mlflow_uri: str | None = _arg(None, "MLflow tracking URI (default: local store <project>/mlflow.db)", "tracking")

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict (YAML/JSON/checkpoint-safe) of every field."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **overrides: Any) -> Config:
        """A validated copy with ``overrides`` parsed like ``key=value`` arguments: ``dataclasses.replace`` (the
        other fields are carried as they are, already typed and checked) and one validation."""
        for key in overrides:
            if key not in FIELDS:
                raise unknown_key_error(key, FIELDS, "")
        typed = {key: coerce_value(key, _parse_for(key, v), _HINTS[key]) for key, v in overrides.items()}
        # Lists and mappings (loggers, freeze, fitness_weights) are copied: the two configs must not share them.
        owned = {f: copy.deepcopy(getattr(self, f)) for f in FIELDS
                 if f not in typed and isinstance(getattr(self, f), (list, dict))}
        return dataclasses.replace(self, **owned, **typed)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as YAML (``args.yaml``); :func:`load_config` reads it back unchanged."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}.")


def _finite(cfg: Config) -> None:
    for name in FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} is not allowed: it must be a finite number.")


def validate(cfg: Config) -> None:
    """Check ranges and choices; normalise a few values (imgsz to a multiple of 32, cache=True to 'ram')."""
    _finite(cfg)
    _require(cfg.epochs >= 1, "epochs", cfg.epochs, "use a positive number of epochs")
    _require(cfg.time is None or cfg.time > 0, "time", cfg.time, "use a positive number of hours, or None")
    _require(cfg.patience >= 1, "patience", cfg.patience, "use a positive number of epochs")
    _require(cfg.batch == -1 or cfg.batch >= 1, "batch", cfg.batch, "use a positive batch size, or -1 for AutoBatch")
    _require(cfg.imgsz >= 32, "imgsz", cfg.imgsz, "use at least 32 pixels")
    if cfg.imgsz % 32:
        rounded = math.ceil(cfg.imgsz / 32) * 32
        LOGGER.warning("imgsz=%d is not a multiple of the max stride 32; using imgsz=%d.", cfg.imgsz, rounded)
        cfg.imgsz = rounded
    _require(cfg.workers >= 0, "workers", cfg.workers, "use 0 or more dataloader workers")
    cfg.optimizer = check_optimizer(cfg.optimizer)
    _require(cfg.close_mosaic >= 0, "close_mosaic", cfg.close_mosaic, "use 0 or more epochs")
    _require(0 < cfg.fraction <= 1, "fraction", cfg.fraction, "use a fraction in (0, 1]")
    if cfg.cache is True:
        cfg.cache = "ram"
    if isinstance(cfg.cache, str):
        cfg.cache = cfg.cache.lower()
        if cfg.cache in ("false", "none", ""):
            cfg.cache = False
    _require(cfg.cache in CACHE_MODES, "cache", cfg.cache, "use False, ram or disk")
    if isinstance(cfg.freeze, int):
        _require(cfg.freeze >= 0, "freeze", cfg.freeze, "use 0 or more layers, or a list of layer indices")
    elif isinstance(cfg.freeze, list):
        _require(all(i >= 0 for i in cfg.freeze), "freeze", cfg.freeze, "layer indices must be 0 or more")
    _require(cfg.lr0 > 0, "lr0", cfg.lr0, "use a positive learning rate")
    _require(0 < cfg.lrf <= 1, "lrf", cfg.lrf, "use a fraction in (0, 1]")
    _require(0 <= cfg.momentum < 1, "momentum", cfg.momentum, "use a value in [0, 1)")
    _require(0 <= cfg.warmup_momentum < 1, "warmup_momentum", cfg.warmup_momentum, "use a value in [0, 1)")
    for key in ("weight_decay", "warmup_epochs", "warmup_bias_lr", "box", "cls", "dfl", "degrees", "shear"):
        _require(getattr(cfg, key) >= 0, key, getattr(cfg, key), "use 0 or more")
    _require(cfg.nbs >= 1, "nbs", cfg.nbs, "use a positive nominal batch size")
    for key in ("hsv_h", "hsv_s", "hsv_v", "translate", "flipud", "fliplr", "mosaic", "mixup"):
        _require(0 <= getattr(cfg, key) <= 1, key, getattr(cfg, key), "use a value in [0, 1]")
    _require(0 <= cfg.scale < 1, "scale", cfg.scale, "use a gain in [0, 1)")
    _require(0 <= cfg.perspective <= 0.001, "perspective", cfg.perspective, "use a value in [0, 0.001]")
    _require(cfg.split in ("train", "val", "test"), "split", cfg.split, "use train, val or test")
    _require(cfg.conf is None or 0 <= cfg.conf <= 1, "conf", cfg.conf, "use a threshold in [0, 1]")
    _require(0 < cfg.iou <= 1, "iou", cfg.iou, "use a threshold in (0, 1]")
    _require(cfg.max_det >= 1, "max_det", cfg.max_det, "use 1 or more detections")
    _require(cfg.fitness in FITNESS_KEYS, "fitness", cfg.fitness, f"choose one of {', '.join(FITNESS_KEYS)}")
    if cfg.fitness_weights is not None:
        _check_fitness_weights(cfg.fitness_weights)
    _require(cfg.save_period == -1 or cfg.save_period >= 1, "save_period", cfg.save_period, "use -1 (off) or >= 1")
    _require(cfg.num_workers is None or cfg.num_workers >= 1, "num_workers", cfg.num_workers, "use 1 or more")
    _require(cfg.cpus_per_worker > 0, "cpus_per_worker", cfg.cpus_per_worker, "use a positive number of CPUs")
    _require(0 < cfg.gpu_share <= 1, "gpu_share", cfg.gpu_share,
             "use a share of one GPU in (0, 1] (a worker trains on one GPU: for more GPUs, use more workers)")
    _require(cfg.gpu_share == 1 or (cfg.num_workers or 1) == 1, "gpu_share", cfg.gpu_share,
             "a GPU share below 1 needs num_workers=1: Ray could place several data-parallel workers on one GPU, "
             "which NCCL refuses")
    for key, value in (cfg.worker_resources or {}).items():
        _require(key not in ("CPU", "GPU") and math.isfinite(value) and value > 0, "worker_resources",
                 dict(cfg.worker_resources or {}), f"{key}: use a positive amount of a resource other than CPU and GPU "
                 f"(those are cpus_per_worker, device and gpu_share)")
    _require(cfg.max_failures >= -1, "max_failures", cfg.max_failures, "use -1 (retry forever), 0 or more")
    _require(cfg.wandb_mode in WANDB_MODES, "wandb_mode", cfg.wandb_mode, "use online, offline or disabled")
    cfg.loggers = _loggers(cfg.loggers)
    # args.yaml and checkpoints keep the config: a password in the URI would be copied into them.
    _require(not (cfg.mlflow_uri and urllib.parse.urlsplit(cfg.mlflow_uri).password), "mlflow_uri", "<hidden>",
             "no password in the URI; MLflow reads MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN")
    for key in ("model", "data", "project", "name"):
        _require(bool(getattr(cfg, key)), key, getattr(cfg, key), "it must not be empty")
    if not is_checkpoint(cfg.model) and exported_format(cfg.model) is None:  # exported files: val/predict take them
        check_arch(cfg.model)  # a did-you-mean line on the driver, before Ray starts
    if cfg.schedule:
        _check_schedule(cfg)


def _check_schedule(cfg: Config) -> None:
    """``schedule=``: made absolute (runs start elsewhere), read, and each listed epoch's values checked as config."""
    from raytrain.replay import read_schedule

    cfg.schedule = str(Path(cfg.schedule).expanduser().resolve())
    per_epoch = read_schedule(cfg.schedule)
    scheduled = sorted({k for values in per_epoch.values() for k in values} & {"lr0", "momentum"})
    _require(cfg.optimizer != "auto" or not scheduled, "schedule", cfg.schedule,
             f"it schedules {' and '.join(scheduled)}, which optimizer=auto would ignore; set an optimizer "
             f"(e.g. the one the schedule was found with)")
    for epoch, values in per_epoch.items():
        try:
            dataclasses.replace(cfg, schedule=None, **values)
        except ConfigError as e:
            raise ConfigError(f"schedule={cfg.schedule}: epochs.{epoch}: {e}") from None


def _check_fitness_weights(weights: dict[str, float]) -> None:
    """``fitness_weights``: known metric names, finite weights >= 0, not all 0 (a fitness of 0 ranks nothing)."""
    for key, value in weights.items():
        _require(key in FITNESS_KEYS, "fitness_weights", dict(weights),
                 f"{key!r} is not a metric; weight any of {', '.join(FITNESS_KEYS)}{did_you_mean(key, FITNESS_KEYS)}")
        _require(math.isfinite(value) and value >= 0, "fitness_weights", dict(weights),
                 f"the weight of {key} must be a finite number >= 0")
    _require(sum(weights.values()) > 0, "fitness_weights", dict(weights), "give at least one weight above 0")


def _loggers(names: list[str]) -> list[str]:
    """Tracker names, lower case, each once; ``none`` (or an empty list) selects no tracker."""
    names = [str(n).strip().lower() for n in names]
    if names in (["none"], ["false"]):
        return []
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"loggers={name!r} is not a logger: choose from {', '.join(LOGGERS)}, or none."
                              f"{did_you_mean(name, LOGGERS)}")
    return list(dict.fromkeys(names))


def merge_args(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``base`` updated with ``overrides``, rejecting unknown keys with suggestions."""
    merged = dict(base)
    for key, value in overrides.items():
        if key not in FIELDS:
            raise unknown_key_error(key, FIELDS, where)
        merged[key] = value
    return merged


def make_config(*layers: Mapping[str, Any], where: Iterable[str] = ()) -> Config:
    """Build a validated Config from layers of raw values, later layers winning (defaults < file < CLI)."""
    names = list(where)
    values: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        values = merge_args(values, layer, names[i] if i < len(names) else "")
    typed = {key: coerce_value(key, _parse_for(key, v), _HINTS[key]) for key, v in values.items()}
    return Config(**typed)


def _parse_for(key: str, value: Any) -> Any:
    """Parse text for a field: text fields keep text as typed (name=true stays 'true'), others parse as YAML."""
    if not isinstance(value, str):
        return value
    hint = _HINTS[key]
    if hint is str:
        return value
    if hint == (str | None):
        return None if value.lower() in ("none", "null") else value
    return parse_value(value)


def read_yaml_args(path: str | Path) -> dict[str, Any]:
    """Read a ``cfg=`` YAML file of arguments; a missing file or a non-mapping is a clear error."""
    return read_yaml_mapping(path, label=f"cfg={Path(path).expanduser()}", expected="a mapping of argument: value")


def load_config(path: str | Path, **overrides: Any) -> Config:
    """Read an ``args.yaml`` / ``cfg=`` file, with optional overrides on top."""
    return make_config(read_yaml_args(path), overrides, where=[str(path), "overrides"])


def parse_cli_args(tokens: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` tokens into raw values; ``cfg=file.yaml`` layers the file below the other tokens.

    Returns the merged raw mapping (file values first, CLI values winning); keys are checked by the caller.
    """
    from_file: dict[str, Any] = {}
    from_cli: dict[str, Any] = {}
    for token in tokens:
        if "=" not in token:
            raise ConfigError(f"'{token}' is not a key=value argument. Example: raytrain fit epochs=10 imgsz=320")
        key, _, value = token.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise ConfigError(f"'{token}' has no key before '='.")
        if key == "cfg":
            from_file = read_yaml_args(value)
            continue
        from_cli[key] = parse_value(value.strip())
    return {**from_file, **from_cli}


def help_table(keys: Iterable[str] | None = None, defaults: Mapping[str, Any] | None = None) -> str:
    """Aligned ``key=default  meaning`` lines for ``--help``; ``defaults``: a subcommand's own (``name=val``)."""
    chosen = list(keys) if keys is not None else list(FIELDS)
    defaults = {**Config().to_dict(), **(defaults or {})}
    rows = [(f"{k}={defaults[k]!s}", FIELDS[k].metadata["help"]) for k in chosen]
    width = max(len(r[0]) for r in rows) + 2
    return "\n".join(f"  {a.ljust(width)}{b}" for a, b in rows)


def keys_in_groups(*groups: str) -> list[str]:
    """Field names belonging to the given help groups, in declaration order."""
    return [name for name, f in FIELDS.items() if f.metadata["group"] in groups]
