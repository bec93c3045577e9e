"""One training epoch (:mod:`raytrain.engine.epoch`): gradient accumulation to ``nbs`` across epochs, EMA updates."""

from __future__ import annotations

import pytest
import torch
from model_helpers import Tiny

from raytrain.engine import optim
from raytrain.engine.ema import ModelEMA
from raytrain.engine.epoch import train_one_epoch
from raytrain.engine.optim import LRSchedule


def _loader(n, batch=1):
    return [{"img": torch.randint(0, 255, (batch, 3, 8, 8), dtype=torch.uint8), "targets": torch.zeros(0, 6)}
            for _ in range(n)]


def _loss(preds, targets, img_hw):
    parts = torch.stack([preds.pow(2).mean(), preds.abs().mean(), preds.mean().abs()])
    return parts.sum() * preds.shape[0], parts.detach()


def test_train_one_epoch_accumulates_to_nbs():
    model = Tiny()
    opt = optim.build_optimizer(model, "SGD", momentum=0.9, weight_decay=0)
    steps = []
    original = opt.step
    opt.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    sched = LRSchedule(lr0=0.01, lrf=0.01, epochs=10, cos=False, warmup_iters=0, warmup_bias_lr=0.1,
                       warmup_momentum=0.8, momentum=0.937, nbs=4, batch=1)  # accumulate 4 batches per step
    result = train_one_epoch(model, _loader(10), opt, _loss, device=torch.device("cpu"), epoch=0, lr_schedule=sched,
                             ema=ema, scaler=scaler)
    assert len(steps) == 2 and result.last_step == 7  # steps after batches 3 and 7
    assert ema.updates == 2 and result.batches == 10 and result.images == 10
    assert result.losses.shape == (3,) and torch.isfinite(result.losses).all()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    # the next epoch continues the count: its first step comes 4 iterations after the last one
    result = train_one_epoch(model, _loader(3), opt, _loss, device=torch.device("cpu"), epoch=1, lr_schedule=sched,
                             ema=ema, scaler=scaler, iteration=10, last_step=result.last_step)
    assert len(steps) == 3 and result.last_step == 11
