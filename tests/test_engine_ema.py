"""The weights' exponential moving average (:mod:`raytrain.engine.ema`): decay ramp and update, hand-checked."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import Tiny

from raytrain.engine.ema import ModelEMA, ema_decay, ema_update_


def test_ema_decay_and_update():
    assert ema_decay(0) == 0.0
    assert ema_decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert ema_decay(100_000) == pytest.approx(0.9999, abs=1e-9)
    ema_state = {"w": torch.tensor([0.0, 0.0]), "n": torch.tensor(1)}
    ema_update_(ema_state, {"w": torch.tensor([2.0, 4.0]), "n": torch.tensor(7)}, 0.5)
    assert ema_state["w"].tolist() == [1.0, 2.0] and ema_state["n"].item() == 7


def test_model_ema_follows_model():
    model = Tiny()
    ema = ModelEMA(model)
    assert not any(p.requires_grad for p in ema.ema.parameters()) and not ema.ema.training
    with torch.no_grad():
        model.head.bias.fill_(1.0)
    before = ema.ema.head.bias.clone()
    ema.update(model)
    d = ema_decay(1)
    assert ema.updates == 1
    assert ema.ema.head.bias == pytest.approx(before * d + (1 - d) * 1.0)


def test_ema_update_is_the_per_tensor_arithmetic_bit_for_bit():
    """The multi-tensor update, per dtype, equals ``mul_(d).add_(new, alpha=1 - d)`` tensor by tensor."""
    torch.manual_seed(0)
    ema_state = {"a": torch.randn(5, 3), "h": torch.randn(4).half(), "b": torch.randn(7), "n": torch.tensor(3)}
    model_state = {"a": torch.randn(5, 3), "h": torch.randn(4).half(), "b": torch.randn(7), "n": torch.tensor(9)}
    expected = {k: v.clone().mul_(0.37).add_(model_state[k], alpha=1 - 0.37) if v.is_floating_point()
                else model_state[k].clone() for k, v in ema_state.items()}
    ema_update_(ema_state, model_state, 0.37)
    assert all(torch.equal(ema_state[k], expected[k]) and ema_state[k].dtype == expected[k].dtype for k in expected)
