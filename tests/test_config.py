"""The typed config: defaults, safe parsing, precedence, validation messages, args.yaml round trip."""

from __future__ import annotations

import logging

import pytest
import yaml

from raytrain.config import Config, ConfigError, help_table, load_config, make_config, parse_cli_args, parse_value


def test_defaults_follow_ultralytics():
    cfg = Config()
    assert (cfg.epochs, cfg.batch, cfg.imgsz, cfg.optimizer, cfg.lr0, cfg.lrf) == (100, 16, 640, "auto", 0.01, 0.01)
    assert (cfg.momentum, cfg.weight_decay, cfg.warmup_epochs, cfg.nbs) == (0.937, 0.0005, 3.0, 64)
    assert (cfg.box, cfg.cls, cfg.dfl, cfg.mosaic, cfg.close_mosaic, cfg.patience) == (7.5, 0.5, 1.5, 1.0, 10, 100)
    assert (cfg.iou, cfg.max_det, cfg.max_failures, cfg.cache, cfg.fraction) == (0.7, 300, 3, False, 1.0)


def test_parse_value_is_safe_yaml_not_eval():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("None") is None and parse_value("[1, 2]") == [1, 2]
    assert parse_value("__import__('os').getcwd()") == "__import__('os').getcwd()"
    assert parse_value("0,1") == "0,1"


def test_types_are_coerced():
    cfg = make_config({"lr0": "0.02", "epochs": "5", "device": [0, 1], "freeze": "3", "cache": True, "amp": "false"})
    assert cfg.lr0 == 0.02 and cfg.epochs == 5 and cfg.device == "0,1" and cfg.freeze == 3
    assert cfg.cache == "ram" and cfg.amp is False
    assert make_config({"freeze": "0,2,4"}).freeze == [0, 2, 4]
    assert make_config({"resume": "runs/detect/train/weights/last.pt"}).resume.endswith("last.pt")
    assert make_config({"optimizer": "adamw"}).optimizer == "AdamW"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"lr": 0.1}, "Did you mean lrf or lr0"),
        ({"epoch": 3}, "Did you mean epochs"),
        ({"lrf": 1.5}, "lrf=1.5 is not allowed: use a fraction in (0, 1]"),
        ({"lrf": 0}, "lrf=0.0 is not allowed"),
        ({"fraction": 0}, "fraction=0.0 is not allowed: use a fraction in (0, 1]"),
        ({"epochs": -1}, "epochs=-1 is not allowed"),
        ({"batch": 0}, "batch=0 is not allowed"),
        ({"optimizer": "Adagrad"}, "optimizer='Adagrad' is not allowed: choose one of SGD, Adam, AdamW"),
        ({"epochs": "ten"}, "epochs='ten' is not a valid value: expected an integer"),
        ({"cache": "gpu"}, "cache='gpu' is not allowed"),
        ({"lr0": float("nan")}, "lr0=nan is not allowed: it must be a finite number"),
        ({"wandb_mode": "sometimes"}, "wandb_mode='sometimes' is not allowed"),
    ],
)
def test_bad_values_name_key_value_and_allowed(args, expected):
    with pytest.raises(ConfigError) as e:
        make_config(args)
    assert expected in str(e.value)


def test_imgsz_rounded_up_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="raytrain"):
        cfg = make_config({"imgsz": 100})
    assert cfg.imgsz == 128
    assert "imgsz=100" in caplog.text and "imgsz=128" in caplog.text


def test_precedence_defaults_file_cli(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({"epochs": 7, "lr0": 0.05, "imgsz": 320}))
    raw = parse_cli_args([f"cfg={file}", "lr0=0.002", "name=exp"])
    cfg = make_config(raw)
    assert (cfg.epochs, cfg.lr0, cfg.imgsz, cfg.name, cfg.batch) == (7, 0.002, 320, "exp", 16)


def test_cli_tokens_must_be_key_value():
    with pytest.raises(ConfigError, match="not a key=value"):
        parse_cli_args(["epochs"])
    with pytest.raises(ConfigError, match="file not found"):
        parse_cli_args(["cfg=/nonexistent/run.yaml"])


def test_bad_cfg_file(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("lr00: 0.1\n")
    with pytest.raises(ConfigError, match=r"'lr00' in .*typo.yaml is not a valid raytrain argument. Did you mean lr0"):
        load_config(tmp_path / "typo.yaml")


def test_args_yaml_round_trip(tmp_path):
    cfg = make_config({"epochs": 3, "freeze": [0, 1], "cache": "disk", "device": "0,1", "time": 1.5, "conf": None})
    path = cfg.save(tmp_path / "args.yaml")
    assert load_config(path) == cfg
    assert load_config(path).to_dict() == cfg.to_dict()


def test_replace_validates():
    cfg = Config()
    assert cfg.replace(lr0="0.1").lr0 == 0.1
    with pytest.raises(ConfigError):
        cfg.replace(fraction=2)


def test_help_table_lists_defaults_and_meaning():
    text = help_table(["lr0", "epochs"])
    assert "lr0=0.01" in text and "initial learning rate" in text and "epochs=100" in text
