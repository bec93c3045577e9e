"""Helpers shared by the data tests: tiny datasets written on the fly (no tests here)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

NAMES = ["a", "b", "c"]


def write_image(path: Path, h: int = 32, w: int = 32, value: int = 100, channels: int = 3,
                dtype: type = np.uint8) -> Path:
    """A flat image with a brighter square in the middle, written with cv2."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w) if channels == 1 else (h, w, channels)
    img = np.full(shape, value, dtype)
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = np.iinfo(dtype).max // 2
    assert cv2.imwrite(str(path), img)
    return path


def write_dataset(root: Path, images: dict[str, str | None], *, split: str = "train", val: dict | None = None,
                  names: list[str] | None = None, size: tuple[int, int] = (32, 32)) -> Path:
    """A dataset under ``root`` with ``images`` = {stem: label text, or None for no label file}; returns its YAML.

    The val split gets ``val`` (default: one labelled image).
    """
    for split_name, files in ((split, images), ("val", val if val is not None else {"v0": "0 0.5 0.5 0.5 0.5\n"})):
        (root / "images" / split_name).mkdir(parents=True, exist_ok=True)
        for stem, text in files.items():
            write_image(root / "images" / split_name / f"{stem}.png", *size)
            if text is not None:
                label = root / "labels" / split_name / f"{stem}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(text)
    names_text = "\n".join(f"  - {n}" for n in (names or NAMES))
    yaml_file = root / "data.yaml"
    yaml_file.write_text(f"path: .\ntrain: images/{split}\nval: images/val\nnames:\n{names_text}\n")
    return yaml_file
