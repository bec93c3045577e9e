"""Whose data, whose loop: raytrain's training loop on the batches Ultralytics' data loader built, by phase.

Two steps. ``record`` runs Ultralytics 8.4.190's ``yolo train`` in its own interpreter (as
``bench/fit_vs_ultralytics.py`` does) and saves every training batch its loader hands the trainer (uint8 images,
boxes, classes; ~40 MB an epoch at imgsz 160): the augmentation draws from Python's and NumPy's seeded generators
only, so the batches do not depend on the optimizer, and a fast one (SGD, no validation) records them. ``train``
then runs raytrain's epoch loop (``setup_rank`` + ``run_epochs``, no Ray; validation on raytrain's own val loader)
with the batches of one source per phase: ``--mosaic`` (the epochs before ``close_mosaic``) and ``--close`` (the
last ``close_mosaic``) each ``ours`` or ``theirs``. Same seed, same loop: whatever differs at the end came from the
batches. Prints mAP50-95 per epoch and the final figure.

    python bench/batches_vs_ultralytics.py record --ultralytics-python /work/ultra-venv/bin/python --out runs/rec
    python bench/batches_vs_ultralytics.py train --record runs/rec --mosaic theirs --close ours --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAP = "metrics/mAP50-95(B)"

RECORDER = r'''
import json, sys
from pathlib import Path
import torch
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer

settings = json.loads(sys.argv[1])
out = Path(settings["record"])
out.mkdir(parents=True, exist_ok=True)
original, kept = DetectionTrainer.preprocess_batch, {"epoch": None, "batches": []}

def flush():
    if kept["batches"]:
        torch.save(kept["batches"], out / f"epoch{kept['epoch']:03d}.pt")
    kept["batches"] = []

def preprocess_batch(self, batch):  # the loader's batch, before Ultralytics scales it to [0, 1]
    if kept["epoch"] != self.epoch:
        flush()
        kept["epoch"] = self.epoch
    kept["batches"].append({k: batch[k].clone() for k in ("img", "batch_idx", "cls", "bboxes")})
    return original(self, batch)

DetectionTrainer.preprocess_batch = preprocess_batch
YOLO(settings["model"] + ".yaml").train(**settings["train"])
flush()
'''


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    return {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "nbs": args.batch,
            "close_mosaic": args.close_mosaic, "workers": 0, "device": "cpu", "pretrained": False, "plots": False}


def record(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from fit_vs_ultralytics import ultralytics_copy

    from raytrain.data import resolve_data

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = ultralytics_copy(resolve_data(args.data).yaml_file, out)
    config = out / "ultralytics_config"
    config.mkdir(exist_ok=True)
    (config / "Arial.ttf").touch()  # its dataset check looks for this font (and would download it)
    settings = {"record": str(out / "batches"), "model": args.model,
                "train": {**recipe(args), "optimizer": "SGD", "seed": args.seed, "val": False, "data": str(data),
                          "project": str(out), "name": "ultralytics", "exist_ok": True}}
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(config),
           "OMP_NUM_THREADS": str(args.threads)}
    print(f"recording {args.epochs} epochs of Ultralytics' batches into {out / 'batches'} ...", flush=True)
    subprocess.run([str(args.ultralytics_python), "-c", RECORDER, json.dumps(settings)], env=env, check=True)
    (out / "recipe.json").write_text(json.dumps({**recipe(args), "data": args.data, "model": args.model,
                                                 "seed": args.seed}))


class RecordedLoader:
    """Stands in for raytrain's training loader: an epoch's recorded batches where that phase replays them, the
    loader's own batches elsewhere."""

    def __init__(self, folder: Path, own: Any, *, mosaic: str, close: str) -> None:
        self.folder, self.own, self.dataset = folder, own, own.dataset
        self.sources = {True: mosaic, False: close}
        self.epoch, self.mosaic = 1, True

    def __len__(self) -> int:
        return len(self.own)

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        self.epoch, self.mosaic = epoch, mosaic
        self.own.set_epoch(epoch, mosaic=mosaic)

    def __iter__(self):
        import torch

        if self.sources[self.mosaic] == "ours":
            yield from self.own
            return
        for b in torch.load(self.folder / f"epoch{self.epoch - 1:03d}.pt"):
            yield {"img": b["img"], "targets": torch.cat((b["batch_idx"][:, None], b["cls"].view(-1, 1), b["bboxes"]),
                                                         1)}


