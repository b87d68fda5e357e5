"""A grid point as a job: what is on disk for it, the experiments.py process that runs it, its log,
the markers next to the log, and the lines that report it. Shared by the local runner (`sweep.py`)
and the cluster jobs (`slurm.py`).
"""
from __future__ import annotations

import argparse
import csv
import getpass
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import command_line
import config
import records
from command_line import DIVERGED, INTERRUPTED
from grid import GridPoint

EXPERIMENTS = Path(__file__).resolve().parent / "experiments.py"
FINISHED, QUEUED, FAILED, RESUME, NEW = "finished", "queued", "failed", "resume", "new"


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
        except command_line.UsageError:
            return False
        return config.run_defining(vars(recorded)) == wanted
    resolved = meta.get("args", {})
    return all(value is None or resolved.get(key, command_line.FLAGS[key].default) == value
               for key, value in wanted.items())


def recorded_state(point: GridPoint) -> tuple[bool, int]:
    """Whether the point's record shows it finished with the sweep's settings, and its epoch count."""
    try:
        meta = records.read_record(point.record).meta
    except (OSError, ValueError, csv.Error):
        return False, 0
    status = meta.get("status", {})
    return bool(status.get("finished")) and same_settings(meta, point.args), status.get("epochs_completed", 0)


def run_state(point: GridPoint, active_jobs: set[str]) -> str:
    """finished, queued (on the cluster), failed (before), resume (has saved epochs) or new."""
    if recorded_state(point)[0]:
        return FINISHED
    job = point.marker("job")
    if job.exists() and job.read_text().strip() in active_jobs:
        return QUEUED
    if point.marker("failed").exists():
        return FAILED
    if point.record.exists() or point.checkpoint.exists():
        return RESUME
    return NEW


def active_cluster_jobs() -> set[str]:
    """Ids of this user's pending and running Slurm jobs (array tasks one by one); none without Slurm."""
    try:
        listing = subprocess.run(["squeue", "--noheader", "--array", "--user", getpass.getuser(),
                                  "--format=%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(listing.stdout.split()) if listing.returncode == 0 else set()


def describe(point: GridPoint, state: str) -> str:
    """A point's state in a few words, for listings."""
    if state == RESUME:
        return f"resume after {recorded_state(point)[1]}/{point.args.epochs}"
    if state == QUEUED:
        return f"queued (job {point.marker('job').read_text().strip()})"
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
    """The command that runs, or continues, a grid point's run."""
    return [sys.executable, str(EXPERIMENTS), *point.argv, "--resume"]


def start_process(point: GridPoint, cwd: str | Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a run in its own session (so a terminal's Ctrl-C reaches only the sweep), appending
    its output to its log file. A failure noted by an earlier attempt no longer holds."""
    point.log.parent.mkdir(parents=True, exist_ok=True)
    point.marker("failed").unlink(missing_ok=True)
    with open(point.log, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command(point))}\n")
        log.flush()
        return subprocess.Popen(command(point), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                start_new_session=True)


def record_outcome(point: GridPoint, returncode: int) -> str:
    """Mark a point whose process failed; returns done, interrupted or failed."""
    if returncode == 0:
        return "done"
    if returncode == INTERRUPTED:
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

    def report(self, point: GridPoint, outcome: str, seconds: float | None = None) -> None:
        took = "" if seconds is None else f" ({seconds:.0f} s)"
        if outcome == "interrupted":
            print(f"        stopped {point.name}{took}; its completed epochs are saved", flush=True)
            return
        self.finished += 1
        detail = f"; log {point.log}" if outcome == "failed" else ""
        print(f"[{self.finished}/{self.total}] {outcome} {point.name}{took}{detail}", flush=True)
