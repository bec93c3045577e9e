"""``resume=True`` rebuilds the experiment as it was started (no Ray): the saved space and overrides, the overrides
that may change, the refusal naming the one that would change it, the Ctrl-C hint, and the restored Tuner's
settings. The resume of a killed driver, end to end, is in test_tuning_run.py."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tuning_helpers import TRAIN, space

from raytrain.cluster.compat import set_restored_settings
from raytrain.config import ConfigError
from raytrain.tuning.orchestrate import experiment_dir, record_experiment, resolve_train_args
from raytrain.tuning.resume import MAY_CHANGE, resume_command, resumed_spec
from raytrain.tuning.space import load_space


def started(tmp_path: Path, overrides: dict) -> tuple[Path, Path]:
    """An experiment started from a space file (epochs 3) with ``overrides``, recorded as run_experiment does."""
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(space(tmp_path, train={**TRAIN, "epochs": 3})))
    spec = load_space(space_file, overrides)
    exp_dir = experiment_dir(spec)
    exp_dir.mkdir(parents=True)
    record_experiment(exp_dir, spec, resolve_train_args(spec, gpus_available=0), overrides)
    return space_file, exp_dir


def test_resume_keeps_the_experiment_and_refuses_what_would_change_it(tmp_path: Path):
    space_file, exp_dir = started(tmp_path, {"epochs": "2", "num_samples": "4"})
    space_file.write_text(space_file.read_text().replace("epochs: 3", "epochs: 5"))  # edited since: not read again

    resumed = resumed_spec(exp_dir, {"resume": True})
    assert resumed.base_config.epochs == 2 and resumed.num_samples == 4 and resumed.resume
    assert resumed.source == str(exp_dir / "tune_space.yaml") and Path(resumed.base_config.data).is_absolute()
    # The overrides it was started with, and values it already has, are accepted again.
    again = resumed_spec(exp_dir, {"resume": "True", "epochs": "2", "num_samples": 4, "imgsz": 64, "mode": "min"})
    assert again.to_dict() == resumed.to_dict()

    for override, why in [({"epochs": 3}, "it was started with epochs=2"), ({"box": 1.0}, "it searches box"),
                          ({"lr0": 0.1}, "it trains with lr0=0.01"), ({"sampler": "random"}, "it has sampler=tpe")]:
        key, value = next(iter(override.items()))
        with pytest.raises(ConfigError, match=rf"resume=True: {key}={value} would change the experiment "
                                              rf".*/runs/t \({why}\)\. .* may change: resume, name"):
            resumed_spec(exp_dir, {"resume": True, **override})

    changed = resumed_spec(exp_dir, {"resume": True, "max_concurrent_trials": "2", "time_budget_s": 60,
                                     "wandb_mode": "offline", "address": "local"})
    assert (changed.max_concurrent_trials, changed.time_budget_s, changed.wandb_mode) == (2, 60.0, "offline")
    assert changed.base_config.epochs == 2 and {"max_concurrent_trials", "time_budget_s", "wandb_mode"} <= set(
        MAY_CHANGE)


def test_the_ctrl_c_hint_resumes_exactly(tmp_path: Path):
    from raytrain.config import parse_cli_args

    space_file, exp_dir = started(tmp_path, {"epochs": 2, "loggers": ["tensorboard"]})
    command = resume_command(exp_dir, "ignored.yaml")
    assert command == (f"raytrain tune {space_file} epochs=2 'loggers=[tensorboard]' name=t project={exp_dir.parent} "
                       f"resume=True")
    words = shlex.split(command)
    overrides = parse_cli_args(words[3:])
    resumed = resumed_spec(experiment_dir(load_space(words[2], overrides)), overrides)
    assert resumed.base_config.epochs == 2 and resumed.base_config.loggers == ["tensorboard"]


def test_a_restored_tuner_takes_the_settings_a_resume_may_change():
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

    for search in (BasicVariantGenerator(max_concurrent=1), ConcurrencyLimiter(Searcher(), max_concurrent=1)):
        saved = search.get_state()
        tuner = SimpleNamespace(_local_tuner=SimpleNamespace(
            _tune_config=SimpleNamespace(time_budget_s=100.0, search_alg=search),
            _run_config=SimpleNamespace(callbacks=["old"])))
        set_restored_settings(tuner, time_budget_s=None, max_concurrent=3, callbacks=["new"])
        search.set_state(saved)  # what Tune does when fit() starts: the saved state says max_concurrent=1
        assert search.max_concurrent == 3 and tuner._local_tuner._tune_config.time_budget_s is None
        assert tuner._local_tuner._run_config.callbacks == ["new"]
        assert saved["max_concurrent"] == 1 and "set_state" not in search.__dict__  # nothing extra saved later
