"""The CLI front door: help, unknown subcommands and keys, clean errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

from raytrain.cli import COMMANDS, main


def test_main_help_lists_subcommands_and_arguments(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert "lr0=0.01" in out and "initial learning rate" in out


def test_subcommand_help_lists_its_arguments(capsys):
    for name, cmd in COMMANDS.items():
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert cmd.usage in out
        for key in cmd.keys:
            assert f"{key}=" in out


def test_val_and_predict_help_show_their_own_run_folder_names(capsys):
    for name in ("val", "predict"):
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"name={name} " in out and "name=train" not in out
    assert main(["fit", "--help"]) == 0
    assert "name=train " in capsys.readouterr().out


def test_unknown_subcommand_suggests(capsys):
    assert main(["chek"]) == 2
    assert "Did you mean 'check'" in capsys.readouterr().err


def test_unknown_key_is_a_clean_error(capsys):
    assert main(["check", "dta=shapes"]) == 2
    err = capsys.readouterr().err
    assert "'dta' is not a valid raytrain argument" in err and "Did you mean data" in err


def test_import_has_no_side_effects_and_is_light():
    code = (
        "import sys, raytrain, raytrain.cli, raytrain.config; "
        "heavy = [m for m in ('torch', 'ray', 'wandb', 'cv2', 'optuna') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_console_script_help_runs():
    result = subprocess.run([sys.executable, "-m", "raytrain.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Subcommands" in result.stdout


def test_tune_help_reads_its_settings_and_defaults_from_the_space_reader(capsys):
    """tune --help lists every setting the space reader accepts with TuneSpec's own default: no copy to drift."""
    import dataclasses

    from raytrain.tuning.space import SETTINGS, TuneSpec

    assert main(["tune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for key in SETTINGS:
        if key != "points_to_evaluate":
            assert key in text, key
    defaults = {f.name: f.default for f in dataclasses.fields(TuneSpec)}
    assert f"num_samples [{defaults['num_samples']}]" in text and f"grace_period [{defaults['grace_period']}]" in text
