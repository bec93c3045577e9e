"""raytrain export / benchmark: every family x format exported and compared with PyTorch; val and predict on the
exported files equal the .pt's; dynamic batch; YOLO26's NMS-free top-k; embedded NMS; each refusal; no partial file.

Models are random yolov8n / yolo11n / yolo26n (nc=2, imgsz 64) whose BatchNorm and biases are randomised, so scores
spread out instead of tying at the prior (ties would make top-k and NMS orders arbitrary). Each export is made
once per module (exports cost seconds each) and shared by the tests that read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'raytrain[export]'")
pytest.importorskip("openvino", reason="the export extra is not installed: pip install 'raytrain[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'raytrain[export]'")

ARCHS = ("yolov8n", "yolo11n", "yolo26n")
FORMATS = ("onnx", "openvino", "torchscript")
IMGSZ = 64
IMAGES = {  # stem: ((h, w), [(cls, x, y, w, h) xywh_n])
    "1": ((64, 96), [(0, 0.5, 0.5, 0.6, 0.7)]),
    "2": ((80, 64), [(1, 0.4, 0.5, 0.7, 0.8), (0, 0.8, 0.2, 0.3, 0.3)]),
    "3": ((64, 64), [(1, 0.5, 0.5, 0.9, 0.9)]),
    "4": ((48, 96), [(0, 0.3, 0.5, 0.4, 0.6)]),
    "5": ((96, 72), [(1, 0.6, 0.4, 0.5, 0.5)]),
}


def vary(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics/affine and conv biases: outputs that differ from anchor to anchor."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.3, generator=g)
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2, generator=g)
        if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            m.bias.data.normal_(0, 1, generator=g)
    for _, cls_head in model.head.branches():  # moderate class logits: scores that saturate at 1.0 would tie
        for branch in cls_head:
            branch[-1].weight.data.mul_(0.05)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 5-image, 2-class dataset and one checkpoint per family (trained-with config: that dataset, imgsz 64)."""
    from model_helpers import write_yolo_dataset

    from raytrain.config import make_config
    from raytrain.models import build_model, make_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("export")
    data = write_yolo_dataset(root, IMAGES)
    config = make_config({"imgsz": IMGSZ, "data": str(data)}).to_dict()
    for arch in ARCHS:
        torch.manual_seed(0)
        model = vary(build_model(arch, nc=2))
        save_checkpoint(root / f"{arch}.pt", make_checkpoint(model, ["a", "b"], config=config))
    return root


_EXPORTS: dict[tuple, object] = {}


def exported(tiny: Path, arch: str, fmt: str, **options):
    """The export of ``arch`` to ``fmt`` with ``options`` (made once per module, into its own folder)."""
    from raytrain.export.api import export

    key = (arch, fmt, tuple(sorted(options.items())))
    if key not in _EXPORTS:
        out = tiny / "exports" / f"{arch}-{fmt}-{len(_EXPORTS)}"
        out.mkdir(parents=True)
        _EXPORTS[key] = export(tiny / f"{arch}.pt", out_dir=out, format=fmt, imgsz=IMGSZ, **options)
    return _EXPORTS[key]


def reference(tiny: Path, arch: str):
    from raytrain.models import load_model

    return load_model(tiny / f"{arch}.pt")


