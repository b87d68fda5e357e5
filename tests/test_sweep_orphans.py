"""A sweep's runs never outlive it: a hang-up or a SIGKILL of the sweep stops them as Ctrl-C does,
keeping their completed epochs; and a sweep that meets a run still held by another process (its
lock) says that it is running, without starting it or marking it failed."""
import os
import signal
import sys
import time

import pytest

import sweep
from runner import records
from runner import safe_files
from runner.sweeps import grid
from runner.sweeps import jobs
from conftest import ROOT, start_in_background, write_sweep

ONE_RUN = '[grid]\nmodel = "cnn"\nlr = 0.05\n'


def wait_for(condition, seconds: float = 120) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def saved_epochs(run: grid.GridPoint) -> int:
    try:
        return len(records.read_record(run.record).rows)
    except (OSError, ValueError):
        return 0


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP], ids=["sigkill", "sighup"])
def test_a_killed_or_hung_up_sweep_stops_its_runs(tmp_path, synthetic_cifar10, signum):
    path = write_sweep(tmp_path, synthetic_cifar10, ONE_RUN, epochs=500)
    run = grid.load_sweep(path).runs[0]
    process = start_in_background([sys.executable, str(ROOT / "sweep.py"), str(path)])
    assert wait_for(lambda: saved_epochs(run) >= 1)
    child = int(jobs.lock_holder(run))
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    try:
        assert process.returncode == (130 if signum == signal.SIGHUP else -signal.SIGKILL), err
        assert wait_for(lambda: jobs.lock_holder(run) is None, 60), "the run outlived its sweep"
        assert wait_for(lambda: not os.path.exists(f"/proc/{child}"), 30)
    finally:
        if os.path.exists(f"/proc/{child}"):
            os.kill(child, signal.SIGKILL)
    status = records.read_record(run.record).meta["status"]
    assert 1 <= status["epochs_completed"] < 500 and not status["finished"]
    assert "interrupted" in run.log.read_text() and not run.marker("failed").exists()


def test_a_run_held_by_another_process_is_reported_running_not_failed(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, ONE_RUN)
    run = grid.load_sweep(path).runs[0]
    with safe_files.exclusive_lock(run.record.with_name(run.record.name + ".lock")):
        assert sweep.main([str(path), "--dry-run"]) == 0
        listed = capsys.readouterr().out.splitlines()[0]
        assert listed.startswith(f"running (process {os.getpid()}) ") and listed.endswith(f" {run.name}")
        assert sweep.main([str(path)]) == 1
        out = capsys.readouterr().out
    assert "1 running in another process" in out and f"unfinished {run.name}: running (process {os.getpid()})" in out
    assert not run.log.exists() and not run.marker("failed").exists() and not run.record.exists()
