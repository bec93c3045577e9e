"""User callbacks (:mod:`raytrain.engine.callbacks`): checked before training, run with a frozen state."""

from __future__ import annotations

import pickle

import pytest

from raytrain.config import ConfigError
from raytrain.engine.callbacks import EVENTS, TrainState, check_callbacks, run_callbacks


def on_epoch(state):  # module level: picklable
    return state.epoch


def test_callbacks_checked_and_frozen():
    checked = check_callbacks({"on_fit_epoch_end": on_epoch, "on_train_start": [on_epoch]})
    assert checked == {"on_fit_epoch_end": [on_epoch], "on_train_start": [on_epoch]}
    pickle.dumps(checked)
    with pytest.raises(ConfigError, match="Did you mean on_fit_epoch_end"):
        check_callbacks({"on_fit_epoch_ends": on_epoch})
    with pytest.raises(ConfigError, match="cannot be pickled"):
        check_callbacks({"on_train_end": lambda s: None})
    with pytest.raises(ConfigError, match="not callable"):
        check_callbacks({"on_train_end": [3]})
    seen = []
    run_callbacks({"on_fit_epoch_end": [seen.append]}, "on_fit_epoch_end", epoch=2, epochs=3, save_dir=None,
                  last=None, best=None, metrics={"fitness": 0.5})
    (state,) = seen
    assert isinstance(state, TrainState) and state.epoch == 2 and state.metrics["fitness"] == 0.5
    with pytest.raises(TypeError):
        state.metrics["fitness"] = 1.0
    with pytest.raises(AttributeError):
        state.epoch = 3
    assert EVENTS[0] == "on_train_start" and EVENTS[-1] == "on_train_end"
