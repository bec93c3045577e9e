"""Ultralytics' weight names (model=yolov8n.pt, pretrained=yolo26n.pt): local file, else the release asset fetched once
from a local server standing in for GitHub's releases, converted once, then used by the run. Never the internet."""

from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch
from model_helpers import fake_ultralytics_checkpoint

from raytrain.config import make_config
from raytrain.models import CheckpointError, build_model, load_checkpoint
from raytrain.models.checkpoint import make_checkpoint, save_checkpoint
from raytrain.models.weights import MIN_BYTES, release_arch, resolve_weights, sha256_of, weights_dir


def release_asset(path: Path, arch: str, monkeypatch, seed: int = 0) -> dict[str, torch.Tensor]:
    """An Ultralytics ``.pt`` of ``arch`` (nc=80) at ``path``: built and stripped with ultralytics where it is
    installed, else the faked layout; returns the state_dict the file holds."""
    torch.manual_seed(seed)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(path.parent.parent / "ultralytics_config"))  # not the user's home
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    try:
        import copy

        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils.torch_utils import strip_optimizer
    except ImportError:
        model = build_model(arch, nc=80)
        fake_ultralytics_checkpoint(path, model, monkeypatch)
        return model.half().state_dict()
    model = DetectionModel(f"{arch}.yaml", nc=80, verbose=False)
    model.names = {i: f"class{i}" for i in range(80)}
    torch.save({"epoch": 0, "model": None, "ema": copy.deepcopy(model).half(), "train_args": {}}, path)
    strip_optimizer(path)  # the layout of a release asset
    return model.half().state_dict()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """``assets(arch, seed) -> (file, state_dict)``: each release-layout file built once per module (a copy is
    served or placed per test)."""
    folder = tmp_path_factory.mktemp("assets")
    built: dict[tuple[str, int], tuple[Path, dict[str, torch.Tensor]]] = {}

    def get(arch: str, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
        if (arch, seed) not in built:
            (folder / str(seed)).mkdir(exist_ok=True)
            with pytest.MonkeyPatch.context() as patch:
                path = folder / str(seed) / f"{arch}.pt"
                built[arch, seed] = path, release_asset(path, arch, patch, seed=seed)
        return built[arch, seed]

    return get


def place(assets, target: Path, arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Copy the built ``arch`` file to ``target`` (a served folder or the working directory); its state_dict."""
    source, state = assets(arch, seed)
    shutil.copyfile(source, target)
    return state


class _Releases(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def releases(tmp_path, monkeypatch):
    """A local server for ``<url>/v8.4.0/<name>`` from ``tmp_path/served/v8.4.0``; the cwd is an empty folder."""
    folder = tmp_path / "served" / "v8.4.0"
    folder.mkdir(parents=True)
    handler = type("Handler", (_Releases,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RAYTRAIN_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/v8.4.0")
    monkeypatch.setenv("RAYTRAIN_WEIGHTS", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield folder, handler.requests
    server.shutdown()
    server.server_close()


def test_names_that_resolve():
    assert release_arch("yolov8n.pt") == "yolov8n" and release_arch("yolo26x.pt") == "yolo26x"
    assert release_arch("yolo11s.pt") == "yolo11s"
    for other in ("yolov8nn.pt", "runs/yolov8n.pt", "yolov8n", "best.pt", "yolov8n-seg.pt"):
        assert release_arch(other) is None and resolve_weights(other, key="model") == other


def test_release_asset_is_fetched_once_converted_once_and_trained_from(releases, assets):
    folder, requests = releases
    served = place(assets, folder / "yolov8n.pt", "yolov8n")
    path = Path(resolve_weights("yolov8n.pt", key="model"))
    assert requests == ["/v8.4.0/yolov8n.pt"]  # the release URL scheme, under the overridden base
    download = weights_dir() / "downloads" / "yolov8n.pt"
    assert (download.with_name("yolov8n.pt.sha256").read_text().split()[0] == sha256_of(download)
            == sha256_of(folder / "yolov8n.pt"))
    assert path.parent == weights_dir() / "converted" and path.name.startswith("yolov8n-")
    ckpt = load_checkpoint(path)
    assert (ckpt["arch"], ckpt["nc"], ckpt["names"][:2]) == ("yolov8n", 80, ["class0", "class1"])
    assert all(torch.equal(ckpt["model"][k], v.float() if v.is_floating_point() else v) for k, v in served.items())
    assert resolve_weights("yolov8n.pt", key="model") == str(path)  # cached: no second request, no reconversion
    download.unlink()
    assert resolve_weights("yolov8n.pt", key="model") == str(path) and len(requests) == 1
    # On the driver, as fit/tune plan a run: model= becomes the converted file; the worker's model starts from it.
    from raytrain.engine.setup import model_for
    from raytrain.train.plan import resolve_config

    cfg = resolve_config(make_config({"model": "yolov8n.pt", "data": "shapes", "device": "cpu"}), gpus_available=0)
    assert cfg.model == str(path) and len(requests) == 1
    model = model_for(cfg, nc=3)  # another class count: everything but the class outputs transfers
    assert torch.equal(model.state_dict()["model.0.conv.weight"], ckpt["model"]["model.0.conv.weight"])


def test_pretrained_name_and_a_searched_name_resolve_on_the_driver(releases, assets):
    folder, requests = releases
    place(assets, folder / "yolo26n.pt", "yolo26n")
    place(assets, folder / "yolov8n.pt", "yolov8n")
    from raytrain.train.plan import resolve_config
    from raytrain.tuning.orchestrate import resolve_train_args
    from raytrain.tuning.space import load_space

    cfg = resolve_config(make_config({"model": "yolo26n", "pretrained": "yolo26n.pt", "data": "shapes"}),
                         gpus_available=0)
    assert Path(cfg.pretrained).parent == weights_dir() / "converted"
    assert load_checkpoint(cfg.pretrained)["arch"] == "yolo26n"
    spec = load_space({"train": {"data": "shapes", "model": "yolov8n"}, "space": {"model": ["yolov8n.pt", "yolov8s"]},
                       "num_samples": 1, "metric": "train/box_loss", "mode": "min"})
    resolve_train_args(spec, gpus_available=0)  # opens the searched yolov8n.pt: fetched and converted here
    assert sorted(requests) == ["/v8.4.0/yolo26n.pt", "/v8.4.0/yolov8n.pt"]


def test_a_local_file_of_that_name_wins(releases, assets):
    folder, requests = releases
    place(assets, folder / "yolov8n.pt", "yolov8n")
    local = place(assets, Path("yolov8n.pt"), "yolov8n", seed=1)  # in the working directory
    ckpt = load_checkpoint(resolve_weights("yolov8n.pt", key="model"))
    assert requests == [] and torch.equal(ckpt["model"]["model.0.conv.weight"], local["model.0.conv.weight"].float())
    save_checkpoint("yolo11n.pt", make_checkpoint(build_model("yolo11n", nc=2)))  # a raytrain checkpoint: as it is
    assert resolve_weights("yolo11n.pt", key="pretrained") == str(Path("yolo11n.pt").resolve()) and requests == []


def test_bad_downloads_are_refused_and_not_kept(releases, assets):
    folder, requests = releases
    with pytest.raises(CheckpointError, match=r"model=yolo11n.pt: could not download http://127.0.0.1:\d+/v8.4.0/"
                                              r"yolo11n.pt: HTTP 404.*in the working directory"):
        resolve_weights("yolo11n.pt", key="model")
    (folder / "yolo11n.pt").write_bytes(b"<html>moved</html>")
    with pytest.raises(CheckpointError, match="is only 18 bytes, not Ultralytics' weights"):
        resolve_weights("yolo11n.pt", key="model")
    (folder / "yolo11n.pt").write_bytes(b"x" * MIN_BYTES)
    with pytest.raises(CheckpointError, match="not a torch zip archive"):
        resolve_weights("yolo11n.pt", key="pretrained")
    assert not (weights_dir() / "downloads" / "yolo11n.pt").exists()
    # A cached download whose bytes changed after its sha256 was recorded (and not yet converted): fetched again.
    place(assets, folder / "yolov8n.pt", "yolov8n")
    converted = Path(resolve_weights("yolov8n.pt", key="model"))
    converted.unlink()
    with open(weights_dir() / "downloads" / "yolov8n.pt", "ab") as f:
        f.write(b"tampered")
    assert resolve_weights("yolov8n.pt", key="model") == str(converted) and requests.count("/v8.4.0/yolov8n.pt") == 2


def test_predict_takes_a_weight_name(releases, assets, tmp_path, capsys):
    import cv2
    import numpy as np

    from raytrain.cli import main as cli_main

    folder, requests = releases
    place(assets, folder / "yolov8n.pt", "yolov8n")
    cv2.imwrite("img.jpg", np.full((48, 64, 3), 127, np.uint8))
    assert cli_main(["predict", "model=yolov8n.pt", "source=img.jpg", "imgsz=64", "device=cpu",
                     f"project={tmp_path / 'runs'}"]) == 0
    assert "1 images" in capsys.readouterr().out and requests == ["/v8.4.0/yolov8n.pt"]
