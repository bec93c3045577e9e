"""Cluster readiness: cluster.yaml against Ray's own schema, and storage every node can reach."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from raytrain.cluster.storage import filesystem_type, is_uri, require_shared_storage, resolve_storage
from raytrain.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]

MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared nfs4 rw,relatime 0 0
tmpfs /mnt/shared/tmp tmpfs rw 0 0
"""


def test_cluster_yaml_passes_ray_schema_offline():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = prepare_config(copy.deepcopy(raw))  # merges the provider defaults, as `ray up` does; no cloud calls
    validate_config(prepared)
    nodes = prepared["available_node_types"]
    head, workers = nodes[prepared["head_node_type"]], [n for k, n in nodes.items() if k != prepared["head_node_type"]]
    assert "GPU" not in head["resources"]
    assert workers and all(n["resources"].get("GPU", 0) >= 1 and n["min_workers"] == 0 for n in workers)
    assert 0 < prepared["idle_timeout_minutes"] <= 30 and prepared["max_workers"] >= 1
    assert any("pip install" in c and "raytrain" in c for c in prepared["setup_commands"])


def test_cluster_yaml_holds_no_credentials():
    text = (ROOT / "cluster.yaml").read_text().lower()
    for secret in ("aws_secret_access_key", "aws_access_key_id", "wandb_api_key=", "api_key:", "password"):
        assert secret not in text


def test_resolve_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage(None, "runs/detect") == str(tmp_path / "runs" / "detect")
    assert resolve_storage("ckpts", "unused") == str(tmp_path / "ckpts")
    assert resolve_storage("file:///data/ray", "unused") == "/data/ray"
    assert resolve_storage("s3://bucket/raytrain", "unused") == "s3://bucket/raytrain"
    assert resolve_storage("gs://bucket/x", "unused") == "gs://bucket/x"
    with pytest.raises(ConfigError, match="unsupported URI scheme"):
        resolve_storage("ftp://host/x", "unused")
    assert is_uri("S3://b") and not is_uri("/tmp/x") and not is_uri("file:///x")


def test_filesystem_type_uses_longest_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert filesystem_type("/mnt/shared/ray", mounts) == "nfs4"
    assert filesystem_type("/mnt/shared/tmp/x", mounts) == "tmpfs"
    assert filesystem_type("/mnt/sharedother", mounts) == "ext4"
    assert filesystem_type("/x", tmp_path / "missing") is None


def test_multi_node_needs_shared_storage(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYTRAIN_SHARED_STORAGE", raising=False)
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    two_machines = ["10.0.0.1", "10.0.0.2"]
    with pytest.raises(ConfigError) as e:
        require_shared_storage("/home/me/runs", two_machines, mounts)
    message = str(e.value)
    assert "storage=/home/me/runs" in message and "2 machines" in message and "s3://" in message
    require_shared_storage("/mnt/shared/ray", two_machines, mounts)  # NFS: fine
    require_shared_storage("s3://bucket/x", two_machines, mounts)  # URI: fine
    require_shared_storage("/home/me/runs", ["10.0.0.1", "10.0.0.1"], mounts)  # two nodes, one machine: fine
    monkeypatch.setenv("RAYTRAIN_SHARED_STORAGE", "1")
    require_shared_storage("/home/me/runs", two_machines, mounts)  # vouched for by the user


TWO_NODE_SPACE = """\
name: twonode
train: {data: shapes, model: yolov8n, imgsz: 64, batch: 8, workers: 0, fraction: 0.05, mosaic: 0.0,
        close_mosaic: 0, epochs: 2, optimizer: SGD, plots: false, val: true, device: cpu}
resources: {workers: 1, gpu: false, cpus_per_worker: 1.5}
space:
  lr0: {type: loguniform, low: 0.001, high: 0.01}
metric: fitness
mode: max
num_samples: 2
max_concurrent_trials: 2
scheduler: none
wandb_mode: disabled
"""

LIST_TRAIN_WORKERS = """\
import json, sys
from ray.util.state import list_actors, list_nodes
address = sys.argv[1]
nodes = [n.node_id for n in list_nodes(address=address, filters=[("state", "=", "ALIVE")])]
# A one-worker trial trains in its own Tune trial process (ImplicitFunc); a multi-worker one in RayTrainWorkers.
workers = [a.node_id for a in list_actors(address=address, limit=1000, raise_on_missing_output=False)
           if a.class_name in ("ImplicitFunc", "RayTrainWorker")]
print(json.dumps({"nodes": nodes, "workers": workers}))
"""


@pytest.mark.ray
def test_two_node_cluster_runs_tune_on_both_nodes(tmp_path):
    """A head and a worker node on 127.0.0.1 (each 2 CPUs); two trials that each need 1.5 CPUs must use both."""
    import json
    import subprocess
    import sys

    from raycluster import LocalCluster

    cluster = LocalCluster(tmp_path)
    try:
        cluster.add_node(2, {"head_node": 1}, head=True)
        cluster.add_node(2, {"worker_node": 1})
        space = tmp_path / "space.yaml"
        space.write_text(TWO_NODE_SPACE)
        storage, project = tmp_path / "shared_storage", tmp_path / "runs"
        run = subprocess.run(
            [sys.executable, "-m", "raytrain.cli", "tune", str(space), f"address={cluster.address}",
             f"storage={storage}", f"project={project}"],
            capture_output=True, text=True, env=cluster.env, timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        placed = subprocess.run([sys.executable, "-c", LIST_TRAIN_WORKERS,
                                 f"http://127.0.0.1:{cluster.dashboard_port}"],
                                capture_output=True, text=True, env=cluster.env, timeout=120)
        assert placed.returncode == 0, placed.stderr[-3000:]
        seen = json.loads(placed.stdout.strip().splitlines()[-1])
    finally:
        cluster.stop()
    assert len(seen["nodes"]) == 2
    assert set(seen["workers"]) == set(seen["nodes"]), "the trials' training workers did not use both nodes"
    exp = project / "twonode"
    rows = (exp / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + two trials
    assert (storage / "twonode").is_dir()  # Tune's experiment state and the Train checkpoints in shared storage
    assert list((storage / "twonode").rglob("checkpoint_*")), "no Train checkpoint reached the shared storage"
    # The trial away from the driver's node also put its run files in its checkpoints, for the driver to copy in
    # (both nodes share this machine's disk here, so the copy itself is checked in test_cluster_sync.py).
    staged = {p.parents[2].name for p in (storage / "twonode").glob("*/checkpoint_*/run/results.csv")}
    assert len(staged) == 1, f"expected one trial away from the driver to stage its run files, got {staged}"
    (name,) = staged
    assert (exp / "trials" / name / "weights" / "last.pt").is_file()
    assert {p.name for p in (storage / "twonode" / name).glob("checkpoint_*/run/*")} >= {"args.yaml", "run.json"}


def test_worker_prepares_a_dataset_missing_on_its_node(tmp_path, monkeypatch):
    """A node without the driver's built-in dataset generates (or downloads) its own copy, under the file lock."""
    import shutil

    from raytrain.data import resolve_data
    from raytrain.train.worker import dataset_on_this_node

    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "driver"))
    spec = resolve_data("shapes")
    assert dataset_on_this_node("shapes", spec) is spec  # present: nothing to do
    shutil.rmtree(tmp_path / "driver")  # another node: same paths, no files
    local = dataset_on_this_node("shapes", spec)
    assert local is not spec and all(p.exists() for p in [*local.train, *local.val])
