"""``raytrain SUBCOMMAND key=value ...``: the only place that reads argv and the environment.

Each subcommand is a ``Command`` whose handler is imported lazily, so ``raytrain --help`` is instant and a
subcommand only pays for the libraries it uses. Handlers take the positional arguments and the raw ``key=value``
mapping (``cfg=file.yaml`` already layered under the CLI values) and return an exit code.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raytrain import __version__
from raytrain.config import FIELDS, ConfigError, help_table, keys_in_groups, parse_cli_args, unknown_key_error
from raytrain.export.spec import BENCHMARK_KEYS, EXPORT_KEYS  # imports no torch
from raytrain.tuning.space import CLI_KEYS as TUNE_KEYS  # what load_space accepts as an override (imports no Ray)

LOGGER = logging.getLogger("raytrain")


def _tune_settings() -> str:
    """The tune settings and their defaults, from the space reader's own list and TuneSpec (no copy to drift)."""
    import dataclasses
    import textwrap

    from raytrain.tuning.space import SETTINGS, TuneSpec

    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(TuneSpec) if f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING}
    # A non-breaking space keeps each "key [default]" on one line when wrapped.
    def item(key: str) -> str:
        value = defaults.get(key)
        if value is None or value is False or (isinstance(value, (str, dict, list)) and not value):
            return key
        return f"{key}\u00a0[{value:g}]" if isinstance(value, float) else f"{key}\u00a0[{value}]"

    shown = [item(k) for k in SETTINGS if k not in ("points_to_evaluate", "resume", "dry_run")]
    text = textwrap.fill("  ".join(shown), width=112, initial_indent="  ", subsequent_indent="  ",
                         break_on_hyphens=False)
    return text.replace("\u00a0", " ")


@dataclass(frozen=True)
class Command:
    summary: str  # one line for `raytrain --help`
    usage: str  # how to call it
    target: str  # "module:function" taking (positional, args) and returning an exit code
    keys: tuple[str, ...]  # config keys listed by `raytrain SUBCOMMAND --help`
    example: str = ""
    extra_keys: tuple[str, ...] = ()  # keys the command accepts beyond Config's fields
    defaults: tuple[tuple[str, Any], ...] = ()  # the command's own defaults where they differ from Config's


