"""The local-Ray helpers: the dashboard port choice (one test starts a Ray in a subprocess) and the Train
controller's log filter."""

from __future__ import annotations

import logging
import socket
import sys

from raytrain.cluster.compat import drop_timeout_traceback as _drop_traceback
from raytrain.cluster.local import free_port


def test_free_port_prefers_the_given_port_and_falls_back():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = free_port(taken)
        assert other != taken and other > 0
    assert free_port(taken) == taken  # released: the preferred port again


def record_of(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.LogRecord("x", logging.WARNING, __file__, 1, "Failed to send resource request", None,
                                 sys.exc_info())


def test_routine_coordinator_timeouts_lose_only_their_traceback():
    from ray.exceptions import GetTimeoutError

    timeout = record_of(GetTimeoutError("Get timed out"))
    assert _drop_traceback(timeout) and timeout.exc_info is None  # the one-line warning stays
    other = record_of(RuntimeError("real trouble"))
    assert _drop_traceback(other) and other.exc_info is not None  # anything else keeps its traceback


RACE = r"""
import socket, sys
import ray
from raytrain.cluster import local

taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
port = taken.getsockname()[1]
real, calls = local.free_port, []

def racy(preferred):  # what a second run started at the same moment sees: the port free, then taken
    calls.append(preferred)
    return port if len(calls) == 1 else real(preferred)

local.free_port = racy
local.init_ray(None, num_cpus=1)
print("CALLS", calls, "TAKEN", port, "ALIVE", ray.is_initialized(), ray.cluster_resources().get("CPU"))
ray.shutdown()
"""


def test_a_dashboard_port_taken_before_ray_binds_it_is_retried_on_another():
    """Two runs started at once both find port 8265 free; the one whose dashboard then fails to bind it starts its
    local Ray again on a port the OS picks (before, it died: 'Failed to find a valid port for dashboard')."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # not the session's Ray, if one runs
    done = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("CALLS"))
    assert line.endswith("ALIVE True 1.0"), line
    assert "CALLS [8265, 0]" in line, line  # the preferred port first, then the OS's choice
