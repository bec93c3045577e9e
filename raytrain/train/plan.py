"""Driver side of one training run: resolve everything once, into a :class:`RunPlan`, before any worker starts.

Arguments, devices and the batch split, the dataset (resolved or generated, and scanned), the files the run will load
(``model=``, ``pretrained=``, ``resume=``), the callbacks, storage, the run folder with ``args.yaml`` and ``run.json``:
each is resolved or checked here, exactly once, and handed down in the plan. Paths become absolute, because Ray
workers run in working directories of their own. ``raytrain fit`` and every ``raytrain tune`` trial prepare their runs
here, so a trial's folder is an ordinary run folder that ``raytrain fit resume=<trial>/weights/last.pt`` continues.

Resume: the full training state lives in Ray's checkpoints under ``storage`` (default ``<project>/.ray``);
``run.json`` names the run's Ray run and storage, so ``resume=`` reuses both and Ray hands its latest checkpoint back.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from raytrain.config import FIELDS, Config, ConfigError, load_config
from raytrain.engine.devices import DevicePlan, per_worker_batch, plan_devices
from raytrain.files import atomic_write, next_run_dir
from raytrain.models.registry import is_checkpoint
from raytrain.optimizers import OptimizerChoice
from raytrain.train.optimizer import plan_optimizer

LOGGER = logging.getLogger("raytrain")
RUN_FILE = "run.json"  # Ray run name, storage, tracker ids and the resolved optimizer of a run, read by resume
FATAL_FILE = "fatal_error.txt"  # in a run folder: the one-line reason a run ended without a retry
# Arguments a resumed run may change; everything else comes from the run's args.yaml.
RESUME_OVERRIDES = ("epochs", "time", "patience", "device", "num_workers", "cpus_per_worker", "workers",
                    "max_failures", "address", "wandb_mode", "verbose", "plots", "save_period")


@dataclass(frozen=True)
class RunPlan:
    """A resolved, ready-to-start run: everything the trainer and its workers need, decided on the driver.

    Attributes:
        cfg: the resolved config (absolute paths, dataset resolved, batch checked); saved as ``args.yaml``.
        save_dir: the run folder.
        run_name: Ray Train run name; with ``storage_path`` it finds the run's checkpoints on resume.
        storage_path: absolute path or URI where Ray keeps the run's checkpoints.
        devices: how many workers, on what.
        data: the resolved dataset (:class:`raytrain.data.DataSpec`).
        tracking: who the run is for the trackers (:class:`raytrain.tracking.TrackerInfo`; ids stable across
            restarts and resumes).
        callbacks: checked user callbacks, ``{event: [functions]}``.
        resumed: whether this continues an earlier run.
        resume_state: a state folder to resume from when Ray Train has no snapshot of the run (a tune trial that
            trained in its own process keeps its states as Tune checkpoints).
        optimizer: what the run trains with (:class:`raytrain.optimizers.OptimizerChoice`: ``auto`` resolved, its
            parameter groups), planned once here and kept in ``run.json``, from which a resume takes it back.
    """

    cfg: Config
    save_dir: Path
    run_name: str
    storage_path: str
    devices: DevicePlan
    data: Any
    tracking: Any
    callbacks: dict[str, list[Callable]] = field(default_factory=dict)
    resumed: bool = False
    resume_state: str | None = None
    optimizer: Any = None


# ----------------------------------------------------------------------------------------------------- resolving
def available_gpus() -> int:
    """GPUs the connected Ray cluster can schedule, counting those its autoscaler can add (a fresh cluster has no GPU
    node until a run asks for one); without Ray, the CUDA devices visible to this process."""
    import ray

    if ray.is_initialized():
        from raytrain.cluster.nodes import max_gpus, read_cluster_shape

        return max_gpus(read_cluster_shape())
    import torch

    return torch.cuda.device_count()


def _absolute_file(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def _check_checkpoints(cfg: Config, nc: int, resume_ckpt: Mapping[str, Any] | None = None) -> None:
    """Open every checkpoint the run will load, here on the driver, so a bad file fails once, before Ray starts;
    messages name each file as the user gave it.

    ``model=`` and ``pretrained=`` may hold another class count (matching tensors transfer, as in Ultralytics'
    ``model=yolov8n.pt data=custom.yaml``); a resumed run must have the dataset's.
    """
    from raytrain.models.checkpoint import inspect_checkpoint

    arch = cfg.model
    if is_checkpoint(cfg.model):
        arch = inspect_checkpoint(cfg.model, key="model")["arch"]
    check_freeze(cfg.freeze, arch)
    if isinstance(cfg.pretrained, str):
        inspect_checkpoint(cfg.pretrained, key="pretrained")
    if resume_ckpt is not None and int(resume_ckpt["nc"]) != nc:
        raise ConfigError(f"resume={cfg.resume} predicts {resume_ckpt['nc']} classes but the dataset has {nc}: "
                          f"resume with the dataset the run was trained on.")
    if isinstance(cfg.resume, str) and resume_ckpt is None:
        inspect_checkpoint(cfg.resume, key="resume", nc=nc)


def check_freeze(freeze: int | list[int] | None, arch: str) -> None:
    """``freeze=`` against the model's layers: freezing every layer would leave nothing to train (a run that fails at
    its first step, on every retry), and an index past the last layer means a mistake."""
    from raytrain.models.registry import family_of

    layers = len(family_of(arch).layers)
    detect = layers - 1
    if isinstance(freeze, int) and freeze >= layers:
        raise ConfigError(f"freeze={freeze} would freeze all {layers} layers of {arch}: nothing would train. Use at "
                          f"most freeze={detect} (everything but the Detect layer, {detect}).")
    if isinstance(freeze, list):
        beyond = [i for i in freeze if i >= layers]
        if beyond:
            raise ConfigError(f"freeze={freeze}: {arch} has layers 0..{detect}; {beyond} do not exist.")
        if set(range(layers)) <= set(freeze):
            raise ConfigError(f"freeze={freeze} freezes every layer of {arch}: nothing would train.")


def resolve_config(cfg: Config, *, gpus_available: int | None = None) -> Config:
    """``cfg`` made ready for Ray workers: absolute paths, dataset resolved (generated/downloaded) and scanned,
    storage absolute, the batch checked against the workers (``batch=-1`` off CUDA becomes 16).

    Tune calls this once for its base config; trial configs made with ``cfg.replace(...)`` keep the paths.

    Raises:
        ConfigError: anything that would fail later (missing dataset or weights, batch not divisible, ...).
    """
    return _resolve(cfg, available_gpus() if gpus_available is None else gpus_available)[0]


def _resolve(cfg: Config, gpus_available: int, *, check: bool = True,
             resume_ckpt: Mapping[str, Any] | None = None) -> tuple[Config, DevicePlan, Any]:
    """The resolved config, its device plan and dataset; ``check=False`` for a config resolved before (a tune
    trial's: the experiment scanned its dataset and opened its checkpoints once, on the driver; a file broken since
    fails the trial once, when it loads). ``resume_ckpt``: the ``resume=`` checkpoint, opened by the resume plan."""
    from raytrain.cluster.storage import resolve_storage
    from raytrain.data import resolve_data, scan_split
    from raytrain.models.weights import ultralytics_weights
    from raytrain.tracking import check_loggers

    check_loggers(cfg.loggers)

    project = Path(cfg.project).expanduser().resolve()
    changes: dict[str, Any] = {"project": str(project), "storage": resolve_storage(cfg.storage, project / ".ray")}
    # model=yolo26n.pt, pretrained=yolo11s.pt: fetched and converted once, here on the driver
    weights = ultralytics_weights({"model": cfg.model, "pretrained": cfg.pretrained})
    if is_checkpoint(cfg.model):
        changes["model"] = _absolute_file(weights.get("model", cfg.model))
    if isinstance(cfg.pretrained, str):
        changes["pretrained"] = _absolute_file(weights.get("pretrained", cfg.pretrained))
    if isinstance(cfg.resume, str):
        changes["resume"] = _absolute_file(cfg.resume)
    devices = plan_devices(cfg.device, cfg.num_workers, gpus_available)
    batch = cfg.batch
    if batch == -1 and devices.accelerator != "cuda":
        LOGGER.info("batch=-1 (AutoBatch) needs CUDA; training on %s with batch=16.", devices.accelerator)
        batch = changes["batch"] = 16
    if batch != -1:
        per_worker_batch(batch, devices.num_workers)
    try:
        spec = resolve_data(cfg.data)
    except FileNotFoundError as e:
        raise ConfigError(f"data={cfg.data}: {e}") from e
    changes["data"] = str(spec.yaml_file)
    if check:
        _check_checkpoints(cfg.replace(**weights), nc=1 if cfg.single_cls else spec.nc, resume_ckpt=resume_ckpt)
    for split in ("train", "val") if check else ():
        index = scan_split(spec, split)  # also fills the label cache the workers read
        if not index.records:
            raise ConfigError(f"data={cfg.data}: the {split} split has no usable images ({len(index.skipped)} "
                              f"skipped). Run 'raytrain check data={cfg.data}' for details.")
    return cfg.replace(**changes), devices, spec


def tracker_run_id(save_dir: Path, run_name: str) -> str:
    """A stable tracker run id for a run, so a restarted or resumed run continues the same tracker run."""
    import hashlib

    return hashlib.sha1(f"{save_dir}|{run_name}".encode()).hexdigest()[:16]


def trial_run_id(experiment: str, trial_id: str) -> str:
    """The tracker run id of a tune trial: stable, so a retried or resumed trial continues its tracker run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{experiment}-{trial_id}")[:64]


