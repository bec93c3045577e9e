"""Dataset YAML parsing, path resolution and the errors for malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import write_dataset, write_image

from raytrain.config import ConfigError
from raytrain.data import DatasetError, resolve_data
from raytrain.data.common import datasets_dir, is_writable_dir
from raytrain.data.dataset_yaml import parse_names, read_dataset_yaml


def test_resolve_yaml_makes_every_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yaml_file = write_dataset(tmp_path / "ds", {"a0": "0 0.5 0.5 0.2 0.2\n"})
    monkeypatch.chdir(tmp_path)
    spec = resolve_data("ds/data.yaml")
    assert spec.yaml_file == yaml_file.resolve() and spec.root == (tmp_path / "ds").resolve()
    assert spec.train == [(tmp_path / "ds/images/train").resolve()]
    assert spec.names == {0: "a", 1: "b", 2: "c"} and spec.nc == 3
    assert spec.test is None and spec.sources("val") == spec.val
    with pytest.raises(DatasetError, match="no 'test' split"):
        spec.sources("test")


def test_relative_path_resolves_against_the_yaml_folder(tmp_path: Path):
    write_dataset(tmp_path / "data" / "ds", {"a0": None})
    yaml_file = tmp_path / "configs" / "ds.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text("path: ../data/ds\ntrain: [images/train, images/val]\nval: images/val\n"
                         "names: {0: x, 1: y}\n")
    spec = resolve_data(yaml_file)
    assert spec.root == (tmp_path / "data" / "ds").resolve()
    assert len(spec.train) == 2 and spec.names == {0: "x", 1: "y"}


def test_txt_list_and_test_split(tmp_path: Path):
    root = tmp_path / "ds"
    write_dataset(root, {"a0": None, "a1": None})
    (root / "train.txt").write_text("./images/train/a0.png\nimages/train/a1.png\n")
    (root / "data.yaml").write_text("path: .\ntrain: train.txt\nval: images/val\ntest: images/val\nnames: [a]\n")
    spec = resolve_data(str(root / "data.yaml"))
    assert spec.train == [root / "train.txt"] and spec.test == [root / "images/val"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: images/train\nval: images/val\n", "missing required key 'names'"),
        ("val: images/val\nnames: [a]\n", "missing required key 'train'"),
        ("train: images/train\nnames: [a]\n", "missing required key 'val'"),
        ("train: 3\nval: images/val\nnames: [a]\n", "'train' must be a folder"),
        ("train: images/train\nval: images/val\nnames: a\n", "'names' must be a list or a mapping"),
        ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "ids must be 0..1"),
        ("train: images/train\nval: images/val\nnames: [a]\nnc: 2\n", "'nc' is 2"),
        ("path: [1]\ntrain: images/train\nval: images/val\nnames: [a]\n", "'path' must be text"),
        ("- just\n- a list\n", "expected a mapping"),
        ("train: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_yaml_is_a_config_error_naming_file_and_key(tmp_path: Path, text: str, message: str):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_data(str(yaml_file))
    assert str(yaml_file) in str(info.value)


def test_missing_split_folder_and_unknown_names(tmp_path: Path):
    yaml_file = write_dataset(tmp_path / "ds", {"a0": None})
    yaml_file.write_text(yaml_file.read_text().replace("images/val", "images/nowhere"))
    with pytest.raises(DatasetError, match=r"'val' source .*images/nowhere does not exist"):
        resolve_data(str(yaml_file))
    with pytest.raises(DatasetError, match="not found"):
        resolve_data(str(tmp_path / "absent.yaml"))
    with pytest.raises(DatasetError, match="neither a built-in dataset"):
        resolve_data("coco9000")


def test_parse_names_and_datasets_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert parse_names(["x", "y"]) == {0: "x", 1: "y"}
    assert parse_names({"1": "y", "0": "x"}) == {0: "x", 1: "y"}
    monkeypatch.setenv("RAYTRAIN_DATASETS", str(tmp_path / "d"))
    assert datasets_dir() == tmp_path / "d"
    monkeypatch.delenv("RAYTRAIN_DATASETS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets_dir() == tmp_path / "xdg" / "raytrain" / "datasets"
    assert not (tmp_path / "xdg").exists()  # nothing is created by asking


def test_read_only_folder_is_not_writable_even_for_root(tmp_path: Path):
    folder = tmp_path / "ro"
    write_image(folder / "x.png")
    assert is_writable_dir(folder)
    folder.chmod(0o555)
    try:
        assert not is_writable_dir(folder)
    finally:
        folder.chmod(0o755)


def test_read_dataset_yaml_returns_normalised_names(tmp_path: Path):
    yaml_file = write_dataset(tmp_path / "ds", {"a0": None}, names=["p", "q"])
    assert read_dataset_yaml(yaml_file)["names"] == {0: "p", 1: "q"}
