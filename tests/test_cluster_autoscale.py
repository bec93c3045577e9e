"""raytrain tune against Ray's own autoscaler: a head with no worker node grows GPU-like nodes for the trials.

Ray's fake multi-node provider (``ray.autoscaler._private.fake_multi_node``) runs the real autoscaler (v1, as
``ray up`` does) on an autoscaling config, and starts each node it adds as Ray processes on this machine. This
machine has no GPU, so a custom resource, ``fake_gpu``, stands in for it: the worker node type offers
``{CPU: 1, fake_gpu: 1}`` like cluster.yaml's ``ray.worker.gpu`` offers ``{CPU: 4, GPU: 1}``, the head offers none,
and every trial worker asks for one (``resources.custom``), so no trial can start before the autoscaler has added
a node for it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

WORKER_TYPE = {"ray.worker.gpu": {"resources": {"CPU": 1, "fake_gpu": 1}, "min_workers": 0, "max_workers": 2}}

SPACE = """\
name: grow
train: {{data: shapes, model: yolov8n, imgsz: 64, batch: 4, workers: 0, fraction: 0.05, mosaic: 0.0,
        close_mosaic: 0, warmup_epochs: 0, epochs: 1, optimizer: SGD, plots: false, val: false, device: cpu}}
resources: {{workers: 1, gpu: false, cpus_per_worker: 1, custom: {{fake_gpu: {fake_gpu}}}}}
space:
  lr0: {{type: loguniform, low: 0.001, high: 0.01}}
metric: train/box_loss
mode: min
num_samples: 2
sampler: random
scheduler: none
wandb_mode: disabled
"""

# Every node the cluster has had (alive or not), with its resources, read by a separate driver.
LIST_NODES = """\
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print(json.dumps([{"id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"]} for n in ray.nodes()]))
"""


def tune(cluster, space_file, storage, project) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raytrain.cli", "tune", str(space_file), f"address={cluster.address}",
                           f"storage={storage}", f"project={project}", "loggers=none"],
                          capture_output=True, text=True, env=cluster.env, timeout=300)


def nodes(cluster) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", LIST_NODES, cluster.address], capture_output=True, text=True,
                         env=cluster.env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_the_autoscaler_adds_nodes_for_queued_trials_and_a_worker_that_never_fits_is_refused(tmp_path):
    from raycluster import LocalCluster

    cluster = LocalCluster(tmp_path)
    storage, project = tmp_path / "storage", tmp_path / "runs"
    try:
        config = cluster.fake_autoscaling_config({"CPU": 1}, WORKER_TYPE, max_workers=2)
        cluster.add_node(1, {}, head=True, autoscaling_config=config, dashboard=False)
        before = nodes(cluster)
        space = tmp_path / "grow.yaml"
        space.write_text(SPACE.format(fake_gpu=1))
        run = tune(cluster, space, storage, project)
        after = nodes(cluster)
        never = tmp_path / "never.yaml"
        never.write_text(SPACE.format(fake_gpu=2).replace("name: grow", "name: never"))
        refused = tune(cluster, never, storage, project)
        monitor = "".join(p.read_text(errors="replace") for p in cluster.temp_dir.glob("session_*/logs/monitor.*"))
    finally:
        cluster.stop()
    log = run.stdout[-4000:] + run.stderr[-4000:]
    assert [n["resources"].get("fake_gpu", 0) for n in before] == [0], "the head alone, without the resource"
    assert run.returncode == 0, log
    added = [n for n in after if n["resources"].get("fake_gpu")]
    assert 1 <= len(added) <= 2, f"the autoscaler added no node of the worker type: {after}\n{log}"
    assert re.search(r"Adding \d node\(s\) of type ray.worker.gpu", monitor), "the autoscaler's log of its nodes"
    exp = project / "grow"
    rows = (exp / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all(",error," not in r for r in rows[1:]), rows  # header + two trials
    for trial in sorted((exp / "trials").iterdir()):
        assert (trial / "weights" / "last.pt").is_file(), f"{trial.name} did not finish its epoch"
    # A trial away from the driver's node (the head) sends its run files with its checkpoints: every trial did, so
    # every trial trained on a node the autoscaler added (the head offers no fake_gpu).
    staged = {p.parents[2].name for p in (storage / "grow").glob("*/checkpoint_*/run/results.csv")}
    assert staged == {t.name for t in (exp / "trials").iterdir()}, staged
    # The never-fitting worker (2 fake_gpu; the node type offers 1) is refused before Ray Tune starts: one line naming
    # the node types and what they offer, exit code 2, no trial and no Tune state.
    error = refused.stderr.strip().splitlines()[-1] if refused.stderr.strip() else refused.stdout
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "one training worker needs {CPU: 1, fake_gpu: 2}" in error, error
    assert "ray.worker.gpu offers {CPU: 1, fake_gpu: 1}" in error and "ray.head.default offers {CPU: 1}" in error
    assert not (project / "never" / "trials").exists() and not (storage / "never").exists()