TRACKER_IDENTITY = ("group", "name", "run_id", "params", "parent_run_id", "mlflow_uri")  # run.json keeps these


def _tracking(cfg: Config, save_dir: Path, run_name: str, given: Mapping[str, Any] | None) -> Any:
    """The run's :class:`raytrain.tracking.TrackerInfo`; ``given`` holds a tune trial's (or a resumed run's) ids."""
    from raytrain.tracking import TrackerInfo, resolve_wandb_mode

    given = {k: v for k, v in (given or {}).items() if v is not None}
    return TrackerInfo(save_dir=save_dir, name=given.get("name") or save_dir.name,
                       run_id=given.get("run_id") or tracker_run_id(save_dir, run_name),
                       project=cfg.wandb_project or Path(cfg.project).name, group=given.get("group"),
                       params=dict(given.get("params") or {}), wandb_mode=resolve_wandb_mode(cfg.wandb_mode),
                       wandb_entity=cfg.wandb_entity, mlflow_uri=given.get("mlflow_uri") or cfg.mlflow_uri,
                       parent_run_id=given.get("parent_run_id"))


def _write_run_file(save_dir: Path, run_name: str, storage_path: str, tracking: Any, states: str | None,
                    optimizer: Any) -> None:
    identity = {k: getattr(tracking, k) for k in TRACKER_IDENTITY}
    record = {"ray_run_name": run_name, "storage_path": storage_path, "tracking": identity,
              "optimizer": optimizer.to_dict()}
    if states:
        record["states"] = states
    atomic_write(save_dir / RUN_FILE, json.dumps(record, indent=1))


