"""Latency measured on a tiny model, params and GFLOPs from torch's counter, and the per-experiment reuse."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from raytrain.config import ConfigError
from raytrain.deploy.latency import measure_latency, runtime_problem
from raytrain.deploy.profile import count_gflops, count_params
from raytrain.tuning.measure import MEASURED_FILE, measure_model
from raytrain.tuning.objectives import Constraint, DeploySpec


def test_params_and_gflops_are_counted_not_estimated():
    # One 3x3 conv, 3 -> 8 channels, with bias, on 32x32 (padding 1): 8 * 3 * 9 + 8 = 224 parameters;
    # 32 * 32 * 8 outputs x 27 multiply-adds x 2 FLOPs = 442,368 FLOPs (the bias add is not counted by torch).
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_params(conv) == 224
    assert count_gflops(conv, 32) == pytest.approx(442_368 / 1e9)
    assert conv.training  # its mode is put back


def test_latency_of_a_tiny_model(tmp_path):
    from raytrain.models import build_model

    model = build_model("yolov8n", nc=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    lat = measure_latency(model, 64, threads=1, warmup=2, runs=5)
    assert lat.runs == 5 and lat.warmup == 2 and lat.threads == 1 and lat.runtime == "torch" and lat.imgsz == 64
    assert 0 < lat.min_ms <= lat.p25_ms <= lat.median_ms <= lat.p75_ms <= lat.max_ms
    assert lat.iqr_ms == pytest.approx(lat.p75_ms - lat.p25_ms) and lat.device.startswith("cpu: ")
    assert torch.get_num_threads() == threads  # the fixed thread count is only for the measurement
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a fused copy was timed
    assert model.training


def test_runtimes_without_their_packages_are_refused(monkeypatch):
    import importlib.util

    assert runtime_problem("torch") is None
    assert "not a runtime" in runtime_problem("tensorrt")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert "needs openvino: pip install 'raytrain[export]'" in runtime_problem("openvino")
    with pytest.raises(ConfigError, match="latency_runtime=openvino: .*needs openvino"):
        measure_latency(nn.Conv2d(3, 8, 3), 32, runtime="openvino")


def test_measured_once_per_kind_and_reused(tmp_path, monkeypatch):
    import raytrain.deploy.latency as timing
    import raytrain.tuning.measure as measure

    monkeypatch.setattr(timing, "TIMED_RUNS", 7)  # seconds, not a minute, on a shared 2-core machine
    monkeypatch.setattr(timing, "WARMUP_RUNS", 1)
    calls = []
    real = measure._measure
    monkeypatch.setattr(measure, "_measure", lambda *a: calls.append(a[:3]) or real(*a))
    deploy = DeploySpec(("fitness", "latency_ms"), ("max", "min"), (Constraint("params", high=1e6),))
    first = measure_model("yolov8n", 2, 64, deploy, "cpu", tmp_path)
    again = measure_model("yolov8n", 2, 64, deploy, "cpu", tmp_path)
    other = measure_model("yolov8n", 2, 96, deploy, "cpu", tmp_path)  # another imgsz: measured on its own
    assert calls == [("yolov8n", 2, 64), ("yolov8n", 2, 96)]
    assert first == again and set(first) == {"latency_ms", "latency_iqr_ms", "params", "gflops"}
    assert first["params"] == other["params"] and other["gflops"] > first["gflops"]
    table = json.loads((tmp_path / MEASURED_FILE).read_text())
    key = next(k for k in table if "imgsz=64" in k)
    assert table[key]["latency"]["runs"] == 7 and table[key]["latency"]["threads"] == 1
    # The constraint is checked on these numbers before training: 3.0 M parameters > 1 M.
    assert deploy.violations(first) == [f"params {first['params']:.4g} > max 1e+06"]
