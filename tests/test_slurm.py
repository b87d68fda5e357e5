"""sweep.py --slurm against a real one-node Slurm cluster started by tools/slurm_cluster.py: job arrays
that finish as local sweeps do, the time limit's warning, preemption, cancellation, jobs killed
mid-epoch, --max-parallel, failing runs and Ctrl-C; and the temporary files a killed write leaves.

Where the cluster cannot be started (no slurm-wlm or munge, not root), the tests that need it are
skipped, and the reason is printed once.
"""
import getpass
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (ROOT, interrupt_at_epoch, run_args, same_record, start_in_foreground, without_timings,
                      write_sweep)

import experiments
from runner.sweeps import grid
from runner import command_line
from runner import records
from runner.run_files import run_files
from runner.sweeps import slurm
import sweep
from runner.sweeps import jobs

from tools import slurm_cluster

pytestmark = pytest.mark.e2e
SLURM = ["--slurm", "--time", "10", "--gpus-per-run", "0", "--cpus-per-run", "1"]
# Runs that are interrupted: epochs of a second or more, so that a signal sent when the first epoch
# has been saved reaches the run in the middle of the second (or, on a fast machine, the third).
SLOW_EPOCHS = {"epochs": 3, "numsamples": 256, "batchsize": 16}
INTERRUPTED = '[grid]\nmodel = "cnn"\nscale = 0.5\nlr = 0.05\n'
WAIT_SECONDS = 240
POLL_SECONDS = 0.5  # between the looks of a sweep at the queue


@pytest.fixture(scope="session")
def slurm_cluster_folder(tmp_path_factory, request) -> Path:
    """A one-node Slurm cluster for the session, stopped at its end."""
    folder = tmp_path_factory.mktemp("slurm")
    try:
        if importlib.util.find_spec("submitit") is None:
            raise slurm_cluster.ClusterError("submitit is not installed: pip install -r requirements-slurm.txt")
        slurm_cluster.start(folder)
    except slurm_cluster.ClusterError as error:
        say(request.config, f"skipping the tests on a Slurm cluster: {error}")
        pytest.skip(f"no Slurm cluster: {error}")
    yield folder
    slurm_cluster.stop(folder)


def say(config: pytest.Config, line: str) -> None:
    """Print a line on the terminal, past pytest's capture of the test's output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        with config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            reporter.write_line(f"\n{line}")


@pytest.fixture
def cluster(slurm_cluster_folder, monkeypatch) -> Path:
    """The cluster, idle, with Slurm's commands pointed at it, short polls, and runs on one CPU thread
    (as the local sweeps they are compared with); jobs a test leaves are cancelled after it."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf_path(slurm_cluster_folder)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(slurm, "QUEUE_POLL_SECONDS", POLL_SECONDS)
    slurm_cluster.wait_until_idle(slurm_cluster_folder)
    yield slurm_cluster_folder
    subprocess.run(["scancel", "--user", getpass.getuser()], check=True)
    slurm_cluster.wait_until_idle(slurm_cluster_folder)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_cifar10) -> Path:
    """The record of the interrupted tests' run, trained without interruption by a local sweep."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        assert sweep.main([str(write_sweep(folder, synthetic_cifar10, INTERRUPTED, **SLOW_EPOCHS))]) == 0
    return grid.load_sweep(folder / "g.toml").runs[0].record


def wait_until(condition, what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)


def epochs(run: grid.GridPoint) -> int:
    return jobs.recorded_state(run)[1]


def interrupted_after(run: grid.GridPoint) -> int:
    """The epochs a run had saved when it was interrupted, as its log says, checked to be in the middle."""
    saved, = re.findall(r"^interrupted: (\d+) of 3 epochs are saved", run.log.read_text(), re.MULTILINE)
    assert 1 <= int(saved) < 3
    return int(saved)


def job_of(run: grid.GridPoint) -> str:
    return run.marker("job").read_text().strip()


def slurm_sweep(path: Path, *options: str) -> subprocess.Popen:
    """sweep.py --slurm --wait on the sweep file, as a terminal starts it, with short polls."""
    program = (f"import sys, sweep; from runner.sweeps import slurm; slurm.QUEUE_POLL_SECONDS = {POLL_SECONDS}; "
               f"sys.exit(sweep.main(sys.argv[1:]))")
    return start_in_foreground([sys.executable, "-c", program, str(path), *SLURM, "--wait", *options])


def kill_every_process_of(job_id: str) -> None:
    """SIGKILL at once every process of a job: those whose environment names it."""
    variable = f"SLURM_JOB_ID={job_field(job_id, 'JobId')}".encode()
    processes = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and variable in (entry / "environ").read_bytes().split(b"\0"):
                processes.append(int(entry.name))
        except OSError:  # ended meanwhile
            pass
    assert processes
    for pid in processes:
        os.kill(pid, signal.SIGKILL)


def job_field(job_id: str, name: str) -> str:
    """A field of `scontrol show job` (Slurm keeps ended jobs for a few minutes)."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return next(word.split("=", 1)[1] for word in shown.split() if word.startswith(f"{name}="))


