"""sweep.py: grid expansion, bad sweep files, local grids that resume and skip, failures, Ctrl-C, Slurm."""
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from runner import command_line
import experiments
from runner.sweeps import grid
from runner import records
from runner import safe_files
import sweep
from runner.sweeps import jobs
from conftest import ROOT, interrupt_at_epoch, start_in_background, start_in_foreground, write_sweep

GRID = """
[grid]
model = ["cnn", "resnet"]
scale = [0.125, 0.25]

[[grid.optimizers]]
optimizer = "sgd"
lr = [0.1, 0.01]

[[grid.optimizers]]
optimizer = "adam"
lr = 0.001
"""
TWO_RUNS = '[grid]\nmodel = "cnn"\nscale = 0.125\nlr = [0.1, 0.05]\n'


def test_grid_expands_to_every_combination_with_readable_unique_names(tmp_path, synthetic_cifar10):
    sweep_grid = grid.load_sweep(write_sweep(tmp_path, synthetic_cifar10, GRID))
    assert len(sweep_grid.runs) == 2 * 2 * 3
    names = [run.name for run in sweep_grid.runs]
    assert len(set(names)) == len(names)
    assert names[:3] == ["g_s0.125_sgd_cnn_2_0.1", "g_s0.125_sgd_cnn_2_0.01",
                         "g_s0.125_adam_cnn_2_0.001"]
    adam = sweep_grid.runs[2]
    assert adam.settings == {"data_dir": str(synthetic_cifar10), "epochs": 2, "numsamples": 64,
                             "batchsize": 32, "eval_batchsize": 100, "device": "cpu", "model": "cnn",
                             "scale": 0.125, "optimizer": "adam", "lr": 0.001}
    args = command_line.build_parser().parse_args(adam.argv)
    assert (args.model, args.scale, args.optimizer, args.lr, args.epochs) == ("cnn", 0.125, "adam", 0.001, 2)
    assert adam.record == tmp_path / "results" / "g_s0.125_adam_cnn_2_0.001.csv"
    assert adam.checkpoint == tmp_path / "checkpoints" / "g_s0.125_adam_cnn_2_0.001.pt"
    assert adam.log == tmp_path / "results" / "logs" / "g_s0.125_adam_cnn_2_0.001.log"


def test_shipped_sweep_files_expand(monkeypatch):
    monkeypatch.chdir(ROOT)
    smoke = grid.load_sweep("sweeps/smoke.toml")
    paper = grid.load_sweep("sweeps/paper_cifar10.toml")
    assert 2 <= len(smoke.runs) <= 6
    assert all(run.args.data_dir == "../shared/data" for run in smoke.runs)
    assert len(paper.runs) > 100
    assert {run.args.optimizer for run in paper.runs} == {"sgd", "adam"}
    assert {run.args.corruptprob for run in paper.runs} == {0.5}
    assert len({run.args.model for run in paper.runs}) >= 10
    assert len({run.args.scheduler for run in paper.runs}) >= 2


