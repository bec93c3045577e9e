"""Shared fixtures: an isolated datasets folder, the shared COCO128 copy, one local Ray instance, a tiny dataset,
a guard that Ray never starts, and callbacks shipped to Ray workers by value."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

COCO128_YAML = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"


@pytest.fixture(scope="session", autouse=True)
def _isolated_datasets(tmp_path_factory: pytest.TempPathFactory):
    """Built-in datasets and Ultralytics' weights go to per-session folders, never to the user's cache, and weights
    are never fetched from the internet (a refused local port unless a test serves them); W&B never goes online."""
    old = {k: os.environ.get(k) for k in ("RAYTRAIN_DATASETS", "RAYTRAIN_WEIGHTS", "RAYTRAIN_WEIGHTS_URL",
                                          "WANDB_MODE", "WANDB_SILENT")}
    os.environ["RAYTRAIN_DATASETS"] = str(tmp_path_factory.mktemp("datasets"))
    os.environ["RAYTRAIN_WEIGHTS"] = str(tmp_path_factory.mktemp("weights"))
    os.environ["RAYTRAIN_WEIGHTS_URL"] = "http://127.0.0.1:9/no-internet-in-tests"
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


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if Ray starts: for input that must be rejected (or a plan printed) before anything starts."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local run (ray_local pins a cluster address)

    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start here: the input can be rejected (or the plan printed) first")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def by_value(request):
    """Ship the requesting test module's callbacks to Ray workers by value (tests/ is not importable there)."""
    import ray.cloudpickle

    module = sys.modules[request.module.__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    yield
    ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A dataset YAML with 8 train and 4 val images taken from the built-in shapes dataset."""
    from raytrain.data import resolve_data

    shapes = resolve_data("shapes")
    root = tmp_path_factory.mktemp("tiny")
    for split, count in (("train", 8), ("val", 4)):
        images = sorted(Path(shapes.sources(split)[0]).iterdir())[:count]
        for sub in ("images", "labels"):
            (root / sub / split).mkdir(parents=True)
        for image in images:
            shutil.copy(image, root / "images" / split / image.name)
            label = image.parents[2] / "labels" / split / f"{image.stem}.txt"
            shutil.copy(label, root / "labels" / split / label.name)
    names = "\n".join(f"  {i}: {n}" for i, n in shapes.names.items())
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return root / "data.yaml"
