"""What ``raytrain check data=...`` reports of a dataset (:mod:`raytrain.commands.check` prints it): what training
would see per split (usable images, backgrounds, instances, skipped files with reasons, fixes), then per class."""

from __future__ import annotations

from raytrain.data.dataset_yaml import DataSpec
from raytrain.data.labels import SplitIndex, scan_split
from raytrain.data.resolve import resolve_data


def scan_dataset(data: str, single: bool = False) -> tuple[DataSpec, dict[str, SplitIndex]]:
    """``data=`` resolved and each split scanned leniently (train, val, and test when the YAML has one)."""
    spec = resolve_data(data)
    splits = ["train", "val"] + (["test"] if spec.test else [])
    indexes = {s: scan_split(spec, s, strict=False, warn=False) for s in splits}
    if single:
        spec = DataSpec(spec.yaml_file, spec.root, {0: "object"}, spec.train, spec.val, spec.test)
        indexes = {s: single_cls(ix) for s, ix in indexes.items()}
    return spec, indexes


def summary_table(spec: DataSpec, indexes: dict[str, SplitIndex]) -> str:
    """The per-split counts table followed by the per-class instances table."""
    header = ("split", "images", "backgrounds", "no label file", "instances", "skipped", "fixed")
    rows = [header] + [(s, str(ix.images), str(ix.backgrounds), str(ix.missing_labels), str(ix.instances),
                        str(len(ix.skipped)), str(len(ix.notes))) for s, ix in indexes.items()]
    lines = [_aligned(rows), "", "Instances per class:"]
    counts = {s: ix.class_counts() for s, ix in indexes.items()}
    class_rows = [("id", "class", *indexes)]
    class_rows += [(str(i), name, *(str(int(counts[s][i])) for s in indexes)) for i, name in spec.names.items()]
    lines.append(_aligned(class_rows))
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]]) -> str:
    """Rows as text columns: numbers right-aligned, text left-aligned."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = (v.rjust(w) if v.isdigit() else v.ljust(w) for v, w in zip(r, widths, strict=True))
        lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def single_cls(index: SplitIndex) -> SplitIndex:
    """The split with every label's class set to 0 (``single_cls=True``)."""
    from dataclasses import replace

    from raytrain.data.labels import ImageRecord

    records = []
    for r in index.records:
        labels = r.labels.copy()
        labels[:, 0] = 0
        records.append(ImageRecord(r.im_file, r.shape, labels))
    return replace(index, names={0: "object"}, records=records)


__all__ = ["scan_dataset", "single_cls", "summary_table"]
