"""A sweep's runs as a Slurm job array, through submitit.

Each job runs one grid point with --resume. Before a job's time limit Slurm sends it submitit's
warning signal (USR2); submitit then calls `ClusterRun.checkpoint`, which stops the run, and requeues
the job, which continues the run from its last saved epoch. A job cancelled, preempted or killed at
its limit without warning leaves the run's completed epochs on disk, and the next invocation of the
sweep resumes it. Jobs unpickle `ClusterRun` from this module, found through the PYTHONPATH their
setup exports.

Which jobs have ended is asked of squeue, which every Slurm has; submitit asks sacct, which needs
the cluster's accounting database.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from runner.sweeps.grid import GridPoint, Sweep, SweepError
from runner.sweeps.jobs import (ENDED_JOB_STATES, Progress, epochs_saved, mark_failed, record_outcome, recorded_state,
                        squeue, start_process, threads_env)

if TYPE_CHECKING:
    import submitit

ROOT = Path(__file__).resolve().parents[2]
QUEUE_POLL_SECONDS = 5.0  # between two looks at the queue, which a cluster's users share
RUN_POLL_SECONDS = 0.5  # between two looks, in a job, at its run's process


@dataclass
class ClusterRun:
    """What one cluster job runs: a grid point's run with --resume, logged and marked like a local one."""

    point: GridPoint
    cwd: str
    threads: int
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __call__(self) -> str:
        """Run the point to its end. The run starts with submitit's warning signal blocked, since
        Slurm sends it to every process of the job: `checkpoint` stops the run instead, the way
        Ctrl-C does. A warning that arrives meanwhile is handled once the run is known here."""
        import submitit

        with signals_blocked({signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]}):
            self.process = start_process(self.point, self.cwd, threads_env(self.threads), own_session=False)
        try:
            while self.process.poll() is None:
                time.sleep(RUN_POLL_SECONDS)
        finally:
            self.stop_run()  # when this process is interrupted itself
        return record_outcome(self.point, self.process.returncode)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on the warning signal: stop the run, then have the requeued job run
        this grid point again, which continues from the last saved epoch."""
        import submitit

        self.stop_run()
        return submitit.helpers.DelayedSubmission(ClusterRun(self.point, self.cwd, self.threads))

    def stop_run(self) -> None:
        """SIGTERM the run, which stops keeping its completed epochs, and wait until it has ended.

        Reaped with os.waitpid, not Popen.wait: this runs in a signal handler, which may have
        interrupted a Popen.poll that holds the lock Popen.wait takes.
        """
        if self.process is None or self.process.returncode is not None:
            return
        try:
            os.kill(self.process.pid, signal.SIGTERM)
            _, status = os.waitpid(self.process.pid, 0)
        except (ProcessLookupError, ChildProcessError):  # the interrupted poll has reaped it
            return
        self.process.returncode = os.waitstatus_to_exitcode(status)


@contextmanager
def signals_blocked(signals: set[signal.Signals]) -> Iterator[None]:
    """Block the signals during the block, and in the programs started in it, which keep them blocked
    for good; those that arrive here meanwhile are delivered after the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def executor_for(sweep: Sweep, options: argparse.Namespace) -> submitit.AutoExecutor:
    """A submitit executor for the job array, with the resources each run gets.

    submitit requeues a job at its time limit at most as often as the longest run has epochs: enough
    wherever a job completes an epoch at least.
    """
    try:
        import submitit
    except ImportError:
        raise SweepError("--slurm needs submitit: pip install -r requirements-slurm.txt") from None
    # Jobs unpickle ClusterRun from this module, so they must find it.
    setup = [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    requeues = max(run.args.epochs for run in sweep.runs)
    try:
        executor = submitit.AutoExecutor(folder=sweep.log_dir / "submitit", cluster=options.cluster,
                                         slurm_max_num_timeout=requeues)
    except RuntimeError as error:  # no Slurm here
        raise SweepError(f"cannot submit to {options.cluster}: {error}") from None
    check_one_gpu_request(options)
    parameters = {"name": sweep.name, "timeout_min": options.time, "cpus_per_task": options.cpus_per_run,
                  "slurm_setup": setup, "local_setup": setup, "slurm_array_parallelism": options.max_parallel,
                  "slurm_additional_parameters": dict(options.slurm_option),
                  **gpu_request(options.gpus_per_run, options.gpu_request)}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor


def gpu_request(gpus: int, form: str) -> dict:
    """The executor parameters that ask Slurm for `gpus` GPUs per job, in the sbatch form chosen:
    `--gpus-per-node=N` or `--gres=gpu:N`; none for a job without GPUs."""
    if gpus == 0:
        return {}
    return {"gpus_per_node": gpus} if form == "gpus-per-node" else {"slurm_gres": f"gpu:{gpus}"}


def check_one_gpu_request(options: argparse.Namespace) -> None:
    """Refuse a GPU request among the extra sbatch options, which would ask for GPUs a second time."""
    for key, value in options.slurm_option:
        if key in ("gpus", "gpus-per-node", "gpus-per-task") or (key == "gres" and "gpu" in value):
            raise SweepError(f"--slurm-option {key}={value} asks for GPUs, which --gpus-per-run does; use "
                             f"--gpus-per-run N with --gpu-request gres (--gres=gpu:N) or gpus-per-node instead")


def submit(executor: submitit.AutoExecutor, sweep: Sweep, runs: list[GridPoint],
           options: argparse.Namespace) -> list[submitit.Job]:
    """Submit the runs as one job array. On Slurm, note each run's job id next to its log, by which
    later invocations find the job in the queue; submitit's local executors run jobs on this machine."""
    with executor.batch():
        jobs = [executor.submit(ClusterRun(run, os.getcwd(), options.cpus_per_run)) for run in runs]
    for run, job in zip(runs, jobs, strict=True):
        if options.cluster == "slurm":
            run.marker("job").write_text(f"{job.job_id}\n")
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted {len(jobs)} runs as job array {array} (at most {options.max_parallel} at once); "
          f"logs in {sweep.log_dir}", flush=True)
    return jobs


