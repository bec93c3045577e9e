"""YoloDataset, collate and the sharded loader: batch contents, sharding, determinism, caching, fraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import write_dataset, write_image

from raytrain.config import Config
from raytrain.data import YoloDataset, build_dataloader, resolve_data, scan_split
from raytrain.data.loader import SampleKey, ShardedSampler, disk_cache_file, subset_indices

NO_AUG = dict(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=0)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("loader") / "ds"
    images = {f"im{i}": f"{i % 3} 0.5 0.5 0.5 0.5\n{(i + 1) % 3} 0.25 0.25 0.2 0.2\n" for i in range(10)}
    yaml_file = write_dataset(root, images, val={"wide": "1 0.5 0.5 0.5 0.5\n"}, size=(32, 32))
    write_image(root / "images/val/wide.png", 32, 64)  # h=32, w=64
    spec = resolve_data(yaml_file)
    return {"train": scan_split(spec, "train"), "val": scan_split(spec, "val")}


def _batches(loader, epoch: int, mosaic: bool = True) -> list[dict]:
    loader.set_epoch(epoch, mosaic)
    return list(loader)


def test_val_batch_is_letterboxed_with_exact_mapping(index):
    dataset = YoloDataset(index["val"], 64, augment=False, hyp=Config(imgsz=64))
    batch = next(iter(build_dataloader(dataset, 4, shuffle=False, workers=0, seed=0)))
    assert batch["img"].dtype == torch.uint8 and batch["img"].shape == (1, 3, 64, 64)
    assert batch["ori_shapes"] == [(32, 64)] and batch["ratio_pads"] == [((1.0, 1.0), (0, 16))]
    # x: 0.5 * 64 -> 32 / 64 = 0.5, w 0.5; y: 0.5 * 32 + 16 = 32 -> 0.5, h 16 / 64 = 0.25
    torch.testing.assert_close(batch["targets"], torch.tensor([[0.0, 1, 0.5, 0.5, 0.5, 0.25]]))
    assert batch["im_files"][0].endswith("wide.png") and batch["padded"] == [False]
    assert (batch["img"][0, :, :16] == 114).all() and (batch["img"][0, :, 48:] == 114).all()


def test_collate_targets_carry_batch_index(index):
    dataset = YoloDataset(index["train"], 64, augment=False, hyp=Config(imgsz=64))
    batch = next(iter(build_dataloader(dataset, 3, shuffle=False, workers=0, seed=0)))
    assert batch["targets"].shape == (6, 6) and batch["targets"].dtype == torch.float32
    assert batch["targets"][:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["targets"][:, 1].tolist() == [0, 1, 1, 2, 2, 0]  # im0, im1, im2 in sorted order


def test_two_ranks_cover_every_index_once_with_equal_batch_counts(index):
    dataset = YoloDataset(index["train"], 32, augment=True, hyp=Config(imgsz=32))
    loaders = [build_dataloader(dataset, 2, shuffle=True, workers=0, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert [len(x) for x in loaders] == [3, 3]  # 5 samples each -> 3 batches
    seen = [i for x in loaders for b in _batches(x, 1) for i in b["indices"]]
    assert sorted(seen) == list(range(10))
    # 3 ranks: 10 -> 12 with 2 repeats marked as padding; every rank 4 samples, 2 batches of 2.
    samplers = [ShardedSampler(10, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    shards = [s.indices() for s in samplers]
    assert [len(i) for i, _ in shards] == [4, 4, 4]
    assert sorted(np.concatenate([i[~p] for i, p in shards]).tolist()) == list(range(10))
    assert sum(int(p.sum()) for _, p in shards) == 2
    loaders = [build_dataloader(dataset, 2, shuffle=True, workers=0, seed=3, rank=r, world_size=3) for r in (0, 2)]
    assert [len(x) for x in loaders] == [2, 2]
    orders = []
    for epoch in (1, 2):  # a new shared order every epoch, still covering every index once
        for s in samplers:
            s.epoch = epoch
        shards = [s.indices() for s in samplers]
        assert sorted(np.concatenate([i[~p] for i, p in shards]).tolist()) == list(range(10))
        orders.append(shards[0][0].tolist())
    assert orders[0] != orders[1]


def test_same_seed_same_batches_other_epoch_other_augmentation(index):
    hyp = Config(imgsz=64, degrees=10, mixup=0.5)
    dataset = YoloDataset(index["train"], 64, augment=True, hyp=hyp)
    a = _batches(build_dataloader(dataset, 4, shuffle=True, workers=0, seed=1), epoch=1)
    b = _batches(build_dataloader(dataset, 4, shuffle=True, workers=0, seed=1), epoch=1)
    c = _batches(build_dataloader(dataset, 4, shuffle=True, workers=0, seed=1), epoch=2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["img"], y["img"]) and torch.equal(x["targets"], y["targets"])
        assert x["indices"] == y["indices"]
    assert not torch.equal(a[0]["img"], c[0]["img"])
    assert a[0]["targets"][:, 2:].min() >= 0 and a[0]["targets"][:, 2:].max() <= 1
    # A dataloader worker process yields exactly what the main process does.
    d = _batches(build_dataloader(dataset, 4, shuffle=True, workers=2, seed=1), epoch=1)
    assert all(torch.equal(x["img"], y["img"]) for x, y in zip(a, d, strict=True))


def test_mosaic_off_for_close_mosaic_epochs(index):
    hyp = Config(imgsz=64, **{**NO_AUG, "mosaic": 1.0})
    dataset = YoloDataset(index["train"], 64, augment=True, hyp=hyp)
    plain = YoloDataset(index["train"], 64, augment=False, hyp=hyp)[0]
    without = dataset[SampleKey(0, epoch=5, mosaic=False)]
    with_mosaic = dataset[SampleKey(0, epoch=5, mosaic=True)]
    assert torch.equal(without["img"], plain["img"]) and torch.equal(without["bboxes"], plain["bboxes"])
    assert not torch.equal(with_mosaic["img"], plain["img"])
    loader = build_dataloader(dataset, 10, shuffle=False, workers=0, seed=0)
    batch = _batches(loader, 9, mosaic=False)[0]
    assert torch.equal(batch["img"][0], plain["img"])


def test_fraction_cache_and_single_cls(index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert subset_indices(10, 0.3, 0).tolist() == subset_indices(10, 0.3, 0).tolist()
    assert len(subset_indices(10, 0.3, 0)) == 3 and len(subset_indices(10, 0.01, 0)) == 1
    hyp = Config(imgsz=32)
    part = YoloDataset(index["train"], 32, augment=False, hyp=hyp, fraction=0.5, seed=4)
    assert len(part) == 5 and part.records == YoloDataset(index["train"], 32, augment=False, hyp=hyp,
                                                            fraction=0.5, seed=4).records

    plain = YoloDataset(index["train"], 32, augment=False, hyp=hyp)
    ram = YoloDataset(index["train"], 32, augment=False, hyp=hyp, cache="ram")
    assert ram._ram is not None and torch.equal(ram[3]["img"], plain[3]["img"])

    disk = YoloDataset(index["train"], 32, augment=False, hyp=hyp, cache="disk")
    npy = Path(disk.records[0].im_file).with_suffix(".npy")
    assert npy.is_file() and disk_cache_file(disk.records[0].im_file) == npy
    mtime = npy.stat().st_mtime_ns
    again = YoloDataset(index["train"], 32, augment=False, hyp=hyp, cache="disk")
    assert npy.stat().st_mtime_ns == mtime and torch.equal(again[0]["img"], plain[0]["img"])

    single = YoloDataset(index["train"], 32, augment=False, hyp=Config(imgsz=32, single_cls=True))
    assert single[1]["cls"].tolist() == [0, 0] and single.names == {0: "object"}


def test_disk_cache_of_a_read_only_folder_goes_to_datasets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    image = write_image(tmp_path / "ro" / "a.png")
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "home"))
    image.parent.chmod(0o555)
    try:
        path = disk_cache_file(str(image))
    finally:
        image.parent.chmod(0o755)
    assert path.is_relative_to(tmp_path / "home")
