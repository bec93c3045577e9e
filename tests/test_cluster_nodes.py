"""Capacity on the node types a trial can be placed on: the pure arithmetic on hand-made shapes, the shipped
cluster.yaml against the shipped detect.yaml, GPUs asked for where none can come, and Ray's usage statistics."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from tuning_helpers import space

from raytrain.cluster import compat
from raytrain.cluster.nodes import (
    ClusterShape,
    NodeType,
    check_fits,
    max_gpus,
    max_placeable,
    per_node,
    shape_from_autoscaling_config,
    shape_from_nodes,
)
from raytrain.config import ConfigError
from raytrain.tuning.capacity import concurrency_cap, trial_footprint
from raytrain.tuning.orchestrate import build_job
from raytrain.tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30

# The AWS instance types cluster.yaml names: vCPUs, memory and NVIDIA GPUs, from AWS's instance type pages
# (https://aws.amazon.com/ec2/instance-types/g5/ and /m6i/, as of 2026-12), which is what Ray's AWS node provider
# reads from EC2's DescribeInstanceTypes when it fills in a node type's resources (VCpuInfo, MemoryInfo, GpuInfo).
AWS_INSTANCES = {
    "m6i.2xlarge": {"vcpus": 8, "memory_gib": 32, "gpus": 0},
    "g5.xlarge": {"vcpus": 4, "memory_gib": 16, "gpus": 1},
}
# Ray's share of a worker node's memory left for tasks (1 - DEFAULT_OBJECT_STORE_MEMORY_PROPORTION, Ray 2.60).
TASK_MEMORY_SHARE = 0.7

GPU_CLUSTER = ClusterShape((NodeType("head", {"CPU": 4}, 1, head=True),
                            NodeType("gpu", {"CPU": 4, "GPU": 1, "memory": 11 * GiB}, 8)),
                           can_grow=True, max_nodes=8, source="a test cluster")


# ------------------------------------------------------------------------------------------------ the arithmetic
def test_per_node_counts_whole_bundles():
    assert per_node({"CPU": 4, "GPU": 1}, {"CPU": 2, "GPU": 1}) == 1  # the GPU runs out first
    assert per_node({"CPU": 4, "GPU": 1}, {"CPU": 2}) == 2
    assert per_node({"CPU": 16, "GPU": 1}, {"CPU": 2, "GPU": 0.25}) == 4  # shares: four quarter-GPU workers
    assert per_node({"CPU": 3}, {"CPU": 1, "GPU": 1}) == 0  # no GPU at all
    assert per_node({"CPU": 8, "fake_gpu": 1}, {"CPU": 1, "fake_gpu": 1}) == 1  # custom resources count the same


def test_max_placeable_counts_node_types_and_the_cluster_cap():
    one_gpu = {"CPU": 4, "GPU": 1}
    assert max_placeable(GPU_CLUSTER, one_gpu) == 8  # 8 GPU nodes x 1; the head (no GPU) holds none
    assert max_placeable(GPU_CLUSTER, {"CPU": 1}) == 4 + 8 * 4  # CPU-only bundles fit the head too
    capped = ClusterShape(GPU_CLUSTER.node_types + (NodeType("big", {"CPU": 48, "GPU": 4}, 4),), can_grow=True,
                          max_nodes=5)
    assert max_placeable(capped, one_gpu) == 4 * 4 + 1 * 1  # 5 nodes: the 4-GPU type first, then one 1-GPU node
    assert max_gpus(capped) == 17  # the GPUs the autoscaler can reach under its cap of 5 nodes, not 4 * 4 + 8
    unlimited = ClusterShape((NodeType("gpu", one_gpu, None),), can_grow=True)
    assert max_placeable(unlimited, one_gpu) is None and max_gpus(unlimited) > 10**5
    assert max_gpus(GPU_CLUSTER) == 8 and max_gpus(ClusterShape.fixed({"CPU": 2})) == 0


def test_a_worker_that_fits_no_node_type_is_refused_in_one_line_naming_each_type():
    check_fits(GPU_CLUSTER, {"CPU": 4, "GPU": 1}, "one training worker")  # fits the GPU type exactly
    with pytest.raises(ConfigError) as info:
        check_fits(GPU_CLUSTER, {"CPU": 8, "GPU": 1}, "one training worker")
    message = str(info.value)
    assert "\n" not in message
    assert message == ("one training worker needs {CPU: 8, GPU: 1}, which no node type of a test cluster holds: "
                       "head offers {CPU: 4}; gpu offers {CPU: 4, GPU: 1, memory: 11 GiB}.")
    with pytest.raises(ConfigError, match="needs {CPU: 1, memory: 12 GiB}"):  # memory counts like the others
        check_fits(GPU_CLUSTER, {"CPU": 1, "memory": 12 * GiB}, "one training worker")


def test_shapes_from_an_autoscaling_config_and_from_alive_nodes():
    config = {"max_workers": 6, "head_node_type": "h", "available_node_types": {
        "h": {"resources": {"CPU": 2}, "node_config": {}},
        "w": {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 3, "node_config": {}},
        "x": {"resources": {"CPU": 1}, "node_config": {}}}}  # no max_workers of its own: the cluster's 6
    shape = shape_from_autoscaling_config(config)
    assert shape.can_grow and shape.max_nodes == 6
    assert [(t.name, t.max_nodes, t.head) for t in shape.node_types] == [("h", 1, True), ("w", 3, False),
                                                                         ("x", 6, False)]
    assert max_placeable(shape, {"CPU": 1}) == 2 + 3 * 4 + 3 * 1  # the head's 2, then 3 w nodes, then 3 x nodes
    no_workers = shape_from_autoscaling_config({"head_node_type": "h", "available_node_types": {
        "h": {"resources": {"CPU": 2}}, "w": {"resources": {"GPU": 1}, "max_workers": 0}}})
    assert not no_workers.can_grow
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0, "node:10.0.0.1": 1.0}},
             {"Alive": True, "Resources": {"CPU": 2.0, "node:10.0.0.2": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    static = shape_from_nodes(nodes)
    assert not static.can_grow and [(dict(t.resources), t.max_nodes) for t in static.node_types] == [({"CPU": 2}, 2)]
    assert max_placeable(static, {"CPU": 1.5}) == 2  # one per node, although 4 CPUs in all would hold two


# -------------------------------------------------------------------------------------------- tune's capacity
def test_trials_are_sized_by_node_types_while_no_gpu_node_runs(tmp_path):
    """A fresh autoscaling cluster: only the CPU head is alive, yet GPU trials are planned for the GPU node type."""
    spec = load_space(space(tmp_path, max_concurrent_trials=None, train={**space(tmp_path)["train"], "device": ""},
                            resources={"workers": 2, "gpu": True, "cpus_per_worker": 4}))
    footprint = trial_footprint(spec.base_config, GPU_CLUSTER)
    assert (footprint.workers, footprint.accelerator, footprint.worker) == (2, "cuda", {"CPU": 4.0, "GPU": 1.0})
    assert concurrency_cap(spec, GPU_CLUSTER) == 4  # 8 GPU nodes, 2 per trial
    job = build_job(spec, tmp_path / "exp", str(tmp_path), spec.base_config, GPU_CLUSTER)
    assert job.gpus_available == 2 and job.workers == 2  # the trial plans CUDA workers even before nodes exist
    too_big = load_space(space(tmp_path, resources={"workers": 2, "gpu": True, "cpus_per_worker": 8}))
    with pytest.raises(ConfigError, match=r"resources: one training worker needs \{CPU: 8, GPU: 1\}.*gpu offers"):
        concurrency_cap(too_big, GPU_CLUSTER)
    custom = load_space(space(tmp_path, resources={"gpu": False, "worker_resources": {"fake_gpu": 1}}))
    assert build_job(custom, tmp_path / "e", str(tmp_path), custom.base_config,
                     ClusterShape.fixed({"CPU": 4, "fake_gpu": 1})).resources == {"CPU": 1.0, "fake_gpu": 1.0}


def test_gpu_true_on_a_cluster_without_gpus_is_an_error_not_a_cpu_run(tmp_path):
    spec = load_space(space(tmp_path, resources={"gpu": True}))
    assert spec.train["device"] == "cuda"
    for cpu_only in (ClusterShape.fixed({"CPU": 16}, "this machine"),
                     ClusterShape((NodeType("head", {"CPU": 4}, 1, head=True),
                                   NodeType("cpu", {"CPU": 8}, 4)), can_grow=True, source="a CPU cluster")):
        with pytest.raises(ConfigError, match="resources.gpu asks for GPUs, but .* has none and cannot add any"):
            concurrency_cap(spec, cpu_only)
    auto = load_space(space(tmp_path, train={**space(tmp_path)["train"], "device": ""}))  # gpu unset: GPUs if any
    assert trial_footprint(auto.base_config, ClusterShape.fixed({"CPU": 16})).accelerator == "cpu"


# ------------------------------------------------------------------------------ the shipped cluster and space
def bootstrap_config() -> dict:
    """cluster.yaml as `ray up` puts it on the head: Ray's defaults merged (prepare_config, offline), then each
    node type's resources filled in from its instance type as Ray's AWS node provider does (vCPUs, GPUs, and for
    worker types memory), the file's own resources winning."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(yaml.safe_load((ROOT / "cluster.yaml").read_text())))
    validate_config(config)
    for name, node_type in config["available_node_types"].items():
        instance = AWS_INSTANCES[node_type["node_config"]["InstanceType"]]
        declared = node_type.get("resources", {})
        assert declared.get("CPU", 0) <= instance["vcpus"] and declared.get("GPU", 0) <= instance["gpus"], \
            f"{name} claims more than a {node_type['node_config']['InstanceType']} has"
        filled = {"CPU": instance["vcpus"], **({"GPU": instance["gpus"]} if instance["gpus"] else {})}
        if name != config["head_node_type"]:
            filled["memory"] = int(instance["memory_gib"] * GiB * TASK_MEMORY_SHARE)
        node_type["resources"] = {**filled, **declared}
    return config


