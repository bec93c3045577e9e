"""``raytrain check``: the summary on COCO128 and on broken datasets, and the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

from data_helpers import write_dataset

from raytrain.cli import main as cli_main
from raytrain.commands.check import main


def test_check_coco128_reports_128_train_images(coco128_yaml: Path, capsys):
    assert main([], {"data": str(coco128_yaml)}) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+train\s+128\s+\d+\s+\d+\s+\d+", out, re.M), out
    assert re.search(r"^\s+0\s+person\s+\d+\s+\d+$", out, re.M)
    assert "label file without image" in out  # COCO128 ships two labels whose images are absent
    assert "OK: data.yaml is usable (128 train, 128 val images)" in out


def test_check_through_the_cli_on_a_dataset_with_problems(tmp_path: Path, capsys):
    yaml_file = write_dataset(tmp_path / "ds", {"good": "1 0.5 0.5 0.5 0.5\n", "bad": "7 0.5 0.5 0.5 0.5\n",
                                                "dup": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n"})
    assert cli_main(["check", f"data={yaml_file}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+train\s+2\s+0\s+0\s+2\s+1\s+1$", out, re.M), out
    assert re.search(r"^\s+0\s+a\s+1\s+1$", out, re.M) and re.search(r"^\s+1\s+b\s+1\s+0$", out, re.M)
    assert (f"train  {tmp_path}/ds/images/train/bad.png: label file {tmp_path}/ds/labels/train/bad.txt: "
            "line 1: class id 7 outside names (0-2)") in out
    assert "dup.txt: 1 duplicate rows dropped" in out


def test_check_fails_without_usable_images_or_with_a_bad_yaml(tmp_path: Path, capsys):
    yaml_file = write_dataset(tmp_path / "ds", {"bad": "0 0.5 0.5 0.5\n"})
    assert main([str(yaml_file)], {}) == 1
    captured = capsys.readouterr()
    assert "not usable: no usable image in train" in captured.err and "4 columns" in captured.out
    yaml_file.write_text("train: images/train\nnames: [a]\n")
    assert cli_main(["check", f"data={yaml_file}"]) == 2
    assert "missing required key 'val'" in capsys.readouterr().err


def test_check_single_cls(tmp_path: Path, capsys):
    yaml_file = write_dataset(tmp_path / "ds", {"x": "1 0.5 0.5 0.5 0.5\n2 0.2 0.2 0.1 0.1\n"})
    assert main([], {"data": str(yaml_file), "single_cls": True}) == 0
    assert re.search(r"^\s+0\s+object\s+2\s+1$", capsys.readouterr().out, re.M)
