"""Run records: round trip, atomic and durable writes with the umask's permissions, rejection of
files that are not records, the lock that keeps two processes off one run, and the save times a
record keeps."""
import errno
import math
import os
import stat
import subprocess
import sys

import pytest
import torch

import experiments
from runner import checkpoints
from runner import records
from runner import safe_files
from conftest import ROOT, record_path, run_args


def sample_record() -> records.RunRecord:
    row = {column: float(i) for i, column in enumerate(records.COLUMNS)}
    row.update(epoch=0, susceptibility=math.nan)
    return records.RunRecord({"args": {"model": "cnn", "lr": 0.1}, "noise": {"ground_truth": True}}, [row])


def test_round_trip_keeps_meta_and_rows_including_missing_values(tmp_path):
    path = tmp_path / "r.csv"
    records.write_record(path, sample_record())
    back = records.read_record(path)
    assert back.meta == sample_record().meta
    assert back.rows[0]["epoch"] == 0 and math.isnan(back.rows[0]["susceptibility"])
    assert back.rows[0]["seconds"] == float(records.COLUMNS.index("seconds"))


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.csv"
    records.write_record(path, sample_record())
    before = path.read_bytes()

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        safe_files.atomic_write(path, crash)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_a_record_with_a_short_row_is_rejected(tmp_path):
    path = tmp_path / "r.csv"
    records.write_record(path, records.RunRecord({}, sample_record().rows * 2))
    path.write_text(path.read_text().rstrip("\n").rsplit(",", 1)[0] + "\n")
    with pytest.raises(ValueError, match="epoch row 2 does not have one cell per column"):
        records.read_record(path)


def test_a_csv_that_is_not_a_record_is_rejected(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a run record"):
        records.read_record(path)


@pytest.fixture
def umask():
    """Set the process umask for a test, and put the previous one back afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_permissions_the_umask_gives_new_files(tmp_path, umask, mask, mode):
    umask(mask)
    records.write_record(tmp_path / "r.csv", sample_record())
    checkpoints.save_checkpoint(tmp_path / "c.pt", {"x": torch.zeros(1)})
    records.write_record(tmp_path / "r.csv", sample_record())  # a rewrite, as after every epoch
    for name in ("r.csv", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_write_is_flushed_then_renamed_then_the_rename_flushed(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(handle):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(handle).st_mode) else "fsync file")
        fsync(handle)

    def logged_replace(source, target):
        events.append("replace")
        replace(source, target)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    records.write_record(tmp_path / "r.csv", sample_record())
    assert events == ["fsync file", "replace", "fsync folder"]


def test_a_file_system_that_cannot_sync_a_folder_still_gets_the_file(tmp_path, monkeypatch):
    fsync = os.fsync

    def refuse_folders(handle):
        if stat.S_ISDIR(os.fstat(handle).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        fsync(handle)

    monkeypatch.setattr(os, "fsync", refuse_folders)
    records.write_record(tmp_path / "r.csv", sample_record())
    assert records.read_record(tmp_path / "r.csv").rows == sample_record().rows


def test_a_held_lock_is_refused_naming_its_holder_and_removed_on_release(tmp_path):
    path = tmp_path / "run.lock"
    with safe_files.exclusive_lock(path):
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(safe_files.LockHeld, match=f"process {os.getpid()} holds {path}"):
            with safe_files.exclusive_lock(path):
                pass
    assert not path.exists()
    with safe_files.exclusive_lock(path):  # free again
        pass


@pytest.mark.e2e
def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom runner import safe_files\n"
                               f"with safe_files.exclusive_lock({str(path)!r}):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(safe_files.LockHeld, match=f"process {holder.pid}"):
        with safe_files.exclusive_lock(path):
            pass
    holder.kill()
    holder.wait()
    assert path.exists()  # stale: its process is gone
    with safe_files.exclusive_lock(path):
        assert path.read_text() == f"{os.getpid()}\n"


def test_a_lock_file_removed_while_it_is_taken_is_made_again(tmp_path, monkeypatch):
    path = tmp_path / "run.lock"
    flock, calls = safe_files.fcntl.flock, []

    def racing_flock(handle, operation):
        if not calls:
            path.unlink()  # its holder released and removed it just as this process opened it
        calls.append(operation)
        return flock(handle, operation)

    monkeypatch.setattr(safe_files.fcntl, "flock", racing_flock)
    with safe_files.exclusive_lock(path):
        assert path.read_text() == f"{os.getpid()}\n" and len(calls) == 2


def test_folders_made_for_a_lock_are_removed_with_it_unless_something_was_written_there(tmp_path):
    with safe_files.exclusive_lock(tmp_path / "a" / "b" / "run.lock"):
        pass
    assert list(tmp_path.iterdir()) == []
    with safe_files.exclusive_lock(tmp_path / "a" / "b" / "run.lock"):
        (tmp_path / "a" / "kept.txt").write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == ["a", "a/kept.txt"]


# --------------------------------------------------------------------------------------------------
# The time an epoch spends saving, in the record and across a resume


@pytest.mark.e2e
def test_the_time_spent_saving_each_epoch_is_recorded(synthetic_cifar10, tmp_path):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64")) == 0
    rows = records.read_record(record_path(tmp_path)).rows
    assert all(0 < row["save_seconds"] < 60 for row in rows) and all(math.isnan(row["compile_seconds"]) for row in rows)


@pytest.mark.e2e
def test_a_finished_run_whose_record_lost_its_last_epoch_gets_it_back_from_the_checkpoint(synthetic_cifar10, tmp_path):
    argv = run_args(synthetic_cifar10, tmp_path, "--numsamples", "64")
    assert experiments.main(argv) == 0
    path = record_path(tmp_path)
    whole = records.read_record(path)
    records.write_record(path, records.RunRecord(whole.meta, whole.rows[:1]))  # killed before the record's rewrite
    assert experiments.main([*argv, "--resume"]) == 0
    repaired = records.read_record(path)
    assert repaired.rows == whole.rows  # save times included: the checkpoint holds complete rows