def train(args: argparse.Namespace) -> None:
    import torch

    from raytrain.config import make_config
    from raytrain.data import resolve_data
    from raytrain.engine.loop import run_epochs
    from raytrain.engine.setup import setup_rank
    from raytrain.engine.state import initial_state
    from raytrain.train.plan import resolve_config

    rec = json.loads((args.record / "recipe.json").read_text())
    rec["epochs"] = args.epochs or rec["epochs"]  # fewer: a shorter schedule on the first recorded epochs
    name = f"seed{args.seed}_mosaic-{args.mosaic}_close-{args.close}"
    out = args.record / "train" / name
    cfg = resolve_config(make_config({
        **{k: rec[k] for k in ("data", "model", "epochs", "imgsz", "batch", "nbs", "close_mosaic", "workers",
                               "device", "pretrained", "plots")},
        "optimizer": args.optimizer, "seed": args.seed, "cpus_per_worker": args.threads, "project": str(out.parent),
        "name": name, "exist_ok": True, "wandb_mode": "disabled"}), gpus_available=0)
    setup = setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=out)
    first = torch.load(args.record / "batches" / "epoch000.pt")
    if len(first) != len(setup.train_loader):
        raise SystemExit(f"{len(first)} recorded batches an epoch, raytrain's loader has {len(setup.train_loader)}")
    setup.train_loader = RecordedLoader(args.record / "batches", setup.train_loader, mosaic=args.mosaic,
                                        close=args.close)
    rows: list[dict[str, float]] = []

    def report(epoch_report: Any) -> None:
        rows.append(epoch_report.metrics)
        print(f"  epoch {int(rows[-1]['epoch']):3d}  mAP50-95 {rows[-1][MAP]:.4f}", flush=True)

    print(f"{name}: {args.optimizer}, {rec['model']}, {rec['epochs']} epochs, imgsz {rec['imgsz']}", flush=True)
    run_epochs(setup, initial_state(setup), report)
    print(f"{name}: final mAP50-95 {rows[-1][MAP]:.4f}, best {max(r[MAP] for r in rows):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    rec = steps.add_parser("record", help="train Ultralytics once, saving every training batch")
    rec.add_argument("--ultralytics-python", type=Path, required=True)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--data", default="shapes")
    rec.add_argument("--model", default="yolo26n")
    rec.add_argument("--epochs", type=int, default=20)
    rec.add_argument("--imgsz", type=int, default=160)
    rec.add_argument("--batch", type=int, default=16)
    rec.add_argument("--close-mosaic", type=int, default=10)
    rec.add_argument("--seed", type=int, default=0, help="Ultralytics' seed (its augmentation's draws)")
    rec.add_argument("--threads", type=int, default=max(os.cpu_count() or 1, 1))
    tr = steps.add_parser("train", help="raytrain's loop on recorded and/or its own batches")
    tr.add_argument("--record", type=Path, required=True)
    tr.add_argument("--mosaic", choices=("ours", "theirs"), default="theirs")
    tr.add_argument("--close", choices=("ours", "theirs"), default="theirs")
    tr.add_argument("--optimizer", default="MuSGD")
    tr.add_argument("--seed", type=int, default=0, help="raytrain's seed (initial weights; its own batches)")
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--epochs", type=int, default=0, help="train fewer epochs than were recorded (a quick check)")
    args = parser.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)
    record(args) if args.step == "record" else train(args)


if __name__ == "__main__":
    main()
