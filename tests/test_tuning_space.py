"""Search-space file: format, overrides, and validation errors that name the file and the key (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raytrain.config import ConfigError
from raytrain.tuning.params import Param
from raytrain.tuning.space import METRICS, load_space

ROOT = Path(__file__).resolve().parents[1]


def write_space(tmp_path: Path, **sections) -> Path:
    body = {"train": {"optimizer": "SGD", "epochs": 5}, "space": {"lr0": {"type": "loguniform", "low": 1e-4,
                                                                          "high": 1e-1}}}
    body.update(sections)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def error_of(tmp_path: Path, **sections) -> str:
    with pytest.raises(ConfigError) as info:
        load_space(write_space(tmp_path, **sections))
    return str(info.value)


@pytest.mark.parametrize("file", ["detect.yaml", "quickstart.yaml"])
def test_shipped_spaces_are_valid(file: str):
    spec = load_space(ROOT / "search_spaces" / file)
    assert (spec.metric, spec.mode) == ("fitness", "max")
    if file == "detect.yaml":  # epochs searched: ASHA's max_t is the largest
        assert "epochs" in spec.space and spec.max_epochs == spec.space["epochs"].largest()
    else:  # fixed epochs; rungs at 2 and 6 (docs/benchmarks.md, "The quickstart, third pass")
        assert "epochs" not in spec.space and spec.max_epochs == spec.base_config.epochs == 9
        assert (spec.grace_period, spec.reduction_factor) == (2, 3)
    assert spec.points_to_evaluate, "both start from a known-good config"
    spec.trial_config(spec.points_to_evaluate[0])  # the start point is a valid training config


def test_defaults_resources_and_max_t(tmp_path: Path):
    spec = load_space(write_space(tmp_path, resources={"workers": 2, "gpu": True, "cpus_per_worker": 4}))
    assert (spec.num_samples, spec.scheduler, spec.grace_period, spec.reduction_factor) == (10, "asha", 1, 3.0)
    assert (spec.patience, spec.time_budget_s, spec.max_concurrent_trials) == (None, None, None)
    assert (spec.sampler, spec.n_startup_trials) == ("tpe", 10)  # Optuna's default start-up
    # gpu: true means GPUs (device=cuda): a cluster without any is refused, not trained on CPUs (test_cluster_nodes)
    assert spec.train["num_workers"] == 2 and spec.train["device"] == "cuda" and spec.train["cpus_per_worker"] == 4
    assert spec.max_epochs == 5  # epochs fixed: ASHA's max_t is the fixed epochs
    spec = load_space(write_space(tmp_path, space={"epochs": {"type": "randint", "low": 3, "high": 9}}))
    assert spec.max_epochs == 8  # randint excludes high


def test_scheduler_none_from_the_command_line_turns_early_stopping_off(tmp_path: Path):
    """``scheduler=none`` on the CLI reaches the reader as None (Ultralytics' parser reads none as None): it must mean
    no scheduler, not "null, so the default" (ASHA), which it silently meant before."""
    from raytrain.config import parse_cli_args

    path = write_space(tmp_path)
    assert load_space(path, parse_cli_args(["scheduler=none"])).scheduler == "none"
    assert load_space(path, {"scheduler": "none"}).scheduler == "none"
    assert load_space(path).scheduler == "asha"  # unset: the default


def test_overrides_settings_train_and_fixing_a_searched_key(tmp_path: Path):
    path = write_space(tmp_path, space={"lr0": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                                        "lrf": {"type": "uniform", "low": 0.01, "high": 0.5}})
    spec = load_space(path, {"num_samples": "4", "name": "exp", "epochs": 3, "lr0": 0.02, "gpu": "false",
                             "patience": 2, "search_seed": 7, "n_startup_trials": "3"})
    assert (spec.num_samples, spec.name, spec.patience, spec.search_seed, spec.n_startup_trials) == (4, "exp", 2, 7, 3)
    assert spec.train["epochs"] == 3 and spec.train["lr0"] == 0.02 and spec.train["device"] == "cpu"
    assert list(spec.space) == ["lrf"]  # lr0 given on the command line is fixed, no longer searched
    with pytest.raises(ConfigError, match="Did you mean num_samples"):
        load_space(path, {"num_sample": 3})


@pytest.mark.parametrize(("sections", "expected"), [
    ({"space": {"lr0": {"type": "uniform", "low": 0.1, "high": 0.01}}}, "x.yaml: space.lr0: low >= high"),
    ({"space": {"lr0": {"type": "loguniform", "low": 0.0, "high": 0.1}}}, "space.lr0: loguniform needs low > 0"),
    ({"space": {"lr00": {"type": "uniform", "low": 0.1, "high": 0.2}}}, "space.lr00: 'lr00' is not a valid "
                                                                         "raytrain argument. Did you mean lr0"),
    ({"space": {"optimizer": {"type": "choice", "values": []}}}, "space.optimizer: a choice needs a non-empty"),
    ({"space": {"fliplr": {"type": "uniform", "low": 0.2, "high": 1.5}}}, "space.fliplr.high: fliplr=1.5 is not "
                                                                          "allowed: use a value in [0, 1]"),
    ({"space": {"optimizer": ["SGD", "Adamm"]}}, "space.optimizer.values[1]: optimizer='Adamm' is not allowed"),
    ({"space": {"epochs": {"type": "uniform", "low": 1, "high": 5}}}, "space.epochs: epochs is an integer "
                                                                      "argument; use type int"),
    ({"space": {"lr0": {"type": "normal", "low": 1, "high": 5}}}, "space.lr0: type='normal' is not a parameter"),
    ({"space": {"scale": {"type": "quniform", "low": 0.1, "high": 0.5}}}, "space.scale: quniform needs a number "
                                                                          "for q"),
    ({"space": {}}, "x.yaml: space: nothing to search"),
    ({"space": {"data": ["a.yaml", "b.yaml"]}}, "x.yaml: space.data: data says where or how a trial runs"),
    ({"train": {"imgsz": 8}}, "x.yaml: train: imgsz=8 is not allowed"),
    ({"train": {"epoks": 8}}, "x.yaml: train.epoks: 'epoks' is not a valid raytrain argument. Did you mean epochs"),
    ({"metric": "mAP50"}, "x.yaml: metric: trials never report 'mAP50'. Did you mean metrics/mAP50(B)"),
    ({"metric": "val/box_loss"}, "x.yaml: mode: metric=val/box_loss is a loss; use mode: min"),
    ({"mode": "maximise"}, "x.yaml: mode: 'maximise' is not allowed"),
    ({"num_samples": 0}, "x.yaml: num_samples: must be >= 1"),
    ({"reduction_factor": 1}, "x.yaml: reduction_factor: must be > 1"),
    ({"n_startup_trials": 0}, "x.yaml: n_startup_trials: must be >= 1"),
    ({"sampler": "random", "n_startup_trials": 3}, "x.yaml: n_startup_trials: only the tpe sampler has a random"),
    ({"grace_period": 9}, "x.yaml: grace_period: 9 is more than the largest epochs (5)"),
    ({"lr0": 0.1}, "x.yaml: lr0: a training argument at the top level; put it under 'train:'"),
    ({"num_sample": 3}, "x.yaml: num_sample: 'num_sample' is not a valid raytrain argument. Did you mean "
                        "num_samples"),
    ({"resources": {"gpus": 1}}, "x.yaml: resources.gpus: 'gpus' is not a valid raytrain argument. Did you mean "
                                 "gpu"),
    ({"points_to_evaluate": [{"lr0": 0.5}]}, "x.yaml: points_to_evaluate[0].lr0: 0.5 is outside the space"),
    ({"points_to_evaluate": [{"lr1": 0.01}]}, "x.yaml: points_to_evaluate[0].lr1: 'lr1' is not a valid"),
    ({"name": "a/b"}, "x.yaml: name: 'a/b' must be a folder name"),
])
def test_errors_name_file_and_key(tmp_path: Path, sections: dict, expected: str):
    assert expected in error_of(tmp_path, **sections)


def test_optimizer_auto_with_lr0_is_rejected_with_an_explanation(tmp_path: Path):
    message = error_of(tmp_path, train={"epochs": 5})  # optimizer defaults to auto
    assert "x.yaml: train.optimizer: optimizer=auto chooses lr0 and momentum itself" in message
    message = error_of(tmp_path, space={"momentum": {"type": "uniform", "low": 0.8, "high": 0.95},
                                        "optimizer": ["SGD", "auto"]})
    assert "space.optimizer: optimizer=auto" in message and "ignores the searched momentum" in message
    load_space(write_space(tmp_path, train={"epochs": 5}, space={"weight_decay": {"type": "uniform", "low": 0.0,
                                                                                  "high": 0.001}}))  # no lr0: fine


def test_batch_must_split_between_workers(tmp_path: Path):
    message = error_of(tmp_path, resources={"workers": 2}, space={"batch": [16, 24, 33]})
    assert "space.batch: batch=33 does not divide between 2 workers" in message
    load_space(write_space(tmp_path, resources={"workers": 2},
                           space={"batch": {"type": "qrandint", "low": 16, "high": 64, "q": 16}}))


def test_every_known_metric_is_accepted(tmp_path: Path):
    for metric in METRICS:
        mode = "min" if metric.endswith("_loss") else "max"
        assert load_space(write_space(tmp_path, metric=metric, mode=mode)).metric == metric


class FakeTrial:
    """Records what Optuna would be asked, returning the low end (or the first choice)."""

    def __init__(self):
        self.calls = []

    def suggest_float(self, name, low, high, *, log=False, step=None):
        self.calls.append(("float", name, low, high, log, step))
        return low * 1.37

    def suggest_int(self, name, low, high, *, step=1):
        self.calls.append(("int", name, low, high, step))
        return low

    def suggest_categorical(self, name, values):
        self.calls.append(("cat", name, tuple(values)))
        return values[-1]


def test_sampling_maps_types_to_optuna_and_rounds_q():
    trial = FakeTrial()
    params = [Param("lr0", "loguniform", 1e-4, 1e-1), Param("warmup_epochs", "qloguniform", 0.5, 4.0, q=0.5),
              Param("scale", "quniform", 0.1, 0.9, q=0.1), Param("epochs", "randint", 3, 9),
              Param("batch", "qrandint", 16, 64, q=16), Param("close_mosaic", "int", 0, 5),
              Param("optimizer", "choice", values=("SGD", "AdamW"))]
    values = {p.name: p.suggest(trial) for p in params}
    assert trial.calls == [
        ("float", "lr0", 1e-4, 1e-1, True, None), ("float", "warmup_epochs", 0.5, 4.0, True, None),
        ("float", "scale", 0.1, 0.9, False, 0.1), ("int", "epochs", 3, 8, 1), ("int", "batch", 16, 64, 16),
        ("int", "close_mosaic", 0, 5, 1), ("cat", "optimizer", ("SGD", "AdamW")),
    ]
    assert values["warmup_epochs"] == 0.5  # 0.685 rounded to the nearest multiple of q=0.5
    assert values["optimizer"] == "AdamW"
    assert Param("x", "qloguniform", 0.5, 4.0, q=0.5).round(4.3) == 4.0  # rounding stays inside [low, high]


@pytest.mark.parametrize("param", [
    Param("lr0", "loguniform", 1e-4, 1e-1), Param("warmup_epochs", "qloguniform", 0.5, 4.0, q=0.5),
    Param("scale", "quniform", 0.1, 0.9, q=0.1), Param("epochs", "randint", 3, 9),
    Param("batch", "qrandint", 16, 64, q=16), Param("close_mosaic", "int", 0, 5),
    Param("optimizer", "choice", values=("SGD", "AdamW")),
], ids=lambda p: p.type)
def test_distribution_is_what_suggest_draws_from(param: Param):
    """raytrain results rebuilds the study with Param.distribution(): it must be the one suggest() used."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    value = param.suggest(trial)
    assert trial.distributions[param.name] == param.distribution()
    assert param.contains(value)
