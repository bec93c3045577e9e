"""A local multi-node Ray cluster for tests: a head and workers on 127.0.0.1, each with its own resources.

Nodes are started with ``ray start --block`` in their own process groups, on free ports and a private temp dir,
so the test stops exactly the processes it created (never ``ray stop``, which would kill every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raytrain.cluster import local as local_ray


def free_port() -> int:
    """Any free TCP port (the OS picks)."""
    return local_ray.free_port(0)


def worker_ports(taken: set[int]) -> int:
    """The first of 201 worker ports (30000-50200) clear of the node's other ports: Ray refuses to start a node
    whose worker range holds one of them (e.g. the GCS port, which the OS picked anywhere)."""
    while True:
        first = free_port() % 20000 + 30000
        if not any(first <= port <= first + 200 for port in taken):
            return first


class LocalCluster:
    """Start the head, then the workers, with :meth:`add_node` (each call returns once its node is alive);
    ``address`` is the GCS address to pass to ``ray.init`` or ``address=``."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep, so use a short folder.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.join_timeout = 90.0  # seconds one node may take to register (2-core CI machines are slow and shared)
        current = Path("/tmp/ray/ray_current_cluster")
        self.previous_current_cluster = current.read_text() if current.is_file() else None
        # No RAY_ADDRESS inherited from another Ray in this process (e.g. the ray_local fixture): nodes and drivers
        # started here must only ever see this cluster.
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env = {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def add_node(self, num_cpus: int, resources: dict[str, float], head: bool = False, *,
                 autoscaling_config: dict | None = None, dashboard: bool = True) -> None:
        """Start one node (fresh ports each time) and wait until the cluster counts it alive.

        A worker node that exits or has not joined after ``join_timeout`` seconds is stopped and started once more
        on new ports (a port taken between picking and binding it is the likely cause); a second miss raises, with the
        tail of every node's log in the message so a CI log alone shows why.

        ``autoscaling_config`` (head only): run Ray's autoscaler on it, with Ray's fake multi-node provider
        (:func:`fake_autoscaling_config`): the nodes it adds are processes on this machine, in the head's process
        group, so :meth:`stop` ends them with the head. ``dashboard=False`` saves its start (a few seconds).
        """
        expected = len(self.procs) + 1
        for attempt in (1, 2):
            self._start_node(num_cpus, resources, head, attempt, autoscaling_config, dashboard)
            try:
                self.wait_for_nodes(expected, timeout=self.join_timeout)
                return
            except (TimeoutError, RuntimeError) as error:
                if head or attempt == 2:
                    raise
                print(f"raycluster: node {expected - 1} did not join ({str(error).splitlines()[0]}); restarting it "
                      f"on new ports\n{self.log_tails()}", file=sys.stderr)
                self._kill(self.procs.pop())

    def _start_node(self, num_cpus: int, resources: dict[str, float], head: bool, attempt: int,
                    autoscaling_config: dict | None = None, dashboard: bool = True) -> None:
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [ray_bin, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
               f"--resources={json.dumps(resources)}", "--disable-usage-stats",
               f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        taken = {self.port, self.dashboard_port, *(int(a.rsplit("=", 1)[1]) for a in cmd if "-port=" in a)}
        wp = worker_ports(taken)
        cmd += [f"--min-worker-port={wp}", f"--max-worker-port={wp + 200}"]
        env = self.env
        if head:
            cmd += ["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                    f"--include-dashboard={'true' if dashboard else 'false'}",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                    f"--ray-client-server-port={free_port()}"]
            if autoscaling_config is not None:
                config_file = self.temp_dir / "autoscaling.json"
                config_file.write_text(json.dumps(autoscaling_config))
                cmd += [f"--autoscaling-config={config_file}"]
                # The fake provider refuses to start without RAY_FAKE_CLUSTER; the autoscaler's loop runs every 5 s
                # by default (AUTOSCALER_UPDATE_INTERVAL_S): 1 s, as Ray's own AutoscalingCluster sets it.
                env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        else:
            cmd += [f"--address={self.address}"]
        suffix = "" if attempt == 1 else f".attempt{attempt}"
        log = open(self.log_dir / f"node{len(self.procs)}{suffix}.log", "w")  # noqa: SIM115 - closed with the node
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True))

    def fake_autoscaling_config(self, head_resources: dict[str, float], worker_types: dict[str, dict],
                                max_workers: int) -> dict:
        """An autoscaling config for Ray's fake multi-node provider (``ray.autoscaler._private.fake_multi_node``),
        like a ``ray up`` config with the cloud parts left out: the head type and ``worker_types`` (Ray's
        ``available_node_types`` entries: ``resources``, ``min_workers``, ``max_workers``). The provider starts its
        nodes against this cluster's GCS (``gcs_address``; its default is port 6379, which other Rays may hold)."""
        return {
            "cluster_name": "raytrain-fake", "max_workers": max_workers, "upscaling_speed": 1.0,
            # The fake nodes start as they are (no SSH set-up, which its provider refuses): updaters and the launch
            # config check off, as the provider's example.yaml in Ray's repository sets them (the wheel lacks it).
            "idle_timeout_minutes": 5,
            "provider": {"type": "fake_multinode", "gcs_address": self.address, "disable_node_updaters": True,
                         "disable_launch_config_check": True},
            "auth": {"ssh_user": "ray"}, "head_node_type": "ray.head.default",
            "available_node_types": {"ray.head.default": {"resources": head_resources, "node_config": {},
                                                          "max_workers": 0},
                                     **{name: {"node_config": {}, **body} for name, body in worker_types.items()}},
            **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                                   "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                                   "cluster_synced_files", "rsync_exclude", "rsync_filter")},
            "file_mounts": {}, "file_mounts_sync_continuously": False,
        }

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` nodes are alive; raises with the node logs' tails when a node exits or time runs out."""
        probe_timeout = 30
        code = (f"import ray, time; ray.init(address='{self.address}', logging_level='ERROR'); "
                f"t = time.time()\n"
                f"while len([n for n in ray.nodes() if n['Alive']]) < {count} and time.time() - t < {probe_timeout}: "
                f"time.sleep(1)\n"
                f"print(len([n for n in ray.nodes() if n['Alive']]))")
        deadline = time.time() + timeout
        last = "no probe finished"
        while time.time() < deadline:
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                raise RuntimeError(f"Ray node {dead[0]} exited\n{self.log_tails()}")
            try:
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
                                     timeout=probe_timeout + 30)
            except subprocess.TimeoutExpired:
                last = f"a probe took over {probe_timeout + 30} s"
                continue
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            last = f"probe exit {out.returncode}, printed {out.stdout.strip()[-200:]!r}, stderr {out.stderr[-1000:]}"
            time.sleep(2)
        raise TimeoutError(f"the local cluster did not reach {count} nodes in {timeout:.0f} s ({last})\n"
                           f"{self.log_tails()}")

    def log_tails(self, chars: int = 1500) -> str:
        """The end of every node's log under ``log_dir`` (pytest's tmp folder is gone once CI ends)."""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in sorted(self.log_dir.glob("node*.log")))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Ray's daemons (raylet, gcs_server, ...) stay in the node's process group: make sure none survive.
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        # `ray start --head` records its address in /tmp/ray/ray_current_cluster; a stale one would lead later Ray
        # clients on this machine to a dead cluster, so put back what was there before.
        current = Path("/tmp/ray/ray_current_cluster")
        if self.previous_current_cluster is None:
            current.unlink(missing_ok=True)
        else:
            current.write_text(self.previous_current_cluster)
