"""The built-in downloadable datasets: Ultralytics' detection datasets that ``data=<name>.yaml`` names.

Ultralytics resolves ``data=coco8.yaml`` (and the others here) to a definition it ships; raytrain keeps its own
table of the same facts (root folder, split paths, class names, archive URLs), writes the dataset YAML itself and
downloads the archives with :func:`raytrain.data.download.download_dataset` (safe extraction, atomic, file lock).
Only datasets whose download is plain archives are here: the others' downloads are scripts that convert labels
(VOC, VisDrone, Objects365, ...), which raytrain never runs; :data:`NOT_BUILT_IN` says so by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from raytrain.data.common import datasets_dir
from raytrain.data.download import download_dataset
from raytrain.files import atomic_write

ASSETS = "https://github.com/ultralytics/assets/releases/download/v0.0.0"
COCO_IMAGES = "http://images.cocodataset.org/zips"
YAML_NAME = "data.yaml"  # the YAML raytrain writes into a built-in dataset's folder

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class Archive:
    """One archive of a built-in dataset.

    Attributes:
        url: http(s) URL of the .zip.
        into: the folder, relative to the dataset root, that the archive's single top-level folder (or its
            contents) becomes; ``""`` is the root itself.
        holds: paths relative to the dataset root whose presence shows the archive is in place.
    """

    url: str
    into: str
    holds: tuple[str, ...]


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset ``data=<name>.yaml`` (or ``data=<name>``) resolves to, as Ultralytics defines it.

    Attributes:
        name: the name as Ultralytics spells it (``coco8``, ``HomeObjects-3K``); matched case-insensitively.
        folder: its folder under raytrain's datasets folder (Ultralytics' ``path``).
        archives: downloaded in order, each skipped when it is in place already.
        train, val, test: split sources relative to the dataset root (``test`` None when there is none).
        names: class names, ids 0..nc-1.
    """

    name: str
    folder: str
    archives: tuple[Archive, ...]
    train: str
    val: str
    test: str | None
    names: tuple[str, ...]

    def yaml_text(self) -> str:
        """The dataset YAML raytrain writes into the dataset folder (``path: .``: it sits in the root)."""
        body = {"path": ".", "train": self.train, "val": self.val, **({"test": self.test} if self.test else {}),
                "names": dict(enumerate(self.names))}
        urls = ", ".join(a.url for a in self.archives)
        return f"# {self.name}: written by raytrain; downloaded from {urls}\n" + yaml.safe_dump(body, sort_keys=False)


def _one_zip(name: str, folder: str, names: tuple[str, ...], *, train: str = "images/train",
             val: str = "images/val", test: str | None = None) -> BuiltinDataset:
    """A dataset shipped as one release zip ``<ASSETS>/<folder>.zip`` holding its images and labels."""
    holds = tuple(dict.fromkeys(s for s in (train, val, test) if s))  # coco128 validates on its train folder
    return BuiltinDataset(name, folder, (Archive(f"{ASSETS}/{folder}.zip", "", holds),), train, val, test, names)


def _coco() -> BuiltinDataset:
    """COCO 2017: the labels zip (segments, as Ultralytics downloads: a polygon row trains as its box, and the
    image lists), then the train and val image zips into ``images/`` (test images have no labels: not fetched)."""
    labels = Archive(f"{ASSETS}/coco2017labels-segments.zip", "", ("labels", "train2017.txt", "val2017.txt"))
    images = tuple(Archive(f"{COCO_IMAGES}/{split}.zip", f"images/{split}", (f"images/{split}",))
                   for split in ("train2017", "val2017"))
    return BuiltinDataset("coco", "coco", (labels, *images), "train2017.txt", "val2017.txt", "test-dev2017.txt",
                          COCO_NAMES)


