"""A grid point as a job: what is on disk for it, the experiments.py process that runs it, its log,
the markers next to the log, and the lines that report it. Shared by the local runner (`sweep.py`)
and the cluster jobs (`runner.sweeps.slurm`).
"""
from __future__ import annotations

import argparse
import ctypes
import csv
import getpass
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from runner import command_line
from runner import config
from runner import records
from runner import safe_files
from runner.errors import DIVERGED, INTERRUPTED, UsageError
from runner.run_files import run_files
from runner.sweeps.grid import GridPoint, SweepError

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments.py"
FINISHED, QUEUED, RUNNING, FAILED, RESUME, NEW = "finished", "queued", "running", "failed", "resume", "new"
# How Slurm names a job that has ended. squeue names a job that has not by its state (PENDING,
# RUNNING, ...) or by a flag that outranks it (COMPLETING, REQUEUED, ...).
ENDED_JOB_STATES = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                              "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"})


# --------------------------------------------------------------------------------------------------
# What is on disk


def same_settings(meta: dict, args: argparse.Namespace) -> bool:
    """Whether a record was made with the run-defining settings of the command line `args`.

    The record keeps the command line that started its run, read here with today's flags. A record
    written before command lines were kept has only its resolved settings; there a setting the
    command line leaves to the run (None: the class count of an image folder, the memory layout)
    matches whatever the run resolved.
    """
    wanted = config.run_defining(vars(args))
    if meta.get("command"):
        try:
            recorded = command_line.parse(meta["command"])
        except UsageError:
            return False
        return config.run_defining(vars(recorded)) == wanted
    resolved = meta.get("args", {})
    return all(value is None or resolved.get(key, config.FLAGS[key].default) == value
               for key, value in wanted.items())


def readable_header(meta: dict) -> bool:
    """Whether the header sections a sweep reads (status, command, args) hold what `experiments.py`
    writes there; a record with an edited or damaged header counts as holding no epochs."""
    status, command = meta.get("status", {}), meta.get("command")
    command_words = command is None or isinstance(command, list) and all(isinstance(w, str) for w in command)
    return (isinstance(status, dict) and isinstance(meta.get("args", {}), dict)
            and type(status.get("epochs_completed", 0)) is int and command_words)


def recorded_state(point: GridPoint) -> tuple[bool, int]:
    """Whether the point's record shows it finished with the sweep's settings, and its epoch count."""
    try:
        meta = records.read_record(point.record).meta
    except (OSError, ValueError, csv.Error):
        return False, 0
    if not readable_header(meta):
        return False, 0
    status = meta.get("status", {})
    return bool(status.get("finished")) and same_settings(meta, point.args), status.get("epochs_completed", 0)


def lock_holder(point: GridPoint) -> str | None:
    """The process that holds a lock of the point's run (an earlier sweep's run still training, say)."""
    locks = run_files(point.args).locks
    return next((holder for holder in map(safe_files.lock_holder, locks) if holder), None)


def run_state(point: GridPoint, active_jobs: set[str]) -> str:
    """finished, queued (on the cluster), running (in a process that holds its lock), failed
    (before), resume (has saved epochs) or new."""
    if recorded_state(point)[0]:
        return FINISHED
    job = point.marker("job")
    if job.exists() and job.read_text().strip() in active_jobs:
        return QUEUED
    if lock_holder(point):
        return RUNNING
    if point.marker("failed").exists():
        return FAILED
    if point.record.exists() or point.checkpoint.exists():
        return RESUME
    return NEW


def squeue(*options: str) -> dict[str, str]:
    """This user's Slurm jobs that squeue lists with `options` (by default those not ended), by id,
    array tasks one by one, with their states; none where Slurm is not installed.

    Raises SweepError if squeue fails: a run whose job cannot be seen might be started twice.
    """
    command = ["squeue", "--noheader", "--array", "--user", getpass.getuser(), "--format=%i %T", *options]
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return {}
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SweepError(f"cannot ask Slurm which jobs are queued ({error})") from None
    if listing.returncode != 0:
        said = listing.stderr.strip().splitlines() or [f"exit code {listing.returncode}"]
        raise SweepError(f"cannot ask Slurm which jobs are queued ({said[-1]})")
    return dict(line.split(maxsplit=1) for line in listing.stdout.splitlines() if line.strip())


