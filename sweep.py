"""Run a grid of experiments.py runs described by a sweep file, on this machine or on a Slurm cluster.

    python sweep.py sweeps/smoke.toml --jobs 2
    python sweep.py sweeps/paper_cifar10.toml --slurm --partition gpu --time 12:00:00 --max-parallel 32

A sweep file (TOML) names the grid: `[sweep]` says where its files go, `[fixed]` holds the arguments
every run shares, `[grid]` the axes whose every combination is one run, and arrays of tables under
`[grid]` (`[[grid.<group>]]`) groups of cases, of which every run takes one (an optimizer with its own
learning rates, say). Every run with a checkpoint is started with `--resume`, so invoking the same sweep again skips
finished runs, continues interrupted ones from their checkpoints and starts the rest. Runs that fail
are listed with their log files and are retried only with `--retry-failed`.

Reading and expanding the sweep file is `runner.sweeps.grid`; a grid point as a process, its log and
its state on disk `runner.sweeps.jobs`; the Slurm job array `runner.sweeps.slurm`. This file runs the grid here and is the
command line.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from runner import command_line
import datasets
from runner import safe_files
from runner.sweeps import slurm
from runner.sweeps.gpus import mps_daemon, runs_at_once
from runner.errors import INTERRUPTED, UsageError
from runner.sweeps.grid import GridPoint, Sweep, SweepError, load_sweep
from runner.interrupts import one_line_errors
from runner.sweeps.jobs import (FAILED, FINISHED, NEW, QUEUED, RESUME, RUNNING, Progress, active_cluster_jobs,
                                describe, epochs_saved, last_line, record_outcome, run_state, start_process,
                                threads_env)

POLL_SECONDS = 0.2
LOCK_HELD = "another sweep.py is working on this sweep ({error}); wait for it or stop it first"
NOT_STARTED = "interrupted before any run started"


# --------------------------------------------------------------------------------------------------
# Local execution


@dataclass
class LocalJob:
    """A run in progress on this machine, and the GPU it was given."""

    run: GridPoint
    process: subprocess.Popen
    gpu: str | None
    started: float = field(default_factory=time.monotonic)


def visible_gpus() -> list[str]:
    """The GPUs runs are spread over: those CUDA_VISIBLE_DEVICES names, else all CUDA devices."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        names = [name.strip() for name in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return [name for name in names if name and name != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def pick_gpu(run: GridPoint, gpus: list[str], active: list[LocalJob]) -> str | None:
    """The least busy GPU for a run that lets experiments.py choose its CUDA device; else None."""
    if not gpus or run.args.device not in ("auto", "cuda"):
        return None
    return min(gpus, key=lambda gpu: sum(job.gpu == gpu for job in active))


