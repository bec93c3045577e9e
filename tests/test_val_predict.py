"""evaluate() on a fake model and loader; end-to-end `raytrain val` and `raytrain predict` on a tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from raytrain.engine.validate import ValResult, evaluate, image_id

# One 64 x 64 input holding a 200 x 100 (w x h) original letterboxed with gain 0.32: resized 64 x 32, pad_h 16.
INPUT_HW, ORI_SHAPE, RATIO_PAD = (64, 64), (100, 200), ((0.32, 0.32), (0.0, 16.0))
BOX_ORIGINAL = [50.0, 25.0, 150.0, 75.0]  # xyxy original pixels -> input [16, 24, 48, 40]
BOX_INPUT_XYWH = [32.0, 32.0, 32.0, 16.0]


class DecodeThenNMS:
    """``detect`` as a DetectionModel does it for a one-to-many head: the fake's ``decode``, then NMS."""

    def detect(self, raw, *, conf=0.001, iou=0.7, max_det=300, nms=None, multi_label=False):
        from raytrain.ops import non_max_suppression

        return non_max_suppression(self.decode(raw), conf, iou, max_det, multi_label=multi_label)


class FakeDetector(DecodeThenNMS, nn.Module):
    """Raw maps from forward; ``decode`` gives (B, 4 + nc, A) with one confident box of class 1 at BOX_INPUT_XYWH."""

    def __init__(self, nc: int = 2):
        super().__init__()
        self.nc = nc
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor):
        return [self.bn(self.conv(x))]

    def decode(self, maps):
        b = maps[0].shape[0]
        out = torch.zeros(b, 4 + self.nc, 3)
        out[:, :4, 0] = torch.tensor(BOX_INPUT_XYWH)
        out[:, 4 + 1, 0] = 0.9  # class 1
        out[:, :4, 1] = torch.tensor([10.0, 10, 4, 4])  # a low-score box of class 0: a false positive at conf 0.001
        out[:, 4, 1] = 0.01
        return out + 0 * maps[0].mean()


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
    assert isinstance(preds, list) and img_hw == INPUT_HW  # the raw maps
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


def test_evaluate_refuses_a_model_without_detect():
    class NoDecode(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

    with pytest.raises(TypeError, match="needs a model with detect.*NoDecode has none"):
        evaluate(NoDecode(), fake_loader(1, 1), device="cpu", names=["a", "b"])


def test_evaluate_scores_the_decoded_maps_of_one_eval_pass_and_leaves_batchnorm_alone():
    """A real yolov8n: one forward per batch (eval mode) feeds both the loss and, decoded, the metrics."""
    from raytrain.models import build_model

    torch.manual_seed(0)
    model = build_model("yolov8n", nc=2).train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    running_mean = bn.running_mean.clone()
    seen = []

    def recording_loss(maps, targets, img_hw):
        seen.append([m.clone() for m in maps])
        return torch.zeros(()), torch.tensor([1.0, 2.0, 3.0])

    batch = next(fake_loader(1, 2))
    result = evaluate(model, [batch], device="cpu", names=["a", "b"], conf=0.25, loss_fn=recording_loss)
    assert len(seen) == 1 and [tuple(m.shape) for m in seen[0]] == [(2, 66, 8, 8), (2, 66, 4, 4), (2, 66, 2, 2)]
    assert all(m.training for m in model.modules())  # modes restored
    model.eval()
    with torch.no_grad():  # the loss saw the eval-mode maps: BatchNorm from running statistics
        expected = model(batch["img"].float() / 255)
    assert all(torch.equal(a, b) for a, b in zip(seen[0], expected, strict=True))
    assert torch.equal(bn.running_mean, running_mean) and result.metrics["val/cls_loss"] == 2.0


def test_evaluate_gathers_across_ranks(monkeypatch):
    """Two ranks, each with half of the images: both must report the metrics of all of them.

    torch.distributed is faked in-process (spawning two gloo processes costs seconds): rank 0 runs for real and
    all_gather_object hands it rank 1's payload, captured from a first evaluate run on the other half.
    """
    import torch.distributed as dist

    batches = list(fake_loader(4, 1))
    payloads = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: (payloads.append(obj), out.__setitem__(
        slice(None), [obj, payloads[0]])))
    evaluate(FakeDetector().eval(), batches[2:], device="cpu", names=["a", "b"], loss_fn=fake_loss, save_json=True)
    result = evaluate(FakeDetector().eval(), batches[:2], device="cpu", names=["a", "b"], loss_fn=fake_loss,
                      save_json=True)
    assert result.per_class[0]["images"] == 4 and result.per_class[0]["instances"] == 4
    assert len(result.predictions) == 8 and result.metrics["val/cls_loss"] == 2.0
    assert result.metrics["metrics/mAP50-95(B)"] == pytest.approx(1.0)


