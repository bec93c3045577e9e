"""``results.csv`` (one row per epoch, Ultralytics columns) and ``results.png`` (loss and metric curves).

The CSV is always rewritten whole from the run's history (which travels in the checkpoint), so after a worker
failure and a restart from an earlier checkpoint every epoch appears exactly once.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

COLUMNS = (
    "epoch", "time",
    "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss",
    "lr/pg0", "lr/pg1", "lr/pg2",
)  # "time" is cumulative training time in seconds, as in Ultralytics


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}" if math.isfinite(value) else "nan"


def write_results_csv(path: str | Path, rows: Sequence[Mapping[str, float]]) -> Path:
    """Write ``rows`` (dicts holding at least :data:`COLUMNS`) to ``path``, replacing it (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_fmt(int(row["epoch"])) if c == "epoch" else _fmt(float(row.get(c, math.nan)))
                             for c in COLUMNS])
    tmp.replace(path)
    return path


def read_results_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``results.csv`` as dicts of floats (``epoch`` as int)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k.strip(): (int(v) if k.strip() == "epoch" else float(v)) for k, v in row.items()} for row in rows]


PLOTS = (
    "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)", "metrics/recall(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
)


def plot_results(csv_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Draw ``results.png`` (2 x 5 panels of losses and metrics per epoch) next to ``results.csv``."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display on workers
    import matplotlib.pyplot as plt

    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    rows = read_results_csv(csv_path)
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(2, 5, figsize=(15, 6), tight_layout=True)
    for ax, key in zip(axes.ravel(), PLOTS, strict=True):
        values = [r.get(key, math.nan) for r in rows]
        ax.plot(epochs, values, marker=".", linewidth=2, markersize=6)
        ax.set_title(key, fontsize=11)
        ax.set_xlabel("epoch")
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
