"""evaluate() on a fake model and loader; end-to-end `raytrain val` and `raytrain predict` on a tiny checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytrain.engine.validate import ValResult, evaluate, image_id

# One 64 x 64 input holding a 200 x 100 (w x h) original letterboxed with gain 0.32: resized 64 x 32, pad_h 16.
INPUT_HW, ORI_SHAPE, RATIO_PAD = (64, 64), (100, 200), ((0.32, 0.32), (0.0, 16.0))
BOX_ORIGINAL = [50.0, 25.0, 150.0, 75.0]  # xyxy original pixels -> input [16, 24, 48, 40]
BOX_INPUT_XYWH = [32.0, 32.0, 32.0, 16.0]


class FakeDetector(nn.Module):
    """Eval mode: (B, 4 + nc, A) with one confident box of class 1 at BOX_INPUT_XYWH. Train mode: raw maps."""

    def __init__(self, nc: int = 2):
        super().__init__()
        self.nc = nc
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor):
        feat = self.bn(self.conv(x))
        if self.training:
            return [feat]
        b = x.shape[0]
        out = torch.zeros(b, 4 + self.nc, 3)
        out[:, :4, 0] = torch.tensor(BOX_INPUT_XYWH)
        out[:, 4 + 1, 0] = 0.9  # class 1
        out[:, :4, 1] = torch.tensor([10.0, 10, 4, 4])  # a low-score box of class 0: a false positive at conf 0.001
        out[:, 4, 1] = 0.01
        return out + 0 * feat.mean()


def fake_loader(batches: int = 2, batch_size: int = 2):
    for k in range(batches):
        targets = torch.tensor([[i, 1.0, *(v / 64 for v in BOX_INPUT_XYWH)] for i in range(batch_size)])
        yield {
            "img": torch.randint(0, 255, (batch_size, 3, *INPUT_HW), dtype=torch.uint8),
            "targets": targets,
            "im_files": [f"/data/{k * batch_size + i:012d}.jpg" for i in range(batch_size)],
            "ori_shapes": [ORI_SHAPE] * batch_size,
            "ratio_pads": [RATIO_PAD] * batch_size,
        }


def fake_loss(preds, targets, img_hw):
    assert isinstance(preds, list) and img_hw == INPUT_HW  # the train-mode outputs
    parts = torch.tensor([1.0, 2.0, 3.0])
    return parts.sum() * len(targets), parts


def test_evaluate_fake_model_metrics_losses_predictions_and_modes():
    model = FakeDetector().train()
    bn_before = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    result = evaluate(model, fake_loader(), device="cpu", names=["a", "b"], loss_fn=fake_loss, save_json=True)
    assert isinstance(result, ValResult)
    assert result.metrics["metrics/mAP50(B)"] == pytest.approx(1.0)
    assert result.metrics["metrics/mAP50-95(B)"] == pytest.approx(1.0)
    assert result.metrics["metrics/precision(B)"] == pytest.approx(1.0)
    assert result.metrics["val/box_loss"] == 1.0 and result.metrics["val/dfl_loss"] == 3.0
    assert [r["name"] for r in result.per_class] == ["b"] and result.per_class[0]["images"] == 4
    assert set(result.speed) == {"preprocess", "inference", "loss", "postprocess"}
    # The model's mode is restored and BatchNorm statistics were not touched by the loss pass.
    assert model.training and model.bn.training
    assert torch.equal(model.bn.running_mean, bn_before[0]) and torch.equal(model.bn.num_batches_tracked, bn_before[1])
    # COCO predictions: original pixels, x y w h, image_id from the numeric stem.
    assert len(result.predictions) == 8
    top = max(result.predictions, key=lambda p: p["score"])
    assert top["category_id"] == 1 and top["image_id"] in range(4)
    assert top["bbox"] == pytest.approx([50.0, 25.0, 100.0, 50.0], abs=1e-3)


def test_evaluate_ignores_padded_repeats():
    batch = next(fake_loader(1, 2))
    batch["padded"] = [False, True]
    batch["targets"] = batch["targets"][:1]  # the repeat's ground truth would be missed if it were scored
    result = evaluate(FakeDetector().eval(), [batch], device="cpu", names=["a", "b"], save_json=True)
    assert result.per_class[0]["images"] == 1 and len(result.predictions) == 2
    assert result.metrics["metrics/precision(B)"] == pytest.approx(1.0)


def test_evaluate_without_loss_or_json():
    model = FakeDetector().eval()
    result = evaluate(model, fake_loader(1, 1), device="cpu", names={0: "a", 1: "b"}, conf=0.25)
    assert result.predictions is None and "val/box_loss" not in result.metrics
    assert result.metrics["metrics/mAP50-95(B)"] == pytest.approx(1.0) and not model.training


def test_image_id():
    assert image_id("/x/000000000009.jpg") == 9 and image_id("cat_1.png") == "cat_1"


def test_one_pass_outputs_match_eval_mode_and_leave_batchnorm_alone():
    from raytrain.engine.validate import decoded_and_raw_outputs
    from raytrain.models import build_model

    torch.manual_seed(0)
    model = build_model("yolov8n", nc=3).eval()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    running_mean = bn.running_mean.clone()
    imgs = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(imgs)
        decoded, raw = decoded_and_raw_outputs(model, imgs)
    assert torch.allclose(decoded, expected, atol=1e-5)
    assert [tuple(r.shape) for r in raw] == [(2, 64 + 3, 8, 8), (2, 64 + 3, 4, 4), (2, 64 + 3, 2, 2)]
    assert not any(m.training for m in model.modules()) and torch.equal(bn.running_mean, running_mean)


def _rank_worker(rank: int, world: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = [b for k, b in enumerate(fake_loader(4, 1)) if k % world == rank]  # 2 images per rank
        result = evaluate(FakeDetector().eval(), shard, device="cpu", names=["a", "b"], loss_fn=fake_loss,
                          save_json=True)
        queue.put((rank, result.metrics, result.per_class, len(result.predictions)))
    finally:
        dist.destroy_process_group()


def test_evaluate_gathers_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_rank_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, start_method="spawn")
    results = sorted(queue.get() for _ in range(2))
    for _, metrics, per_class, n_predictions in results:
        assert per_class[0]["images"] == 4 and per_class[0]["instances"] == 4  # every rank sees all 4 images
        assert n_predictions == 8 and metrics["val/cls_loss"] == 2.0
    assert results[0][1] == results[1][1]
