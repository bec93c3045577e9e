"""``results.csv`` (one row per epoch, Ultralytics columns) and ``results.png`` (loss and metric curves).

The CSV is always rewritten whole from the run's history (which travels in the checkpoint), so after a worker
failure and a restart from an earlier checkpoint every epoch appears exactly once.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from raytrain import keys

DFL_LOSS_NAMES = keys.DFL_LOSS_NAMES
COLUMNS = keys.results_columns(DFL_LOSS_NAMES)  # "time" is cumulative training time in seconds, as in Ultralytics


def loss_names_of(row: Mapping[str, float]) -> tuple[str, ...]:
    """The loss part names an epoch row holds (``train/<name>`` keys, in the loss's order)."""
    return tuple(n for n in keys.LOSS_NAMES if keys.train_loss_keys((n,))[0] in row) or DFL_LOSS_NAMES


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}" if math.isfinite(value) else "nan"


def write_results_csv(path: str | Path, rows: Sequence[Mapping[str, float]]) -> Path:
    """Write ``rows`` (epoch rows of one run) to ``path``, replacing it (written atomically); the columns are
    :func:`raytrain.keys.results_columns` of the loss parts the rows hold (YOLO26 runs have ``l1_loss``)."""
    columns = keys.results_columns(loss_names_of(rows[0])) if rows else COLUMNS
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_fmt(int(row["epoch"])) if c == "epoch" else _fmt(float(row.get(c, math.nan)))
                             for c in columns])
    tmp.replace(path)
    return path


def read_results_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``results.csv`` as dicts of floats (``epoch`` as int)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k.strip(): (int(v) if k.strip() == "epoch" else float(v)) for k, v in row.items()} for row in rows]


def plotted(loss_names: tuple[str, ...]) -> tuple[str, ...]:
    """The ten panels of results.png: train losses, precision, recall (top row); val losses, mAP50, mAP50-95."""
    return (*keys.train_loss_keys(loss_names), keys.PRECISION, keys.RECALL, *keys.val_loss_keys(loss_names),
            keys.MAP50, keys.MAP50_95)


def plot_results(csv_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Draw ``results.png`` (2 x 5 panels of losses and metrics per epoch) next to ``results.csv``.

    Drawn every epoch, so kept cheap: a bare :class:`~matplotlib.figure.Figure` (no pyplot state) with fixed margins.
    Pyplot with ``tight_layout`` (which measures every label) took 0.6 s a plot on a CPU core, 8 % of a quickstart
    epoch; this takes 0.7x that (``python bench/plot_results.py``).
    """
    from matplotlib.figure import Figure

    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    rows = read_results_csv(csv_path)
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(15, 6))
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.08, top=0.95, wspace=0.25, hspace=0.35)
    axes = fig.subplots(2, 5)
    for ax, key in zip(axes.ravel(), plotted(loss_names_of(rows[0]) if rows else DFL_LOSS_NAMES), strict=True):
        values = [r.get(key, math.nan) for r in rows]
        ax.plot(epochs, values, marker=".", linewidth=2, markersize=6)
        ax.set_title(key, fontsize=11)
        ax.set_xlabel("epoch")
    fig.savefig(png_path, dpi=120)
    return png_path
