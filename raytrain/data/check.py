"""``raytrain check data=...``: check a dataset and print what training would see.

Per split: usable images, backgrounds, instances, skipped files (with reasons) and fixes; then instances per class.
Exit code 0 when the train and val splits each have a usable image, 1 otherwise (2 for a bad YAML or argument).
"""

from __future__ import annotations

import sys
from typing import Any

from raytrain.config import make_config
from raytrain.data.dataset_yaml import DataSpec
from raytrain.data.labels import SplitIndex, scan_split
from raytrain.data.resolve import resolve_data


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


def main(positional: list[str], args: dict[str, Any]) -> int:
    """Check ``data=`` (or a positional dataset) and print the summary; return 0 when it can be trained on."""
    if positional and "data" not in args:
        args = {**args, "data": positional[0]}
    cfg = make_config(args)
    spec = resolve_data(cfg.data)
    splits = ["train", "val"] + (["test"] if spec.test else [])
    indexes = {s: scan_split(spec, s, strict=False, warn=False) for s in splits}
    if cfg.single_cls:
        spec = DataSpec(spec.yaml_file, spec.root, {0: "object"}, spec.train, spec.val, spec.test)
        indexes = {s: _single_cls(ix) for s, ix in indexes.items()}
    print(f"Dataset {spec.yaml_file}")
    print(f"  root {spec.root}, {spec.nc} classes")
    for s in splits:
        print(f"  {s}: {', '.join(map(str, spec.sources(s)))}  (cache: {indexes[s].cache_file or 'not written'})")
    print()
    print(summary_table(spec, indexes))
    for title, attr in (("Skipped", "skipped"), ("Fixed", "notes")):
        items = [(s, f, why) for s, ix in indexes.items() for f, why in getattr(ix, attr)]
        if items:
            print(f"\n{title} ({len(items)}):")
            for s, f, why in items:
                print(f"  {s}  {f}: {why}")
    empty = [s for s in ("train", "val") if not indexes[s].images]
    if empty:
        print(f"\nraytrain check: not usable: no usable image in {' and '.join(empty)}.", file=sys.stderr)
        return 1
    print(f"\nOK: {spec.yaml_file.name} is usable ({indexes['train'].images} train, {indexes['val'].images} val "
          f"images).")
    return 0


def _single_cls(index: SplitIndex) -> SplitIndex:
    from dataclasses import replace

    from raytrain.data.labels import ImageRecord

    records = []
    for r in index.records:
        labels = r.labels.copy()
        labels[:, 0] = 0
        records.append(ImageRecord(r.im_file, r.shape, labels))
    return replace(index, names={0: "object"}, records=records)