CATALOG: tuple[BuiltinDataset, ...] = (
    _one_zip("coco8", "coco8", COCO_NAMES),
    _one_zip("coco128", "coco128", COCO_NAMES, train="images/train2017", val="images/train2017"),
    _coco(),
    _one_zip("african-wildlife", "african-wildlife", ("buffalo", "elephant", "rhino", "zebra"), test="images/test"),
    _one_zip("brain-tumor", "brain-tumor", ("negative", "positive")),
    _one_zip("construction-ppe", "construction-ppe",
             ("helmet", "gloves", "vest", "boots", "goggles", "none", "Person", "no_helmet", "no_goggle",
              "no_gloves", "no_boots"), test="images/test"),
    _one_zip("HomeObjects-3K", "homeobjects-3K",
             ("bed", "sofa", "chair", "table", "lamp", "tv", "laptop", "wardrobe", "window", "door", "potted plant",
              "photo frame")),
    _one_zip("kitti", "kitti", ("car", "van", "truck", "pedestrian", "person_sitting", "cyclist", "tram", "misc")),
    _one_zip("medical-pills", "medical-pills", ("pill",)),
    _one_zip("signature", "signature", ("signature",)),
)
DATASETS: dict[str, BuiltinDataset] = {d.name.lower(): d for d in CATALOG}

# Ultralytics detection datasets it resolves by name that raytrain does not build in, and why (named in the error).
NOT_BUILT_IN: dict[str, str] = {
    **dict.fromkeys(("argoverse", "globalwheat2020", "objects365", "open-images-v7", "sku-110k", "tt100k", "voc",
                     "visdrone", "xview"),
                    "its Ultralytics download is a script that converts the labels, which raytrain does not run"),
    "lvis": "raytrain does not ship its 1203 class names",
    "coco8-grayscale": "it trains 1-channel models (channels: 1); raytrain's models take 3-channel images",
    "coco8-multispectral": "it trains 10-channel models; raytrain's models take 3-channel images",
    "coco12-formats": "it tests image formats (HEIC, AVIF, ...) that raytrain does not read",
}


def find_builtin(text: str) -> BuiltinDataset | None:
    """The built-in dataset ``data=text`` names (``coco8``, ``coco8.yaml``, ``COCO8.yml``), or None.

    Only a bare name matches: a path with a folder part (``cfg/coco8.yaml``) is always a file.
    """
    return DATASETS.get(_bare_name(text))


def builtin_written_at(yaml_file: Path) -> BuiltinDataset | None:
    """The built-in dataset whose YAML raytrain writes at ``yaml_file`` (``<datasets>/coco8/data.yaml``), when that
    file is missing: a run resolved on the driver names the driver's copy, which a worker on another node may lack.
    Only in this node's datasets folder, so a mistyped path of one's own is never filled with a download."""
    if yaml_file.name != YAML_NAME or yaml_file.is_file() or yaml_file.parent.parent != datasets_dir():
        return None
    return next((d for d in DATASETS.values() if d.folder == yaml_file.parent.name), None)


def why_not_built_in(text: str) -> str | None:
    """Why a dataset name Ultralytics knows is not built into raytrain, or None for any other name."""
    return NOT_BUILT_IN.get(_bare_name(text))


def _bare_name(text: str) -> str:
    path = Path(text.strip())
    if path.parent != Path("."):
        return ""
    return (path.stem if path.suffix.lower() in (".yaml", ".yml") else path.name).lower()


def ensure_builtin(dataset: BuiltinDataset, *, root: Path | None = None) -> Path:
    """The YAML of a built-in dataset, downloading what is missing into ``<datasets>/<folder>`` first.

    Each archive already in place (its ``holds`` paths exist) is skipped, so an interrupted multi-archive download
    resumes where it stopped; a dataset unzipped by hand gets its YAML written and nothing downloaded.

    Args:
        dataset: the catalog entry.
        root: overrides the dataset folder.

    Raises:
        DatasetError: a failed download (the message names the URL and where to put the archive by hand).
    """
    root = Path(root) if root is not None else datasets_dir() / dataset.folder
    for archive in dataset.archives:
        if not all((root / p).exists() for p in archive.holds):
            # ``holds`` relative to where this archive lands ("." when it is that folder itself)
            required = [os.path.relpath(p, archive.into or ".") for p in archive.holds]
            download_dataset(archive.url, root / archive.into, required=required)
    yaml_file = root / YAML_NAME
    if not yaml_file.is_file():
        atomic_write(yaml_file, dataset.yaml_text())
    return yaml_file