def test_cluster_yaml_holds_every_trial_worker_of_detect_yaml():
    shape = shape_from_autoscaling_config(bootstrap_config(), source="cluster.yaml")
    assert shape.can_grow and max_gpus(shape) == 8
    spec = load_space(ROOT / "search_spaces" / "detect.yaml")
    base = spec.base_config
    footprint = trial_footprint(base, shape)
    assert footprint.accelerator == "cuda"  # no GPU node is alive on a fresh cluster: planned from the node types
    check_fits(shape, footprint.worker, "a detect.yaml training worker")  # raises, naming the types, if not
    gpu_type = next(t for t in shape.node_types if t.resources.get("GPU"))
    assert per_node(gpu_type.resources, footprint.worker) >= 1
    assert base.workers <= base.cpus_per_worker, "dataloader processes beyond the worker's CPUs would be capped"
    assert concurrency_cap(spec, shape) == 8 // footprint.workers  # all GPU nodes busy, none idle


# ----------------------------------------------------------------------------------------- usage statistics
def test_usage_stats_are_off_for_a_local_ray_unless_the_user_chose(tmp_path, monkeypatch):
    import ray

    from raytrain.cluster import local

    seen = []
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(os.environ.get(compat.USAGE_STATS_ENV)))
    monkeypatch.setenv("RAY_USAGE_STATS_CONFIG_PATH", str(tmp_path / "config.json"))
    monkeypatch.delenv(compat.USAGE_STATS_ENV, raising=False)
    local.init_ray("local")
    assert seen == ["0"] and compat.USAGE_STATS_ENV not in os.environ  # off for the start only
    (tmp_path / "config.json").write_text('{"usage_stats": true}')  # `ray enable-usage-stats`
    local.init_ray("local")
    monkeypatch.setenv(compat.USAGE_STATS_ENV, "1")
    local.init_ray("local")
    assert seen == ["0", None, "1"]


def test_raytrain_tune_with_gpu_true_on_a_machine_without_gpus_stops_before_ray_starts(no_ray, tmp_path, capsys):
    import torch

    from raytrain import cli

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space(tmp_path)))
    assert cli.main(["tune", str(path), "gpu=true"]) == 2  # no_ray: Ray must not start
    err = capsys.readouterr().err
    assert "resources.gpu asks for GPUs, but this machine has none and cannot add any" in err
