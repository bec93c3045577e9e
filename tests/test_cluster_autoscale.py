"""raytrain tune against Ray's own autoscaler: a head with no worker node grows GPU-like nodes for the trials.

Ray's fake multi-node provider (``ray.autoscaler._private.fake_multi_node``) runs the real autoscaler (v1, as
``ray up`` does) on an autoscaling config, and starts each node it adds as Ray processes on this machine. This
machine has no GPU, so a custom resource, ``fake_gpu``, stands in for it: the worker node type offers
``{CPU: 1, fake_gpu: 1}`` like cluster.yaml's ``ray.worker.gpu`` offers ``{CPU: 4, GPU: 1}``, the head offers none,
and every trial worker asks for one (``resources.worker_resources``), so no trial can start before the autoscaler
has added a node for it.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from raytrain.tuning.experiment import load_experiment

WORKER_TYPE = {"ray.worker.gpu": {"resources": {"CPU": 1, "fake_gpu": 1}, "min_workers": 0, "max_workers": 2}}

SPACE = """\
name: grow
train: {{data: shapes, model: yolov8n, imgsz: 64, batch: 4, workers: 0, fraction: 0.05, mosaic: 0.0,
        close_mosaic: 0, warmup_epochs: 0, epochs: 1, optimizer: SGD, plots: false, val: false, device: cpu}}
resources: {{workers: 1, gpu: false, cpus_per_worker: 1, worker_resources: {{fake_gpu: {fake_gpu}}}}}
space:
  lr0: {{type: loguniform, low: 0.001, high: 0.01}}
metric: train/box_loss
mode: min
num_samples: 2
sampler: random
scheduler: none
wandb_mode: disabled
"""

def tune(cluster, space_file, storage, project) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raytrain.cli", "tune", str(space_file), f"address={cluster.address}",
                           f"storage={storage}", f"project={project}", "loggers=none"],
                          capture_output=True, text=True, env=cluster.env, timeout=300)


@pytest.mark.ray
def test_the_autoscaler_adds_nodes_for_queued_trials_and_a_worker_that_never_fits_is_refused(tmp_path):
    from raycluster import LocalCluster

    cluster = LocalCluster(tmp_path)
    storage, project = tmp_path / "storage", tmp_path / "runs"
    try:
        config = cluster.fake_autoscaling_config({"CPU": 1}, WORKER_TYPE, max_workers=2)
        cluster.add_node(1, {}, head=True, autoscaling_config=config, dashboard=False)
        space = tmp_path / "grow.yaml"
        space.write_text(SPACE.format(fake_gpu=1))
        run = tune(cluster, space, storage, project)
        never = tmp_path / "never.yaml"
        never.write_text(SPACE.format(fake_gpu=2).replace("name: grow", "name: never"))
        refused = tune(cluster, never, storage, project)
        monitor = "".join(p.read_text(errors="replace") for p in cluster.temp_dir.glob("session_*/logs/monitor.*"))
    finally:
        cluster.stop()
    log = run.stdout[-4000:] + run.stderr[-4000:]
    assert run.returncode == 0, log
    # Planned from the node types (2 nodes of 1 fake_gpu), while the one node alive, the head, had no fake_gpu.
    assert "up to 2 at a time" in run.stdout + run.stderr, log
    assert re.search(r"Adding \d node\(s\) of type ray.worker.gpu", monitor), "the autoscaler's log of its nodes"
    exp = project / "grow"
    trials = load_experiment(exp).trials
    assert [(t.end, t.epochs_run) for t in trials] == [("completed", 1)] * 2, [(t.name, t.end, t.error) for t in trials]
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
