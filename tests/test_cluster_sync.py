"""Mirroring run files through checkpoints: a rank 0, or a one-worker tune trial, on another node than the driver."""

from __future__ import annotations

from types import SimpleNamespace

from raytrain.cluster.sync import STAGED_FOLDER, RunFolderMirror, TrialFolderMirror, TuneLogKeeper, stage_run_files


def test_staged_files_reach_the_driver_run_folder(tmp_path):
    from ray.train import Checkpoint

    remote_run = tmp_path / "remote" / "train"  # the run folder on rank 0's node
    (remote_run / "weights").mkdir(parents=True)
    (remote_run / "results.csv").write_text("epoch,fitness\n1,0.5\n")
    (remote_run / "weights" / "last.pt").write_bytes(b"last")
    checkpoint_dir = tmp_path / "checkpoint_000000"
    checkpoint_dir.mkdir()
    staged = stage_run_files(remote_run, [remote_run / "results.csv", remote_run / "weights" / "last.pt",
                                          remote_run / "results.png"], checkpoint_dir)
    assert staged == ["results.csv", "weights/last.pt"]  # the missing plot is skipped
    assert (checkpoint_dir / STAGED_FOLDER / "weights" / "last.pt").read_bytes() == b"last"

    driver_run = tmp_path / "driver" / "train"
    (driver_run / "weights").mkdir(parents=True)
    (driver_run / "weights" / "best.pt").write_bytes(b"best from an earlier epoch")
    (driver_run / "results.csv").write_text("stale\n")
    RunFolderMirror(driver_run).after_report(None, [{}], Checkpoint.from_directory(checkpoint_dir))
    assert (driver_run / "results.csv").read_text() == "epoch,fitness\n1,0.5\n"
    assert (driver_run / "weights" / "last.pt").read_bytes() == b"last"
    assert (driver_run / "weights" / "best.pt").read_bytes() == b"best from an earlier epoch"  # kept


def test_nothing_staged_means_nothing_copied(tmp_path):
    from ray.train import Checkpoint

    checkpoint_dir = tmp_path / "checkpoint_000001"
    checkpoint_dir.mkdir()
    (checkpoint_dir / "state.pt").write_bytes(b"x")
    driver_run = tmp_path / "run"
    RunFolderMirror(driver_run).after_report(None, [{}], Checkpoint.from_directory(checkpoint_dir))
    RunFolderMirror(driver_run).after_report(None, [{}], None)
    assert not driver_run.exists()


def test_a_trial_on_another_node_brings_its_run_folder_to_the_driver(tmp_path, monkeypatch):
    """A one-worker trial away from the driver stages its run files in each Tune checkpoint (the epoch's changed
    files plus its small files: args, run.json, TensorBoard events); the driver's Tune callback copies them in."""
    import ray.tune

    from raytrain.engine.loop import EpochReport
    from raytrain.tuning.trial import TuneReport

    remote = tmp_path / "node2" / "trials" / "trial_00001"  # the trial's run folder where it trains
    (remote / "weights").mkdir(parents=True)
    (remote / "tensorboard").mkdir()
    for name, text in [("results.csv", "epoch\n1\n"), ("args.yaml", "epochs: 3\n"), ("run.json", "{}"),
                       ("tensorboard/events.out", "tb"), ("weights/last.pt", "last"), ("weights/epoch1.pt", "old")]:
        (remote / name).write_text(text)
    reported = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics, checkpoint: reported.append(checkpoint))
    states = []
    for stage in (True, False):
        state_dir = tmp_path / f"state_{stage}"
        state_dir.mkdir()
        (state_dir / "state.pt").write_text("state")
        states.append(state_dir)
        TuneReport(remote, stage)(EpochReport({"epoch": 1.0}, state_dir,
                                              [remote / "results.csv", remote / "weights" / "last.pt"], False))

    staged = sorted(p.relative_to(states[0] / STAGED_FOLDER).as_posix()
                    for p in (states[0] / STAGED_FOLDER).rglob("*") if p.is_file())
    assert staged == ["args.yaml", "results.csv", "run.json", "tensorboard/events.out", "weights/last.pt"]
    assert not (states[1] / STAGED_FOLDER).exists()  # on the driver's node: nothing extra in the checkpoint

    driver_trials = tmp_path / "driver" / "trials"
    mirror = TrialFolderMirror(driver_trials, lambda trial: trial.name)
    trial = SimpleNamespace(name="trial_00001")
    mirror.on_checkpoint(0, [], trial, reported[0])
    assert (driver_trials / "trial_00001" / "weights" / "last.pt").read_text() == "last"
    assert (driver_trials / "trial_00001" / "tensorboard" / "events.out").read_text() == "tb"
    assert not (driver_trials / "trial_00001" / "weights" / "epoch1.pt").exists()  # not changed this epoch
    mirror.on_checkpoint(0, [], SimpleNamespace(name="trial_00002"), reported[1])
    assert not (driver_trials / "trial_00002").exists()


