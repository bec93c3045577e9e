"""Ray's own CPU cost while a Ray Train run trains: every process's CPU share while the training worker sleeps.

``bench/throughput.py`` measures the Ray overhead as lost training images/s; this script shows where it goes. It
starts a local Ray exactly as ``raytrain fit`` does (dashboard on), runs a one-worker ``TorchTrainer`` whose training
function only sleeps, and samples ``/proc`` over a window: what every process uses then is Ray's bookkeeping, which
a real run pays on top of its training. It also times an idle plain actor, the cost of one Ray worker process.

    python bench/ray_idle_cpu.py [--window 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path


def cpu_ticks() -> dict[int, tuple[int, str]]:
    """``pid -> (user + system clock ticks, process title)`` for Ray's processes (its workers and daemons)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        name = title(cmdline)
        if name.startswith("ray") or b"/ray/" in b" ".join(cmdline):
            fields = stat.rsplit(")", 1)[1].split()
            out[int(entry.name)] = (int(fields[11]) + int(fields[12]), name)
    return out


def title(cmdline: list[bytes]) -> str:
    """A short name: Ray titles its workers (``ray::TrainController``); daemons are named by their script."""
    words = [w.decode(errors="replace") for w in cmdline if w]
    if not words:
        return "?"
    if words[0].startswith("ray"):  # ray::IDLE, ray-dashboard-StateHead-0 (...)
        return words[0].split()[0]
    for word in words:
        name = Path(word).name
        if name.endswith(".py") or name in ("raylet", "gcs_server"):
            return name
    return Path(words[0]).name


def sample(window: float) -> dict[str, float]:
    """Percent of one core used per process title over ``window`` seconds."""
    before, start = cpu_ticks(), time.monotonic()
    time.sleep(window)
    after, seconds = cpu_ticks(), time.monotonic() - start
    hz = os.sysconf("SC_CLK_TCK")
    usage: dict[str, float] = defaultdict(float)
    for pid, (ticks, name) in after.items():
        if pid in before and pid != os.getpid():
            usage[name] += 100 * (ticks - before[pid][0]) / hz / seconds
    return {name: pct for name, pct in usage.items() if pct > 0}


def sleeping_worker(config: dict) -> None:
    """The training function: sleeps, so what the processes use is Ray's own work; with ``every`` set it also
    reports a checkpoint of ``megabytes`` every ``every`` seconds, as a training run does once per epoch."""
    import ray.train

    end = time.monotonic() + config["seconds"]
    epoch = 0
    while time.monotonic() < end:
        time.sleep(min(config["every"] or config["seconds"], max(end - time.monotonic(), 0)))
        if not config["every"]:
            continue
        epoch += 1
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "last.pt").write_bytes(os.urandom(config["megabytes"] << 20))
            ray.train.report({"epoch": epoch}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=30.0, help="seconds to sample")
    parser.add_argument("--report-every", type=float, default=0.0,
                        help="seconds between the worker's reports of a checkpoint (0: no reports)")
    parser.add_argument("--megabytes", type=int, default=12, help="checkpoint size (YOLOv8n's last.pt: ~12 MB)")
    args = parser.parse_args()
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raytrain.cluster.local import init_ray

    init_ray("local")
    try:
        @ray.remote(num_cpus=0)
        class Idle:  # titled ray::Idle: one worker process that does nothing
            def ready(self) -> None:
                pass

        actor = Idle.remote()
        ray.get(actor.ready.remote())
        time.sleep(10)  # Ray's start-up work is over
        idle_ray = sample(args.window)
        idle_actor = idle_ray.pop("ray::Idle", 0.0)
        ray.kill(actor)

        during: dict[str, float] = {}

        def measure() -> None:
            time.sleep(20)  # the worker group has started and the worker sleeps
            during.update(sample(args.window))

        sampler = threading.Thread(target=measure)
        sampler.start()
        with tempfile.TemporaryDirectory(prefix="raytrain-bench-") as storage:
            TorchTrainer(sleeping_worker, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                         train_loop_config={"seconds": args.window + 25, "every": args.report_every,
                                            "megabytes": args.megabytes},
                         run_config=RunConfig(storage_path=storage, name="idle",
                                              checkpoint_config=CheckpointConfig(num_to_keep=2))).fit()
        sampler.join()
    finally:
        ray.shutdown()
    cores = os.cpu_count() or 1
    reports = f", reporting a {args.megabytes} MB checkpoint every {args.report_every:g} s" if args.report_every else ""
    print(f"\nCPU use while a Ray Train run's worker sleeps{reports} ({args.window:.0f} s window), % of one core:")
    for name, pct in sorted(during.items(), key=lambda kv: -kv[1]):
        if pct >= 0.05:
            print(f"  {pct:6.2f}  {name}")
    total, idle_total = sum(during.values()), sum(idle_ray.values())
    print(f"  {total:6.2f}  in all = {total / cores:.1f} % of this machine's {cores} cores (an idle local Ray "
          f"alone: {idle_total:.2f} % of one core)")
    print(f"One idle Ray actor process: {idle_actor:.2f} % of one core (Ray's core worker wakes every 10 ms to "
          f"check for signals).")


if __name__ == "__main__":
    main()
