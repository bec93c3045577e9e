"""Every workaround around Ray's internals, in one place: each says why it exists and the Ray it was checked on.

Checked against Ray 2.60.0 (see ``../shared/RAY_NOTES.md``). When Ray changes, this is the file to read: each
helper degrades to doing nothing rather than failing a run when the internal it touches has moved.

Elsewhere, because they are subclasses that must sit with what they extend: ``tuning/pbt.py``'s ``RecordedPBT``
overrides PBT's private ``_exploit`` (to record each exploit) and ``_checkpoint_or_exploit`` (to keep every trial's
state for clones), and calls ``TuneController._schedule_trial_save``; ``cluster/sync.py``'s ``TuneLogKeeper`` reads a
trial's ``local_path`` and ``storage`` (Tune's loggers restore a restarted trial's logs from storage over the newer
staging copy); checked on the same Ray.
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


# The cluster launcher (`ray up`) writes the autoscaler's config on the head here; Ray Tune itself takes the file as
# the sign of an autoscaling cluster (ray/tune/execution/cluster_info.py).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# Ray's autoscaler (v1) runs as this script on the head, started with --gcs-address= and --autoscaling-config=.
MONITOR_SCRIPT = "autoscaler/_private/monitor.py"


def cluster_config_node_groups() -> list[tuple[str, dict[str, float], int]]:
    """Ray's own record of the node groups an autoscaler may start (``ray._private.state.state.get_cluster_config``,
    which Ray Train and Ray Data read; filled by autoscaler v2 setups such as KubeRay): ``(name, resources,
    max_count)`` each, max_count -1 meaning no limit. Empty when Ray keeps none (the v1 autoscaler of ``ray up``)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # another Ray version, or no record: fall back to the other sources
        return []
    if config is None:
        return []
    return [(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count))
            for g in config.node_group_configs]


def autoscaling_config_file(gcs_address: str) -> str | None:
    """The config file of the autoscaler serving the cluster at ``gcs_address``, when it runs on this machine.

    Ray exposes no API for it: the v1 autoscaler (``ray up``'s) is a process on the head whose command line names the
    cluster's GCS and the config (``--autoscaling-config=``), so this reads the command lines of this machine's
    processes; else :data:`BOOTSTRAP_CONFIG`, where the cluster launcher puts it. None when neither is here (a
    driver off the head, or a cluster without an autoscaler).
    """
    import psutil

    port = gcs_address.rsplit(":", 1)[-1]
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info.get("cmdline") or []
        if not any(a.endswith(MONITOR_SCRIPT) for a in args):
            continue
        options = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        if options.get("gcs-address", "").rsplit(":", 1)[-1] == port and options.get("autoscaling-config"):
            return os.path.expanduser(options["autoscaling-config"])
    bootstrap = os.path.expanduser(BOOTSTRAP_CONFIG)
    return bootstrap if os.path.isfile(bootstrap) else None


# Ray's usage statistics: the variable wins over the file `ray enable-usage-stats` / `ray disable-usage-stats` write
# (ray/_common/usage/usage_lib.py, _usage_stats_enabledness); RAY_USAGE_STATS_CONFIG_PATH moves the file.
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"
USAGE_STATS_FILE = "~/.ray/config.json"


def usage_stats_chosen() -> bool:
    """Whether the user chose about Ray's usage statistics: the variable set, or a ``usage_stats`` entry in Ray's
    config file. Otherwise Ray reports them by default, which a local raytrain run turns off."""
    import json

    if os.environ.get(USAGE_STATS_ENV) is not None:
        return True
    path = os.path.expanduser(os.environ.get("RAY_USAGE_STATS_CONFIG_PATH", USAGE_STATS_FILE))
    try:
        with open(path) as f:
            return "usage_stats" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def set_restored_settings(tuner: Any, *, time_budget_s: float | None, max_concurrent: int,
                          callbacks: list[Any]) -> None:
    """Put the settings a resume may change (:mod:`raytrain.tuning.resume`) into a ``Tuner.restore``-d tuner.

    ``Tuner.restore`` takes no TuneConfig or RunConfig: it unpickles the original ones from ``tuner.pkl`` (the
    time budget, the driver callbacks with the original spec), and when ``fit`` starts, the search algorithm's saved
    state (``ConcurrencyLimiter`` / ``BasicVariantGenerator``: ``__dict__.update``) puts the original
    ``max_concurrent`` back. So the restored TuneConfig and RunConfig (``tuner._local_tuner``) get the new values,
    and the search algorithm's ``set_state`` keeps the new cap. Tune's time budget counts from the
    resume (its stopper is built anew by ``fit``). If these internals have moved, a warning says the resume keeps
    the original settings.
    """
    internal = getattr(tuner, "_local_tuner", None)
    tune_config, run_config = getattr(internal, "_tune_config", None), getattr(internal, "_run_config", None)
    if tune_config is None or run_config is None:
        logging.getLogger("raytrain").warning("This Ray's restored Tuner has no _local_tuner settings: the resume "
                                              "keeps the original time_budget_s and max_concurrent_trials.")
        return
    tune_config.time_budget_s = time_budget_s
    run_config.callbacks = callbacks
    search = tune_config.search_alg
    if search is None or not hasattr(search, "max_concurrent"):
        return
    base = type(search)

    class KeepResumeCap(base):  # type: ignore[misc, valid-type]
        """The restored search algorithm, whose saved state no longer brings the original cap back."""

        def set_state(self, state: dict[str, Any]) -> None:
            base.set_state(self, state)
            self.max_concurrent = max_concurrent

    # A class swap, not an instance attribute: get_state() saves the instance's __dict__ with the experiment.
    search.__class__ = KeepResumeCap
    search.max_concurrent = max_concurrent


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
