"""What drawing ``results.png`` costs: it is drawn every epoch, in the training process.

Times :func:`raytrain.engine.results.plot_results` on a ``results.csv`` of ``--epochs`` rows (made up, realistic
ranges), against the way it was drawn before (pyplot with ``tight_layout``), alternating the two ``--repeats``
times; prints the median seconds of each and their ratio. One core is enough (as in a trial)::

    python bench/plot_results.py --epochs 9 --repeats 10
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from common import loadavg

from raytrain import keys
from raytrain.engine.results import plot_results, plotted, read_results_csv, write_results_csv


def tight_layout_plot(csv_path: Path, png_path: Path) -> None:
    """The drawing before (round 3): pyplot's figure manager and ``tight_layout``, otherwise the same panels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = read_results_csv(csv_path)
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(2, 5, figsize=(15, 6), tight_layout=True)
    for ax, key in zip(axes.ravel(), plotted(keys.DFL_LOSS_NAMES), strict=True):
        ax.plot(epochs, [r.get(key, math.nan) for r in rows], marker=".", linewidth=2, markersize=6)
        ax.set_title(key, fontsize=11)
        ax.set_xlabel("epoch")
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def made_up_rows(epochs: int) -> list[dict[str, float]]:
    """Loss curves falling and metrics rising over ``epochs``, in the ranges a quickstart trial shows."""
    rows = []
    for e in range(1, epochs + 1):
        t = e / epochs
        row: dict[str, float] = {keys.EPOCH: e, keys.TIME: 7.0 * e}
        for key in plotted(keys.DFL_LOSS_NAMES):
            row[key] = (4.0 - 2.0 * t) if "loss" in key else 0.3 * t * t
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=9, help="rows of the results.csv drawn")
    parser.add_argument("--repeats", type=int, default=10, help="draws of each, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        csv_path = write_results_csv(Path(folder) / "results.csv", made_up_rows(args.epochs))
        ways = {"before (pyplot, tight_layout)": lambda: tight_layout_plot(csv_path, Path(folder) / "before.png"),
                "plot_results": lambda: plot_results(csv_path, Path(folder) / "now.png")}
        for draw in ways.values():  # first draws load fonts and backends
            draw()
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        print(f"load average at start: {loadavg()}")
        for _ in range(args.repeats):
            for name, draw in ways.items():
                started = time.perf_counter()
                draw()
                seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name, median in medians.items():
        print(f"{name:32s} median {median:.3f} s  (min {min(seconds[name]):.3f}, max {max(seconds[name]):.3f})")
    before, now = medians.values()
    print(f"plot_results / before: {now / before:.2f}   load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
