"""``scheduler: pbt`` without Ray: the space check (a structural key refused with exit 2 before Ray starts), the
settings, mutations kept inside the space, the exploit history, lineage schedules, and the reports of a PBT
experiment folder written by hand (trials.csv lineage, best.yaml + best_schedule.yaml, the schedule plot)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from raytrain.config import ConfigError, load_config
from raytrain.engine.hyper import read_schedule
from raytrain.tuning.lineage import BEST_SCHEDULE, SCHEDULE_PLOT, initial_values, lineage_schedule, lineage_text
from raytrain.tuning.pbt import HISTORY_FILE, PBTHistory, keep_in_space, mutations, read_history
from raytrain.tuning.space import load_space

TRAIN = {"data": "shapes", "imgsz": 32, "epochs": 6, "optimizer": "SGD", "device": "cpu"}


def pbt_space(**settings) -> dict:
    body = {"train": dict(TRAIN), "scheduler": "pbt", "perturbation_interval": 2,
            "space": {"lr0": {"type": "loguniform", "low": 0.001, "high": 0.1}, "mixup": [0.0, 0.25, 0.5],
                      "box": {"type": "quniform", "low": 1.0, "high": 10.0, "q": 0.5}}}
    body.update(settings)
    return body


# ----------------------------------------------------------------------------------------------------- the space
def test_population_is_the_number_of_trials():
    assert load_space(pbt_space()).num_samples == 8  # the default population
    spec = load_space(pbt_space(), {"population": 4, "quantile_fraction": 0.5, "burn_in": 2})
    assert (spec.num_samples, spec.population, spec.quantile_fraction, spec.burn_in) == (4, 4, 0.5, 2)
    assert load_space(pbt_space(num_samples=5)).population == 5


@pytest.mark.parametrize(("key", "why"), [
    ("imgsz", "the data loaders are built for one image size"),
    ("batch", "gradient accumulation and weight-decay scaling"),
    ("optimizer", "only the same optimizer type"),
    ("model", "an exploit copies weights between trials of the same network"),
    ("epochs", "same schedule length"),
    ("warmup_epochs", "without restarting it"),
    ("close_mosaic", "epoch plan"),
])
def test_a_key_that_cannot_change_between_epochs_is_refused_naming_it_and_why(key, why):
    values = {"imgsz": [32, 64], "batch": [8, 16], "optimizer": ["SGD", "AdamW"], "model": ["yolov8n", "yolov8s"],
              "epochs": [4, 6], "warmup_epochs": [0, 1], "close_mosaic": [0, 2]}
    body = pbt_space()
    body["space"][key] = values[key]
    with pytest.raises(ConfigError, match=rf"<dict>: space\.{key}: scheduler: pbt .* {key} cannot change: .*{why}"):
        load_space(body)


@pytest.mark.parametrize(("settings", "message"), [
    ({"population": 4, "num_samples": 6}, "num_samples: 6 disagrees with population: 4"),
    ({"population": 1}, "population: PBT needs at least 2 trials"),
    ({"quantile_fraction": 0.6}, r"quantile_fraction: 0.6 must be in \(0, 0.5\]"),
    ({"resample_probability": 1.5}, r"resample_probability: 1.5 must be in \[0, 1\]"),
    ({"perturbation_interval": 6}, "perturbation_interval: 6 epochs is not less than epochs=6"),
    ({"burn_in": 6}, "burn_in: 6 epochs leaves no epoch to perturb"),
    ({"resources": {"workers": 2}}, "resources.workers: scheduler: pbt needs one training worker per trial"),
    ({"scheduler": "asha"}, "perturbation_interval: only applies to scheduler: pbt"),
])
def test_pbt_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_space(pbt_space(**settings))


def test_cli_refuses_a_structural_key_with_exit_2_before_ray_starts(tmp_path, monkeypatch, capsys):
    import ray

    from raytrain.cli import main

    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for a space that can be rejected first")

    monkeypatch.setattr(ray, "init", refuse)
    body = pbt_space()
    body["space"]["imgsz"] = [32, 64]
    (tmp_path / "pbt.yaml").write_text(yaml.safe_dump(body))
    assert main(["tune", str(tmp_path / "pbt.yaml"), f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "space.imgsz: scheduler: pbt" in err and "Traceback" not in err


def test_example_space_file_is_a_valid_pbt_space():
    spec = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "pbt.yaml")
    assert spec.scheduler == "pbt" and spec.num_samples == spec.population >= 2


# ------------------------------------------------------------------------------------------------- mutations
def test_mutations_stay_inside_the_space():
    spec = load_space(pbt_space())
    found = mutations(spec)
    assert found["mixup"] == [0.0, 0.25, 0.5]  # a choice: PBT moves to a neighbour
    explore = keep_in_space(spec)
    # x1.2 past the top, x0.8 below the bottom, and off the q grid: clipped and rounded back.
    assert explore({"lr0": 0.1 * 1.2, "mixup": 0.5, "box": 9.0 * 1.2}) == {"lr0": 0.1, "mixup": 0.5, "box": 10.0}
    assert explore({"lr0": 0.001 * 0.8, "mixup": 0.0, "box": 3.0 * 0.8}) == {"lr0": 0.001, "mixup": 0.0, "box": 2.5}
    random.seed(0)
    for _ in range(20):  # resampling draws from the same bounds
        assert 0.001 <= found["lr0"].sample(None) <= 0.1


# ---------------------------------------------------------------------------------------- history and lineage
def three_exploits(path: Path) -> list[dict]:
    """A (trial_00001) lr0 0.01, B 0.02, C 0.03; C takes A's state after 2, B takes C's after 4, A takes C's after 4."""
    history = PBTHistory(path, ["lr0"], "fitness")
    for trial, source, epoch, before, after in (("trial_00003", "trial_00001", 2, 0.03, 0.012),
                                                ("trial_00002", "trial_00003", 4, 0.02, 0.0144),
                                                ("trial_00001", "trial_00003", 4, 0.01, 0.0096)):
        history.append(epoch=epoch, trial=trial, source=source, trial_epoch=epoch, trial_value=0.1,
                       source_value=0.2, before={"lr0": before}, after={"lr0": after}, trial_id=f"id_{trial}",
                       source_id=f"id_{source}")
    return read_history(path)


