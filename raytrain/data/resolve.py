"""``data=`` to a usable dataset: a built-in name (generated or downloaded on first use) or a dataset YAML file.

The one place that knows every kind of dataset source, so the YAML reader (:mod:`raytrain.data.dataset_yaml`) and
the built-ins (:mod:`raytrain.data.shapes`, :mod:`raytrain.data.catalog`) need not know each other.
"""

from __future__ import annotations

from pathlib import Path

from raytrain.data import catalog, download, shapes
from raytrain.data.common import DatasetError
from raytrain.data.dataset_yaml import DataSpec, dataset_root, load_data_spec, missing_sources, read_dataset_yaml


def builtin_datasets() -> list[str]:
    """The names ``data=`` accepts besides a YAML path: ``shapes`` (generated) and the downloadable datasets
    (each also as ``<name>.yaml``, as in Ultralytics)."""
    return ["shapes", *(d.name for d in catalog.CATALOG)]


def resolve_data(data: str | Path) -> DataSpec:
    """The single entry point from ``data=`` to a usable :class:`DataSpec`.

    Args:
        data: ``shapes`` (generated offline on first use); a dataset YAML file; or the name of a built-in
            downloadable dataset, bare or as Ultralytics spells it (``coco8``, ``coco128.yaml``, ``coco.yaml``:
            :mod:`raytrain.data.catalog`), downloaded on first use. A YAML file of that name in the working
            directory wins over the built-in, as in Ultralytics. A YAML's ``download`` URL is fetched when its split
            folders are missing.

    Raises:
        DatasetError: unknown name, bad YAML, missing split folder, or a failed download (with the URL and where
            to put the files by hand).
    """
    text = str(data).strip()
    if text.lower() == "shapes":
        return load_data_spec(shapes.ensure_shapes())
    yaml_file = Path(text).expanduser()
    is_yaml = yaml_file.suffix.lower() in (".yaml", ".yml")
    builtin = catalog.find_builtin(text)
    if builtin is not None and not (is_yaml and yaml_file.is_file()):
        return load_data_spec(catalog.ensure_builtin(builtin))
    elsewhere = catalog.builtin_written_at(yaml_file.resolve()) if is_yaml else None
    if elsewhere is not None:  # the driver's copy, named by a run resolved there: prepared here, at the same path
        return load_data_spec(catalog.ensure_builtin(elsewhere, root=yaml_file.resolve().parent))
    if not is_yaml:
        raise DatasetError(f"data={text!r} is neither a built-in dataset ({', '.join(builtin_datasets())}) nor a "
                           f".yaml file.")
    why_not = catalog.why_not_built_in(text)
    if why_not and not yaml_file.is_file():
        raise DatasetError(f"data={text}: no such file here, and raytrain does not build this Ultralytics dataset "
                           f"in: {why_not}. Prepare it once (e.g. with Ultralytics) and give its YAML's path.")
    yaml_file = yaml_file.resolve()
    raw = read_dataset_yaml(yaml_file)
    root = dataset_root(yaml_file, raw)
    if missing_sources(yaml_file, raw, root) and raw.get("download"):
        root = download.ensure_yaml_download(yaml_file, raw, root)
    return load_data_spec(yaml_file, root=root)
