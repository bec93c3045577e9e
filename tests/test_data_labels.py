"""Label checking: every problem in a tiny dataset, the summary counts, the cache, and image decoding."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from data_helpers import write_dataset, write_image

from raytrain.data import DatasetError, load_image, resolve_data, scan_split
from raytrain.data.labels import img2label_path, parse_label_rows


@pytest.fixture
def raytrain_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """caplog for the 'raytrain' logger, which the CLI may have detached from the root logger."""
    monkeypatch.setattr(logging.getLogger("raytrain"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="raytrain")
    return caplog


def _by_stem(skipped: list[tuple[str, str]]) -> dict[str, str]:
    return {Path(f).stem: reason for f, reason in skipped}


def test_every_label_problem_is_skipped_or_fixed_with_a_reason(tmp_path: Path, raytrain_log):
    root = tmp_path / "ds"
    yaml_file = write_dataset(root, {
        "good": "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.2 0.2\n",
        "nonnumeric": "0 0.5 abc 0.2 0.2\n",
        "columns": "0 0.5 0.5 0.2\n",
        "badclass": "3 0.5 0.5 0.2 0.2\n",
        "fractional_class": "1.5 0.5 0.5 0.2 0.2\n",
        "outside": "0 1.2 0.5 0.2 0.2\n",
        "overshoot": "0 0.5 0.5 1.01 0.5\n",  # x1 = -0.005, x2 = 1.005: clipped
        "zeroarea": "0 0.5 0.5 0 0.2\n",
        "duplicate": "2 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n",
        "empty": "",
        "nolabel": None,
        "corrupt": "0 0.5 0.5 0.2 0.2\n",
    })
    (root / "images/train/corrupt.png").write_bytes(b"not an image at all")
    (root / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    index = scan_split(resolve_data(yaml_file), "train")

    reasons = _by_stem(index.skipped)
    assert "non-numeric value 'abc'" in reasons["nonnumeric"] and "line 1" in reasons["nonnumeric"]
    assert "4 columns, expected 5" in reasons["columns"]
    assert "class id 3 outside names (0-2)" in reasons["badclass"]
    assert "class id 1.5 outside names" in reasons["fractional_class"]
    assert "box outside the image" in reasons["outside"]
    assert "zero-area box" in reasons["zeroarea"]
    assert reasons["corrupt"] == "unreadable or corrupt image"
    assert reasons["orphan"] == "label file without image"
    assert len(index.skipped) == 8

    records = {Path(r.im_file).stem: r for r in index.records}
    assert sorted(records) == ["duplicate", "empty", "good", "nolabel", "overshoot"]
    assert records["good"].shape == (32, 32) and records["good"].labels.dtype == np.float32
    np.testing.assert_allclose(records["overshoot"].labels, [[0, 0.5, 0.5, 1.0, 0.5]], atol=1e-6)
    np.testing.assert_allclose(records["duplicate"].labels, [[2, 0.5, 0.5, 0.2, 0.2], [0, 0.3, 0.3, 0.1, 0.1]])
    assert (index.images, index.backgrounds, index.missing_labels, index.instances) == (5, 2, 1, 5)
    assert (index.duplicates, index.clipped) == (1, 1)
    assert dict((Path(f).stem, what) for f, what in index.notes) == {
        "overshoot": "1 boxes clipped to the image", "duplicate": "1 duplicate rows dropped"}
    assert index.class_counts().tolist() == [3, 1, 1]
    # Each skip is a warning naming the file and the reason.
    text = raytrain_log.text
    assert f"{root}/labels/train/columns.txt: line 1: 4 columns" in text
    assert "corrupt.png: unreadable or corrupt image" in text
    raytrain_log.clear()  # a cached scan repeats only the totals
    assert scan_split(resolve_data(yaml_file), "train").from_cache
    assert raytrain_log.messages == ["train: 8 files skipped, 2 fixed (see 'raytrain check' for the list)."]


def test_image_listed_but_missing_and_no_usable_image(tmp_path: Path):
    root = tmp_path / "ds"
    yaml_file = write_dataset(root, {"bad": "0 2 2 0.1 0.1\n"})
    (root / "list.txt").write_text("images/train/bad.png\nimages/train/ghost.png\n")
    yaml_file.write_text(yaml_file.read_text().replace("train: images/train", "train: list.txt"))
    spec = resolve_data(yaml_file)
    with pytest.raises(DatasetError, match=r"'train' has no usable image .*\(2 found, 2 skipped\)"):
        scan_split(spec, "train")
    index = scan_split(spec, "train", strict=False)
    assert _by_stem(index.skipped)["ghost"] == "image not found" and index.images == 0


def test_cache_is_reused_and_invalidated_when_files_change(tmp_path: Path):
    root = tmp_path / "ds"
    yaml_file = write_dataset(root, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.5 0.5\n"})
    spec = resolve_data(yaml_file)
    first = scan_split(spec, "train")
    assert not first.from_cache and first.cache_file == root / "labels" / "train.raytrain.cache"
    second = scan_split(spec, "train")
    assert second.from_cache and second.instances == 2

    label = root / "labels/train/a.txt"
    label.write_text("2 0.5 0.5 0.5 0.5\n2 0.4 0.4 0.1 0.1\n")
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    third = scan_split(spec, "train")
    assert not third.from_cache and third.instances == 3 and third.class_counts().tolist() == [0, 1, 2]

    write_image(root / "images/train/c.png")  # a new image (a background)
    fourth = scan_split(spec, "train")
    assert not fourth.from_cache and fourth.images == 3 and fourth.backgrounds == 1
    assert scan_split(spec, "train").from_cache


def test_read_only_dataset_caches_under_datasets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "ro"
    yaml_file = write_dataset(root, {"a": "0 0.5 0.5 0.5 0.5\n"})
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "cache_home"))
    for folder in [p for p in root.rglob("*") if p.is_dir()] + [root]:
        folder.chmod(0o555)
    try:
        before = sorted(p for p in root.rglob("*"))
        spec = resolve_data(yaml_file)
        index = scan_split(spec, "train")
        assert index.cache_file is not None and index.cache_file.is_relative_to(tmp_path / "cache_home")
        assert scan_split(spec, "train").from_cache
        assert sorted(p for p in root.rglob("*")) == before  # nothing written into the dataset
    finally:
        for folder in [p for p in root.rglob("*") if p.is_dir()] + [root]:
            folder.chmod(0o755)


def test_parse_label_rows_polygon_and_blank_lines():
    labels, duplicates, clipped = parse_label_rows("\n1 0.1 0.2 0.5 0.2 0.3 0.6\n\n", nc=2)
    np.testing.assert_allclose(labels, [[1, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
    assert (duplicates, clipped) == (0, 0)
    with pytest.raises(ValueError, match="line 2: non-finite value"):
        parse_label_rows("0 0.5 0.5 0.1 0.1\n0 nan 0.5 0.1 0.1\n", nc=1)
    with pytest.raises(ValueError, match="6 columns"):
        parse_label_rows("0 0.5 0.5 0.1 0.1 0.3\n", nc=1)


def test_img2label_path_replaces_the_last_images_component():
    assert img2label_path("/d/images/x/images/train/a.b.jpg") == "/d/images/x/labels/train/a.b.txt"
    assert img2label_path("/d/pics/a.png") == "/d/pics/a.txt"


def test_grayscale_rgba_and_16bit_load_as_rgb_uint8(tmp_path: Path):
    gray = write_image(tmp_path / "g.png", channels=1, value=40)
    rgba = tmp_path / "rgba.png"
    img = np.zeros((8, 6, 4), np.uint8)
    img[..., 0], img[..., 3] = 200, 10  # blue in BGRA order, nearly transparent
    cv2.imwrite(str(rgba), img)
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.full((5, 7, 3), 257 * 100, np.uint16))
    bgr = tmp_path / "red.png"
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255  # red in BGR order
    cv2.imwrite(str(bgr), red)

    for path, shape in ((gray, (32, 32, 3)), (rgba, (8, 6, 3)), (deep, (5, 7, 3)), (bgr, (4, 4, 3))):
        out = load_image(str(path))
        assert out.shape == shape and out.dtype == np.uint8, path
    g = load_image(str(gray))
    assert g[0, 0].tolist() == [40, 40, 40] and (g[..., 0] == g[..., 2]).all()
    assert load_image(str(rgba))[0, 0].tolist() == [0, 0, 200]  # RGB: the blue channel last
    assert load_image(str(deep))[0, 0].tolist() == [100, 100, 100]
    assert load_image(str(bgr))[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(DatasetError, match="unreadable"):
        load_image(str(tmp_path / "missing.png"))


def test_16bit_and_grayscale_images_are_usable_in_a_scan(tmp_path: Path):
    root = tmp_path / "ds"
    yaml_file = write_dataset(root, {"a": "0 0.5 0.5 0.5 0.5\n"})
    write_image(root / "images/train/deep.png", 20, 30, value=1000, dtype=np.uint16)
    write_image(root / "images/train/gray.png", 24, 16, channels=1)
    index = scan_split(resolve_data(yaml_file), "train")
    assert {Path(r.im_file).stem: r.shape for r in index.records} == {"a": (32, 32), "deep": (20, 30),
                                                                    "gray": (24, 16)}
