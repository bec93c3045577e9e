"""Downloads from a local HTTP server (never the internet), unsafe archives, and the offline error."""

from __future__ import annotations

import functools
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from raytrain.data import DatasetError, resolve_data, scan_split
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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_builtin_download_extracts_atomically_and_is_reused(server, tmp_path: Path, monkeypatch):
    _zip(server["folder"] / "coco8.zip", _dataset_members("coco8"))
    url = f"{server['url']}/coco8.zip"
    monkeypatch.setitem(D.BUILTIN, "coco8", {**D.BUILTIN["coco8"], "url": url})
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "datasets"))
    spec = resolve_data("coco8")
    root = tmp_path / "datasets" / "coco8"
    assert spec.root == root and spec.yaml_file == root / "data.yaml" and spec.nc == 80
    assert spec.names[0] == "person" and spec.train == [root / "images/train"]
    assert scan_split(spec, "train").instances == 1 and (root / "README.md").is_file()
    assert _listing(tmp_path / "datasets") == ["coco8"]  # no temp left
    resolve_data("coco8")
    assert server["hits"]["/coco8.zip"] == 1


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
    with pytest.raises(DatasetError) as info:
        D.ensure_builtin("coco128", url=url, root=root)
    message = str(info.value)
    assert url in message and "Offline?" in message and str(root) in message
    assert str(tmp_path / "datasets" / "coco128.zip") in message
    assert not root.exists() and _listing(root.parent) == []

    # The archive placed by hand where the message says is used without the network.
    _zip(tmp_path / "datasets" / "coco128.zip", _dataset_members("coco128", "train2017", "train2017"))
    yaml_file = D.ensure_builtin("coco128", url=url, root=root)
    assert (root / "images/train2017/a.jpg").is_file() and "train: images/train2017" in yaml_file.read_text()


def test_truncated_download_leaves_nothing(server, tmp_path: Path):
    with pytest.raises(DatasetError, match="transfer interrupted|IncompleteRead"):
        D.download_dataset(f"{server['url']}/truncated.zip", tmp_path / "ds", required=["images"])
    assert _listing(tmp_path) == []