@pytest.mark.parametrize("grid, problem", [
    ('[grid]\nmodel = ["cnn", "nosuchnet"]', "[grid] model: argument --model: invalid choice: 'nosuchnet'"),
    ('[grid]\nmodel = "cnn"\nwidth = [1, 2]', "unknown axis or argument 'width' in [grid]"),
    ('[grid]\nmodel = "cnn"\nscale = [0.5, -1]', "[grid] scale: argument --scale: must be a positive number"),
    ('[grid]\nmodel = "cnn"\ncorruptprob = [0.5, 2]', "[grid] corruptprob: --corruptprob must be within"),
    ('[grid]\nmodel = "cnn"\noptimizer = ["sgd", "rmsprop"]', "[grid] optimizer: argument --optimizer"),
    ('[grid]\nmodel = "cnn"\nnumsamples = [true]', "[grid] numsamples: bad value true"),
    ('[grid]\nmodel = "cnn"\nlr = []', "[grid] lr has no values"),
    ('[grid]\nmodel = "cnn"\nlr = [0.1, 0.1]', "[grid] lr lists 0.1 twice"),
    ('[grid]\nmodel = "cnn"\nfilename = ["a", "b"]', "[grid] filename: the sweep sets it for every run"),
    ('[grid]\nmodel = "cnn"\nepochs = [1, 2]', "epochs is both in [fixed] and in [grid]"),
    ('[grid]\nmodel = "cnn"\n[[grid.a]]\nlr = 0.1\n[[grid.b]]\nlr = 0.2', "lr is set both in [[grid.a]]"),
    ('[grid]\nmodel = "cnn"\n[[grid.a]]\nlr = 0.1\n[[grid.a]]\nlr = 0.1', "two grid points are both run"),
    ('[grids]\nmodel = "cnn"', "unknown table [grids]"),
    ('[grid]\nmodel = ["cnn"', "is not valid TOML"),
])
@pytest.mark.e2e
def test_malformed_sweep_file_is_one_line_naming_the_problem(tmp_path, synthetic_cifar10, capsys, grid,
                                                             problem):
    path = write_sweep(tmp_path, synthetic_cifar10, grid)
    assert sweep.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and str(path) in err, err


@pytest.mark.e2e
def test_bad_command_line_is_one_line(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, GRID)
    for argv, problem in [([str(tmp_path / "none.toml")], "cannot read the sweep file"),
                          ([str(path), "--jobs", "0"], "--jobs must be at least 1"),
                          ([str(path), "--partition", "gpu"], "--partition applies to --slurm only"),
                          ([str(path), "--slurm"], "--slurm needs --time")]:
        assert sweep.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err, err


def test_switches_become_their_flags(tmp_path, synthetic_cifar10):
    assert grid.tokens("channels_last", True) == ["--channels-last"]
    assert grid.tokens("channels_last", False) == ["--no-channels-last"]
    assert grid.tokens("amp", True) == ["--amp"] and grid.tokens("amp", False) == []
    assert grid.tokens("noise_type", "asymmetric") == ["--noise-type", "asymmetric"]
    flags = grid.settable_flags()
    assert flags["channels_last"].is_switch and flags["amp"].is_switch and not flags["lr"].is_switch
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nchannels_last = [true, false]\n')
    on, off = grid.load_sweep(path).runs
    assert (on.args.channels_last, off.args.channels_last) == (True, False)
    assert (on.name, off.name) == ("g_channels-last_cnn_2_0.1", "g_no-channels-last_cnn_2_0.1")


@pytest.mark.e2e
@pytest.mark.parametrize("setting", ["channels_last = true\n", ""], ids=["channels-last-in-file", "default"])
def test_a_channels_last_record_counts_as_finished(tmp_path, synthetic_cifar10, setting):
    """Records written with "channels_last": true, by a sweep file that asks for it or by the CPU default."""
    path = write_sweep(tmp_path, synthetic_cifar10, setting + TWO_RUNS, epochs=1)
    runs = grid.load_sweep(path).runs
    for run in runs:
        assert experiments.main(run.argv) == 0
        assert records.read_record(run.record).meta["args"]["channels_last"] is True
    assert [jobs.run_state(run, set()) for run in runs] == [jobs.FINISHED] * 2


@pytest.mark.e2e
def test_a_record_older_than_an_argument_counts_as_run_with_its_default(tmp_path, synthetic_cifar10):
    """A record written before --noisy-holdout existed lacks it; it ran without a hold-out set. Such
    records also predate the command line in the record, so their resolved settings are compared."""
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS, epochs=1)
    run = grid.load_sweep(path).runs[0]
    assert experiments.main(run.argv) == 0
    record = records.read_record(run.record)
    del record.meta["command"], record.meta["args"]["noisy_holdout"]
    records.write_record(run.record, record)
    assert jobs.run_state(run, set()) == jobs.FINISHED
    record.meta["args"]["noisy_holdout"] = 10  # a value other than the default is another run
    records.write_record(run.record, record)
    assert jobs.run_state(run, set()) == jobs.RESUME