# --- end to end: `raytrain val` and `raytrain predict` on a tiny dataset and a random yolov8n checkpoint ---

IMAGES = {  # stem: ((h, w), [(cls, x, y, w, h) xywh_n])
    "1": ((64, 96), [(0, 0.5, 0.5, 0.6, 0.7)]),
    "2": ((80, 64), [(1, 0.4, 0.5, 0.7, 0.8), (0, 0.8, 0.2, 0.3, 0.3)]),
    "img_a": ((64, 64), [(1, 0.5, 0.5, 0.9, 0.9)]),
    "4": ((48, 96), []),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-image, 2-class YOLO dataset and a checkpoint of a randomly initialised yolov8n (imgsz 64)."""
    from model_helpers import write_yolo_dataset

    from raytrain.config import make_config
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    data = write_yolo_dataset(root, IMAGES)
    torch.manual_seed(0)
    model = build_model("yolov8n", nc=2)
    for branch in model.head.cv3:  # scores near 0.5 instead of the 1e-3 prior, so there is something to draw
        branch[-1].bias.data.zero_()
    ckpt = make_checkpoint(model, ["a", "b"], config=make_config({"imgsz": 64, "data": str(data)}).to_dict())
    save_checkpoint(root / "tiny.pt", ckpt)
    return root


def _coco_map_of_file(predictions: list[dict]) -> float:
    """pycocotools mAP50-95 of a predictions.json against the tiny dataset's labels in original pixels."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {image_id(stem): i for i, stem in enumerate(sorted(IMAGES))}  # pycocotools sorts ids: no int/str mix
    predictions = [{**p, "image_id": ids[p["image_id"]]} for p in predictions]
    images, annotations = [], []
    for stem, ((h, w), labels) in IMAGES.items():
        image = ids[image_id(stem)]
        images.append({"id": image, "width": w, "height": h})
        for c, x, y, bw, bh in labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": c, "iscrowd": 0,
                                "bbox": [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h], "area": bw * w * bh * h})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 0}, {"id": 1}]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(predictions), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_cli_val_writes_metrics_and_coco_predictions(tiny, tmp_path, capsys):
    import json

    from raytrain.cli import main

    args = ["val", f"model={tiny / 'tiny.pt'}", "batch=2", "workers=0", "device=cpu", "save_json=True",
            f"project={tmp_path}"]  # data and imgsz come from the checkpoint
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mAP50-95" in out and "all" in out and out.count("\n") >= 4  # header, all, a, b, speed
    summary = json.loads((tmp_path / "val" / "metrics.json").read_text())
    for key in ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        assert 0 <= summary[key] <= 1
    assert summary["images"] == 4 and summary["imgsz"] == 64
    assert [(r["name"], r["images"], r["instances"]) for r in summary["per_class"]] == [("a", 2, 2), ("b", 2, 2)]
    predictions = json.loads((tmp_path / "val" / "predictions.json").read_text())
    assert predictions and {p["image_id"] for p in predictions} <= {1, 2, 4, "img_a"}
    first = predictions[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score"} and len(first["bbox"]) == 4
    assert all(p["bbox"][0] >= 0 and p["bbox"][0] + p["bbox"][2] <= 96.001 for p in predictions)  # original pixels
    # What we print is what pycocotools computes from our predictions.json against the original labels.
    assert summary["metrics/mAP50-95(B)"] == pytest.approx(_coco_map_of_file(predictions), abs=0.002)
    assert main([*args, "save_json=False", "conf=0.01"]) == 0  # a fresh folder, val2, without predictions.json
    assert (tmp_path / "val2" / "metrics.json").is_file() and not (tmp_path / "val2" / "predictions.json").exists()


def test_cli_predict_draws_images_and_writes_json(tiny, tmp_path):
    import json

    import cv2

    from raytrain.cli import main

    args = ["predict", f"model={tiny / 'tiny.pt'}", f"source={tiny / 'images'}", "max_det=5",
            "device=cpu", f"project={tmp_path}"]
    assert main(args) == 0
    save_dir = tmp_path / "predict"
    for stem, ((h, w), _) in IMAGES.items():
        drawn = cv2.imread(str(save_dir / f"{stem}.jpg"))
        assert drawn is not None and drawn.shape == (h, w, 3)
    results = json.loads((save_dir / "predictions.json").read_text())
    assert [Path(r["file"]).stem for r in results] == sorted(IMAGES)
    for r in results:
        assert len(r["detections"]) <= 5
        for d in r["detections"]:
            assert set(d) == {"xyxy", "score", "class", "name"} and d["score"] > 0.25
            assert d["name"] == "ab"[d["class"]]
            x1, y1, x2, y2 = d["xyxy"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
    assert sum(len(r["detections"]) for r in results) > 0
    assert main([*args[:2], f"source={tiny / 'images' / '1.jpg'}", *args[3:]]) == 0  # one file, into predict2
    assert [p.name for p in sorted((tmp_path / "predict2").iterdir())] == ["1.jpg", "predictions.json"]


def test_cli_clean_errors(tiny, tmp_path, capsys):
    from raytrain.cli import main
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "nc3.pt", make_checkpoint(build_model("yolov8n", nc=3), ["x", "y", "z"]))
    assert main(["val", f"model={tmp_path / 'nc3.pt'}", f"data={tiny / 'data.yaml'}", "imgsz=64",
                 f"project={tmp_path}"]) == 2
    assert "has 2 classes" in capsys.readouterr().err
    assert main(["val", f"data={tiny / 'data.yaml'}"]) == 2
    assert "needs model=" in capsys.readouterr().err
    assert main(["predict", f"model={tiny / 'tiny.pt'}", f"source={tmp_path / 'missing'}"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "notes.pt").write_text("not weights")
    for command in ("val", "predict"):  # checkpoints are checked before anything runs: one line, exit 2
        assert main([command, f"model={tmp_path / 'notes.pt'}", f"source={tiny / 'images'}"]) == 2
        err = capsys.readouterr().err
        assert f"model={tmp_path / 'notes.pt'} is a text file" in err and "Traceback" not in err
        assert main([command, f"model={tmp_path / 'gone.pt'}", f"source={tiny / 'images'}"]) == 2
        assert f"model={tmp_path / 'gone.pt'}: no such file" in capsys.readouterr().err


class BrightSquareDetector(DecodeThenNMS, nn.Module):
    """A stand-in detector: its maps are the input image, and decoding finds the box of its near-white pixels."""

    def forward(self, x: torch.Tensor):
        return [x]

    def decode(self, maps):
        bright = maps[0].mean(1) > 0.9  # (B, H, W)
        out = torch.zeros(len(bright), 4 + 1, 1)
        for i, mask in enumerate(bright):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            out[i, :, 0] = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, torch.tensor(0.9)))
        return out


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_predict_reads_letterboxes_and_maps_back_like_the_dataset(tmp_path, suffix):
    """A white square at xyxy (40, 20, 80, 60) in a 200 x 100 grey image, predicted at imgsz 64: the image is read by
    the dataset's loader, letterboxed (gain 0.32, 64 x 32 content, 16 px of padding on top) and the box mapped back.

    In the input the square spans x 12.8-25.6 and y 22.4-35.2; the pixels more than 90 % white are x 13-24 and
    y 23-34, i.e. x 40.6-78.1 and y 21.9-59.4 in the original: within 2.5 px of the square.
    """
    import cv2
    import numpy as np

    from raytrain.data import IMAGE_SUFFIXES, load_image
    from raytrain.engine.predict import list_images, predict_image

    image = np.full((100, 200, 3), 50, np.uint8)
    image[20:60, 40:80] = 255
    file = tmp_path / f"square{suffix}"
    cv2.imwrite(str(file), image)
    (tmp_path / "notes.txt").write_text("not an image")
    assert list_images(tmp_path) == [file] and suffix in IMAGE_SUFFIXES
    det = predict_image(BrightSquareDetector(), load_image(str(file)), imgsz=64, device=torch.device("cpu"))
    assert det.shape == (1, 6) and det[0, 4:].tolist() == pytest.approx([0.9, 0.0])
    assert det[0, :4].tolist() == pytest.approx([40.625, 21.875, 78.125, 59.375], abs=0.01)