def test_a_job_array_runs_at_most_max_parallel_jobs_and_finishes_as_a_local_sweep(
        cluster, tmp_path, synthetic_cifar10, capsys):
    grid_text = '[grid]\nmodel = "cnn"\nscale = 0.125\nlr = [0.1, 0.05]\n'
    path = write_sweep(tmp_path / "slurm", synthetic_cifar10, grid_text, epochs=1)
    runs = grid.load_sweep(path).runs
    process = slurm_sweep(path, "--max-parallel", "1")
    most_running, throttled = 0, False  # the most jobs seen running at once; a task held by the limit
    while process.poll() is None:
        queue = subprocess.run(["squeue", "--noheader", "--array", "--format=%T %r"], capture_output=True,
                               text=True).stdout.splitlines()
        most_running = max(most_running, queue.count("RUNNING None"))
        throttled |= "PENDING JobArrayTaskLimit" in queue
        time.sleep(0.1)
    out, err = process.communicate()
    assert process.returncode == 0, out + err
    assert most_running == 1 and throttled
    assert "submitted 2 runs as job array" in out and "(at most 1 at once)" in out
    assert "all 2 runs finished" in out

    local = write_sweep(tmp_path / "local", synthetic_cifar10, grid_text, epochs=1)
    assert sweep.main([str(local), "--jobs", "2"]) == 0
    for run, local_run in zip(runs, grid.load_sweep(local).runs, strict=True):
        assert same_record(run.record, local_run.record), run.name

    assert sweep.main([str(path), *SLURM, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 2 finished" in out and "submitted" not in out


@pytest.mark.parametrize("interrupt", [["scancel", "--signal=USR2"], ["scontrol", "requeue"]],
                         ids=["time-limit-warning", "preemption"])
def test_a_job_interrupted_mid_epoch_is_requeued_and_its_run_continues_exactly(
        cluster, tmp_path, synthetic_cifar10, uninterrupted, interrupt):
    path = write_sweep(tmp_path, synthetic_cifar10, INTERRUPTED, **SLOW_EPOCHS)
    run, = grid.load_sweep(path).runs
    process = slurm_sweep(path)
    wait_until(lambda: epochs(run) == 1, "the first epoch")
    subprocess.run([*interrupt, job_of(run)], check=True)
    out, err = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 0, out + err
    assert f"[1/1] done {run.name}" in out and "stopped" not in out and "all 1 runs finished" in out
    assert job_field(job_of(run), "Restarts") == "1"  # the same job, requeued
    log = run.log.read_text()
    assert log.count("=== ") == 2
    assert f"resuming {run.name}.csv: {interrupted_after(run)} of 3 epochs done" in log
    assert same_record(run.record, uninterrupted)


def test_a_job_killed_mid_epoch_is_resumed_exactly_by_the_next_invocation(
        cluster, tmp_path, synthetic_cifar10, uninterrupted, capsys):
    """What a time limit does to a job whose run is still running when Slurm's SIGKILL follows its
    SIGTERM, without the minute's wait: every process of the job killed in the middle of an epoch."""
    path = write_sweep(tmp_path, synthetic_cifar10, INTERRUPTED, **SLOW_EPOCHS)
    run, = grid.load_sweep(path).runs
    assert sweep.main([str(path), *SLURM]) == 0
    wait_until(lambda: epochs(run) == 1, "the first epoch")
    kill_every_process_of(job_of(run))
    wait_until(lambda: job_of(run) not in jobs.active_cluster_jobs(), "the killed job to end")
    assert "interrupted" not in run.log.read_text()  # killed, not stopped
    saved = epochs(run)
    assert 1 <= saved < 3
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert f"resume after {saved}/3" in capsys.readouterr().out

    assert sweep.main([str(path), *SLURM, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "1 runs: 1 to resume" in out and "all 1 runs finished" in out
    assert f"resuming {run.name}.csv: {saved} of 3 epochs done" in run.log.read_text()
    assert same_record(run.record, uninterrupted)
    assert not [file.name for file in tmp_path.rglob("*.tmp")]


@pytest.mark.slow
def test_a_job_killed_at_its_real_time_limit_is_resumed_exactly_by_the_next_invocation(
        cluster, tmp_path, synthetic_cifar10, capsys):
    """One-minute limits, with submitit's warning signal replaced by one that nothing acts on (as on a
    cluster whose warning comes too late): Slurm stops the job at its limit, mid-run. The run is too
    long to end within two limits on any machine, so its rows are compared with as many of a local
    run's."""
    path = write_sweep(tmp_path / "slurm", synthetic_cifar10, INTERRUPTED, **{**SLOW_EPOCHS, "epochs": 1000})
    run, = grid.load_sweep(path).runs
    limited = [str(path), *SLURM, "--time", "1", "--slurm-option", "signal=URG@1", "--wait"]
    saved = []
    for _ in range(2):
        assert sweep.main(limited) == 1
        out = capsys.readouterr().out
        saved.append(epochs(run))
        assert f"stopped {run.name} (job {job_of(run)} TIMEOUT); {saved[-1]} of 1000 epochs are saved" in out
        assert f"unfinished {run.name} (job {job_of(run)} TIMEOUT): {saved[-1]} of 1000 epochs are saved" in out
    assert 1 <= saved[0] < saved[1] < 1000
    log = run.log.read_text()
    assert log.count("interrupted: ") == 2 and f"resuming {run.name}.csv: {saved[0]} of 1000 epochs done" in log

    local = write_sweep(tmp_path / "local", synthetic_cifar10, INTERRUPTED, **{**SLOW_EPOCHS, "epochs": 1000})
    reference, = grid.load_sweep(local).runs
    process = start_in_foreground([sys.executable, str(ROOT / "sweep.py"), str(local)])
    wait_until(lambda: epochs(reference) >= saved[1], f"{saved[1]} epochs of the local run", seconds=600)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=WAIT_SECONDS)
    (meta, rows), (reference_meta, reference_rows) = (without_timings(records.read_record(record))
                                                      for record in (run.record, reference.record))
    assert meta["status"]["epochs_completed"] == saved[1]
    assert {**meta, "status": None} == {**reference_meta, "status": None}
    assert rows == reference_rows[:saved[1]]


def test_cancelling_one_job_leaves_the_others_running_and_a_rerun_resumes_only_it(
        cluster, tmp_path, synthetic_cifar10, uninterrupted, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, INTERRUPTED.replace("0.05", "[0.05, 0.1]"), **SLOW_EPOCHS)
    cancelled, other = grid.load_sweep(path).runs
    process = slurm_sweep(path)
    wait_until(lambda: epochs(cancelled) == 1, "the first epoch")
    subprocess.run(["scancel", job_of(cancelled)], check=True)
    out, err = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 1, out + err
    job, saved = job_of(cancelled), epochs(cancelled)
    assert 1 <= saved < 3
    assert f"stopped {cancelled.name} (job {job} CANCELLED); {saved} of 3 epochs are saved" in out
    assert f"done {other.name} (job {job_of(other)})" in out
    assert "1 of 2 runs finished, 0 failed, 1 unfinished" in out
    assert f"unfinished {cancelled.name} (job {job} CANCELLED): {saved} of 3 epochs are saved" in out
    assert "run the same command again to continue the unfinished runs" in out
    assert other.log.read_text().count("=== ") == 1  # never stopped
    other_log = other.log.read_text()

    assert sweep.main([str(path), *SLURM, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 1 finished, 1 to resume" in out and "submitted 1 runs" in out
    assert other.log.read_text() == other_log
    assert same_record(cancelled.record, uninterrupted)


def test_a_run_with_a_bad_setting_is_reported_failed_with_its_log_line_and_the_others_finish(
        cluster, tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nscale = 0.125\nnoisy_holdout = [0, 250]\n',
                       epochs=1)
    good, bad = grid.load_sweep(path).runs
    assert sweep.main([str(path), *SLURM, "--wait"]) == 1
    out = capsys.readouterr().out
    assert f"done {good.name}" in out and f"failed {bad.name} (job {job_of(bad)}); log {bad.log}" in out
    assert "1 of 2 runs finished, 1 failed, 0 unfinished" in out
    assert (f"failed {bad.name} (exit code 2); log {bad.log}: experiments.py: error: --noisy-holdout 250 needs "
            f"that many training images outside the --numsamples subset, but 236 are left") in out
    assert "fix the cause, then rerun with --retry-failed" in out
    assert jobs.run_state(bad, set()) == jobs.FAILED


def test_ctrl_c_on_wait_cancels_the_array_and_says_what_is_kept(cluster, tmp_path, synthetic_cifar10):
    path = write_sweep(tmp_path, synthetic_cifar10, INTERRUPTED.replace("0.05", "[0.05, 0.1]"),
                       **{**SLOW_EPOCHS, "epochs": 20})
    runs = grid.load_sweep(path).runs
    process = slurm_sweep(path)
    wait_until(lambda: any(epochs(run) >= 1 for run in runs), "a first epoch")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 130, out + err
    assert "cancelling the 2 jobs that have not ended, and waiting until they have" in err
    assert not jobs.active_cluster_jobs()  # every job of the array has ended
    kept = [f"  {run.name}: {epochs(run)} of 20 epochs are saved" for run in runs]
    assert "\nkept:\n" + "\n".join(kept) + "\n" in err and any(epochs(run) >= 1 for run in runs)
    assert f"continue with: python sweep.py {path}" in err
    assert all(jobs.run_state(run, set()) in (jobs.RESUME, jobs.NEW) for run in runs)


def test_a_resumed_run_removes_the_temporary_files_of_its_killed_writes_and_no_others(
        tmp_path, synthetic_cifar10, monkeypatch):
    argv = run_args(synthetic_cifar10, tmp_path)
    paths = run_files(command_line.parse(argv))
    interrupt_at_epoch(monkeypatch, 1)
    assert experiments.main(argv) == 130
    monkeypatch.undo()
    for path in (paths.record, paths.checkpoint):
        assert killed_mid_write(path).exists()
    others = [tmp_path / "results" / f".t_cnn_2_0.5.csv.{'0' * 16}.tmp",  # another run's
              paths.checkpoint.with_name(f".{paths.checkpoint.name}.old.{'0' * 16}.tmp")]  # another file's
    for other in others:
        other.write_bytes(b"not ours")

    assert experiments.main([*argv, "--resume"]) == 0
    assert records.read_record(paths.record).meta["status"]["finished"]
    temporaries = sorted(tmp_path.rglob("*.tmp"))
    assert temporaries == sorted(others)


def killed_mid_write(path: Path) -> Path:
    """SIGKILL a process in the middle of its atomic write of `path`; returns the temporary file left."""
    before = set(path.parent.iterdir())
    writer = ("import sys, time\nfrom runner import safe_files\n"
              "def write(f):\n    f.write(b'partial'); f.flush(); print('writing', flush=True); time.sleep(600)\n"
              f"safe_files.atomic_write({str(path)!r}, write)\n")
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "writing\n"
    process.kill()
    process.wait()
    left, = set(path.parent.iterdir()) - before
    return left