def test_a_multi_worker_trials_staged_files_come_with_its_results(tmp_path):
    """A multi-worker trial reports Ray Train's checkpoint path with each result; the driver copies the files rank 0
    staged there into the trial's run folder (and ignores results without one)."""
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    remote = tmp_path / "node2" / "trial_00003"
    (remote / "weights").mkdir(parents=True)
    (remote / "weights" / "last.pt").write_text("last")
    checkpoint_dir = tmp_path / "storage" / "_train" / "trial_00003" / "checkpoint_000001"
    checkpoint_dir.mkdir(parents=True)
    stage_run_files(remote, [remote / "weights" / "last.pt"], checkpoint_dir)
    mirror = TrialFolderMirror(tmp_path / "driver" / "trials", lambda trial: trial.name)
    trial = SimpleNamespace(name="trial_00003")
    mirror.on_trial_result(0, [], trial, {"epoch": 1.0})
    assert not (tmp_path / "driver").exists()
    mirror.on_trial_result(0, [], trial, {"epoch": 1.0, CHECKPOINT_PATH_KEY: str(checkpoint_dir)})
    assert (tmp_path / "driver" / "trials" / "trial_00003" / "weights" / "last.pt").read_text() == "last"


class RestartedTrial:
    """What Tune's loggers read of a trial that starts again from a checkpoint: its staging folder here, its folder in
    the experiment's storage (copied there every few minutes), a checkpoint."""

    def __init__(self, staging, storage):
        import pyarrow.fs

        self.local_path, self.checkpoint, self.config = str(staging), object(), {}
        self.storage = SimpleNamespace(trial_fs_path=str(storage), storage_filesystem=pyarrow.fs.LocalFileSystem())

    def init_local_path(self):
        pass


def test_a_restarted_trial_keeps_the_epochs_tune_had_not_copied_to_storage_yet(tmp_path):
    """Tune's JSON logger restores a restarted trial's ``result.json`` from storage; the keeper, registered first,
    has put the staging copy there, so the rows reported since the last periodic copy survive."""
    from ray.tune.logger import JsonLoggerCallback

    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir(), storage.mkdir()
    rows = "".join(f'{{"epoch": {e}}}\n' for e in (1, 2))
    (staging / "result.json").write_text(rows)
    (storage / "result.json").write_text('{"epoch": 1}\n')  # the last periodic copy: epoch 2 not in it yet

    JsonLoggerCallback().log_trial_start(RestartedTrial(staging, storage))  # what Tune alone does
    assert (staging / "result.json").read_text() == '{"epoch": 1}\n'  # epoch 2 is gone

    (staging / "result.json").write_text(rows)
    trial = RestartedTrial(staging, storage)
    TuneLogKeeper().on_trial_start(0, [], trial)
    JsonLoggerCallback().log_trial_start(trial)
    assert (staging / "result.json").read_text() == rows == (storage / "result.json").read_text()


def test_a_first_start_or_a_resumed_driver_leaves_the_storage_copy_alone(tmp_path):
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir(), storage.mkdir()
    (storage / "result.json").write_text('{"epoch": 1}\n')
    resumed = RestartedTrial(staging, storage)  # a new driver: no staging copy yet, Tune restores from storage
    TuneLogKeeper().on_trial_start(0, [], resumed)
    (staging / "result.json").write_text("")
    fresh = RestartedTrial(staging, storage)
    fresh.checkpoint = None  # a first start: nothing to keep
    TuneLogKeeper().on_trial_start(0, [], fresh)
    assert (storage / "result.json").read_text() == '{"epoch": 1}\n'