@pytest.mark.e2e
def test_a_record_whose_command_line_gives_other_settings_is_not_finished(tmp_path, synthetic_cifar10):
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS, epochs=1)
    run = grid.load_sweep(path).runs[0]
    assert experiments.main(run.argv) == 0
    assert jobs.run_state(run, set()) == jobs.FINISHED
    record = records.read_record(run.record)
    record.meta["command"] = [*record.meta["command"], "--corrupt-prob", "0.2"]
    records.write_record(run.record, record)
    assert jobs.run_state(run, set()) == jobs.RESUME
    record.meta["command"] = [*record.meta["command"][:-2], "--device", "cpu", "--eval-batch-size", "7"]
    records.write_record(run.record, record)
    assert jobs.run_state(run, set()) == jobs.FINISHED  # where and how fast only


@pytest.mark.e2e
def test_abbreviated_options_are_refused(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS)
    assert sweep.main([str(path), "--job", "2"]) == 2
    assert "unrecognized arguments: --job" in capsys.readouterr().err


def finished_rows(run: grid.GridPoint) -> list[dict]:
    record = records.read_record(run.record)
    assert record.meta["status"]["finished"], run.name
    return record.rows


@pytest.mark.e2e
def test_local_sweep_runs_in_parallel_resumes_the_interrupted_run_then_skips_all(
        tmp_path, synthetic_cifar10, monkeypatch, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nscale = 0.125\n'
                                                     'lr = [0.1, 0.05, 0.02]\n')
    runs = grid.load_sweep(path).runs
    interrupt_at_epoch(monkeypatch, 1)  # the second run stops after its first epoch, as on Ctrl-C
    assert experiments.main(runs[1].argv) == 130
    monkeypatch.undo()
    first_epoch = records.read_record(runs[1].record).rows

    assert sweep.main([str(path), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 runs: 1 to resume, 2 to start" in out and "running 2 at a time" in out
    assert all(f"] done {run.name}" in out for run in runs) and "[3/3]" in out
    assert all(len(finished_rows(run)) == 2 for run in runs)
    assert finished_rows(runs[1])[:1] == first_epoch  # wall time included: resumed, not restarted
    assert "resuming" in runs[1].log.read_text()

    logs = {run.name: run.log.read_text() for run in runs}
    assert sweep.main([str(path), "--jobs", "2"]) == 0
    assert "3 runs: 3 finished" in capsys.readouterr().out
    assert logs == {run.name: run.log.read_text() for run in runs}  # nothing started again


@pytest.mark.e2e
def test_failed_run_is_listed_with_its_log_and_retried_only_on_request(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS, epochs=1)
    failing = grid.load_sweep(path).runs[1]
    failing.record.parent.mkdir(parents=True)
    failing.record.write_text("not a record")  # experiments.py refuses to resume it without a checkpoint
    assert sweep.main([str(path), "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert f"failed {failing.name} (exit code 2); log {failing.log}:" in out and "--retry-failed" in out

    assert sweep.main([str(path)]) == 1
    assert "1 finished, 1 failed before" in capsys.readouterr().out
    assert failing.log.read_text().count("=== ") == 1  # left alone

    failing.record.unlink()
    assert sweep.main([str(path), "--retry-failed"]) == 0
    assert "all 2 runs finished" in capsys.readouterr().out
    assert failing.log.read_text().count("=== ") == 2


def test_a_run_ended_by_a_stop_signal_is_interrupted_and_one_killed_otherwise_failed(tmp_path, synthetic_cifar10):
    """A scheduler's second SIGTERM can end a run that the first one stopped; SIGKILL (the kernel's
    out-of-memory killer, say) and a crash are failures."""
    run = grid.load_sweep(write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS)).runs[0]
    run.log.parent.mkdir(parents=True)
    for returncode in (130, -signal.SIGTERM, -signal.SIGINT):
        assert jobs.record_outcome(run, returncode) == "interrupted"
        assert not run.marker("failed").exists()
    assert jobs.record_outcome(run, -signal.SIGKILL) == "failed"
    assert run.marker("failed").read_text() == f"exit code {-signal.SIGKILL}\n"


@pytest.mark.parametrize("start", [start_in_foreground, start_in_background],
                         ids=["ctrl-c", "sigint-to-a-background-job"])
@pytest.mark.e2e
def test_ctrl_c_stops_the_running_runs_keeping_their_epochs_for_a_rerun(tmp_path, synthetic_cifar10, start):
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS, epochs=500)
    runs = grid.load_sweep(path).runs
    process = start([sys.executable, str(ROOT / "sweep.py"), str(path), "--jobs", "2"])
    deadline = time.time() + 120
    while time.time() < deadline and not all(run.record.exists() for run in runs):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"continue with: python sweep.py {path} --jobs 2" in err
    for run in runs:
        status = records.read_record(run.record).meta["status"]
        assert 1 <= status["epochs_completed"] < 500 and not status["finished"]
        assert "interrupted" in run.log.read_text()
    assert all(jobs.run_state(run, set()) == jobs.RESUME for run in runs)


def fake_squeue(tmp_path: Path, monkeypatch, script: str) -> None:
    """Put an squeue that runs the shell `script` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/sh\n{script}")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.e2e
def test_runs_queued_on_slurm_are_not_started_again(tmp_path, synthetic_cifar10, monkeypatch, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nlr = [0.1, 0.05]\n')
    queued, stale = grid.load_sweep(path).runs
    queued.log.parent.mkdir(parents=True)
    queued.marker("job").write_text("4242_0\n")
    stale.marker("job").write_text("4141_1\n")
    fake_squeue(tmp_path, monkeypatch, "echo 4242_0 RUNNING\necho 4242_3 PENDING\n")
    sweep_grid = grid.load_sweep(path)
    assert sweep.main([str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("queued (job 4242_0)") and line.endswith(queued.name) for line in lines)
    assert any(line.startswith("new") and line.endswith(stale.name) for line in lines)
    assert lines[-1].endswith("2 runs: 1 to start, 1 queued on the cluster")
    assert [run.name for run in sweep.runs_to_start(sweep_grid, sweep.current_states(sweep_grid), True)] == [stale.name]


def test_a_sweep_that_cannot_see_the_queue_starts_nothing(tmp_path, synthetic_cifar10, monkeypatch, capsys):
    """A run whose job cannot be seen in the queue might be running: starting it again could run it twice."""
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS)
    run = grid.load_sweep(path).runs[0]
    run.log.parent.mkdir(parents=True)
    run.marker("job").write_text("4242_0\n")
    fake_squeue(tmp_path, monkeypatch, "echo 'squeue: error: Unable to contact slurm controller' >&2\nexit 1\n")
    assert sweep.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err == ("sweep.py: error: cannot ask Slurm which jobs are queued (squeue: error: Unable to contact "
                   "slurm controller)\n")
    assert not run.log.exists()


@pytest.mark.e2e
def test_slurm_path_runs_the_job_array_through_submitit(tmp_path, synthetic_cifar10, capsys):
    pytest.importorskip("submitit")
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS, epochs=1)
    runs = grid.load_sweep(path).runs
    argv = [str(path), "--slurm", "--cluster", "local", "--time", "10", "--gpus-per-run", "0",
            "--cpus-per-run", "1", "--max-parallel", "2", "--wait"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 runs as job array" in out and "all 2 runs finished" in out
    assert all(len(finished_rows(run)) == 1 and not run.marker("job").exists() for run in runs)
    assert sweep.main(argv) == 0
    assert "2 runs: 2 finished" in capsys.readouterr().out


@pytest.mark.e2e
def test_a_second_invocation_of_a_running_sweep_is_refused(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, TWO_RUNS, epochs=1)
    lock = grid.load_sweep(path).log_dir / ".lock"
    with safe_files.exclusive_lock(lock):
        assert sweep.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"another sweep.py is working on this sweep (process {os.getpid()} holds {lock})" in err
    assert err.count("\n") == 1 and not list((tmp_path / "results").glob("*.csv"))