def noise(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


# ONNX exports are dynamic (batch free), OpenVINO and TorchScript static: both kinds are run below.
OPTIONS = {"onnx": {"dynamic": True}, "openvino": {}, "torchscript": {}}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_matches_pytorch_and_carries_its_metadata(tiny, arch, fmt):
    from raytrain.export.runners import load_exported, read_meta

    result = exported(tiny, arch, fmt, **OPTIONS[fmt])
    assert result.check.ok, result.check.describe()
    meta = read_meta(result.path)
    assert (meta.arch, meta.family, meta.nc, meta.names, meta.imgsz, meta.stride) == (arch, arch[:-1], 2, ["a", "b"],
                                                                                      [IMGSZ, IMGSZ], 32)
    assert meta.output == "one2many" and meta.dynamic == (fmt == "onnx") and meta.train["imgsz"] == IMGSZ
    # Our own comparison on another input (not the export's check): the decoded one-to-many output, (B, 4 + nc, A).
    model = reference(tiny, arch)
    runner = load_exported(result.path)
    x = noise(3)  # 3 images: the dynamic file at batch 3, the static ones in chunks of their batch of 1
    with torch.no_grad():
        want = model.decode(model(x))
    got = runner(x)
    assert got.shape == want.shape == (3, 6, 84)
    assert (got[:, :4] - want[:, :4]).abs().max() < 0.02 and (got[:, 4:] - want[:, 4:]).abs().max() < 2e-4
    assert not any(p.name.startswith(".") for p in result.path.parent.iterdir())  # no temporary left behind


def _val(tiny: Path, model: Path | str, tmp_path: Path, name: str, *extra: str) -> tuple[dict, list]:
    from raytrain.cli import main

    assert main(["val", f"model={model}", "batch=2", "workers=0", "device=cpu", "save_json=True",
                 f"project={tmp_path}", f"name={name}", *extra]) == 0
    folder = tmp_path / name
    return json.loads((folder / "metrics.json").read_text()), json.loads((folder / "predictions.json").read_text())


def _same_predictions(a: list[dict], b: list[dict]) -> None:
    """Equal COCO predictions as multisets: each has a partner in the other list with the same image and class, a
    score within 1e-4 and a box within 0.05 px (equal scores may come in either order). One without a partner must be
    a tie: another prediction of its image and class in the other list has its score (an untrained head gives many
    anchors the same score, and which of them NMS keeps, or ``max_det`` cuts, follows float rounding that differs
    between backends; the mAP, compared to 1e-3 by the callers, is unaffected)."""
    assert abs(len(a) - len(b)) <= max(1, len(b) // 50) and len(b) > 0
    unused, unmatched = list(b), []
    for p in sorted(a, key=lambda p: -p["score"]):
        match = next((q for q in unused if q["image_id"] == p["image_id"] and q["category_id"] == p["category_id"]
                      and abs(q["score"] - p["score"]) < 1e-4
                      and max(abs(u - v) for u, v in zip(p["bbox"], q["bbox"], strict=True)) < 0.05), None)
        if match is None:
            unmatched.append(p)
        else:
            unused.remove(match)
    for p in unmatched:
        tied = [q for q in b if q["image_id"] == p["image_id"] and q["category_id"] == p["category_id"]
                and abs(q["score"] - p["score"]) < 1e-4]
        assert tied, p


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ["yolov8n", "yolo26n"])
def test_val_on_the_exported_file_equals_the_pt(tiny, tmp_path, arch, fmt):
    """raytrain val model=best.onnx (etc.): the same letterbox, NMS and metrics as the .pt; batch 2 over 5 images runs
    the dynamic file on a last batch of 1 and the static files in chunks."""
    pt_metrics, pt_predictions = _val(tiny, tiny / f"{arch}.pt", tmp_path, "pt")
    path = exported(tiny, arch, fmt, **OPTIONS[fmt]).path
    metrics, predictions = _val(tiny, path, tmp_path, fmt)  # data and imgsz from the file's metadata
    assert metrics["imgsz"] == IMGSZ and metrics["images"] == 5
    for key in ("metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/precision(B)", "metrics/recall(B)"):
        assert metrics[key] == pytest.approx(pt_metrics[key], abs=1e-3)
    _same_predictions(predictions, pt_predictions)


def test_yolo26_nms_free_export_is_pytorchs_top_k(tiny, tmp_path):
    """nms=False: (B, max_det, 6) rows equal to the PyTorch one-to-one top-k; val on it equals val nms=False."""
    from raytrain.export.runners import load_exported
    from raytrain.models.head import decode_predictions, top_k_detections

    result = exported(tiny, "yolo26n", "onnx", nms=False, dynamic=True, max_det=20)
    assert result.check.ok and result.meta.output == "one2one"
    model = reference(tiny, "yolo26n")
    x = noise(2)
    with torch.no_grad():
        raw = model(x)
        want = top_k_detections(decode_predictions(raw["one2one"], model.head.strides, model.reg_max, xywh=False), 20)
        detected = model.detect(raw, conf=0.25, max_det=20, nms=False)
    runner = load_exported(result.path)
    got = runner(x)
    assert got.shape == want.shape == (2, 20, 6)
    assert torch.equal(got[..., 5], want[..., 5])  # same classes in the same (score) order
    assert (got[..., :5] - want[..., :5]).abs().max() < 0.02
    for rows, ref in zip(runner.detect(got, conf=0.25, max_det=20), detected, strict=True):
        assert rows.shape == ref.shape and (rows - ref).abs().max() < 0.02
    with pytest.raises(Exception, match="NMS-free export"):
        runner.detect(got, nms=True)
    pt_metrics, pt_predictions = _val(tiny, tiny / "yolo26n.pt", tmp_path, "pt", "nms=False", "max_det=20")
    metrics, predictions = _val(tiny, result.path, tmp_path, "onnx", "nms=False", "max_det=20")
    assert metrics["metrics/mAP50-95(B)"] == pytest.approx(pt_metrics["metrics/mAP50-95(B)"], abs=1e-3)
    _same_predictions(predictions, pt_predictions)


def test_embedded_nms_equals_raytrains_nms():
    """The graph's batched NMS (fixed-size rows) keeps what ops.non_max_suppression keeps, image by image."""
    from raytrain.export.graph import embedded_nms
    from raytrain.models import build_model
    from raytrain.ops import non_max_suppression

    torch.manual_seed(0)
    model = vary(build_model("yolov8n", nc=3)).eval()
    with torch.no_grad():
        decoded = model.decode(model(noise(3)))
    # Neighbouring cells of an untrained net can tie exactly; NMS then keeps either box. Distinct scores:
    decoded[:, 4:] += 1e-5 * torch.rand(decoded[:, 4:].shape, generator=torch.Generator().manual_seed(0))
    rows = embedded_nms(decoded, conf=0.25, iou=0.5, max_det=50)
    assert rows.shape == (3, 50, 6)
    for image_rows, ref in zip(rows, non_max_suppression(decoded, 0.25, 0.5, 50), strict=True):
        kept = image_rows[image_rows[:, 4] > 0]
        assert 0 < len(kept) == len(ref) and torch.allclose(kept, ref)
        assert (image_rows[len(kept):] == 0).all()  # zero rows after the last detection


def test_nms_inside_the_graph_dynamic_batch(tiny):
    from raytrain.export.runners import load_exported
    from raytrain.ops import non_max_suppression

    result = exported(tiny, "yolov8n", "torchscript", nms=True, dynamic=True, conf=0.3)
    assert result.check.ok and result.meta.output == "nms" and result.meta.conf == 0.3
    runner = load_exported(result.path)
    model = reference(tiny, "yolov8n")
    for batch in (1, 4):  # traced at batch 1, run at 1 and 4
        x = noise(batch, seed=batch)
        with torch.no_grad():
            want = non_max_suppression(model.decode(model(x)), 0.3, 0.7, 300)
        got = runner.detect(runner(x), conf=0.3)
        assert [len(g) for g in got] == [len(w) for w in want]
        for g, w in zip(got, want, strict=True):  # as sets: equal scores may come in either order
            for row in g:
                same = (w - row).abs().amax(dim=1).min() < 0.02
                tie = ((w[:, 4] - row[4]).abs() < 1e-4).sum() > 1  # tied scores: NMS may keep another of them
                assert same or tie, row


def test_static_export_refuses_another_size_and_val_says_so(tiny, tmp_path, capsys):
    from raytrain.cli import main
    from raytrain.export.runners import load_exported
    from raytrain.parsing import ConfigError

    path = exported(tiny, "yolov8n", "openvino").path
    with pytest.raises(ConfigError, match="static export for imgsz=64"):
        load_exported(path)(torch.rand(1, 3, 96, 96))
    assert main(["val", f"model={path}", "imgsz=96", "workers=0", f"project={tmp_path}"]) == 2
    assert "static export for imgsz=64" in capsys.readouterr().err


def test_predict_on_an_exported_file_equals_the_pt(tiny, tmp_path):
    from raytrain.cli import main

    path = exported(tiny, "yolov8n", "onnx", **OPTIONS["onnx"]).path
    out = {}
    for name, model in (("pt", tiny / "yolov8n.pt"), ("onnx", path)):
        assert main(["predict", f"model={model}", f"source={tiny / 'images'}", "device=cpu", f"project={tmp_path}",
                     f"name={name}", "conf=0.3"]) == 0
        out[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert len(out["pt"]) == len(out["onnx"]) == 5
    for a, b in zip(out["pt"], out["onnx"], strict=True):
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        assert all(abs(d["score"] - e["score"]) < 1e-3 for d, e in zip(a["detections"], b["detections"], strict=True))


# --- refusals: one line, exit 2, nothing written ---

@pytest.mark.parametrize("args, message", [
    (["format=tflite"], "format='tflite' is not an export format"),
    (["format=onx"], "Did you mean onnx?"),
    (["format=engine"], "TensorRT"),
    (["imgsz=70"], "multiple of the model's stride 32"),
    (["half=True"], "half=True with format=onnx needs a GPU"),
    (["nms=False"], "yolov8n does not have"),
    (["nms=False", "dynamic=True", "model=yolo26n"], "needs inputs with at least 300 anchors"),
])
def test_export_refusals(tiny, tmp_path, capsys, args, message):
    import shutil

    from raytrain.cli import main

    arch = next((a.split("=")[1] for a in args if a.startswith("model=")), "yolov8n")
    ckpt = tmp_path / f"{arch}.pt"
    shutil.copy(tiny / f"{arch}.pt", ckpt)
    args = [a for a in args if not a.startswith("model=")]
    format_ = [] if any(a.startswith("format=") for a in args) else ["format=onnx"]
    assert main(["export", f"model={ckpt}", f"imgsz={IMGSZ}", *format_, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.name]  # nothing written


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    from raytrain.cli import main

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for model, message in ((text, "notes.pt"), (tmp_path / "missing.pt", "missing.pt"),
                           (tmp_path / "x.onnx", "already an exported model")):
        assert main(["export", f"model={model}", "format=onnx"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]


def test_a_missing_extra_is_one_line_naming_it(tiny, monkeypatch, capsys):
    import sys

    from raytrain.cli import main

    monkeypatch.setitem(sys.modules, "openvino", None)  # what an interpreter without the package raises on import
    assert main(["export", f"model={tiny / 'yolov8n.pt'}", "format=openvino"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'raytrain[export]'" in err and len(err.splitlines()) == 1, err


def test_a_failed_export_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    import shutil

    from raytrain.export.api import export

    ckpt = tmp_path / "m.pt"
    shutil.copy(tiny / "yolov8n.pt", ckpt)

    def half_written(module, args, f, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export(ckpt, format="onnx", imgsz=IMGSZ)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_cli_export_says_how_the_check_went(tiny, tmp_path, capsys):
    import shutil

    from raytrain.cli import main

    ckpt = tmp_path / "best.pt"
    shutil.copy(tiny / "yolo26n.pt", ckpt)
    assert main(["export", f"model={ckpt}", "format=torchscript", "nms=False"]) == 0  # imgsz from the checkpoint
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"torchscript: {tmp_path / 'best.torchscript'}") and "(1, 84, 6) NMS-free" in last
    assert "compared with PyTorch" in last and last.endswith(": OK")


def test_benchmark_table_and_csv(tiny, tmp_path, capsys):
    import csv

    from raytrain.cli import main

    assert main(["benchmark", f"model={tiny / 'yolov8n.pt'}", "formats=pt,torchscript", "runs=3", "workers=0",
                 "batch=2", "device=cpu", f"project={tmp_path}", "threads=1"]) == 0
    out = capsys.readouterr().out
    assert "1 threads" in out and "load average" in out
    rows = list(csv.DictReader((tmp_path / "benchmark" / "benchmark.csv").open()))
    assert [r["format"] for r in rows] == ["pt", "torchscript"] and not any(r["error"] for r in rows)
    assert float(rows[0]["mAP50-95"]) == pytest.approx(float(rows[1]["mAP50-95"]), abs=1e-3)
    assert all(float(r["latency_ms_median"]) > 0 and float(r["latency_ms_p90"]) >= float(r["latency_ms_median"])
               for r in rows)
    assert (tmp_path / "benchmark" / "yolov8n.torchscript").is_file()
