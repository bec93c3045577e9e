"""Starting Ray the way ``raytrain fit`` and ``raytrain tune`` need it (the CLI, ``start_ray=True``, the tests).

Library code never calls this behind the user's back: :func:`raytrain.fit` and :func:`raytrain.tune` use a running
Ray when there is one and start one only when asked to (``start_ray=True``, which the CLI passes).
"""

from __future__ import annotations

import logging
import os
import socket

LOGGER = logging.getLogger("raytrain")

DASHBOARD_PORT = 8265


def init_ray(address: str | None, *, num_cpus: int | None = None) -> None:
    """Start a local Ray with its dashboard, or connect to the cluster at ``address`` (``"local"`` = start one).

    Locally:
    - ``address="local"``: a new instance even when a ``ray start`` cluster's address file is lying around.
    - The dashboard is on: Ray Train's placement-group cleaner needs it to free the workers of a run that Tune
      stopped early (ASHA, patience); without it the next trial waits forever for CPUs.
    - Ray's own address lookups inside workers are pinned to this instance (``RAY_ADDRESS`` through
      :func:`setup_worker`, ``RAY_API_SERVER_ADDRESS`` for the dashboard, on a port found free): the cleaner
      otherwise follows ``/tmp/ray/ray_current_cluster`` to whatever Ray ran last on the machine.
    - ``worker_niceness=0``: Ray starts workers at nice 15 to protect its daemons, but here the training worker is
      the work; at nice 15 it gets a fraction of a busy machine's CPU (measured by ``bench/throughput.py``).
    - No preemption watcher: it watches for cloud nodes being drained, which a machine's own Ray has none of, and
      like every Ray worker process it costs CPU while training runs (``bench/ray_idle_cpu.py``).
    """
    import ray

    if address in (None, "", "local"):
        port = free_port(DASHBOARD_PORT)
        url = f"http://127.0.0.1:{port}"
        LOGGER.info("Starting a local Ray (dashboard at %s).", url)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
                 runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": url, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"},
                              "worker_process_setup_hook": setup_worker},
                 configure_logging=False, log_to_driver=True, _system_config={"worker_niceness": 0})
    else:
        LOGGER.info("Connecting to the Ray cluster at %s.", address)
        context = ray.init(address=address, log_to_driver=True)
        if context.dashboard_url:
            LOGGER.info("Ray dashboard: http://%s", context.dashboard_url.removeprefix("http://"))


def setup_worker() -> None:
    """Ray worker setup hook for a local Ray started here: :func:`pin_ray_address`, and a quieter Train controller."""
    pin_ray_address()
    logging.getLogger(_COORDINATOR_LOGGER).addFilter(_drop_traceback)


# Ray Train's controller asks an autoscaling coordinator for resources, waits 5 s, and logs a timeout with a full
# traceback (harmless, says the message itself); on a loaded laptop that is routine, and the traceback reads as a crash.
_COORDINATOR_LOGGER = "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client"


def _drop_traceback(record: logging.LogRecord) -> bool:
    """Keep the coordinator's one-line warning, without the traceback of a routine timeout."""
    if record.exc_info and type(record.exc_info[1]).__name__ == "GetTimeoutError":
        record.exc_info = None
    return True


def pin_ray_address() -> None:
    """Ray worker setup hook: make Ray's own address lookups inside this cluster find this cluster.

    Ray Train's placement-group cleaner asks the State API, which finds "the" cluster from ``RAY_ADDRESS``, else
    from ``/tmp/ray/ray_current_cluster`` (left by any ``ray start``, even a dead one), else by scanning processes:
    with other Ray instances on the machine it can pick the wrong one and stop freeing resources.
    """
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


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