def latest_state(states: str | None) -> str | None:
    """The newest ``checkpoint_*`` folder holding a training state under a (local) checkpoint folder, or None."""
    from raytrain.engine.state import STATE_FILE

    if not states or "://" in states:
        return None
    found = sorted(Path(states).glob(f"checkpoint_*/{STATE_FILE}"), key=lambda p: p.parent.name)
    return str(found[-1].parent) if found else None


def fatal_error(save_dir: Path) -> str | None:
    """The error no retry could fix that a run in ``save_dir`` ended with (its one-line message), or None."""
    path = Path(save_dir) / FATAL_FILE
    return path.read_text().strip() if path.is_file() else None


# ------------------------------------------------------------------------------------------------------ planning
def prepare_run(cfg: Config, *, gpus_available: int | None = None, callbacks: dict[str, list[Callable]] | None = None,
                save_dir: Path | None = None, run_name: str | None = None, storage_path: str | None = None,
                tracking: Mapping[str, Any] | None = None, resolved: bool = False,
                states: str | None = None) -> RunPlan:
    """Resolve ``cfg``, pick the run folder and Ray run name, write ``args.yaml`` and ``run.json``: a :class:`RunPlan`.

    A new run gets a fresh folder (``train``, ``train2``, ... unless ``exist_ok``) and a fresh Ray run name (with a
    timestamp, so even ``exist_ok`` never resumes an old Ray run by accident); ``resume`` reuses both. A tune trial
    passes its own ``save_dir``, ``run_name`` (stable across retries, so Ray finds its snapshot), ``storage_path``
    and ``tracking`` ids (group, name, run_id).

    Args:
        cfg: a validated config.
        gpus_available: GPUs Ray can schedule; default: asked from the connected Ray, or this machine.
        callbacks: user callbacks, already checked (:func:`raytrain.engine.callbacks.check_callbacks`).
        save_dir, run_name, storage_path: a tune trial's fixed names (see above).
        tracking: a tune trial's tracker identity: ``group``, ``name``, ``run_id``, ``params`` (the searched values),
            ``parent_run_id`` and ``mlflow_uri`` (from :func:`raytrain.tracking.start_experiment`).
        resolved: ``cfg`` comes from :func:`resolve_config` already (tune trials): the dataset is not scanned again
            nor the checkpoints opened.
        states: where the run's full training states are kept besides Ray Train's snapshot (a tune trial's Tune
            checkpoint folder); ``run.json`` records it for ``raytrain fit resume=``.
    """
    gpus = available_gpus() if gpus_available is None else gpus_available
    if cfg.resume:
        return _resume_plan(cfg, gpus, callbacks or {})
    cfg, devices, spec = _resolve(cfg, gpus, check=not resolved)
    optimizer = plan_optimizer(cfg, spec)
    LOGGER.info("Optimizer: %s", optimizer.describe())
    save_dir = Path(save_dir) if save_dir is not None else next_run_dir(Path(cfg.project), cfg.name, cfg.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    run_name = run_name or f"{save_dir.name}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    storage_path = storage_path or str(cfg.storage)
    tracking = _tracking(cfg, save_dir, run_name, tracking)
    cfg.save(save_dir / "args.yaml")
    _write_run_file(save_dir, run_name, storage_path, tracking, states, optimizer)
    return RunPlan(cfg, save_dir, run_name, storage_path, devices, spec, tracking, callbacks or {},
                   optimizer=optimizer)


def _find_resume(cfg: Config) -> Path:
    """The ``last.pt`` to resume: the given path (file or run folder), or the newest in ``project``."""
    if isinstance(cfg.resume, str):
        path = Path(cfg.resume).expanduser().resolve()
        path = path / "weights" / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"resume={cfg.resume}: no such checkpoint.")
        return path
    candidates = sorted(Path(cfg.project).expanduser().resolve().glob("*/weights/last.pt"),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"resume=True: no run with weights/last.pt in project={cfg.project}. Pass "
                          f"resume=path/to/last.pt.")
    return candidates[-1]


