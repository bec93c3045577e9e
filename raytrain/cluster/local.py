"""Starting Ray the way ``raytrain fit`` and ``raytrain tune`` need it (the CLI, ``start_ray=True``, the tests).

Library code never calls this behind the user's back: :func:`raytrain.fit` and :func:`raytrain.tune` use a running
Ray when there is one and start one only when asked to (``start_ray=True``, which the CLI passes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence

from raytrain.cluster import compat

LOGGER = logging.getLogger("raytrain")

DASHBOARD_PORT = 8265
DASHBOARD_ATTEMPTS = 3
# Ray 2.60's messages for a dashboard port taken before its own check, and between that check and the bind
DASHBOARD_PORT_TAKEN = ("because it's already occupied", "Failed to find a valid port for dashboard")


def init_ray(address: str | None, *, num_cpus: int | None = None, gpu_ids: Sequence[int] | None = None) -> None:
    """Start a local Ray with its dashboard, or connect to the cluster at ``address`` (``"local"`` = start one).

    Locally:
    - ``address="local"``: a new instance even when a ``ray start`` cluster's address file is lying around.
    - The dashboard is on: Ray Train's placement-group cleaner needs it to free the workers of a run that Tune
      stopped early (ASHA, patience); without it the next trial waits forever for CPUs.
    - Ray's own address lookups inside workers are pinned to this instance (``RAY_ADDRESS`` through
      :func:`compat.setup_worker`, ``RAY_API_SERVER_ADDRESS`` for the dashboard, on a port found free): the cleaner
      otherwise follows ``/tmp/ray/ray_current_cluster`` to whatever Ray ran last on the machine.
    - ``worker_niceness=0``: Ray starts workers at nice 15 to protect its daemons, but here the training worker is
      the work; at nice 15 it gets a fraction of a busy machine's CPU (measured by ``bench/throughput.py``).
    - No preemption watcher: it watches for cloud nodes being drained, which a machine's own Ray has none of, and
      like every Ray worker process it costs CPU while training runs (``bench/ray_idle_cpu.py``).
    - Ray's usage statistics are off (``RAY_USAGE_STATS_ENABLED=0`` for the start) unless the user chose: the
      variable set either way, or ``ray enable-usage-stats`` (:func:`compat.usage_stats_chosen`). A local run
      promises no network; Ray would otherwise report usage from the dashboard.
    - ``gpu_ids`` (``device=0,1``): the local Ray schedules only these GPUs. Ray reads ``CUDA_VISIBLE_DEVICES`` once,
      when its node starts, so it is set for the start only and the caller's environment is restored afterwards
      (an explicit ``CUDA_VISIBLE_DEVICES`` of the user's wins). Ignored when connecting to a cluster.

    The workarounds themselves live in :mod:`raytrain.cluster.compat`.
    """
    import ray

    if address in (None, "", "local"):
        visible = {} if gpu_ids is None or "CUDA_VISIBLE_DEVICES" in os.environ else \
            {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_ids))}
        quiet = {} if compat.usage_stats_chosen() else {compat.USAGE_STATS_ENV: "0"}
        preferred = DASHBOARD_PORT
        for attempt in range(DASHBOARD_ATTEMPTS):
            port = free_port(preferred)
            url = f"http://127.0.0.1:{port}"
            LOGGER.info("Starting a local Ray (dashboard at %s).", url)
            try:
                with scoped_environ({**visible, **quiet}):
                    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
                             runtime_env={"env_vars": compat.local_ray_env(url),
                                          "worker_process_setup_hook": compat.setup_worker},
                             configure_logging=False, log_to_driver=True,
                             _system_config=dict(compat.LOCAL_SYSTEM_CONFIG))
                return
            except Exception as e:  # a ValueError, or a bare Exception carrying the dashboard's log
                if not any(m in str(e) for m in DASHBOARD_PORT_TAKEN) or attempt == DASHBOARD_ATTEMPTS - 1:
                    raise
                # Another process took the port after free_port found it free (two runs started at once both
                # did): start again on a port the OS picks.
                LOGGER.info("Port %d was taken before Ray's dashboard bound it; trying another.", port)
                ray.shutdown()
                preferred = 0
    else:
        LOGGER.info("Connecting to the Ray cluster at %s.", address)
        context = ray.init(address=address, log_to_driver=True)
        if context.dashboard_url:
            LOGGER.info("Ray dashboard: http://%s", context.dashboard_url.removeprefix("http://"))


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a ``with`` block, then restore the previous values."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free TCP port for the Ray dashboard")