def run_locally(runs: list[GridPoint], jobs: int, progress: Progress, extra_env: dict[str, str] | None = None) -> bool:
    """Run `jobs` runs at a time over the visible GPUs, each with `extra_env` in its environment;
    returns False if Ctrl-C stopped the grid."""
    waiting, active, gpus = deque(runs), [], visible_gpus()
    threads = (os.cpu_count() or 1) // jobs
    try:
        while waiting or active:
            while waiting and len(active) < jobs:
                run = waiting.popleft()
                gpu = pick_gpu(run, gpus, active)
                env = threads_env(threads) | (extra_env or {}) | ({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})
                active.append(LocalJob(run, start_process(run, Path.cwd(), env), gpu))
            time.sleep(POLL_SECONDS)
            ended = [job for job in active if job.process.poll() is not None]
            active = [job for job in active if job.process.returncode is None]
            for job in ended:
                outcome = record_outcome(job.run, job.process.returncode)
                progress.report(job.run, outcome, f"{time.monotonic() - job.started:.0f} s")
        return True
    except KeyboardInterrupt:
        stop_processes([job.process for job in active])
        return False


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM every run, so it saves its last complete epoch, and wait; a second Ctrl-C kills them."""
    print(f"\nstopping {len(processes)} running runs (they keep their completed epochs) ...", file=sys.stderr)
    for process in processes:
        process.terminate()
    try:
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        for process in processes:
            process.kill()
            process.wait()


def ensure_data(runs: list[GridPoint]) -> None:
    """Load (and so download, once, if missing) every data set the runs read, before they start."""
    for data_dir, dataset in dict.fromkeys((run.args.data_dir, run.args.dataset) for run in runs):
        try:
            datasets.load_dataset(data_dir, dataset)
        except datasets.DataError as error:
            raise SweepError(str(error)) from None


# --------------------------------------------------------------------------------------------------
# Command line


def minutes(text: str) -> int:
    """An argparse type: a time limit in minutes, or as H:MM:SS."""
    parts = text.split(":")
    if not (len(parts) in (1, 3) and all(part.isdigit() for part in parts)):
        raise argparse.ArgumentTypeError(f"give minutes or H:MM:SS, got {text}")
    if len(parts) == 1:
        total = int(text)
    else:
        hours, mins, seconds = map(int, parts)
        total = hours * 60 + mins + (seconds > 0)
    if total < 1:
        raise argparse.ArgumentTypeError(f"must be at least a minute, got {text}")
    return total


def key_value(text: str) -> tuple[str, str]:
    """An argparse type: KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not (sep and key):
        raise argparse.ArgumentTypeError(f"give KEY=VALUE, got {text}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """Options for running a sweep here (the default) or on Slurm."""
    p = command_line.OneLineParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                  formatter_class=command_line.DefaultsHelpFormatter)
    p.add_argument("sweep_file", help="the sweep file (TOML), e.g. sweeps/smoke.toml")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time on this machine, spread over the visible GPUs (default: --runs-per-gpu "
                        "on each visible GPU; 1 without GPUs)")
    p.add_argument("--runs-per-gpu", type=int, default=None,
                   help="runs at a time on each visible GPU (default 1)")
    p.add_argument("--mps", action="store_true",
                   help="start a CUDA MPS daemon for the sweep, so that runs sharing a GPU compute side by side")
    p.add_argument("--dry-run", action="store_true",
                   help="list every run, its state and its command; start nothing")
    p.add_argument("--retry-failed", action="store_true", help="run the runs that failed before again")
    slurm = p.add_argument_group("Slurm (needs submitit: pip install -r requirements-slurm.txt)")
    slurm.add_argument("--slurm", action="store_true", help="submit the runs as a Slurm job array")
    slurm.add_argument("--time", type=minutes, help="time limit of one job, minutes or H:MM:SS (required); "
                                                    "a run that needs longer is requeued and continues")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--max-parallel", type=int, default=16, help="jobs of the array running at once")
    slurm.add_argument("--gpus-per-run", type=int, default=1, help="GPUs of each job (0: CPU only, no GPU request)")
    slurm.add_argument("--gpu-request", choices=["gpus-per-node", "gres"], default="gpus-per-node",
                       help="how the job asks for its GPUs: --gpus-per-node=N or --gres=gpu:N")
    slurm.add_argument("--cpus-per-run", type=int, default=8,
                       help="CPU cores of each job, and the torch threads of its run")
    slurm.add_argument("--slurm-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="another sbatch option, e.g. account=myproject; repeat for more")
    slurm.add_argument("--wait", action="store_true",
                       help="report the jobs as they end; Ctrl-C then cancels them")
    slurm.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                       help="submitit executor; local and debug run the job array on this machine")
    return p


def parse_options(argv: list[str]) -> argparse.Namespace:
    """The command line, checked: counts in range and Slurm options only with --slurm."""
    parser = build_parser()
    options = parser.parse_args(argv)
    for name, least in [("jobs", 1), ("runs_per_gpu", 1), ("max_parallel", 1), ("gpus_per_run", 0),
                        ("cpus_per_run", 1)]:
        value = getattr(options, name)
        if value is not None and value < least:
            raise SweepError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    cluster_options = ["time", "partition", "max_parallel", "gpus_per_run", "gpu_request", "cpus_per_run",
                       "slurm_option", "wait", "cluster"]
    given = [name for name in cluster_options if getattr(options, name) != parser.get_default(name)]
    if not options.slurm and given:
        raise SweepError(f"--{given[0].replace('_', '-')} applies to --slurm only")
    local = [name for name in ("jobs", "runs_per_gpu", "mps") if getattr(options, name) not in (None, False)]
    if options.slurm and local:
        raise SweepError(f"--{local[0].replace('_', '-')} applies to local runs; with --slurm, --max-parallel "
                         f"caps the running jobs")
    if options.slurm and options.time is None and not options.dry_run:
        raise SweepError("--slurm needs --time, the time limit of one job (minutes or H:MM:SS)")
    return options


def current_states(sweep: Sweep) -> dict[str, str]:
    """Every run's state, by run name."""
    has_jobs = any(run.marker("job").exists() for run in sweep.runs)
    active = active_cluster_jobs() if has_jobs else set()
    return {run.name: run_state(run, active) for run in sweep.runs}


def plan_line(sweep: Sweep, states: dict[str, str]) -> str:
    """How many runs are in each state."""
    count = Counter(states.values())
    parts = [f"{count[FINISHED]} finished", f"{count[RESUME]} to resume", f"{count[NEW]} to start",
             f"{count[FAILED]} failed before", f"{count[QUEUED]} queued on the cluster",
             f"{count[RUNNING]} running in another process"]
    return f"{sweep.path}: {len(states)} runs: " + ", ".join(p for p in parts if not p.startswith("0 "))


def list_runs(sweep: Sweep) -> int:
    """--dry-run: every run's state and command."""
    states = current_states(sweep)
    for run in sweep.runs:
        print(f"{describe(run, states[run.name]):<22} {run.name}")
        print(f"    python experiments.py {shlex.join(run.argv)}{' --resume' * run.checkpoint.exists()}")
    print(plan_line(sweep, states))
    return 0


def runs_to_start(sweep: Sweep, states: dict[str, str], retry_failed: bool) -> list[GridPoint]:
    """The runs to start or continue now."""
    wanted = {RESUME, NEW} | ({FAILED} if retry_failed else set())
    return [run for run in sweep.runs if states[run.name] in wanted]


def summarize(sweep: Sweep, why_stopped: dict[str, str]) -> int:
    """The final report: failed runs with their logs, unfinished ones with what they keep and, where
    known, why they stopped (`why_stopped`, by run name); exit code 0 only if every run finished."""
    states = current_states(sweep)
    failed = [run for run in sweep.runs if states[run.name] == FAILED]
    unfinished = [run for run in sweep.runs if states[run.name] in (RESUME, NEW, QUEUED, RUNNING)]
    finished = sum(state == FINISHED for state in states.values())
    if finished == len(sweep.runs):
        print(f"all {finished} runs finished; their records are in {sweep.results_dir}")
        return 0
    print(f"{finished} of {len(sweep.runs)} runs finished, {len(failed)} failed, {len(unfinished)} unfinished")
    for run in failed:
        reason = run.marker("failed").read_text().strip()
        print(f"  failed {run.name} ({reason}); log {run.log}: {last_line(run.log)}")
    for run in unfinished:
        why = f" ({why_stopped[run.name]})" if run.name in why_stopped else ""
        print(f"  unfinished {run.name}{why}: {unfinished_state(run, states[run.name])}")
    if failed:
        print("fix the cause, then rerun with --retry-failed")
    if any(states[run.name] not in (QUEUED, RUNNING) for run in unfinished):
        print("run the same command again to continue the unfinished runs")
    return 1


def unfinished_state(run: GridPoint, state: str) -> str:
    """Where an unfinished run stands, in words."""
    if state in (QUEUED, RUNNING):
        return describe(run, state)
    return epochs_saved(run)


def run_sweep(sweep: Sweep, options: argparse.Namespace, argv: list[str]) -> int:
    """Start or continue every unfinished run, here or on the cluster, and report."""
    states = current_states(sweep)
    print(plan_line(sweep, states), flush=True)
    todo = runs_to_start(sweep, states, options.retry_failed)
    progress = Progress(len(sweep.runs), sum(state == FINISHED for state in states.values()))
    if todo:
        executor = slurm.executor_for(sweep, options) if options.slurm else None
        ensure_data(todo)
        if executor is not None:
            jobs = slurm.submit(executor, sweep, todo, options)
            if not options.wait:
                print(f"see their progress with: python sweep.py {shlex.quote(str(sweep.path))} --dry-run")
                return 0
            completed = slurm.watch(todo, jobs, progress)
        else:
            gpus = visible_gpus()
            jobs = runs_at_once(options.jobs, options.runs_per_gpu, gpus)
            print(f"running {min(jobs, len(todo))} at a time on "
                  f"{'GPUs ' + ', '.join(gpus) if gpus else 'the CPU'}; logs in {sweep.log_dir}", flush=True)
            sharing = mps_daemon(sweep.log_dir / "mps", gpus) if options.mps else contextlib.nullcontext({})
            with sharing as extra_env:
                completed = run_locally(todo, jobs, progress, extra_env)
        if not completed:
            print(f"interrupted; continue with: python sweep.py {shlex.join(argv)}", file=sys.stderr)
            return INTERRUPTED
    return summarize(sweep, progress.why_stopped)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep the command line names; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with one_line_errors("sweep.py", (SweepError, UsageError), LOCK_HELD, NOT_STARTED) as outcome:
        options = parse_options(argv)
        sweep = load_sweep(options.sweep_file)
        if options.dry_run:
            return list_runs(sweep)
        with safe_files.exclusive_lock(sweep.log_dir / ".lock"):  # one invocation per sweep at a time
            return run_sweep(sweep, options, argv)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