def _good_weights(last: Path) -> tuple[Path, dict[str, Any]]:
    """``last`` checked (:func:`inspect_checkpoint`), or, when raytrain's own ``last.pt`` is damaged (e.g. the disk
    filled up while it was written), the newest good ``epochN.pt`` / ``best.pt`` beside it, with a warning."""
    from raytrain.models.checkpoint import CheckpointError, inspect_checkpoint

    try:
        return last, inspect_checkpoint(last, key="resume")
    except CheckpointError as damaged:
        if "damaged raytrain checkpoint" not in str(damaged):
            raise
        error = damaged
    candidates = sorted(last.parent.glob("epoch*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in [*candidates, last.parent / "best.pt"]:
        try:
            ckpt = inspect_checkpoint(candidate, key="resume")
        except CheckpointError:
            continue
        LOGGER.warning("%s Resuming from the previous good checkpoint instead: %s (epoch %d).", error, candidate,
                       ckpt["epoch"])
        return candidate, ckpt
    raise error


def refuse_dropped_keys(cfg: Config, run: Config) -> None:
    """A resumed run continues with its own ``args.yaml``: any argument given with ``resume=`` besides
    :data:`RESUME_OVERRIDES` (and ``project``, which finds the run for ``resume=True``) that differs from the run's
    own value would be dropped, so it is refused, naming it.

    Raises:
        ConfigError: naming the first such argument, the run's value and what may change.
    """
    defaults = Config()
    for key in FIELDS:
        if key in (*RESUME_OVERRIDES, "resume", "project"):
            continue
        given = getattr(cfg, key)
        if given == getattr(defaults, key) or _same_value(key, given, getattr(run, key)):
            continue
        raise ConfigError(f"resume: {key}={given} is not applied to a resumed run, which continues with its own "
                          f"args.yaml ({key}={getattr(run, key)}). Resume without it, or start a new run "
                          f"(pretrained=<its last.pt> {key}={given}). A resume may change: "
                          f"{', '.join(RESUME_OVERRIDES)}.")


def _same_value(key: str, given: Any, run_value: Any) -> bool:
    """Equal, or two spellings of one file (the run's args.yaml holds absolute paths; ``data=coco8.yaml`` is the
    run's ``<datasets>/coco8/data.yaml``: the dataset is on disk already, so resolving it downloads nothing)."""
    if given == run_value:
        return True
    if not (isinstance(given, str) and isinstance(run_value, str) and given and run_value):
        return False
    if Path(given).expanduser().resolve() == Path(run_value).expanduser().resolve():
        return True
    if key == "data" and Path(run_value).is_file():
        from raytrain.data import DatasetError, resolve_data

        try:
            return resolve_data(given).yaml_file == Path(run_value).resolve()
        except DatasetError:
            return False
    return False


def _resume_plan(cfg: Config, gpus_available: int, callbacks: dict[str, list[Callable]]) -> RunPlan:
    last, ckpt = _good_weights(_find_resume(cfg))
    save_dir = last.parents[1]
    args_file, run_file = save_dir / "args.yaml", save_dir / RUN_FILE
    if not args_file.is_file() or not run_file.is_file():
        raise ConfigError(f"resume={last}: {save_dir} is not a raytrain run folder (args.yaml, {RUN_FILE}).")
    asked = load_config(args_file)
    refuse_dropped_keys(cfg, asked)
    defaults = Config()
    changed = {k: getattr(cfg, k) for k in RESUME_OVERRIDES if getattr(cfg, k) != getattr(defaults, k)}
    resumed = asked.replace(**changed, resume=str(last))
    epoch = int(ckpt["epoch"])
    if epoch >= resumed.epochs and not resumed.time:
        raise ConfigError(f"resume={last}: that run already trained {epoch}/{resumed.epochs} epochs; nothing to "
                          f"resume. Pass epochs=N (> {epoch}) to train further, or start a new run with "
                          f"pretrained={last}.")
    info = json.loads(run_file.read_text())
    LOGGER.info("Resuming %s after epoch %d (Ray run %s).", save_dir, epoch, info["ray_run_name"])
    resumed, devices, spec = _resolve(resumed, gpus_available, resume_ckpt=ckpt)
    # The optimizer the run was planned with, not a second guess (auto on a dataset that may have changed since).
    optimizer = OptimizerChoice.from_dict(info["optimizer"]) if "optimizer" in info else plan_optimizer(resumed, spec)
    info["optimizer"] = optimizer.to_dict()
    LOGGER.info("Optimizer: %s", optimizer.describe())
    # args.yaml: what the run trains with (e.g. more epochs), as asked, so 'raytrain fit cfg=args.yaml' repeats the
    # run; that this session resumed (from which checkpoint, after which epoch) is a fact of the run: run.json.
    resumed.replace(resume=False).save(args_file)
    info["resumes"] = [*info.get("resumes", []), {"from": str(last), "after_epoch": epoch,
                                                  "date": datetime.now().isoformat(timespec="seconds")}]
    atomic_write(run_file, json.dumps(info, indent=1))
    tracking = _tracking(resumed, save_dir, info["ray_run_name"], info.get("tracking"))
    state = latest_state(info.get("states"))
    if state:
        LOGGER.info("Its full training state (optimizer included) comes from %s unless Ray Train holds a newer one.",
                    state)
    return RunPlan(resumed, save_dir, info["ray_run_name"], info["storage_path"], devices, spec, tracking, callbacks,
                   resumed=True, resume_state=state, optimizer=optimizer)
