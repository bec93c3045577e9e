"""Several objectives, constraints and samplers in the space file: parsing, refusals (one line, exit 2, before Ray),
the sampler and the study kept on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tuning_helpers import space

from raytrain.cli import main
from raytrain.config import ConfigError
from raytrain.tuning.objectives import deploy_spec, trial_deploy
from raytrain.tuning.space import load_space

DEPLOY = {"metric": ["fitness", "latency_ms"], "mode": ["max", "min"],
          "constraints": {"latency_ms": {"max": 10}, "params": {"max": "5.0e6"}}}


def test_several_objectives_and_constraints_parse(tmp_path):
    spec = load_space(space(tmp_path, **DEPLOY))
    assert (spec.metric, spec.mode) == ("fitness", "max")  # the first objective drives ASHA and patience
    assert spec.objectives == ("fitness", "latency_ms") and spec.modes == ("max", "min")
    assert spec.constraints == {"latency_ms": {"max": 10.0}, "params": {"max": 5.0e6}}  # "5.0e6": PyYAML's text
    deploy = deploy_spec(spec)
    assert deploy.measured == ("latency_ms", "params")
    assert deploy.violations({"latency_ms": 12.5, "params": 3e6}) == ["latency_ms 12.5 > max 10"]
    assert deploy.untrained_report({"latency_ms": 12.5}) == {"fitness": 0.0, "latency_ms": 12.5}
    saved = spec.to_dict()  # tune_space.yaml keeps the lists, and reads back the same
    assert saved["metric"] == ["fitness", "latency_ms"] and saved["mode"] == ["max", "min"]
    again = load_space(saved)
    assert again.objectives == spec.objectives and again.constraints == spec.constraints


def test_one_objective_is_unchanged(tmp_path):
    spec = load_space(space(tmp_path))
    assert (spec.metric, spec.mode, spec.objectives, spec.modes) == ("train/box_loss", "min", ("train/box_loss",),
                                                                     ("min",))
    assert spec.to_dict()["metric"] == "train/box_loss"
    assert trial_deploy(spec) is None  # nothing measured: trials run as before


@pytest.mark.parametrize(("settings", "message"), [
    ({"metric": ["fitness", "latncy_ms"], "mode": ["max", "min"]},
     r"metric: trials never report 'latncy_ms'\. Did you mean latency_ms"),
    ({"metric": ["fitness", "latency_ms"], "mode": ["max"]}, r"mode: 1 direction\(s\) for 2 objective\(s\)"),
    ({"metric": ["fitness", "latency_ms"], "mode": "max"}, r"mode: 'max' is one direction for 2 objectives"),
    ({"metric": ["fitness", "latency_ms"], "mode": ["max", "min"], "scheduler": "pbt",
      "space": {"lr0": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}},
     r"scheduler: pbt optimises one metric .* 2 objectives \(fitness, latency_ms\)"),
    ({"metric": ["fitness", "latency_ms"], "mode": ["max", "min"], "constraints": {"latency": {"max": 10}}},
     r"constraints\.latency: trials never report 'latency'\. Did you mean latency_ms"),
    ({"constraints": {"params": {"below": 10}}}, r"constraints\.params: expected \{max: value\}"),
    ({"constraints": {"params": {"max": "lots"}}}, r"constraints\.params\.max: expected a number"),
    ({"metric": ["latency_ms", "fitness"], "mode": ["min", "max"]}, r"metric: put an accuracy objective first"),
    ({"metric": ["fitness", "params"], "mode": ["max", "max"]}, r"mode: params is better lower"),
    ({"sampler": "nsga3"}, r"sampler: 'nsga3' is not allowed"),
    ({"latency_runtime": "tensorrt"}, r"latency_runtime: 'tensorrt' is not a runtime"),
    ({"latency_threads": 0}, r"latency_threads: expected a whole number >= 1"),
])
def test_bad_objectives_are_refused(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        load_space(space(tmp_path, **settings))


def test_refusals_exit_2_with_one_line_before_ray(tmp_path, capsys, no_ray, monkeypatch):
    import raytrain.cluster.local

    def started(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(raytrain.cluster.local, "init_ray", started)
    body = space(tmp_path, metric=["fitness", "latency_ms"], mode=["max"])
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mode: 1 direction(s) for 2 objective(s)" in err
    assert main(["tune", str(path), "mode=[max, min]", "constraints={flops: {max: 1}}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "constraints.flops: trials never report 'flops'" in err


def test_samplers_and_nsga2_a_small_population(tmp_path):
    import optuna

    from raytrain.tuning.search import make_sampler

    assert isinstance(make_sampler(load_space(space(tmp_path, **DEPLOY))), optuna.samplers.TPESampler)
    nsga = make_sampler(load_space(space(tmp_path, **DEPLOY, sampler="nsga2", num_samples=24)))
    assert isinstance(nsga, optuna.samplers.NSGAIISampler) and nsga._population_size == 6


def test_the_study_on_disk_reads_back_with_optuna(tmp_path):
    """What the searcher tells Optuna lands in <exp>/study.journal: both directions, the values of each trial's best
    epoch, the recorded measurements, and infeasible trials marked through the constraints."""
    pytest.importorskip("ray.tune.search.optuna")
    import optuna

    from raytrain.tuning.search import STUDY_FILE, make_search

    spec = load_space(space(tmp_path, **DEPLOY, sampler="nsga2", num_samples=4))
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    search = make_search(spec, exp_dir)
    for epochs, latency in ((((1, 0.1), (2, 0.3), (3, 0.2)), 4.0), (((0, 0.0),), 15.0)):
        trial_id = f"t{latency:g}"
        config = search.suggest(trial_id)
        assert set(config) == {"box"}
        rows = [{"epoch": e, "fitness": f, "latency_ms": latency, "params": 3e6, "training_iteration": e}
                for e, f in epochs]
        for row in rows[:-1]:
            search.on_trial_result(trial_id, row)
        search.on_trial_complete(trial_id, rows[-1])
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(exp_dir / STUDY_FILE)))
    study = optuna.load_study(study_name="exp", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = sorted(study.trials, key=lambda t: t.user_attrs["latency_ms"])
    assert done[0].values == [0.3, 4.0]  # the best epoch (2), not the last one (0.2)
    assert done[1].values == [0.0, 15.0] and done[1].user_attrs["params"] == 3e6
    assert done[0].constraints == {"latency_ms": -6.0, "params": -2e6}  # 4 ms of 10; 3e6 of 5e6
    assert done[1].constraints["latency_ms"] == 5.0  # 15 ms: 5 over
    assert [t.number for t in study.best_trials] == [done[0].number]
    assert Path(exp_dir / STUDY_FILE).is_file()


def test_resume_keeps_the_study_and_the_searcher_pickles(tmp_path):
    """Tune pickles the searcher (cloudpickle with the Tuner, plain pickle at each checkpoint; NSGA-II included) and
    a resumed experiment reopens the same journal; a fresh one (exist_ok) starts a new study."""
    pytest.importorskip("ray.tune.search.optuna")
    import dataclasses

    import ray.cloudpickle

    from raytrain.tuning.search import make_search

    spec = load_space(space(tmp_path, **DEPLOY, sampler="nsga2", num_samples=8))
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    search = make_search(spec, exp_dir)
    search.suggest("t1")
    search.on_trial_complete("t1", {"epoch": 1, "fitness": 0.2, "latency_ms": 3.0, "params": 3e6})
    ray.cloudpickle.dumps(search)
    search.save(str(tmp_path / "searcher.pkl"))
    resumed = make_search(dataclasses.replace(spec, resume=True), exp_dir)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert [t.values for t in resumed._ot_study.trials] == [[0.2, 3.0]]
    assert resumed.suggest("t2") is not None and len(resumed._ot_study.trials) == 2
    fresh = make_search(spec, exp_dir)  # not a resume: the old journal is gone
    assert fresh._ot_study.trials == []


def test_one_objective_samples_exactly_as_before(tmp_path):
    """The study on disk and TrialSearch change nothing for one objective: the quickstart space, fed the same results,
    gets the same trials as Ray's plain in-memory OptunaSearch with the same seeded TPE (the sampler before)."""
    pytest.importorskip("ray.tune.search.optuna")
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from raytrain.tuning.search import make_search

    spec = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml",
                      {"project": str(tmp_path), "num_samples": 8})
    before = OptunaSearch(space=spec.sample_space, metric=spec.metric, mode=spec.mode,
                          sampler=optuna.samplers.TPESampler(seed=spec.search_seed,
                                                             n_startup_trials=spec.n_startup_trials),
                          points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None)
    (tmp_path / "exp").mkdir()
    now = make_search(spec, tmp_path / "exp")
    for i in range(8):
        a, b = before.suggest(f"t{i}"), now.suggest(f"t{i}")
        assert a == b, i
        result = {"epoch": 1, "fitness": (i * 7 % 5) / 10, "training_iteration": 1}
        before.on_trial_complete(f"t{i}", result)
        now.on_trial_complete(f"t{i}", result)
