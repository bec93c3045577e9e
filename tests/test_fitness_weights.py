"""F1 beside P and R, and ``fitness_weights=``: a user fitness for best.pt, patience and tune."""

from __future__ import annotations

import numpy as np
import pytest

from raytrain.config import ConfigError, make_config, parse_cli_args
from raytrain.engine.loop import epoch_fitness
from raytrain.metrics import DetectionMetrics, fitness
from raytrain.tuning.experiment import _with_fitness

ROW = {"metrics/precision(B)": 0.8, "metrics/recall(B)": 0.5, "metrics/mAP50(B)": 0.6, "metrics/mAP50-95(B)": 0.4,
       "metrics/f1(B)": 0.55}


def test_f1_is_the_class_mean_of_each_class_f1():
    # class 0: one box, found (P 1, R 1, F1 1); class 1: two boxes, one found (P 1, R 0.5, F1 2/3).
    # Mean F1 = (1 + 2/3) / 2 = 5/6, not the F1 of the mean P (1) and R (0.75), which is 6/7.
    metrics = DetectionMetrics(2, ["a", "b"])
    metrics.update(np.array([[10.0, 20, 110, 220, 0.9, 0], [300, 300, 400, 400, 0.9, 1]]), np.array([0, 1, 1]),
                   np.array([[10.0, 20, 110, 220], [300, 300, 400, 400], [500, 500, 600, 600]]))
    result = metrics.compute()
    assert result["metrics/recall(B)"] == pytest.approx(0.75)
    assert result["metrics/f1(B)"] == pytest.approx(5 / 6)


def test_weights_replace_the_single_key():
    assert fitness(ROW) == pytest.approx(0.4)
    assert fitness(ROW, weights={"mAP50-95": 0.9, "mAP50": 0.1}) == pytest.approx(0.9 * 0.4 + 0.1 * 0.6)
    assert fitness(ROW, key="f1") == pytest.approx(0.55)
    assert epoch_fitness(ROW, "mAP50-95", {"f1": 1.0, "recall": 1.0}) == pytest.approx(1.05)
    with pytest.raises(ValueError, match="'mAP' is not one of"):
        fitness(ROW, weights={"mAP": 1.0})


def test_weights_change_which_epoch_is_best():
    # Epoch 1 has the better mAP50-95, epoch 2 the better mAP50: the weights decide which best.pt keeps.
    epochs = [{**ROW, "metrics/mAP50-95(B)": 0.40, "metrics/mAP50(B)": 0.50},
              {**ROW, "metrics/mAP50-95(B)": 0.38, "metrics/mAP50(B)": 0.70}]
    default = [epoch_fitness(r, "mAP50-95") for r in epochs]
    weighted = [epoch_fitness(r, "mAP50-95", {"mAP50-95": 0.5, "mAP50": 0.5}) for r in epochs]
    assert default.index(max(default)) == 0 and weighted.index(max(weighted)) == 1


def test_config_parses_and_checks_weights():
    cli = parse_cli_args(["fitness_weights={mAP50-95: 0.9, mAP50: 0.1}"])
    assert make_config(cli).fitness_weights == {"mAP50-95": 0.9, "mAP50": 0.1}
    assert make_config({}).fitness_weights is None
    with pytest.raises(ConfigError, match="'map50' is not a metric.*Did you mean mAP50"):
        make_config({"fitness_weights": {"map50": 1}})
    with pytest.raises(ConfigError, match="at least one weight above 0"):
        make_config({"fitness_weights": {"mAP50": 0}})
    with pytest.raises(ConfigError, match="finite number >= 0"):
        make_config({"fitness_weights": {"mAP50": -1}})
    with pytest.raises(ConfigError, match="fitness_weights=.mAP50. is not a valid value"):
        make_config({"fitness_weights": "mAP50"})


def test_experiment_rebuilds_fitness_with_the_weights():
    # A results.csv row (no fitness column) read back by `raytrain results` gets the weighted fitness.
    row = {k: v for k, v in ROW.items() if k != "metrics/f1(B)"}
    weighted = _with_fitness(row, {"fitness_weights": {"mAP50": 1.0, "recall": 1.0}})
    assert weighted["fitness"] == pytest.approx(1.1)
