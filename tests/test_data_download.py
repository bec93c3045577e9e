"""Downloads from a local HTTP server (never the internet), unsafe archives, and the offline error."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import importlib.util
import io
import shutil
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from raytrain.data import DatasetError, resolve_data, scan_split
from raytrain.data import catalog as C
from raytrain.data import download as D


def _listing(folder: Path) -> list[str]:
    """Names in a folder apart from lock files (whether a released lock file stays is filelock's business)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))

def _jpeg() -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _dataset_members(top: str, train: str = "train", val: str = "val") -> dict[str, bytes]:
    return {f"{top}/images/{train}/a.jpg": _jpeg(), f"{top}/labels/{train}/a.txt": b"0 0.5 0.5 0.5 0.5\n",
            f"{top}/images/{val}/b.jpg": _jpeg(), f"{top}/labels/{val}/b.txt": b"1 0.5 0.5 0.2 0.2\n",
            f"{top}/README.md": b"tiny\n"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A local HTTP server on 127.0.0.1 serving a folder; counts requests per path."""
    folder = tmp_path_factory.mktemp("served")
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/truncated.zip":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"PK" * 10)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "folder": folder, "hits": hits}
    httpd.shutdown()
    httpd.server_close()


def _served(name: str, server: dict, monkeypatch: pytest.MonkeyPatch) -> C.BuiltinDataset:
    """The catalog entry ``name`` with every archive URL pointing at the local server (same file names)."""
    dataset = C.DATASETS[name.lower()]
    archives = tuple(dataclasses.replace(a, url=f"{server['url']}/{a.url.rsplit('/', 1)[1]}") for a in dataset.archives)
    served = dataclasses.replace(dataset, archives=archives)
    monkeypatch.setitem(C.DATASETS, name.lower(), served)
    return served


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_builtin_download_extracts_atomically_and_is_reused(server, tmp_path: Path, monkeypatch):
    _zip(server["folder"] / "coco8.zip", _dataset_members("coco8"))
    _served("coco8", server, monkeypatch)
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)
    spec = resolve_data("coco8.yaml")  # Ultralytics' spelling; the bare name is the same dataset
    root = tmp_path / "datasets" / "coco8"
    assert spec.root == root and spec.yaml_file == root / "data.yaml" and spec.nc == 80
    assert spec.names[0] == "person" and spec.names[79] == "toothbrush" and spec.train == [root / "images/train"]
    assert scan_split(spec, "train").instances == 1 and (root / "README.md").is_file()
    assert _listing(tmp_path / "datasets") == ["coco8"]  # no temp left
    assert resolve_data("coco8") == resolve_data("COCO8.yml") == spec
    assert server["hits"]["/coco8.zip"] == 1

    # A file of that name in the working directory wins, as in Ultralytics; a path with a folder is always a file.
    (tmp_path / "coco8.yaml").write_text("path: datasets/coco8\ntrain: images/train\nval: images/val\nnames: [a]\n")
    mine = resolve_data("coco8.yaml")
    assert mine.yaml_file == tmp_path / "coco8.yaml" and mine.names == {0: "a"}
    with pytest.raises(DatasetError, match="not found"):
        resolve_data("cfg/coco128.yaml")
    assert server["hits"]["/coco8.zip"] == 1

    # A run resolved on the driver names the driver's copy; a node without it prepares it at that path (only in its
    # datasets folder: elsewhere a missing data.yaml is an error, never a download).
    shutil.rmtree(root)
    assert resolve_data(str(root / "data.yaml")).yaml_file == root / "data.yaml"
    assert server["hits"]["/coco8.zip"] == 2
    with pytest.raises(DatasetError, match="not found"):
        resolve_data(str(tmp_path / "mine" / "coco8" / "data.yaml"))


def test_every_single_zip_builtin_downloads_by_its_ultralytics_name(server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)
    for dataset in [d for d in C.CATALOG if len(d.archives) == 1]:
        archive = dataset.archives[0].url.rsplit("/", 1)[1]
        members = {f"{dataset.folder}/{p}/{i}.jpg": _jpeg() for i, p in enumerate(dataset.archives[0].holds)}
        members |= {f"{dataset.folder}/{p.replace('images', 'labels')}/{i}.txt": b"0 0.5 0.5 0.5 0.5\n"
                    for i, p in enumerate(dataset.archives[0].holds)}
        _zip(server["folder"] / archive, members)
        _served(dataset.name, server, monkeypatch)
        before = server["hits"].get(f"/{archive}", 0)  # the server is the module's: another test may have asked
        spec = resolve_data(f"{dataset.name}.yaml")
        assert spec.root == tmp_path / "datasets" / dataset.folder, dataset.name
        assert list(spec.names.values()) == list(dataset.names) and scan_split(spec, "val").instances == 1
        assert (spec.test is not None) == (dataset.test is not None)
        assert server["hits"][f"/{archive}"] == before + 1


def test_coco_downloads_its_three_archives_once_and_resumes_a_partial_download(server, tmp_path: Path, monkeypatch):
    labels = {f"coco/labels/{s}/{i}.txt": b"0 0.1 0.1 0.3 0.1 0.3 0.4\n" for s in ("train2017", "val2017")
              for i in (1, 2)}  # polygon rows, as in the segments labels Ultralytics downloads
    labels |= {"coco/train2017.txt": b"./images/train2017/1.jpg\n./images/train2017/2.jpg\n",
               "coco/val2017.txt": b"./images/val2017/1.jpg\n./images/val2017/2.jpg\n",
               "coco/test-dev2017.txt": b"./images/test2017/9.jpg\n"}
    _zip(server["folder"] / "coco2017labels-segments.zip", labels)
    for split in ("train2017", "val2017"):
        _zip(server["folder"] / f"{split}.zip", {f"{split}/{i}.jpg": _jpeg() for i in (1, 2)})
    _served("coco", server, monkeypatch)
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "datasets"))
    spec = resolve_data("coco.yaml")
    root = tmp_path / "datasets" / "coco"
    assert spec.train == [root / "train2017.txt"] and spec.test == [root / "test-dev2017.txt"] and spec.nc == 80
    index = scan_split(spec, "val")
    assert len(index.records) == 2 and index.instances == 2 and not index.skipped
    hits = {k: v for k, v in server["hits"].items() if k.startswith(("/coco2017", "/train2017", "/val2017"))}
    assert hits == {"/coco2017labels-segments.zip": 1, "/train2017.zip": 1, "/val2017.zip": 1}

    shutil.rmtree(root / "images" / "val2017")  # as if interrupted before the last archive
    resolve_data("coco")
    assert server["hits"]["/val2017.zip"] == 2 and server["hits"]["/train2017.zip"] == 1
    assert server["hits"]["/coco2017labels-segments.zip"] == 1


def test_ultralytics_dataset_that_is_not_built_in_is_named_with_the_reason(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"data=VOC.yaml: .* a script that converts the labels"):
        resolve_data("VOC.yaml")
    (tmp_path / "VOC.yaml").write_text("train: images\nval: images\nnames: [a]\n")
    (tmp_path / "images").mkdir()
    assert resolve_data("VOC.yaml").yaml_file == tmp_path / "VOC.yaml"  # a local file of that name is used


def _ultralytics_datasets() -> Path:
    found = importlib.util.find_spec("ultralytics")
    if found is None:
        pytest.skip("ultralytics is not installed (the reference for the dataset table)")
    return Path(found.submodule_search_locations[0]) / "cfg" / "datasets"


def test_catalog_says_what_ultralytics_says():
    """Each built-in matches Ultralytics' own definition (read, not imported): root folder, splits, names, archives;
    each name kept out is one Ultralytics resolves, and those said to be scripts are scripts there."""
    folder = _ultralytics_datasets()
    files = {p.stem.lower(): p for p in folder.glob("*.yaml")}
    for dataset in C.CATALOG:
        theirs = yaml.safe_load(files[dataset.name.lower()].read_text())
        assert files[dataset.name.lower()].stem == dataset.name
        assert (theirs["path"], theirs["train"], theirs["val"], theirs.get("test")) == (
            dataset.folder, dataset.train, dataset.val, dataset.test), dataset.name
        assert [theirs["names"][i] for i in range(len(theirs["names"]))] == list(dataset.names), dataset.name
        urls = [a.url for a in dataset.archives]
        if len(urls) == 1:
            assert theirs["download"] == urls[0], dataset.name
        else:  # coco: a script fetching the same archives
            assert all(u.rsplit("/", 1)[1] in theirs["download"] for u in urls)
            assert "segments = True" in theirs["download"]
    for name, why in C.NOT_BUILT_IN.items():
        theirs = yaml.safe_load(files[name].read_text())
        if "script" in why:
            assert "\n" in theirs["download"], name  # several lines of Python, not a URL


def test_yaml_download_url(server, tmp_path: Path):
    _zip(server["folder"] / "mine.zip", _dataset_members("mine", "train2017", "val2017"))
    yaml_file = tmp_path / "cfg" / "mine.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(f"path: ../data/mine\ntrain: images/train2017\nval: images/val2017\nnames: [a, b]\n"
                         f"download: {server['url']}/mine.zip\n")
    spec = resolve_data(str(yaml_file))
    assert spec.root == tmp_path / "data" / "mine" and spec.val == [tmp_path / "data/mine/images/val2017"]
    assert scan_split(spec, "val").class_counts().tolist() == [0, 1]

    yaml_file.write_text(yaml_file.read_text().replace("mine.zip", "absent.zip").replace("data/mine", "data/x"))
    with pytest.raises(DatasetError, match=r"could not download .*/absent.zip: HTTP 404 .* so that .*data/x holds"):
        resolve_data(str(yaml_file))
    yaml_file.write_text(yaml_file.read_text().replace(f"{server['url']}/absent.zip", "import os; os.system('x')"))
    with pytest.raises(DatasetError, match="'download' must be an http"):
        resolve_data(str(yaml_file))


@pytest.mark.parametrize("member", ["/etc/evil.txt", "../evil.txt", "ok/../../evil.txt", "C:/evil.txt"])
def test_unsafe_zip_members_are_rejected(server, tmp_path: Path, member: str):
    name = f"bad{abs(hash(member))}.zip"
    _zip(server["folder"] / name, {"ds/images/train/a.jpg": _jpeg(), member: b"owned"})
    with pytest.raises(DatasetError, match=f"unsafe archive member '{member}'"):
        D.download_dataset(f"{server['url']}/{name}", tmp_path / "out" / "ds")
    assert not (tmp_path / "out" / "ds").exists() and not (tmp_path / "evil.txt").exists()
    assert _listing(tmp_path / "out") == []


def test_zip_symlink_and_tar_links_escaping_are_rejected(tmp_path: Path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("ds/link")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "../../etc/passwd")
    with pytest.raises(DatasetError, match="points outside"):
        D.extract_archive(archive, tmp_path / "x1")

    def tar_with(member: tarfile.TarInfo) -> Path:
        path = tmp_path / f"{member.name.replace('/', '_')}.tar.gz"
        with tarfile.open(path, "w:gz") as t:
            t.addfile(member, io.BytesIO(b"") if member.isfile() else None)
        return path

    link = tarfile.TarInfo("ds/images/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
    with pytest.raises(DatasetError, match="points outside"):
        D.extract_archive(tar_with(link), tmp_path / "x2")
    inside = tarfile.TarInfo("ds/images/inside")
    inside.type, inside.linkname = tarfile.SYMTYPE, "../labels"
    assert D.extract_archive(tar_with(inside), tmp_path / "x3") == tmp_path / "x3" / "ds"
    device = tarfile.TarInfo("ds/dev")
    device.type = tarfile.CHRTYPE
    with pytest.raises(DatasetError, match="special file"):
        D.extract_archive(tar_with(device), tmp_path / "x4")


def test_offline_error_names_the_url_and_where_to_put_files(tmp_path: Path):
    url = f"http://127.0.0.1:{_closed_port()}/coco128.zip"
    root = tmp_path / "datasets" / "coco128"
    offline = dataclasses.replace(C.DATASETS["coco128"], archives=(
        dataclasses.replace(C.DATASETS["coco128"].archives[0], url=url),))
    with pytest.raises(DatasetError) as info:
        C.ensure_builtin(offline, root=root)
    message = str(info.value)
    assert url in message and "Offline?" in message and str(root) in message
    assert str(tmp_path / "datasets" / "coco128.zip") in message
    assert not root.exists() and _listing(root.parent) == []

    # The archive placed by hand where the message says is used without the network.
    _zip(tmp_path / "datasets" / "coco128.zip", _dataset_members("coco128", "train2017", "train2017"))
    yaml_file = C.ensure_builtin(offline, root=root)
    assert (root / "images/train2017/a.jpg").is_file() and "train: images/train2017" in yaml_file.read_text()


def test_truncated_download_leaves_nothing(server, tmp_path: Path):
    with pytest.raises(DatasetError, match="transfer interrupted|IncompleteRead"):
        D.download_dataset(f"{server['url']}/truncated.zip", tmp_path / "ds", required=["images"])
    assert _listing(tmp_path) == []