def test_history_rows_append_in_order_and_read_back(tmp_path):
    rows = three_exploits(tmp_path / HISTORY_FILE)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert (rows[0]["trial"], rows[0]["source"], rows[0]["epoch"], rows[0]["lr0_before"], rows[0]["lr0_after"]) == (
        "trial_00003", "trial_00001", 2, 0.03, 0.012)
    header = next(csv.reader((tmp_path / HISTORY_FILE).open()))
    assert header[:8] == ["seq", "time", "epoch", "trial", "source", "trial_epoch", "trial fitness", "source fitness"]


def test_lineage_schedule_follows_the_sources_as_they_were(tmp_path):
    rows = three_exploits(tmp_path / HISTORY_FILE)
    initial = initial_values(rows, ["lr0"], {"trial_00001": {"lr0": 0.0096}, "trial_00002": {"lr0": 0.0144},
                                            "trial_00003": {"lr0": 0.012}, "trial_00004": {"lr0": 0.05}})
    assert initial == {"trial_00001": {"lr0": 0.01}, "trial_00002": {"lr0": 0.02}, "trial_00003": {"lr0": 0.03},
                       "trial_00004": {"lr0": 0.05}}
    by_epoch = lambda trial: [v["lr0"] for v in lineage_schedule(rows, trial, 6, ["lr0"], initial).values()]  # noqa: E731
    # B: epochs 1-2 are A's (A's own exploit came later and does not count), 3-4 C's after its exploit, then B's.
    assert by_epoch("trial_00002") == [0.01, 0.01, 0.012, 0.012, 0.0144, 0.0144]
    assert by_epoch("trial_00003") == [0.01, 0.01, 0.012, 0.012, 0.012, 0.012]
    assert by_epoch("trial_00001") == [0.01, 0.01, 0.012, 0.012, 0.0096, 0.0096]
    assert by_epoch("trial_00004") == [0.05] * 6
    assert lineage_text(rows, "trial_00002") == "trial_00003@4" and lineage_text(rows, "trial_00004") == ""


