"""``data=`` to a usable dataset: a built-in name (generated or downloaded on first use) or a dataset YAML file.

The one place that knows every kind of dataset source, so the YAML reader (:mod:`raytrain.data.dataset_yaml`) and
the built-ins (:mod:`raytrain.data.shapes`, :mod:`raytrain.data.download`) need not know each other.
"""

from __future__ import annotations

from pathlib import Path

from raytrain.data import download, shapes
from raytrain.data.common import DatasetError
from raytrain.data.dataset_yaml import DataSpec, dataset_root, load_data_spec, missing_sources, read_dataset_yaml


def builtin_datasets() -> list[str]:
    """The names ``data=`` accepts besides a YAML path: ``shapes`` (generated) and the downloadable COCO subsets."""
    return ["shapes", *download.BUILTIN]


def resolve_data(data: str | Path) -> DataSpec:
    """The single entry point from ``data=`` to a usable :class:`DataSpec`.

    Args:
        data: ``shapes`` (generated offline on first use), ``coco8`` / ``coco128`` (downloaded on first use), or
            the path of a dataset YAML (its ``download`` URL is fetched when its split folders are missing).

    Raises:
        DatasetError: unknown name, bad YAML, missing split folder, or a failed download (with the URL and where
            to put the files by hand).
    """
    text = str(data).strip()
    name = text.lower()
    if name == "shapes":
        return load_data_spec(shapes.ensure_shapes())
    if name in download.BUILTIN:
        return load_data_spec(download.ensure_builtin(name))
    yaml_file = Path(text).expanduser()
    if yaml_file.suffix.lower() not in (".yaml", ".yml"):
        raise DatasetError(f"data={text!r} is neither a built-in dataset ({', '.join(builtin_datasets())}) nor a "
                           f".yaml file.")
    yaml_file = yaml_file.resolve()
    raw = read_dataset_yaml(yaml_file)
    root = dataset_root(yaml_file, raw)
    if missing_sources(yaml_file, raw, root) and raw.get("download"):
        root = download.ensure_yaml_download(yaml_file, raw, root)
    return load_data_spec(yaml_file, root=root)
