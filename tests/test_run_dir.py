"""Nothing in a run directory is lost: one run at a time, no silent overwrite, no silent no-op
resume, the same data from any working directory, and one line when a save fails."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time

import pytest

from lenet5 import checkpoint as ckpt
from lenet5.cli import main
from lenet5.config import resolve_config
from lenet5.training.loop import train
from lenet5.training.rundir import RunDirError, RunLock, saving

QUIET = dict(log=lambda *a: None)


def cfg_for(data_root, out, **kw):
    base = dict(data_dir=str(data_root), out=str(out), progress=False, threads=1,
                limit_train=64, batch_size=32, epochs=1, eval_batch_size=5000)
    return resolve_config(kw.pop("preset", "relu-maxpool"), overrides={**base, **kw})


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- quick: no training


def test_a_directory_in_use_is_refused_at_once_naming_the_holder(data_root, tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        t0 = time.perf_counter()
        in_use = f"{run} is in use by another training run (pid {os.getpid()})"
        with pytest.raises(RunDirError, match=re.escape(in_use)):
            train(cfg_for(data_root, run), **QUIET)
        assert time.perf_counter() - t0 < 1.0  # before any data is read
    assert not run.exists()  # the lock's own directory, empty, is gone again


def test_a_lock_left_by_a_killed_run_is_taken_over_and_removed_after(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999\n")  # its holder is gone, so is its flock
    with RunLock(run):
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    assert list(run.iterdir()) == []


@pytest.mark.parametrize("held", ["checkpoint.safetensors", "metrics.jsonl"])
def test_a_directory_holding_a_run_is_refused_without_overwrite(data_root, tmp_path, held,
                                                               capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / held).write_text("an earlier run's file")
    args = ["train", "--out", str(run), "--data-dir", str(data_root), "--limit-train", "64",
            "--epochs", "1", "--no-progress"]
    assert main(args) == 1
    err = one_line_error(capsys)
    assert str(run) in err and held in err and "--resume" in err and "--overwrite" in err
    assert (run / held).read_text() == "an earlier run's file"
    assert not (run / "config.json").exists()


def test_resume_of_a_file_that_is_not_the_runs_checkpoint_is_refused(data_root, tmp_path):
    other = tmp_path / "model.safetensors"
    other.write_bytes(b"x")
    with pytest.raises(RunDirError, match="give a run directory or its checkpoint.safetensors"):
        train(cfg_for(data_root, None, resume=str(other)), **QUIET)


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError(errno.EACCES, "Permission denied"), "Permission denied"),
])
def test_a_failed_save_is_one_line_naming_what_survives(tmp_path, error, reason):
    with pytest.raises(OSError) as e, saving(tmp_path, 3, 2):
        raise error
    assert str(e.value) == (f"could not save epoch 3 in {tmp_path}: {reason}; "
                            "the checkpoint of epoch 2 there is intact")
    with pytest.raises(OSError, match="no checkpoint had been saved yet"), saving(tmp_path, 1, None):
        raise error


def test_safetensors_disk_full_error_reads_as_a_full_disk(tmp_path):
    from safetensors import SafetensorError

    rust = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
            'message: "No space left on device" })')
    for full in (SafetensorError(rust), ckpt.CheckpointError(f"x: could not save ({rust})")):
        with pytest.raises(OSError, match="epoch 2 .*: no space left on device; the checkpoint "
                                          "of epoch 1 there is intact"), saving(tmp_path, 2, 1):
            raise full
    other = ckpt.CheckpointError("x: could not save the checkpoint (some other reason)")
    with pytest.raises(ckpt.CheckpointError) as e, saving(tmp_path, 2, 1):
        raise other
    assert e.value is other  # already one clear line: passed on as it is


# ----------------------------------------------------------------------------- with training


@pytest.mark.slow
def test_finished_run_is_kept_unless_overwrite_and_resume_must_add_epochs(data_root, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(data_root, run, epochs=2), **QUIET)
    before = {name: (run / name).read_bytes()
              for name in ("checkpoint.safetensors", "metrics.jsonl", "config.json")}

    with pytest.raises(RunDirError, match="already holds a run"):
        train(cfg_for(data_root, run, epochs=1), **QUIET)
    for epochs in (1, 2):  # fewer epochs than done, or as many: nothing to do is an error
        with pytest.raises(ValueError, match="checkpoint is at epoch 2 already; ask for more"):
            train(cfg_for(data_root, run, epochs=epochs, resume=str(run)), **QUIET)
    assert {name: (run / name).read_bytes() for name in before} == before  # not even config.json

    train(cfg_for(data_root, run, epochs=1, overwrite=True), **QUIET)
    _, _, meta = ckpt.read_checkpoint(run)
    assert meta["epoch"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == [  # the lock went with the run
        "checkpoint.json", "checkpoint.safetensors", "config.json", "metrics.jsonl"]


@pytest.mark.slow
def test_second_process_into_a_running_runs_directory_is_refused(data_root, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lenet5", "train", "--out", str(run), "--data-dir",
           str(data_root), "--limit-train", "4000", "--batch-size", "8", "--epochs", "3",
           "--threads", "1", "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock").exists() or not (run / ".lock").read_text().strip():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert first.poll() is None, "the first run must still be running"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 1
    assert second.stderr == (f"lenet5: error: {run} is in use by another training run "
                             f"(pid {first.pid}); wait for it to finish or choose another --out\n")


@pytest.mark.slow
def test_resume_from_another_working_directory_reads_the_same_data(data_root, tmp_path,
                                                                  monkeypatch, capsys):
    start, elsewhere = tmp_path / "start", tmp_path / "else" / "where" / "deeper"
    start.mkdir()
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(start)
    relative = os.path.relpath(data_root, start)
    assert main(["train", "--out", "run", "--data-dir", relative, "--limit-train", "64",
                 "--batch-size", "32", "--epochs", "1", "--no-progress"]) == 0
    run = start / "run"
    saved = json.loads((run / "config.json").read_text())["data_dir"]
    assert saved == os.path.abspath(data_root)

    monkeypatch.chdir(elsewhere)  # `relative` climbs to somewhere else from here
    assert not (elsewhere / relative).exists()
    capsys.readouterr()
    # The checkpoint file itself names the run as well as its directory does.
    assert main(["train", "--resume", str(run / "checkpoint.safetensors"), "--epochs", "2"]) == 0
    _, _, meta = ckpt.read_checkpoint(run)
    assert meta["epoch"] == 2 and meta["train_config"]["data_dir"] == saved
    assert not list(elsewhere.iterdir())  # nothing created here


@pytest.mark.slow
def test_disk_full_during_a_save_is_one_line_and_the_last_checkpoint_survives(
        data_root, tmp_path, monkeypatch, capsys):
    import safetensors.numpy
    from safetensors import SafetensorError

    real_save, calls = safetensors.numpy.save_file, []

    def fills_the_disk_on_epoch_2(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # half a file, then the device is full
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                  'StorageFull, message: "No space left on device" })')
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.numpy, "save_file", fills_the_disk_on_epoch_2)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(data_root), "--limit-train", "64",
                 "--batch-size", "32", "--epochs", "3", "--no-progress"]) == 1
    err = one_line_error(capsys)
    assert err == (f"lenet5: error: could not save epoch 2 in {run}: no space left on device; "
                   "the checkpoint of epoch 1 there is intact\n")
    assert ckpt.read_checkpoint(run)[2]["epoch"] == 1
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("out, says", [
    ("afile/run", "afile: a file is in the way of a directory (afile/run)"),
    ("afile", "afile is a file, not a run directory"),
])
def test_an_output_path_blocked_by_a_file_is_one_line_in_words(data_root, tmp_path, capsys,
                                                               monkeypatch, out, says):
    """The system's errors read as words naming the path, not "[Errno 20] Not a directory"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("mine")
    assert main(["train", "--preset", "fast", "--epochs", "1", "--limit-train", "64",
                 "--data-dir", str(data_root), "--out", out, "--no-progress"]) == 1
    assert one_line_error(capsys) == f"lenet5: error: {says}\n"
    assert (tmp_path / "afile").read_text() == "mine"


def test_system_errors_read_as_words():
    from lenet5.cli import error_line

    assert error_line(OSError(errno.ENOSPC, "No space left on device", "runs/a/model.safetensors")
                      ) == "runs/a/model.safetensors: no space left on the device"
    assert error_line(PermissionError(errno.EACCES, "Permission denied", "/etc/x")) == (
        "/etc/x: permission denied")
    assert error_line(OSError(errno.EIO, "Input/output error", "f")) == "f: input/output error"
    assert error_line(FileExistsError(errno.EEXIST, "File exists", "/")) == "/: already exists"
    assert error_line(ValueError("a message")) == "a message"
    assert error_line(OSError("no errno")) == "no errno"


def test_a_file_in_the_way_of_an_output_folder_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("mine")
    assert main(["viz", "prototypes", "--out", "afile/p.png"]) == 1
    assert one_line_error(capsys) == "lenet5: error: afile: a file is in the way of a directory\n"
