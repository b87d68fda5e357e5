"""A sweep's runs as a Slurm job array, through submitit.

Each job runs one grid point with --resume. submitit calls `ClusterRun.checkpoint` shortly before a
job's time limit (its USR2 warning) and requeues the job, which then continues the run from its last
saved epoch. Jobs unpickle `ClusterRun` from this module, found through the PYTHONPATH their setup
exports.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from grid import GridPoint, Sweep, SweepError
from sweep_jobs import Progress, mark_failed, record_outcome, start_process, threads_env

ROOT = Path(__file__).resolve().parent
POLL_SECONDS = 0.2


@dataclass
class ClusterRun:
    """What one cluster job runs: a grid point's run with --resume, logged and marked like a local one.

    submitit calls `checkpoint` shortly before the job's time limit and requeues the job, which then
    continues the run from its last saved epoch.
    """

    point: GridPoint
    cwd: str
    threads: int

    def __call__(self) -> str:
        process = start_process(self.point, self.cwd, threads_env(self.threads))
        return record_outcome(self.point, process.wait())

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def executor_for(sweep: Sweep, options: argparse.Namespace):
    """A submitit executor for the job array, with the resources each run gets."""
    try:
        import submitit
    except ImportError:
        raise SweepError("--slurm needs submitit: pip install -r requirements-slurm.txt") from None
    # Jobs unpickle ClusterRun from this module, so they must find it.
    setup = [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    try:
        executor = submitit.AutoExecutor(folder=sweep.log_dir / "submitit", cluster=options.cluster)
    except RuntimeError as error:  # no Slurm here
        raise SweepError(f"cannot submit to {options.cluster}: {error}") from None
    parameters = {"name": sweep.name, "timeout_min": options.time, "gpus_per_node": options.gpus_per_run,
                  "cpus_per_task": options.cpus_per_run, "slurm_setup": setup, "local_setup": setup,
                  "slurm_array_parallelism": options.max_parallel,
                  "slurm_additional_parameters": dict(options.slurm_option)}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor


def submit(executor, sweep: Sweep, runs: list[GridPoint], options: argparse.Namespace) -> list:
    """Submit the runs as one job array and note each run's job id next to its log."""
    with executor.batch():
        jobs = [executor.submit(ClusterRun(run, os.getcwd(), options.cpus_per_run)) for run in runs]
    for run, job in zip(runs, jobs, strict=True):
        run.marker("job").write_text(f"{job.job_id}\n")
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted {len(jobs)} runs as job array {array} (at most {options.max_parallel} at once); "
          f"logs in {sweep.log_dir}", flush=True)
    return jobs


def watch(runs: list[GridPoint], jobs: list, progress: Progress) -> bool:
    """Report cluster jobs as they end; Ctrl-C cancels the rest. Returns False if interrupted."""
    pending = list(zip(runs, jobs, strict=True))
    try:
        while pending:
            time.sleep(POLL_SECONDS)
            still_running = []
            for run, job in pending:
                if job.done():
                    progress.report(run, job_outcome(run, job))
                else:
                    still_running.append((run, job))
            pending = still_running
        return True
    except KeyboardInterrupt:
        print(f"\ncancelling {len(pending)} jobs (their runs keep their completed epochs) ...",
              file=sys.stderr)
        for _, job in pending:
            job.cancel(check=False)
        return False


def job_outcome(run: GridPoint, job) -> str:
    """What a finished cluster job's run came to; a job that died on its own counts as failed."""
    try:
        return job.result()
    except Exception as error:  # submitit re-raises whatever ended the job
        return mark_failed(run, f"job {job.job_id} ended: {str(error).splitlines()[0]}")


# --------------------------------------------------------------------------------------------------