def active_cluster_jobs() -> set[str]:
    """Ids of this user's Slurm jobs that have not ended (array tasks one by one); none without Slurm."""
    return set(squeue())


def describe(point: GridPoint, state: str) -> str:
    """A point's state in a few words, for listings."""
    if state == RESUME:
        return f"resume after {recorded_state(point)[1]}/{point.args.epochs}"
    if state == QUEUED:
        return f"queued (job {point.marker('job').read_text().strip()})"
    if state == RUNNING:
        return f"running (process {lock_holder(point)})"
    return state


def last_line(path: Path) -> str:
    """The last non-empty line of a log file, which usually says why a run stopped."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------------
# One grid point, as a process


def command(point: GridPoint) -> list[str]:
    """The command that runs, or continues, a grid point's run: with --resume where it has a
    checkpoint (without one, --resume would stop at the checkpoints of the grid points that share
    its --filename and differ only in epochs or learning rate)."""
    return [sys.executable, str(EXPERIMENTS), *point.argv, *(["--resume"] if point.checkpoint.exists() else [])]


def start_process(point: GridPoint, cwd: str | Path, env: dict[str, str],
                  own_session: bool = True) -> subprocess.Popen:
    """Start a run, appending its output to its log file. A failure noted by an earlier attempt no
    longer holds.

    Here the run gets its own session, so that a terminal's Ctrl-C reaches only the sweep, which then
    stops its runs, and gets SIGTERM from the kernel when the sweep ends however it ends (a SIGKILL
    too), so that it never outlives it; in a cluster job it stays in the job's, where the scheduler
    signals it directly.
    """
    point.log.parent.mkdir(parents=True, exist_ok=True)
    point.marker("failed").unlink(missing_ok=True)
    with open(point.log, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command(point))}\n")
        log.flush()
        return subprocess.Popen(command(point), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                start_new_session=own_session,
                                preexec_fn=stopped_with(os.getpid()) if own_session else None)


def stopped_with(parent: int) -> Callable[[], None] | None:
    """What a child runs before it starts, on Linux: have the kernel send it SIGTERM when `parent`,
    the process starting it, ends (`PR_SET_PDEATHSIG`), and stop at once where it has ended already."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None).prctl  # looked up here: the child only calls it

    def ask_kernel() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(INTERRUPTED)
    return ask_kernel


def record_outcome(point: GridPoint, returncode: int) -> str:
    """Mark a point whose process failed; returns done, interrupted or failed.

    A run ended by SIGTERM or SIGINT itself was stopped, not failed: a scheduler may send a second
    SIGTERM while the run, stopped by the first, is ending (with its completed epochs saved).
    """
    if returncode == 0:
        return "done"
    if returncode in (INTERRUPTED, -signal.SIGTERM, -signal.SIGINT):
        return "interrupted"
    if returncode == DIVERGED:
        return mark_failed(point, "diverged: a loss became non-finite; try a lower lr")
    return mark_failed(point, f"exit code {returncode}")


def mark_failed(point: GridPoint, reason: str) -> str:
    """Note why a run failed next to its log, so later invocations list it and leave it alone."""
    point.marker("failed").write_text(f"{reason}\n")
    return "failed"


def threads_env(threads: int) -> dict[str, str]:
    """CPU threads for a run, unless the user chose them with OMP_NUM_THREADS."""
    return {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(max(1, threads))}


class Progress:
    """Prints one line per run that ends, counting over the whole grid."""

    def __init__(self, total: int, finished: int):
        self.total, self.finished = total, finished
        self.why_stopped: dict[str, str] = {}  # by run name: how the job of a stopped run ended

    def report(self, point: GridPoint, outcome: str, note: str) -> None:
        """A run ended: done, failed or interrupted; `note` says how long it took or which job ran it."""
        detail = f" ({note})" if note else ""
        if outcome == "interrupted":
            print(f"        stopped {point.name}{detail}; {epochs_saved(point)}", flush=True)
            return
        self.finished += 1
        log = f"; log {point.log}" if outcome == "failed" else ""
        print(f"[{self.finished}/{self.total}] {outcome} {point.name}{detail}{log}", flush=True)


def epochs_saved(point: GridPoint) -> str:
    """How much of a run is on disk, in words."""
    return f"{recorded_state(point)[1]} of {point.args.epochs} epochs are saved"