COMMANDS: dict[str, Command] = {
    "check": Command(
        summary="check a dataset: counts, per-class instances, skipped files with reasons",
        usage="raytrain check data=DATA [single_cls=True]   (DATA: shapes, coco8.yaml, coco128.yaml, ... or a YAML)",
        target="raytrain.commands.check:main",
        keys=("data", "single_cls"),
        example="raytrain check data=../shared/datasets/coco128/data.yaml",
    ),
    "fit": Command(
        summary="train a detector with Ray Train on CPU or GPU workers: weights, results.csv/png, W&B",
        usage="raytrain fit data=DATA model=yolov8n epochs=100 imgsz=640 [batch device=0,1 resume=True ...]\n\n"
              "Starts a local Ray (dashboard on) unless address=/RAY_ADDRESS names a cluster. batch is the\n"
              "global batch, split across workers. resume=True continues the newest run in project.",
        target="raytrain.commands.fit:main",
        keys=tuple(k for k in FIELDS if k not in ("split", "save_json", "source", "conf")),
        example="raytrain fit data=shapes epochs=30 imgsz=320 batch=16",
    ),
    "tune": Command(
        summary="search training hyperparameters: Optuna TPE + ASHA over fit runs on Ray Tune; trials.csv, best.yaml",
        usage="raytrain tune [SPACE.yaml] [key=value ...]   (no file: search_spaces/quickstart.yaml)\n\n"
              "Settings given as key=value replace the file's (defaults in brackets, read from the space reader):\n"
              f"{_tune_settings()}\n"
              "  gpu=true|false|0.25 (a GPU share per trial); resume=True: continue NAME as it was started (its\n"
              "  saved space and overrides); dry_run=True: check everything and print the plan, start nothing\n"
              "Any other key is a fixed training argument (a searched one is fixed and leaves the space).\n"
              "Starts a local Ray (dashboard on) unless address=/RAY_ADDRESS names a cluster. The file format is\n"
              "described at the top of search_spaces/detect.yaml and in docs/tuning.md.",
        target="raytrain.commands.tune:main",
        keys=(),
        example="raytrain tune search_spaces/quickstart.yaml num_samples=8",
        extra_keys=TUNE_KEYS,
    ),
    "results": Command(
        summary="show a tune experiment's ranked trials, redraw its plots and Optuna's analysis (finished or running)",
        usage="raytrain results EXPERIMENT_DIR [pick=\"latency_ms<=8\"]   (pick: the best trial within the bounds)",
        target="raytrain.commands.results:main",
        keys=(),
        example="raytrain results runs/tune/quickstart",
        extra_keys=("pick",),
    ),
    "val": Command(
        summary="validate a checkpoint: COCO mAP50, mAP50-95, P, R per class; metrics.json, predictions.json",
        usage="raytrain val model=CKPT [data=DATA imgsz batch conf iou split save_json=True project name]",
        target="raytrain.commands.val:main",
        keys=("model", "data", "imgsz", "batch", "conf", "iou", "max_det", "split", "save_json", "device",
              "workers", "project", "name", "exist_ok", "verbose"),
        example="raytrain val model=runs/detect/train/weights/best.pt data=shapes save_json=True",
        defaults=(("name", "val"),),
    ),
    "predict": Command(
        summary="detect objects in an image or folder: drawn images and predictions.json",
        usage="raytrain predict model=CKPT source=FILE|FOLDER [imgsz conf=0.25 iou max_det project name]",
        target="raytrain.commands.predict:main",
        keys=("model", "source", "imgsz", "conf", "iou", "max_det", "device", "project", "name", "exist_ok"),
        example="raytrain predict model=runs/detect/train/weights/best.pt source=images/",
        defaults=(("name", "predict"),),
    ),
    "export": Command(
        summary="export a checkpoint to ONNX, OpenVINO or TorchScript, metadata inside, checked against PyTorch",
        usage="raytrain export model=CKPT format=onnx|openvino|torchscript [imgsz batch dynamic half opset simplify\n"
              "                nms conf iou max_det device]\n\n"
              "Writes beside the checkpoint: best.onnx, best_openvino_model/, best.torchscript. nms unset: the\n"
              "decoded one-to-many output (B, 4+nc, A), NMS at run time; nms=False: YOLO26's NMS-free top-k\n"
              "(B, max_det, 6); nms=True: NMS inside the graph (conf default 0.25). half: float16 (a GPU for onnx\n"
              "and torchscript). The last line says how the file compared with PyTorch on a fixed input.\n"
              "raytrain val / predict take the exported file as model=. See docs/export.md.",
        target="raytrain.commands.export:main",
        keys=("model", "imgsz", "batch", "conf", "iou", "max_det", "device"),
        example="raytrain export model=runs/detect/train/weights/best.pt format=onnx imgsz=320",
        extra_keys=EXPORT_KEYS,
    ),
    "benchmark": Command(
        summary="per export format: file size, mAP50-95 on the val split, latency median/p90 (batch 1); table + CSV",
        usage="raytrain benchmark model=CKPT [formats=pt,onnx,openvino,torchscript data imgsz half dynamic nms\n"
              "                   threads runs=100 device project name]\n\n"
              "Exports the checkpoint to each format (into the benchmark folder), validates each file with the\n"
              "same letterbox and post-processing, then times batch-1 inference after warm-up on one fixed image\n"
              "(threads: torch, ONNX Runtime and OpenVINO all get the same count, printed).",
        target="raytrain.commands.benchmark:main",
        keys=("model", "data", "imgsz", "batch", "split", "conf", "iou", "max_det", "device", "workers", "project",
              "name", "exist_ok"),
        example="raytrain benchmark model=runs/detect/train/weights/best.pt data=shapes imgsz=320",
        extra_keys=BENCHMARK_KEYS,
    ),
    "convert": Command(
        summary="convert Ultralytics YOLOv8 / YOLO11 / YOLO26 detection weights to a raytrain checkpoint",
        usage="raytrain convert SRC OUT [names=a,b,c | names=data.yaml]\n\n"
              "SRC: an Ultralytics .pt checkpoint (read by a restricted unpickler: nothing in the file runs, no\n"
              "ultralytics package needed) or a file holding a plain DetectionModel state_dict.\n"
              "Family, scale and nc are read from the tensors (every key and shape against each registered\n"
              "architecture); names default to the checkpoint's.",
        target="raytrain.commands.convert:main",
        keys=(),
        example="raytrain convert yolo26n.pt yolo26n_raytrain.pt && "
                "raytrain fit model=yolo26n_raytrain.pt data=shapes",
        extra_keys=("names",),
    ),
}


