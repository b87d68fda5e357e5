"""How a local sweep shares the visible GPUs: how many runs go at a time (a number on each GPU), and
the CUDA MPS daemon that lets the runs packed on one GPU compute side by side instead of in turns."""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runner.sweeps.grid import SweepError

MPS_CONTROL = "nvidia-cuda-mps-control"


def runs_at_once(jobs: int | None, runs_per_gpu: int | None, gpus: list[str]) -> int:
    """How many runs a local sweep runs at a time: `jobs` where given, else `runs_per_gpu` (default 1)
    on each visible GPU, else one on the CPU. Runs go to the least busy GPU, so K on each GPU is
    `runs_per_gpu` K."""
    if jobs is not None and runs_per_gpu is not None:
        raise SweepError("give --jobs N (N runs at a time) or --runs-per-gpu K (K on each visible GPU), not both")
    if runs_per_gpu is not None and not gpus:
        raise SweepError("--runs-per-gpu places runs on GPUs, and none is visible here; use --jobs N to run "
                         "N at a time on the CPU")
    if jobs is not None:
        return jobs
    return (runs_per_gpu or 1) * len(gpus) if gpus else 1


@contextmanager
def mps_daemon(folder: Path, gpus: list[str]) -> Iterator[dict[str, str]]:
    """Start a CUDA MPS control daemon of the sweep's own, its pipe and log folders under `folder`;
    yield the environment through which the runs reach it, and stop it when the block ends."""
    control = shutil.which(MPS_CONTROL)
    if not gpus:
        raise SweepError("--mps shares GPUs among runs, and none is visible here; leave --mps out")
    if control is None:
        raise SweepError(f"--mps needs {MPS_CONTROL}, which comes with the NVIDIA driver, on the PATH; "
                         f"add its folder to PATH or leave --mps out")
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    started = subprocess.run([control, "-d"], env=os.environ | env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True)
    if started.returncode != 0:
        said = (started.stderr or started.stdout).strip().splitlines()
        raise SweepError(f"{MPS_CONTROL} -d could not start the MPS daemon ({said[-1] if said else f'exit code {started.returncode}'}); "
                         f"see {env['CUDA_MPS_LOG_DIRECTORY']}, or leave --mps out")
    try:
        yield env
    finally:
        subprocess.run([control], input="quit\n", env=os.environ | env, capture_output=True, text=True)
