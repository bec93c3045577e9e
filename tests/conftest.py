"""Shared fixtures: an isolated datasets folder, the shared COCO128 copy, and one local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

COCO128_YAML = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"


@pytest.fixture(scope="session", autouse=True)
def _isolated_datasets(tmp_path_factory: pytest.TempPathFactory):
    """Built-in datasets go to a per-session folder, never to the user's cache; W&B never goes online."""
    old = {k: os.environ.get(k) for k in ("RAYTRAIN_DATASETS", "WANDB_MODE", "WANDB_SILENT")}
    os.environ["RAYTRAIN_DATASETS"] = str(tmp_path_factory.mktemp("datasets"))
    os.environ["WANDB_MODE"] = "disabled"
    os.environ["WANDB_SILENT"] = "true"
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def coco128_yaml() -> Path:
    """The shared COCO128 dataset YAML (read in place); skips when ../shared/datasets/coco128 is absent."""
    if not COCO128_YAML.is_file():
        pytest.skip(f"COCO128 not found at {COCO128_YAML} (the shared datasets folder is absent)")
    return COCO128_YAML


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (with the dashboard, which frees stopped trials' workers) for all Ray tests."""
    import ray

    from raytrain.cluster.local import init_ray

    old_address = os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        init_ray("local", num_cpus=4)  # as `raytrain fit` / `raytrain tune` start it
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    yield ray
    ray.shutdown()
    if old_address is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = old_address
