"""Dataset, collate and a sharded, seedable DataLoader.

Randomness is explicit: every sample's augmentation draws from ``np.random.default_rng([seed, rank, epoch,
index])`` and the epoch's order from ``np.random.default_rng([seed, epoch])`` (the same on every rank), so a run is
reproducible whatever the number of dataloader workers, and ranks split one shared permutation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from raytrain.config import Config, ConfigError
from raytrain.data import augment as A
from raytrain.data.common import datasets_dir, is_writable_dir
from raytrain.data.images import load_image
from raytrain.data.labels import ImageRecord, SplitIndex
from raytrain.files import atomic_write

LOGGER = logging.getLogger("raytrain")


class SampleKey(NamedTuple):
    """What the sampler hands the dataset: which image, and everything its randomness derives from."""

    index: int
    epoch: int = 0
    rank: int = 0
    mosaic: bool = True
    padded: bool = False  # a repeat added so that every rank gets the same number of samples


def subset_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a deterministic ``fraction`` of ``n`` items (at least one), drawn with ``seed``."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction={fraction!r} is not allowed: use a fraction in (0, 1].")
    if fraction == 1:
        return np.arange(n)
    k = max(1, round(n * fraction))
    return np.sort(np.random.default_rng([seed, 0x5EED]).permutation(n)[:k])


def disk_cache_file(im_file: str) -> Path:
    """The ``.npy`` of a decoded image: beside it when that folder is writable, else under the datasets folder
    (named by a hash of the path, size and mtime, so a changed image gets a new file)."""
    path = Path(im_file).with_suffix(".npy")
    if is_writable_dir(path.parent):
        return path
    st = os.stat(im_file)
    tag = hashlib.sha1(f"{im_file}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    return datasets_dir() / "npy-cache" / f"{tag}.npy"


def _fresh(npy: Path, im_file: str) -> bool:
    try:
        return npy.stat().st_mtime_ns >= os.stat(im_file).st_mtime_ns
    except OSError:
        return False


def load_cached_npy(im_file: str) -> np.ndarray:
    """Decode an image through its ``.npy`` disk cache, writing the cache (atomically) when missing or stale."""
    npy = disk_cache_file(im_file)
    if _fresh(npy, im_file):
        try:
            img = np.load(npy, allow_pickle=False)
            if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
                return img
        except (OSError, ValueError):
            pass
    img = load_image(im_file)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a temporary file's name
            np.save(f, img)

    try:
        atomic_write(npy, write)
    except OSError as e:
        LOGGER.warning("cannot write disk cache %s: %s", npy, e)
    return img


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class YoloDataset(Dataset):
    """Images and labels of one split, loaded (and augmented when training) at a square ``imgsz``.

    Args:
        index: the checked split from :func:`raytrain.data.scan_split`.
        imgsz: square network input size in pixels.
        augment: training augmentation (mosaic, affine, HSV, flips, mixup from ``hyp``); False = letterbox only.
        hyp: the Config whose augmentation fields (``mosaic``, ``degrees``, ...) and ``single_cls`` apply.
        cache: False, ``"ram"`` (decoded images resized to ``imgsz`` kept in memory) or ``"disk"`` (decoded
            full-size images as ``.npy`` files, reused by later runs).
        fraction: use a deterministic subset of this fraction of the images.
        seed: seed of the subset and of every augmentation.

    Items (``dataset[SampleKey]`` or ``dataset[int]``) are dicts: ``img`` uint8 ``(3, imgsz, imgsz)`` RGB tensor,
    ``cls`` float32 ``(n,)``, ``bboxes`` float32 ``(n, 4)`` xywh_n of the input, ``im_file``, ``ori_shape``
    ``(h0, w0)``, ``ratio_pad`` ``((gain_h, gain_w), (pad_w, pad_h))`` (exact for ``augment=False``; for augmented
    samples it is the plain letterbox of the original image, which the augmentation then moved), ``index`` and
    ``padded``.
    """

    def __init__(self, index: SplitIndex, imgsz: int, *, augment: bool, hyp: Config, cache: bool | str = False,
                 fraction: float = 1.0, seed: int = 0) -> None:
        if cache is True:
            cache = "ram"
        if cache not in (False, "ram", "disk"):
            raise ConfigError(f"cache={cache!r} is not allowed: use False, ram or disk.")
        keep = subset_indices(len(index.records), fraction, seed)
        self.records: list[ImageRecord] = [index.records[i] for i in keep]
        if not self.records:
            raise ConfigError(f"split '{index.split}' has no usable image.")
        self.names = {0: "object"} if hyp.single_cls else dict(index.names)
        self.imgsz = int(imgsz)
        self.augment = augment
        self.hyp = hyp
        self.seed = int(seed)
        self.cache = cache
        self._ram: list[np.ndarray] | None = None
        if cache == "ram":
            self._ram = self._cache_ram()
        elif cache == "disk":
            self._cache_disk()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[np.ndarray]:
        """Per image ``(n, 5)`` ``[cls, x, y, w, h]`` xywh_n of the original image (``single_cls`` applied)."""
        return [self._labels(i) for i in range(len(self))]

    def _labels(self, i: int) -> np.ndarray:
        labels = self.records[i].labels
        if self.hyp.single_cls and len(labels):
            labels = labels.copy()
            labels[:, 0] = 0
        return labels

    def _threads(self) -> int:
        return min(8, os.cpu_count() or 1)

    def _cache_ram(self) -> list[np.ndarray] | None:
        need = sum(3 * self.imgsz**2 * min(r.shape) / max(r.shape) for r in self.records)
        free = _available_memory()
        if free is not None and need > 0.5 * free:
            LOGGER.warning("cache=ram needs ~%.1f GB but %.1f GB are free; not caching.", need / 1e9, free / 1e9)
            return None
        with ThreadPoolExecutor(self._threads()) as pool:
            images = list(pool.map(lambda r: A.resize_long_side(load_image(r.im_file), self.imgsz), self.records))
        LOGGER.info("cached %d images in RAM (%.2f GB)", len(images), sum(im.nbytes for im in images) / 1e9)
        return images

    def _cache_disk(self) -> None:
        with ThreadPoolExecutor(self._threads()) as pool:
            list(pool.map(lambda r: load_cached_npy(r.im_file).shape, self.records))

    def load_resized(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Image ``i`` resized to a long side of ``imgsz``, and its original ``(h0, w0)``."""
        if self._ram is not None:
            return self._ram[i], self.records[i].shape
        rec = self.records[i]
        img = load_cached_npy(rec.im_file) if self.cache == "disk" else load_image(rec.im_file)
        return A.resize_long_side(img, self.imgsz), (img.shape[0], img.shape[1])

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        key = SampleKey(int(key)) if not isinstance(key, tuple) else SampleKey(*key)
        i = key.index
        s = self.imgsz
        if self.augment:
            rng = np.random.default_rng([self.seed, key.rank, key.epoch, i])
            out, cls, boxes = self._augmented(i, rng, key.mosaic)
            ori_shape = self.records[i].shape
            _, gains, pad = A.letterbox_geometry(ori_shape, (s, s))
            ratio_pad = (gains, pad)
        else:
            img, ori_shape = self.load_resized(i)
            out, (gain_h, gain_w), pad = A.letterbox(img, s)
            # The resize to a long side of imgsz and the letterbox compose into one gain per axis.
            ratio_pad = ((gain_h * img.shape[0] / ori_shape[0], gain_w * img.shape[1] / ori_shape[1]), pad)
            labels = self._labels(i)
            cls = labels[:, 0]
            boxes = A.xywhn_to_xyxy(labels[:, 1:], img.shape[1] * gain_w, img.shape[0] * gain_h, *pad)
        return {
            "img": torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))),
            "cls": torch.from_numpy(cls.astype(np.float32)),
            "bboxes": torch.from_numpy(A.xyxy_to_xywhn(boxes, s, s)),
            "im_file": self.records[i].im_file,
            "ori_shape": tuple(ori_shape),
            "ratio_pad": ratio_pad,
            "index": i,
            "padded": key.padded,
        }

    def _geometric(self, i: int, rng: np.random.Generator, mosaic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mosaic (or letterbox) then random affine: ``(img (s, s, 3), cls (n,), boxes_xyxy (n, 4))``."""
        h = self.hyp
        s = self.imgsz
        if mosaic and h.mosaic > 0 and rng.random() < h.mosaic:
            others = rng.integers(0, len(self), 3)
            tiles = []
            for j in (i, *others.tolist()):
                img, _ = self.load_resized(j)
                labels = self._labels(j)
                tiles.append((img, labels[:, 0], A.xywhn_to_xyxy(labels[:, 1:], img.shape[1], img.shape[0])))
            canvas, cls, boxes = A.mosaic4(tiles, s, rng)
        else:
            img, _ = self.load_resized(i)
            canvas, (gain_h, gain_w), pad = A.letterbox(img, s)
            labels = self._labels(i)
            cls = labels[:, 0]
            boxes = A.xywhn_to_xyxy(labels[:, 1:], img.shape[1] * gain_w, img.shape[0] * gain_h, *pad)
        out, boxes, keep = A.random_affine(canvas, boxes, rng, (s, s), degrees=h.degrees, translate=h.translate,
                                           scale=h.scale, shear=h.shear, perspective=h.perspective)
        return out, cls[keep], boxes

    def _augmented(self, i: int, rng: np.random.Generator, mosaic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = self.hyp
        img, cls, boxes = self._geometric(i, rng, mosaic)
        if h.mixup > 0 and rng.random() < h.mixup:
            img2, cls2, boxes2 = self._geometric(int(rng.integers(0, len(self))), rng, mosaic)
            img = A.mixup(img, img2, rng)
            cls, boxes = np.concatenate((cls, cls2)), np.concatenate((boxes, boxes2))
        img = A.augment_hsv(img, rng, hgain=h.hsv_h, sgain=h.hsv_s, vgain=h.hsv_v)
        img, boxes = A.random_flip(img, boxes, rng, fliplr=h.fliplr, flipud=h.flipud)
        return img, cls, boxes


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into the batch dict of DEVELOPERS.md.

    Returns:
        ``img`` uint8 ``(B, 3, H, W)``; ``targets`` float32 ``(N, 6)`` ``[batch_idx, cls, x, y, w, h]`` xywh_n of
        the input; ``im_files``, ``ori_shapes`` ``(h0, w0)``, ``ratio_pads`` ``((gain_h, gain_w), (pad_w, pad_h))``;
        plus ``indices`` (dataset indices) and ``padded`` (bool per sample: a repeat added for rank balance, which
        an evaluator should ignore).
    """
    targets = [torch.cat((torch.full((len(s["cls"]), 1), float(b)), s["cls"][:, None], s["bboxes"]), 1)
               for b, s in enumerate(samples)]
    return {
        # numpy's single-threaded copy: torch.stack's threaded one stalls for ~100x longer on an oversubscribed CPU
        "img": torch.from_numpy(np.stack([s["img"].numpy() for s in samples])),
        "targets": torch.cat(targets) if targets else torch.zeros((0, 6)),
        "im_files": [s["im_file"] for s in samples],
        "ori_shapes": [s["ori_shape"] for s in samples],
        "ratio_pads": [s["ratio_pad"] for s in samples],
        "indices": [s["index"] for s in samples],
        "padded": [s["padded"] for s in samples],
    }


class ShardedSampler(Sampler[SampleKey]):
    """This rank's share of one epoch: a permutation shared by all ranks (from ``(seed, epoch)``), padded by
    repeating its start to a multiple of ``world_size``, then every ``world_size``-th item from ``rank``.

    Every sample is seen once per epoch across ranks (plus at most ``world_size - 1`` repeats), and every rank gets
    ``ceil(n / world_size)`` samples.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in [0, world_size={world_size})")
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.epoch = 0
        self.mosaic = True

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, padded)`` of this rank for the current epoch."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle \
            else np.arange(self.n)
        total = len(self) * self.world_size
        padded = np.arange(total) >= self.n
        order = np.resize(order, total)  # repeats from the start
        return order[self.rank::self.world_size], padded[self.rank::self.world_size]

    def __iter__(self):
        order, padded = self.indices()
        for i, pad in zip(order.tolist(), padded.tolist(), strict=True):
            yield SampleKey(i, self.epoch, self.rank, self.mosaic, pad)


def _seed_worker(worker_id: int) -> None:
    # Library code that still uses global RNGs gets a seed derived from torch's per-worker seed.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)


class YoloLoader:
    """A DataLoader over one rank's shard; call :meth:`set_epoch` before each epoch.

    Attributes:
        dataset: the :class:`YoloDataset`.
        sampler: the :class:`ShardedSampler`.
    """

    def __init__(self, dataset: YoloDataset, batch_size: int, *, shuffle: bool, workers: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch={batch_size} is not allowed: use a positive batch size per rank.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = ShardedSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        workers = max(0, min(workers, os.cpu_count() or 1, len(self.sampler)))
        self._settings = dict(
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
            generator=torch.Generator().manual_seed(seed * 1000 + rank),
        )
        self._loader = DataLoader(dataset, **self._settings)

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        """Select the epoch's order and augmentation randomness; ``mosaic=False`` for the last ``close_mosaic``."""
        self.sampler.epoch = int(epoch)
        self.sampler.mosaic = bool(mosaic)

    def set_hyp(self, hyp: Any) -> None:
        """Train with the augmentation hyperparameters of ``hyp`` (a Config) from the next epoch on (PBT, a replayed
        schedule). Persistent worker processes hold their own copy of the dataset, so the loader starts new ones."""
        self.dataset.hyp = hyp
        self._loader = DataLoader(self.dataset, **self._settings)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        return iter(self._loader)


def build_dataloader(dataset: YoloDataset, batch_size: int, *, shuffle: bool, workers: int, seed: int,
                     rank: int = 0, world_size: int = 1) -> YoloLoader:
    """A loader of this rank's shard of ``dataset`` in batches of ``batch_size`` (per rank).

    Every rank yields the same number of batches (``ceil(ceil(n / world_size) / batch_size)``) because DDP and
    ``ray.train.report`` are barriers; see :class:`ShardedSampler` and :func:`collate` for the order and batches.
    """
    return YoloLoader(dataset, batch_size, shuffle=shuffle, workers=workers, seed=seed, rank=rank,
                      world_size=world_size)
