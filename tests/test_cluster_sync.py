"""Mirroring rank 0's run files through a checkpoint, for a rank 0 on another node."""

from __future__ import annotations

from raytrain.cluster.sync import STAGED_FOLDER, RunFolderMirror, stage_run_files


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