def _load(target: str) -> Callable[[list[str], dict[str, Any]], int]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _main_help() -> str:
    width = max(len(n) for n in COMMANDS) + 2
    lines = [
        f"raytrain {__version__}: train and tune YOLO detectors on Ray.",
        "",
        "Usage: raytrain SUBCOMMAND [positional] key=value ... [cfg=args.yaml]",
        "",
        "Subcommands:",
        *(f"  {name.ljust(width)}{cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        "Arguments (key=default  meaning); precedence: defaults < cfg=file.yaml < key=value:",
        help_table(),
        "",
        "'raytrain SUBCOMMAND --help' lists the arguments a subcommand uses.",
    ]
    return "\n".join(lines)


def _command_help(name: str, cmd: Command) -> str:
    lines = [f"raytrain {name}: {cmd.summary}", "", f"Usage: {cmd.usage}"]
    if cmd.example:
        lines += ["", f"Example: {cmd.example}"]
    if cmd.keys:
        lines += ["", "Arguments (key=default  meaning):", help_table(cmd.keys, dict(cmd.defaults))]
    return "\n".join(lines)


class StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a message is logged, not as it was when the handler was made: a caller
    (a test's capture, a notebook) may swap and close the stream between two commands in one process."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


def setup_logging(verbose: bool = True) -> None:
    """Plain messages on stderr for the CLI; library code only logs through the 'raytrain' logger."""
    if not LOGGER.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO if verbose else logging.WARNING)
    LOGGER.propagate = False


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate positional arguments from ``key=value`` tokens."""
    positional = [a for a in argv if "=" not in a and not a.startswith("-")]
    pairs = [a for a in argv if "=" in a]
    return positional, pairs


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_main_help())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"raytrain: unknown subcommand '{name}'.{hint} Run 'raytrain --help'.", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    if any(a in ("-h", "--help") for a in rest):
        print(_command_help(name, cmd))
        return 0
    unknown_flags = [a for a in rest if a.startswith("-") and "=" not in a]
    if unknown_flags:
        print(f"raytrain {name}: unknown option {unknown_flags[0]}; arguments are key=value "
              f"(see 'raytrain {name} --help').", file=sys.stderr)
        return 2
    setup_logging()
    try:
        positional, pairs = split_argv(rest)
        args = parse_cli_args(pairs)
        for key in args:
            if key not in FIELDS and key not in cmd.extra_keys:
                raise unknown_key_error(key, [*FIELDS, *cmd.extra_keys])
        return int(_load(cmd.target)(positional, args) or 0)
    except ConfigError as e:
        print(f"raytrain {name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"raytrain {name}: interrupted.", file=sys.stderr)
        return 130


def ray_address(args: dict[str, Any]) -> str | None:
    """The cluster to connect to: ``address=`` wins over ``RAY_ADDRESS``; None starts Ray locally."""
    return args.get("address") or os.environ.get("RAY_ADDRESS") or None


__all__ = ["COMMANDS", "Command", "keys_in_groups", "main", "ray_address", "setup_logging"]

if __name__ == "__main__":
    sys.exit(main())
