"""One rank's setup (:mod:`raytrain.engine.setup`): model, data, optimizer and LR schedule from a Config, trained
for an epoch without Ray; pretrained weights transferred by name and shape; a missing checkpoint is a config error."""

from __future__ import annotations

import pytest
import torch

from raytrain.config import ConfigError
from raytrain.engine.epoch import train_one_epoch


def test_setup_rank_trains_one_epoch_without_ray(tmp_path):
    pytest.importorskip("raytrain.loss")
    from raytrain.config import make_config
    from raytrain.data import resolve_data
    from raytrain.engine.setup import setup_rank
    from raytrain.train.plan import resolve_config

    cfg = resolve_config(make_config({"data": "shapes", "imgsz": 64, "fraction": 0.04, "batch": 4, "workers": 0,
                                      "device": "cpu", "project": str(tmp_path), "optimizer": "SGD",
                                      "freeze": 3, "nbs": 4}), gpus_available=0)
    setup = setup_rank(cfg, resolve_data(cfg.data), device=torch.device("cpu"), save_dir=tmp_path)
    assert setup.global_batch == 4 and setup.names[0] == "circle" and len(setup.train_loader) == 5
    assert [g["name"] for g in setup.optimizer.param_groups] == ["weight", "norm", "bias"]
    assert not any(p.requires_grad for p in setup.model.model[0].parameters())  # freeze=3
    # 3 warmup epochs of 5 batches, no 100-iteration floor (8.4); nbs=4: a step per batch, so the epoch's steps
    # after the first (at warmup lr 0) change the weights
    schedule = setup.lr_schedule
    assert schedule.warmup_iters == 15 and schedule.accumulate(0) == schedule.accumulate(1000) == 1
    before = setup.model.model[3].conv.weight.detach().clone()
    frozen = setup.model.model[0].conv.weight.detach().clone()
    setup.train_loader.set_epoch(1)
    result = train_one_epoch(setup.model, setup.train_loader, setup.optimizer, setup.loss_fn, device=setup.device,
                             epoch=0, lr_schedule=setup.lr_schedule, ema=setup.ema, scaler=setup.scaler)
    assert result.batches == 5 and result.images == 20 and torch.isfinite(result.losses).all()
    assert (result.losses > 0).all() and setup.ema.updates == result.last_step + 1 > 0
    layers = setup.model.model
    assert not torch.equal(before, layers[3].conv.weight) and torch.equal(frozen, layers[0].conv.weight)


def test_pretrained_transfers_matching_tensors(tmp_path, caplog):
    from raytrain.config import make_config
    from raytrain.engine.setup import model_for
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    source = build_model("yolov8n", nc=80)
    path = save_checkpoint(tmp_path / "coco.pt", make_checkpoint(source, [str(i) for i in range(80)]))
    with caplog.at_level("INFO", logger="raytrain"):
        model = model_for(make_config({"model": "yolov8n", "pretrained": str(path)}), nc=6)
    (line,) = [r.getMessage() for r in caplog.records if "Transferred" in r.getMessage()]
    copied, total = map(int, line.split()[1].split("/"))
    assert 0 < copied < total == len(model.state_dict())  # all but the class-output convolutions
    assert torch.equal(model.model[0].conv.weight, source.model[0].conv.weight)
    from_ckpt = model_for(make_config({"model": str(path)}), nc=80)  # model=CKPT: arch and weights from the file
    assert torch.equal(from_ckpt.model[22].cv3[0][2].weight, source.model[22].cv3[0][2].weight)


def test_a_checkpoint_missing_where_the_run_trains_is_a_config_error(tmp_path):
    """The driver opened it; a worker that cannot see it fails once (ConfigError), naming the key and what to do."""
    from raytrain.config import make_config
    from raytrain.engine.setup import model_for

    for key, args in [("model", {"model": str(tmp_path / "gone.pt")}),
                      ("pretrained", {"model": "yolov8n", "pretrained": str(tmp_path / "gone.pt")})]:
        with pytest.raises(ConfigError, match=f"^{key}=.*gone.pt: not found on .*storage all nodes mount"):
            model_for(make_config(args), nc=6)
