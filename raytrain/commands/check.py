"""``raytrain check data=DATA [single_cls=True]``: what training would see of a dataset. Exit code 0 when the train
and val splits each have a usable image, 1 otherwise (2 for a bad YAML or argument)."""

from __future__ import annotations

import sys
from typing import Any

from raytrain.commands.common import take_positional
from raytrain.config import make_config


def main(positional: list[str], args: dict[str, Any]) -> int:
    from raytrain.data.check import scan_dataset, summary_table

    cfg = make_config(take_positional("check", positional, args, "data"))
    spec, indexes = scan_dataset(cfg.data, cfg.single_cls)
    print(f"Dataset {spec.yaml_file}")
    print(f"  root {spec.root}, {spec.nc} classes")
    for s in indexes:
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
