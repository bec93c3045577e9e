"""results.csv and results.png (:mod:`raytrain.engine.results`): the whole history rewritten every epoch."""

from __future__ import annotations

import pytest

from raytrain.engine.results import COLUMNS, plot_results, read_results_csv, write_results_csv


def test_results_csv_rewrites_whole_history(tmp_path):
    rows = [{"epoch": e, "time": 10.0 * e, **{c: 0.1 * e for c in COLUMNS[2:]}} for e in (1, 2, 3)]
    path = write_results_csv(tmp_path / "results.csv", rows)
    text = path.read_text().splitlines()
    assert text[0].split(",") == list(COLUMNS) and len(text) == 4
    back = read_results_csv(path)
    assert [r["epoch"] for r in back] == [1, 2, 3] and back[2]["metrics/mAP50(B)"] == pytest.approx(0.3)
    write_results_csv(path, rows[:2])  # after a restart from epoch 2: no duplicated rows
    assert [r["epoch"] for r in read_results_csv(path)] == [1, 2]
    png = plot_results(path)
    assert png.name == "results.png" and png.stat().st_size > 10_000
