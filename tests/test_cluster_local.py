"""The local-Ray helpers: the dashboard port choice and the Train controller's log filter (no Ray started)."""

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
