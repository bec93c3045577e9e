"""Devices and batch sizes (:mod:`raytrain.engine.devices`, :mod:`raytrain.engine.autobatch`): ``device=`` plans,
the per-worker batch split, AutoBatch's fit of memory against batch size."""

from __future__ import annotations

import pytest

from raytrain.config import ConfigError
from raytrain.engine.autobatch import fit_batch_size
from raytrain.engine.devices import check_local_gpu_ids, parse_gpu_ids, per_worker_batch, plan_devices


def test_fit_batch_size():
    sizes = [1, 2, 4, 8, 16]
    assert fit_batch_size(sizes, [100 + 10 * b for b in sizes], 1000, 0.6) == 50
    assert fit_batch_size(sizes, [100 + 10 * b for b in sizes], 1e6, 0.6) == 1024  # capped
    assert fit_batch_size(sizes, [900 + 10 * b for b in sizes], 1000, 0.6) == 1  # at least 1


def test_plan_devices_and_batch_split():
    cpu = plan_devices("cpu", None, 4)
    assert (cpu.accelerator, cpu.num_workers, cpu.note) == ("cpu", 1, "")
    assert plan_devices("cpu", 3, 0).num_workers == 3
    assert (plan_devices("0", None, 2).accelerator, plan_devices("0", None, 2).num_workers) == ("cuda", 1)
    assert plan_devices("0,1", None, 2).num_workers == 2
    assert plan_devices("", None, 4).num_workers == 4
    assert plan_devices("", None, 0).accelerator == "cpu"
    assert plan_devices("0", 8, 16).num_workers == 8  # cluster: num_workers wins
    with pytest.raises(ConfigError, match="device=0,1: asks for GPU 0,1, but there is no GPU here"):
        plan_devices("0,1", None, 0)  # never a silent CPU run
    with pytest.raises(ConfigError, match="device=7: GPU 7 does not exist; this machine has GPUs 0, 1"):
        check_local_gpu_ids("7", 2)
    with pytest.raises(ConfigError, match="this machine has no CUDA GPU"):
        check_local_gpu_ids("0", 0)
    check_local_gpu_ids("1", 2)
    check_local_gpu_ids("cpu", 0)
    mps = plan_devices("mps", 2, 0)
    assert (mps.accelerator, mps.num_workers) == ("mps", 1) and mps.note
    with pytest.raises(ConfigError, match="Ray sees 1 GPU"):
        plan_devices("0,1", None, 1)
    assert parse_gpu_ids("cuda:1") == [1] and parse_gpu_ids("0, 2") == [0, 2] and parse_gpu_ids("") is None
    with pytest.raises(ConfigError):
        parse_gpu_ids("gpu")
    assert per_worker_batch(16, 2) == 8
    with pytest.raises(ConfigError, match="does not divide between 3 workers"):
        per_worker_batch(16, 3)
