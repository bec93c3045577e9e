"""Every workaround around Ray's internals, in one place: each says why it exists and the Ray it was checked on.

Checked against Ray 2.60.0 (see ``../shared/RAY_NOTES.md``). When Ray changes, this is the file to read: each
helper degrades to doing nothing rather than failing a run when the internal it touches has moved.

Elsewhere, because they are subclasses that must sit with what they extend: ``tuning/pbt.py``'s ``RecordedPBT``
overrides PBT's private ``_exploit`` (to record each exploit) and ``_checkpoint_or_exploit`` (to keep every trial's
state for clones), and calls ``TuneController._schedule_trial_save``; checked on the same Ray.
"""

from __future__ import annotations

import logging
import os
from typing import Any

CHECKED_RAY_VERSION = "2.60.0"

# A Tune trial function that starts its own Ray Train workers reserves almost nothing itself: no CPU (even 0.01 CPU
# would keep a second 1-CPU trial off a 2-CPU machine), and Tune refuses an empty request, hence a token of memory.
TRIAL_TOKEN_RESOURCES = {"CPU": 0, "memory": 2**20}

# Environment of every worker of a local Ray started by raytrain (see local_ray_env()).
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Local Ray starts workers at nice 15 (`worker_niceness`, a private system config): training is the work here, and
# at nice 15 it got 3-6 instead of 11 images/s on a busy 2-core machine (bench/throughput.py).
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}
# Ray Train's controller asks an autoscaling coordinator for resources, waits 5 s, and logs a timeout with a full
# traceback (harmless, says the message itself); on a loaded laptop that is routine, and the traceback reads as a crash.
COORDINATOR_LOGGER = "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client"


def local_ray_env(dashboard_url: str) -> dict[str, str]:
    """Environment for every worker of a local Ray started by raytrain.

    - ``RAY_API_SERVER_ADDRESS``: Ray Train's placement-group cleaner asks the State API (the dashboard) to free a
      stopped trial's workers; pinned, so it never follows ``/tmp/ray/ray_current_cluster`` to another Ray.
    - No preemption watcher: it watches for drained cloud nodes, which a machine's own Ray has none of, and like every
      Ray worker process it costs ~1 % of a core while training runs (``bench/ray_idle_cpu.py``).
    """
    return {"RAY_API_SERVER_ADDRESS": dashboard_url, PREEMPTION_WATCHER_ENV: "0"}


def setup_worker() -> None:
    """Ray worker setup hook for a local Ray started here: :func:`pin_ray_address`, a quieter Train controller."""
    pin_ray_address()
    logging.getLogger(COORDINATOR_LOGGER).addFilter(drop_timeout_traceback)


def pin_ray_address() -> None:
    """Make Ray's own address lookups inside this cluster's workers find this cluster.

    Ray Train's placement-group cleaner asks the State API, which finds "the" cluster from ``RAY_ADDRESS``, else
    from ``/tmp/ray/ray_current_cluster`` (left by any ``ray start``, even a dead one), else by scanning processes:
    with other Ray instances on the machine it can pick the wrong one and stop freeing resources.
    """
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def drop_timeout_traceback(record: logging.LogRecord) -> bool:
    """Log filter: keep the coordinator's one-line warning, without the traceback of a routine timeout."""
    if record.exc_info and type(record.exc_info[1]).__name__ == "GetTimeoutError":
        record.exc_info = None
    return True


def quiet_train_worker_logs() -> None:
    """Inside a Ray Train worker: Ray Train logs every ``report`` at INFO under a logger named by its *file path*
    (``ray/train/v2/_internal/execution/context.py``); keep the console for the epoch lines."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: its logs stay as they are
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def dashboard_url() -> str | None:
    """The running Ray's dashboard URL (``http://...``), or None when it has none.

    Ray has no public API for it on a connected driver (``ray.init``'s context has it only in the process that
    started Ray), so this reads ``ray._private.worker.get_dashboard_url``; any failure means "unknown".
    """
    try:
        from ray._private.worker import get_dashboard_url

        url: Any = get_dashboard_url() or None
    except Exception:
        return None
    if url and not str(url).startswith("http"):
        url = f"http://{url}"
    return url
