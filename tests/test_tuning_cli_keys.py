"""Every tune setting the docs offer passes `raytrain tune`'s key check (the CLI reads the space module's list).

The documented keys are read from ``search_spaces/detect.yaml``'s header comment and from the README's (and the
manual's, when there is one) tuning text, so a key documented later is checked too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raytrain import cli
from raytrain.config import FIELDS
from raytrain.tuning.space import CLI_KEYS, RESOURCE_KEYS, SECTIONS, SETTINGS, load_space

ROOT = Path(__file__).resolve().parents[1]
NOT_KEY_VALUE = ("points_to_evaluate",)  # a list of mappings: the file only, key=value cannot spell it
PYTHON_ONLY = ("start_ray", "include_dashboard", "study_name")  # keyword arguments of raytrain.tune() / ray.init()
# / optuna.load_study() in the docs
NOT_SETTINGS = ("cfg", "key", "pick")  # every command's cfg=FILE (tested in test_cli.py), the "key=value"
# placeholder, and raytrain results' pick= (tested in test_tuning_pareto.py)


@pytest.fixture()
def accepted(monkeypatch: pytest.MonkeyPatch):
    """``key -> bool``: does ``raytrain tune x.yaml key=1`` get past the CLI's key check (nothing runs)?"""
    calls = []
    monkeypatch.setattr(cli, "_load", lambda target: lambda positional, args: calls.append(args) or 0)

    def check(key: str) -> bool:
        before = len(calls)
        return cli.main(["tune", "x.yaml", f"{key}=1"]) == 0 and len(calls) == before + 1

    return check


def detect_header_keys() -> set[str]:
    """The keys ``search_spaces/detect.yaml`` documents in its header comment (the lines before the first key)."""
    header = []
    for line in (ROOT / "search_spaces" / "detect.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    words = set(re.findall(r"\b[a-z][a-z0-9_]*\b", "\n".join(header)))
    return words & {*SETTINGS, *SECTIONS, *RESOURCE_KEYS}


def readme_tune_keys() -> set[str]:
    """``key=value`` keys in the docs' ``raytrain tune`` commands and tuning text, and the settings table's keys."""
    keys: set[str] = set()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    for page in (p for p in pages if p.is_file()):
        text = page.read_text()
        for line in text.splitlines():
            if "raytrain tune " in line:
                keys |= set(re.findall(r"(?<![\w-])([a-z][a-z0-9_]*)=", line))
        for section in re.split(r"\n(?=#{1,3} )", text):
            if re.match(r"#{1,3} .*(Tuning|tuning|search-space|Search space)", section):
                keys |= set(re.findall(r"(?<=[ `])([a-z][a-z0-9_]*)=(?=\S)", section))  # `num_samples=20 name=x`
                keys |= {k for row in re.findall(r"^\| (`.+?) \|", section, re.M)
                         for k in re.findall(r"`([a-z][a-z0-9_]*)`", row)}
    return keys - set(PYTHON_ONLY) - set(NOT_SETTINGS)


def test_every_documented_setting_is_a_cli_key(accepted):
    header = detect_header_keys()
    assert {"n_startup_trials", "num_samples", "time_budget_s", "gpu", "wandb_mode"} <= header  # the reader works
    readme = readme_tune_keys()
    assert {"num_samples", "name", "resume"} <= readme
    for key in sorted((header | readme) - set(SECTIONS) - set(NOT_KEY_VALUE)):
        assert accepted(key), f"documented tune key {key!r} is refused by `raytrain tune`"


def test_n_startup_trials_override_reaches_the_space(accepted):
    assert accepted("n_startup_trials")  # it was missing from the CLI's hand copy
    assert not accepted("n_startup_trial")
    spec = load_space(ROOT / "search_spaces" / "quickstart.yaml", {"n_startup_trials": "4"})
    assert spec.n_startup_trials == 4


def test_cli_reads_the_space_modules_list():
    assert cli.COMMANDS["tune"].extra_keys == CLI_KEYS
    assert not set(CLI_KEYS) & set(FIELDS)