# --------------------------------------------------------------------------------------------------
# Watching the jobs (--wait)


def watch(runs: list[GridPoint], jobs: list[submitit.Job], progress: Progress) -> bool:
    """Report the jobs as they end; Ctrl-C cancels the rest. Returns False if interrupted."""
    pending = {job.job_id: (run, job) for run, job in zip(runs, jobs, strict=True)}
    try:
        while pending:
            time.sleep(QUEUE_POLL_SECONDS)
            for job_id, state in ended_jobs([job for _, job in pending.values()]).items():
                run, job = pending.pop(job_id)
                outcome, note = job_outcome(run, job), f"job {job_id}"
                if outcome == "interrupted":
                    note = progress.why_stopped[run.name] = f"job {job_id} {state}"
                progress.report(run, outcome, note)
        return True
    except KeyboardInterrupt:
        cancel([job for _, job in pending.values()])
        report_kept(runs)
        return False


def ended_jobs(jobs: list[submitit.Job]) -> dict[str, str]:
    """The jobs that have ended, by id, with Slurm's word for how (COMPLETED, CANCELLED, TIMEOUT, ...;
    "ended" where there is none). A Slurm job that squeue no longer lists ended long ago; a job of
    submitit's local executor knows itself. A failed look at the queue reports nothing."""
    import submitit

    if not any(isinstance(job, submitit.SlurmJob) for job in jobs):
        return {job.job_id: "ended" for job in jobs if job.done()}
    try:
        listed = squeue("--states=all")
    except SweepError as error:
        print(f"note: {error}; looking again in {QUEUE_POLL_SECONDS:.0f} s", file=sys.stderr, flush=True)
        return {}
    states = {job.job_id: listed.get(job.job_id) for job in jobs}
    return {job_id: state or "ended" for job_id, state in states.items()
            if state is None or state in ENDED_JOB_STATES}


def job_outcome(run: GridPoint, job: submitit.Job) -> str:
    """What an ended job's run came to: done; failed, as the job noted or as its Python error says;
    else interrupted (cancelled, preempted, killed at its time limit), its completed epochs saved."""
    if recorded_state(run)[0]:
        return "done"
    if run.marker("failed").exists():
        return "failed"
    error = job_error(job)
    if error:
        return mark_failed(run, f"job {job.job_id} ended with {error}")
    return "interrupted"


def job_error(job: submitit.Job) -> str | None:
    """The last line of the traceback that ended the job's Python process (which submitit keeps in
    the job's result file), or None if it ended otherwise."""
    try:
        with open(job.paths.result_pickle, "rb") as f:
            outcome, value = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return None
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[-1] if outcome == "error" and lines else None


def cancel(jobs: list[submitit.Job]) -> None:
    """Cancel the jobs and wait until they have ended: their runs stop on Slurm's SIGTERM, keeping
    their completed epochs. A second Ctrl-C stops cancelling and waiting."""
    print(f"\ncancelling the {len(jobs)} jobs that have not ended, and waiting until they have ...",
          file=sys.stderr, flush=True)
    try:
        for job in jobs:
            job.cancel(check=False)
        while len(ended_jobs(jobs)) < len(jobs):
            time.sleep(QUEUE_POLL_SECONDS)
    except KeyboardInterrupt:
        print("interrupted again: some jobs may not have ended; see them with: squeue --me", file=sys.stderr)


def report_kept(runs: list[GridPoint]) -> None:
    """What each run of the array has on disk."""
    print("kept:", file=sys.stderr)
    for run in runs:
        kept = "finished" if recorded_state(run)[0] else epochs_saved(run)
        print(f"  {run.name}: {kept}", file=sys.stderr)
