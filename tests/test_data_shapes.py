"""The built-in shapes dataset: deterministic, reused, generated once under concurrency, trainable batches."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from raytrain.config import Config
from raytrain.data import YoloDataset, build_dataloader, resolve_data, scan_split, shapes
from raytrain.data.labels import parse_label_rows

SMALL = {"train": 6, "val": 2}



def _listing(folder: Path) -> list[str]:
    """Names in a folder apart from lock files (whether a released lock file stays is filelock's business)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))

def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_and_labels_are_valid(tmp_path: Path):
    shapes.generate(tmp_path / "a", sizes=SMALL)
    shapes.generate(tmp_path / "b", sizes=SMALL)
    shapes.generate(tmp_path / "c", seed=1, sizes=SMALL)
    a = _files(tmp_path / "a")
    assert len(a) == 2 * 8 + 2 and a == _files(tmp_path / "b") and a != _files(tmp_path / "c")
    for name, data in a.items():
        if name.startswith("labels/"):
            labels, duplicates, clipped = parse_label_rows(data.decode(), nc=len(shapes.NAMES))
            assert 1 <= len(labels) <= 5 and duplicates == clipped == 0


def test_ensure_shapes_generates_once_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shapes, "SPLIT_SIZES", SMALL)
    calls = []
    real = shapes.generate

    def slow_generate(root: Path, *args, **kwargs):
        calls.append(root)
        time.sleep(0.3)  # long enough for the other thread to wait on the lock
        return real(root, *args, **kwargs)

    monkeypatch.setattr(shapes, "generate", slow_generate)
    root = tmp_path / "shapes"
    results = []
    threads = [threading.Thread(target=lambda: results.append(shapes.ensure_shapes(root))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [root / "data.yaml"] * 2 and len(calls) == 1
    assert calls[0].name.startswith(".shapes.tmp-")  # built beside, then renamed into place
    assert _listing(tmp_path) == ["shapes"]
    mtime = (root / "data.yaml").stat().st_mtime_ns
    assert shapes.ensure_shapes(root) == root / "data.yaml" and len(calls) == 1
    assert (root / "data.yaml").stat().st_mtime_ns == mtime

    (root / "VERSION").write_text("0\n")  # an older generator's copy is replaced
    shapes.ensure_shapes(root)
    assert len(calls) == 2 and (root / "VERSION").read_text().strip() == shapes.VERSION


def test_builtin_shapes_resolves_and_loads(tmp_path: Path):
    start = time.perf_counter()
    spec = resolve_data("shapes")
    assert spec.yaml_file.parent.parent == Path(__import__("os").environ["RAYTRAIN_DATASETS"]).resolve()
    assert spec.names == dict(enumerate(shapes.NAMES))
    train, val = scan_split(spec, "train"), scan_split(spec, "val")
    assert (train.images, val.images) == (500, 100) and not train.skipped and train.backgrounds == 0
    assert all(c > 150 for c in train.class_counts())
    assert time.perf_counter() - start < 20
    dataset = YoloDataset(train, 64, augment=True, hyp=Config(imgsz=64))
    loader = build_dataloader(dataset, 8, shuffle=True, workers=0, seed=0)
    loader.set_epoch(1)
    batch = next(iter(loader))
    assert batch["img"].shape == (8, 3, 64, 64) and len(batch["targets"]) > 0
