"""What the bench scripts that run whole experiments share: the machine's load (figures are noisy under load), and
the start of a report: the dataset checked, a timestamped output folder, the command line printed first (every
figure names the command that produced it). Imported as ``common`` by scripts run as ``python bench/NAME.py``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: figures are noisy under load)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start_report(args: argparse.Namespace) -> Path:
    """Resolve and check ``args.data``, make ``args.project/<timestamp>``, print the command; returns the folder."""
    args.data = args.data.resolve()
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: not found; pass a dataset YAML (e.g. ../shared/datasets/coco128)")
    out = (args.project / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    return out
