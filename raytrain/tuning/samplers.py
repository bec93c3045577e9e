"""Optuna samplers that survive Tune's pickling of the searcher.

Tune pickles the Tuner (cloudpickle) when it starts and the searcher's state (plain pickle, ``OptunaSearch.save``) at
each experiment checkpoint, sampler included. Optuna 5.1's genetic samplers (``NSGAIISampler`` through
``optuna.samplers._ga._base.BaseGASampler``) hold a ``threading.Lock`` and define no ``__getstate__``, so pickling
one raises ``cannot pickle '_thread.lock' object``. :class:`NSGAIISampler` drops the lock when pickled and makes a
new one when unpickled (checked with optuna 5.1.0). Importing this module imports Optuna; only
:func:`raytrain.tuning.search.make_sampler` does, when the sampler is asked for.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable (see the module docstring); otherwise unchanged."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


__all__ = ["NSGAIISampler"]
