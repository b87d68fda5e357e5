"""An epoch's files as one unit: the checkpoint commits the epoch; the per-sample scores, the test
predictions and the record replace their old versions only after it, are completed from it on
--resume when a kill came in between, and stay as they were when the save fails before it. Stray
temporary files of a killed save are removed by the next process that takes the run's locks."""
import errno
import os
import signal
import subprocess
import sys

import pytest

import experiments
from runner import checkpoints
from runner import records
from runner import safe_files
from conftest import ROOT, checkpoint_path, interrupt_at_epoch, record_path, run_args, same_record

# A run of experiments.py that SIGKILLs itself just before or just after the checkpoint of its
# second epoch is written: argv[1] is the moment, the rest the run's command line.
KILLED_WHILE_SAVING = """
import os, signal, sys, torch
torch.set_num_threads(min(2, torch.get_num_threads()))
import experiments
from runner import checkpoints
save, saves, moment = checkpoints.save_checkpoint, [], sys.argv[1]
def save_and_kill(path, state):
    saves.append(path)
    if len(saves) == 2 and moment == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    save(path, state)
    if len(saves) == 2 and moment == "after":
        os.kill(os.getpid(), signal.SIGKILL)
checkpoints.save_checkpoint = save_and_kill
sys.exit(experiments.main(sys.argv[2:]))
"""


def full_disk(path, state):
    """A checkpoint save on a full disk."""
    raise safe_files.UnwritableFile(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def tiny_run(data, out, *extra: str) -> list[str]:
    return run_args(data, out, "--numsamples", "64", *extra, epochs=3)


def side_files(out) -> dict[str, bytes]:
    """The per-sample scores and test predictions of the run under `out`, by suffix."""
    record = record_path(out, epochs=3)
    return {suffix: record.with_name(record.stem + suffix).read_bytes()
            for suffix in (records.SAMPLES_SUFFIX, records.TEST_PREDICTIONS_SUFFIX)}


def temporaries(out) -> list[str]:
    return sorted(path.name for path in out.rglob(".*.tmp"))


def killed_while_saving(data, out, moment: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", KILLED_WHILE_SAVING, moment, *tiny_run(data, out)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def stopped_before(epoch: int, data, out):
    """The files of the run stopped before `epoch`, uninterrupted by any kill; returns `out`."""
    monkeypatch = pytest.MonkeyPatch()
    interrupt_at_epoch(monkeypatch, epoch)
    assert experiments.main(tiny_run(data, out)) == experiments.INTERRUPTED
    monkeypatch.undo()
    return out


@pytest.fixture(scope="module")
def after_one_epoch(synthetic_cifar10, tmp_path_factory):
    return stopped_before(1, synthetic_cifar10, tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def after_two_epochs(synthetic_cifar10, tmp_path_factory):
    return stopped_before(2, synthetic_cifar10, tmp_path_factory.mktemp("two"))


def assert_same_files(out, reference) -> None:
    """The record, checkpoint rows and side files of the run under `out` are those of `reference`."""
    assert same_record(record_path(out, epochs=3), record_path(reference, epochs=3))
    rows = [len(checkpoints.load_checkpoint(checkpoint_path(folder, epochs=3))["rows"]) for folder in (out, reference)]
    assert rows[0] == rows[1]
    assert side_files(out) == side_files(reference)


@pytest.mark.e2e
def test_a_kill_before_the_checkpoint_leaves_the_previous_epochs_files(synthetic_cifar10, tmp_path,
                                                                        after_one_epoch, monkeypatch):
    killed = killed_while_saving(synthetic_cifar10, tmp_path, "before")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_same_files(tmp_path, after_one_epoch)
    assert temporaries(tmp_path)  # the new versions, written beside the old ones
    interrupt_at_epoch(monkeypatch, 1)  # take the run's locks and stop at once
    assert experiments.main([*tiny_run(synthetic_cifar10, tmp_path), "--resume"]) == experiments.INTERRUPTED
    assert temporaries(tmp_path) == []
    assert_same_files(tmp_path, after_one_epoch)


@pytest.mark.e2e
def test_a_kill_after_the_checkpoint_is_completed_from_it_on_resume(synthetic_cifar10, tmp_path,
                                                                    after_two_epochs, monkeypatch, capsys):
    killed = killed_while_saving(synthetic_cifar10, tmp_path, "after")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(records.read_record(record_path(tmp_path, epochs=3)).rows) == 1  # the checkpoint has 2
    assert temporaries(tmp_path)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main([*tiny_run(synthetic_cifar10, tmp_path), "--resume"]) == experiments.INTERRUPTED
    assert "completed" in capsys.readouterr().out
    assert temporaries(tmp_path) == []
    assert_same_files(tmp_path, after_two_epochs)


@pytest.mark.e2e
def test_a_failed_save_keeps_the_previous_epochs_files_and_says_so_in_one_line(
        synthetic_cifar10, tmp_path, after_one_epoch, monkeypatch, capsys):
    save, saves = checkpoints.save_checkpoint, []

    def full_disk_at_the_second_save(path, state):
        saves.append(path)
        if len(saves) == 2:
            full_disk(path, state)
        save(path, state)

    monkeypatch.setattr(checkpoints, "save_checkpoint", full_disk_at_the_second_save)
    assert experiments.main(tiny_run(synthetic_cifar10, tmp_path)) == experiments.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and str(saves[0]) in err
    assert "the 1 completed epochs are kept" in err
    assert_same_files(tmp_path, after_one_epoch)
    assert temporaries(tmp_path) == [] and not list(tmp_path.rglob("*.lock"))


@pytest.mark.e2e
def test_a_failed_first_save_writes_nothing(synthetic_cifar10, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoints, "save_checkpoint", full_disk)
    assert experiments.main(tiny_run(synthetic_cifar10, tmp_path)) == experiments.USAGE
    assert "no epoch was saved, so nothing was written" in capsys.readouterr().err
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


@pytest.mark.e2e
def test_overwrite_keeps_the_old_runs_files_until_the_new_run_has_saved_an_epoch(
        synthetic_cifar10, tmp_path, monkeypatch):
    assert experiments.main(tiny_run(synthetic_cifar10, tmp_path)) == 0
    old = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    monkeypatch.setattr(checkpoints, "save_checkpoint", full_disk)
    argv = tiny_run(synthetic_cifar10, tmp_path, "--seed", "4", "--overwrite")
    assert experiments.main(argv) == experiments.USAGE
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == old