# ---------------------------------------------------------------------------------------------------- reports
def write_experiment(exp: Path) -> None:
    """A PBT experiment folder as the driver leaves it: 3 trials of 6 epochs, the exploits of three_exploits."""
    exp.mkdir(parents=True)
    space = {"scheduler": "pbt", "metric": "fitness", "mode": "max", "name": exp.name,
             "train": {**TRAIN, "data": "shapes"}, "space": {"lr0": {"type": "loguniform", "low": 0.001, "high": 0.1}}}
    (exp / "tune_space.yaml").write_text(yaml.safe_dump(space))
    finals = {"trial_00001": 0.0096, "trial_00002": 0.0144, "trial_00003": 0.012}
    best_fitness = {"trial_00001": 0.3, "trial_00002": 0.5, "trial_00003": 0.4}
    status = {}
    for name, lr0 in finals.items():
        status[f"id_{name}"] = {"name": name, "params": {"lr0": lr0}, "end": "completed", "epochs": 6}
        (exp / name).mkdir()
        (exp / name / "params.json").write_text(json.dumps({"lr0": lr0}))
        rows = [{"epoch": e, "fitness": best_fitness[name] * e / 6, "trial_id": f"id_{name}"} for e in range(1, 7)]
        (exp / name / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (exp / "trial_status.yaml").write_text(yaml.safe_dump(status))
    three_exploits(exp / HISTORY_FILE)


def test_reports_show_lineage_and_best_yaml_replays_the_best_schedule(tmp_path, capsys):
    from raytrain.cli import main

    exp = tmp_path / "pbt"
    write_experiment(exp)
    assert main(["results", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "lineage" in out and "trial_00003@4" in out
    rows = {r["trial"]: r for r in csv.DictReader((exp / "trials.csv").open())}
    assert (rows["trial_00002"]["rank"], rows["trial_00002"]["lr0"]) == ("1", "0.0144")  # final values
    assert (rows["trial_00002"]["exploits"], rows["trial_00002"]["lineage"]) == ("1", "trial_00003@4")
    assert rows["trial_00001"]["lineage"] == "trial_00003@4" and rows["trial_00003"]["lineage"] == "trial_00001@2"
    best = load_config(exp / "best.yaml")
    assert best.lr0 == 0.0144 and best.schedule == str(exp / BEST_SCHEDULE)
    assert read_schedule(exp / BEST_SCHEDULE) == {e: {"lr0": v} for e, v in
                                                  enumerate([0.01, 0.01, 0.012, 0.012, 0.0144, 0.0144], 1)}
    assert (exp / SCHEDULE_PLOT).stat().st_size > 0


def test_a_trial_at_its_last_epoch_is_not_perturbed(tmp_path):
    """At the last epoch an exploit would only swap the trial's model for the source's, under values it never used."""
    from raytrain.tuning.pbt import make_pbt

    scheduler = make_pbt(load_space(pbt_space()), tmp_path)
    scheduler.set_search_properties("fitness", "max")
    trial = type("Trial", (), {"config": {}, "trial_id": "t"})()
    assert scheduler.on_trial_result(None, trial, {"epoch": 6, "fitness": 0.1}) == "CONTINUE"
    with pytest.raises(KeyError):  # before the last epoch PBT's own bookkeeping runs (this trial was never added)
        scheduler.on_trial_result(None, trial, {"epoch": 2, "fitness": 0.1})


class FakeTrial:
    """What Ray's PBT reads of a trial (hashable, as its bookkeeping keys on trials)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.status, self.experiment_tag = trial_id, "RUNNING", trial_id
        self.config = {"lr0": 0.01, "mixup": 0.0, "box": 7.5}
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(
            checkpoint_config=SimpleNamespace(num_to_keep=None)))

    def is_finished(self) -> bool:
        return False


def test_a_trial_first_at_a_perturbation_point_can_still_be_cloned_later(tmp_path, monkeypatch):
    """Ray keeps a trial's state for clones only when it is in the upper quantile as it reaches a perturbation point.
    The best trial, first at epoch 2 (nobody to compare with), must still be a source when a worse one gets there."""
    from ray.tune.schedulers import PopulationBasedTraining

    from raytrain.tuning.pbt import make_pbt

    clones = []

    def exploit(self, controller, trial, source):  # as Ray's: record, and pause the trial to restart from the source
        clones.append((trial.trial_id, source.trial_id))
        trial.status = "PAUSED"

    monkeypatch.setattr(PopulationBasedTraining, "_exploit", exploit)
    scheduler = make_pbt(load_space(pbt_space(population=2)), tmp_path)
    scheduler.set_search_properties("fitness", "max")
    best, worse = FakeTrial("best"), FakeTrial("worse")
    saved = []

    def save(trial: FakeTrial, result: dict) -> str:
        saved.append(trial.trial_id)
        return f"{trial.trial_id}@{result['epoch']}"

    controller = type("Controller", (), {"search_alg": None, "get_trials": staticmethod(lambda: [best, worse]),
                                         "_schedule_trial_save": staticmethod(save)})()
    for trial in (best, worse):
        scheduler.on_trial_add(controller, trial)
    scheduler.on_trial_result(controller, best, {"epoch": 2, "fitness": 0.9})  # first there: no quantiles yet
    assert saved == ["best"] and scheduler._trial_state[best].last_checkpoint == "best@2"
    scheduler.on_trial_result(controller, worse, {"epoch": 2, "fitness": 0.1})
    assert clones == [("worse", "best")]  # exploited the best trial's epoch-2 state
    assert saved == ["best"]  # the exploited trial keeps no state of its own for clones
