"""Dataset YAML files (Ultralytics format): reading and checking one, and the :class:`DataSpec` it resolves to.

A dataset YAML names a root folder (``path``), the image sources of each split (``train``, ``val``, optional
``test``: a folder, a ``.txt`` list of image paths, or a list of either), the class ``names`` (list or
``{id: name}``) and optionally a ``download`` URL. Relative paths resolve against the YAML file's folder (``path``)
and against ``path`` (the splits), so every path in a :class:`DataSpec` is absolute. The entry point from ``data=``
(built-in names included) is :func:`raytrain.data.resolve.resolve_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytrain.config import ConfigError, read_yaml_mapping
from raytrain.data.common import DatasetError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSpec:
    """A resolved dataset: absolute paths of its YAML file, root and split sources, and its class names.

    Attributes:
        yaml_file: the dataset YAML file.
        root: the dataset root folder (the YAML's ``path``).
        names: class id -> name, ids 0..nc-1.
        train: image sources of the train split (folders or ``.txt`` lists of images).
        val: image sources of the val split.
        test: image sources of the test split, or None when the YAML has none.
    """

    yaml_file: Path
    root: Path
    names: dict[int, str]
    train: list[Path]
    val: list[Path]
    test: list[Path] | None = None

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def sources(self, split: str) -> list[Path]:
        """The image sources of ``split`` (train, val or test); a clear error when the split is absent."""
        if split not in SPLITS:
            raise DatasetError(f"split={split!r} is not a dataset split: use train, val or test.")
        sources = getattr(self, split)
        if not sources:
            raise DatasetError(f"{self.yaml_file}: the dataset has no '{split}' split.")
        return list(sources)


def read_dataset_yaml(yaml_file: str | Path) -> dict[str, Any]:
    """Read and type-check a dataset YAML without touching the split folders.

    Returns:
        The raw mapping with ``names`` normalised to ``{int: str}`` (ids 0..nc-1).

    Raises:
        DatasetError: missing file, invalid YAML, missing ``train``/``val``/``names``, or values of the wrong type.
    """
    yaml_file = Path(yaml_file).expanduser()
    try:
        raw = read_yaml_mapping(yaml_file, label=f"data={yaml_file}", kind="dataset YAML",
                                expected="a mapping with train, val and names")
    except UnicodeDecodeError as e:
        raise DatasetError(f"data={yaml_file}: not a text file ({e}).") from e
    except ConfigError as e:
        raise DatasetError(str(e)) from e
    for key in ("train", "val", "names"):
        if raw.get(key) in (None, "", []):
            raise DatasetError(f"{yaml_file}: missing required key '{key}'.")
    for key in ("path", "download"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise DatasetError(f"{yaml_file}: '{key}' must be text, got {type(raw[key]).__name__}.")
    for key in SPLITS:
        _check_split_value(yaml_file, key, raw.get(key))
    raw["names"] = parse_names(raw["names"], yaml_file)
    if raw.get("nc") is not None and raw["nc"] != len(raw["names"]):
        raise DatasetError(f"{yaml_file}: 'nc' is {raw['nc']} but 'names' has {len(raw['names'])} classes.")
    return raw


def _check_split_value(yaml_file: Path, key: str, value: Any) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise DatasetError(f"{yaml_file}: '{key}' must be a folder, a .txt file or a list of them, got {value!r}.")


def parse_names(names: Any, where: Path | str = "") -> dict[int, str]:
    """Class names from a list ``[a, b]`` or a mapping ``{0: a, 1: b}`` (ids must be 0..nc-1)."""
    if isinstance(names, list):
        mapping = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            mapping = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: 'names' keys must be class ids 0, 1, ...: {e}") from e
    else:
        raise DatasetError(f"{where}: 'names' must be a list or a mapping of id: name, got {type(names).__name__}.")
    if sorted(mapping) != list(range(len(mapping))):
        raise DatasetError(f"{where}: 'names' ids must be 0..{len(mapping) - 1} without gaps, got {sorted(mapping)}.")
    if not all(isinstance(v, (str, int, float)) and str(v) for v in mapping.values()):
        raise DatasetError(f"{where}: every entry of 'names' must be a non-empty name.")
    return {i: str(mapping[i]) for i in range(len(mapping))}


def dataset_root(yaml_file: Path, raw: dict[str, Any]) -> Path:
    """The absolute root folder: ``path`` resolved against the YAML file's folder (default: that folder)."""
    base = yaml_file.expanduser().resolve().parent
    path = raw.get("path")
    return (base / Path(path).expanduser()).resolve() if path else base


def split_sources(root: Path, value: str | list[str] | None) -> list[Path] | None:
    """Absolute image sources of one split; relative entries resolve against the dataset root."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [(root / Path(v).expanduser()).resolve() for v in items]


def load_data_spec(yaml_file: str | Path, root: Path | None = None) -> DataSpec:
    """Build a :class:`DataSpec` from a dataset YAML and check that every split source exists.

    Args:
        yaml_file: the dataset YAML.
        root: overrides the YAML's ``path`` (used when a dataset was downloaded elsewhere).

    Raises:
        DatasetError: bad YAML (see :func:`read_dataset_yaml`) or a split source that does not exist.
    """
    yaml_file = Path(yaml_file).expanduser().resolve()
    raw = read_dataset_yaml(yaml_file)
    root = root or dataset_root(yaml_file, raw)
    spec = DataSpec(
        yaml_file=yaml_file,
        root=root,
        names=raw["names"],
        train=split_sources(root, raw["train"]) or [],
        val=split_sources(root, raw["val"]) or [],
        test=split_sources(root, raw.get("test")),
    )
    for split in SPLITS:
        for source in getattr(spec, split) or []:
            if not source.exists():
                raise DatasetError(f"{yaml_file}: '{split}' source {source} does not exist.")
    return spec


def missing_sources(yaml_file: Path, raw: dict[str, Any], root: Path) -> list[Path]:
    """Split sources named by the YAML that do not exist under ``root``."""
    missing = []
    for split in SPLITS:
        missing += [s for s in split_sources(root, raw.get(split)) or [] if not s.exists()]
    return missing
