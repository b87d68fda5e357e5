"""Run a grid of experiments.py runs described by a sweep file, on this machine or on a Slurm cluster.

    python sweep.py sweeps/smoke.toml --jobs 2
    python sweep.py sweeps/paper_cifar10.toml --slurm --partition gpu --time 12:00:00 --max-parallel 32

A sweep file (TOML) names the grid: `[sweep]` says where its files go, `[fixed]` holds the arguments
every run shares, `[grid]` the axes whose every combination is one run, and arrays of tables under
`[grid]` (`[[grid.<group>]]`) groups of cases, of which every run takes one (an optimizer with its own
learning rates, say). Every run is started with `--resume`, so invoking the same sweep again skips
finished runs, continues interrupted ones from their checkpoints and starts the rest. Runs that fail
are listed with their log files and are retried only with `--retry-failed`.
"""
from __future__ import annotations

import argparse
import csv
import functools
import getpass
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

import datasets
import experiments
import records

ROOT = Path(__file__).resolve().parent
EXPERIMENTS = ROOT / "experiments.py"
SWEEP_SETTINGS = {"name", "results_dir", "checkpoint_dir", "log_dir"}
# experiments.py arguments the sweep sets itself for every run.
SET_BY_SWEEP = {"filename", "modelfilename", "results_dir", "checkpoint_dir", "resume", "overwrite", "help"}
# experiments.py appends these to every record name, so run names leave them out.
IN_RECORD_NAME = ("model", "epochs", "lr")
NAME_PREFIXES = {"scale": "s", "corruptprob": "noise", "numsamples": "n", "batchsize": "bs"}
INTERRUPTED = experiments.INTERRUPTED
POLL_SECONDS = 0.2


class SweepError(Exception):
    """A problem with the sweep file or the command line; reported as one line."""


# --------------------------------------------------------------------------------------------------
# The sweep file


@dataclass
class Run:
    """One grid point: its experiments.py arguments and the files it writes."""

    name: str  # the record's name: <sweep>_<axis values>_<model>_<epochs>_<lr>
    settings: dict  # every argument the sweep file gives this run, by argument name
    argv: list[str]  # experiments.py arguments; the sweep adds --resume
    args: argparse.Namespace  # argv as experiments.py parses it
    record: Path
    checkpoint: Path
    log: Path

    def marker(self, kind: str) -> Path:
        """A small file next to the log: `failed` (the exit code) or `job` (the cluster job id)."""
        return self.log.parent / f"{self.name}.{kind}"


@dataclass
class Sweep:
    """A sweep file's runs and the folders they write to."""

    path: Path
    name: str
    results_dir: Path
    checkpoint_dir: Path
    log_dir: Path
    runs: list[Run]


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; a problem with it raises SweepError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except OSError as error:
        raise SweepError(f"cannot read the sweep file {path} ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"{path} is not valid TOML: {error}") from None
    try:
        return build_sweep(path, spec)
    except SweepError as error:
        raise SweepError(f"{path}: {error}") from None


def build_sweep(path: Path, spec: dict) -> Sweep:
    """The runs of a parsed sweep file, every value checked by experiments.py's own parser."""
    unknown = sorted(set(spec) - {"sweep", "fixed", "grid"})
    if unknown:
        raise SweepError(f"unknown table [{unknown[0]}]; a sweep file has [sweep], [fixed] and [grid]")
    settings = section(spec, "sweep")
    for key, value in settings.items():
        if key not in SWEEP_SETTINGS:
            raise SweepError(f"unknown setting {key!r} in [sweep]; known: "
                             f"{', '.join(sorted(SWEEP_SETTINGS))}")
        if not isinstance(value, str) or not value:
            raise SweepError(f"[sweep] {key} must be a non-empty string, got {value!r}")
    name = settings.get("name", path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise SweepError(f"[sweep] name {name!r} may hold only letters, digits and _ . + -")
    results_dir = Path(settings.get("results_dir", f"results/{name}"))
    checkpoint_dir = Path(settings.get("checkpoint_dir", f"checkpoint/{name}"))
    log_dir = Path(settings.get("log_dir", results_dir / "logs"))
    fixed = {argument(key, "[fixed]"): fixed_value(key, value)
             for key, value in section(spec, "fixed").items()}
    for key, value in fixed.items():
        check_value(key, value, "[fixed]")
    factors, name_order = grid_factors(section(spec, "grid"))
    overlap = sorted(set(fixed) & set(name_order))
    if overlap:
        raise SweepError(f"{overlap[0]} is both in [fixed] and in [grid]; keep it in one of them")
    runs = [make_run(name, {**fixed, **point}, name_order, (results_dir, checkpoint_dir, log_dir))
            for point in combinations(factors)]
    check_unique_names(runs)
    return Sweep(path, name, results_dir, checkpoint_dir, log_dir, runs)


def section(spec: dict, name: str) -> dict:
    """A table of the sweep file, empty when it is absent."""
    table = spec.get(name, {})
    if not isinstance(table, dict):
        raise SweepError(f"{name} must be a table [{name}]")
    return dict(table)


@functools.cache
def settable_arguments() -> dict[str, argparse.Action]:
    """The experiments.py arguments a sweep file may set, by name (`data_dir` for --data-dir)."""
    return {action.dest: action for action in experiments.build_parser()._actions
            if action.option_strings and action.dest not in SET_BY_SWEEP}


def flag(name: str, on: bool = True) -> str | None:
    """The command-line flag of an experiments.py argument; with `on` false, the flag that turns a
    switch off (`--no-channels-last`), or None for a switch that is off unless given (`--amp`)."""
    action = settable_arguments()[name]
    if on:
        return action.option_strings[0]
    negative = [option for option in action.option_strings if option.startswith("--no-")]
    return negative[0] if negative else None


def is_switch(name: str) -> bool:
    """Whether an argument is an on/off flag such as --amp or --channels-last/--no-channels-last,
    set with true or false: it takes no value on the command line."""
    return settable_arguments()[name].nargs == 0


def tokens(name: str, value) -> list[str]:
    """The command-line words that give an argument its value."""
    if is_switch(name):
        switch = flag(name, on=bool(value))
        return [switch] if switch else []
    return [flag(name), str(value)]


def argument(key: str, where: str) -> str:
    """The experiments.py argument a sweep file key names (`data-dir` and `data_dir` alike)."""
    name = key.replace("-", "_")
    if name in SET_BY_SWEEP:
        raise SweepError(f"{where} {key}: the sweep sets it for every run; remove it")
    if name not in settable_arguments():
        raise SweepError(f"unknown axis or argument {key!r} in {where}; experiments.py takes: "
                         f"{', '.join(sorted(settable_arguments()))}")
    return name


def fixed_value(key: str, value):
    """A [fixed] value, which must be a single value."""
    if isinstance(value, (list, dict)):
        raise SweepError(f"[fixed] {key}: give one value; lists of values belong in [grid]")
    return value


def check_value(key: str, value, where: str) -> None:
    """Reject a value experiments.py would refuse, with its parser's own message."""
    if is_switch(key) != isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "true or false" if is_switch(key) else "a number or a string"
        raise SweepError(f"{where} {key}: bad value {json.dumps(value)}; give {kind}")
    any_model = ["--model", settable_arguments()["model"].choices[0]]
    argv = tokens(key, value) if key == "model" else [*any_model, *tokens(key, value)]
    try:
        parse_experiment(argv, alone=True)
    except SweepError as error:
        raise SweepError(f"{where} {key}: {error}") from None


def parse_experiment(argv: list[str], alone: bool = False) -> argparse.Namespace:
    """experiments.py's reading of a command line; its complaints raise SweepError.

    With `alone`, the line holds one argument of a run, so only its own type and range are checked,
    not how it fits the others (--noise-type with --noise-file, say): whole runs check that.
    """
    try:
        args = experiments.build_parser().parse_args(argv)
        experiments.value_checks(args) if alone else experiments.validate(args)
    except experiments.UsageError as error:
        raise SweepError(str(error).removesuffix(" (see --help)")) from None
    return args


def axis_values(key: str, raw, where: str) -> list:
    """The values of one axis: a list of distinct valid values, or one value."""
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise SweepError(f"{where} {key} has no values")
    for value in values:
        check_value(key, value, where)
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise SweepError(f"{where} {key} lists {repeated[0]!r} twice")
    return values


def axes_points(table: dict, where: str) -> list[dict]:
    """Every combination of the axes of one table."""
    factors = []
    for key, raw in table.items():
        name = argument(key, where)
        factors.append([{name: value} for value in axis_values(name, raw, where)])
    return combinations(factors)


def grid_factors(grid: dict) -> tuple[list[list[dict]], list[str]]:
    """The factors whose product is the grid: one per axis, one per group of cases; and the order
    in which the arguments they vary appear in run names."""
    factors, order, owner = [], [], {}
    for key, raw in grid.items():
        is_group = isinstance(raw, list) and bool(raw) and all(isinstance(item, dict) for item in raw)
        where = f"[[grid.{key}]]" if is_group else "[grid]"
        points = (group_points(key, raw) if is_group else axes_points({key: raw}, where))
        for name in dict.fromkeys(k for point in points for k in point):
            if name in owner:
                raise SweepError(f"{name} is set both in {owner[name]} and in {where}; keep it in one place")
            owner[name] = where
            order.append(name)
        factors.append(points)
    return factors, order


def group_points(key: str, cases: list[dict]) -> list[dict]:
    """The runs' share of a group of cases: each case's own combinations, one case after another."""
    where = f"[[grid.{key}]]"
    if any(not case for case in cases):
        raise SweepError(f"{where} has an empty case")
    return [point for case in cases for point in axes_points(case, where)]


def combinations(factors: list[list[dict]]) -> list[dict]:
    """The product of the factors, each combination merged into one dict, in file order."""
    return [{k: v for part in parts for k, v in part.items()} for parts in itertools.product(*factors)]


def name_part(key: str, value) -> str:
    """A run-name component: a choice as itself (`adam`), a switch as its name or `no-` it, other
    values after a prefix (`s0.5`)."""
    if is_switch(key):
        text = key if value else f"no-{key}"
    elif settable_arguments()[key].choices is not None:
        text = str(value)
    else:
        text = f"{NAME_PREFIXES.get(key, key)}{value}"
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def make_run(sweep_name: str, settings: dict, name_order: list[str], folders: tuple[Path, Path, Path]) -> Run:
    """The run of one grid point, named after its varying values and checked as a whole."""
    results_dir, checkpoint_dir, log_dir = folders
    parts = [name_part(key, settings[key]) for key in name_order
             if key in settings and key not in IN_RECORD_NAME]
    filename = "_".join([sweep_name, *parts])
    argv = [token for key, value in settings.items() for token in tokens(key, value)]
    argv += ["--filename", filename, "--results-dir", str(results_dir),
             "--checkpoint-dir", str(checkpoint_dir)]
    try:
        args = parse_experiment(argv)
    except SweepError as error:
        raise SweepError(f"run {filename}: {error}") from None
    name = experiments.run_name(filename, args)
    return Run(name, settings, argv, args, results_dir / (name + records.SUFFIX),
               checkpoint_dir / (name + ".pt"), log_dir / f"{name}.log")


def check_unique_names(runs: list[Run]) -> None:
    """Two grid points may not share a run (and so its files)."""
    seen = {}
    for run in runs:
        if run.name in seen:
            raise SweepError(f"two grid points are both run {run.name} ({seen[run.name]} and "
                             f"{run.settings}); make every combination differ")
        seen[run.name] = run.settings


# --------------------------------------------------------------------------------------------------
# What is on disk

FINISHED, QUEUED, FAILED, RESUME, NEW = "finished", "queued", "failed", "resume", "new"


def recorded_state(run: Run) -> tuple[bool, int]:
    """Whether the run's record shows it finished with the sweep's arguments, and its epoch count."""
    try:
        meta = records.read_record(run.record).meta
    except (OSError, ValueError, csv.Error):
        return False, 0
    status, recorded = meta.get("status", {}), meta.get("args", {})
    # None leaves a value to the run (the class count of an image folder), so any recorded one fits.
    differing = experiments.differing_args(recorded, run.args)
    same_args = all(now is None for _, now in differing.values())
    return bool(status.get("finished")) and same_args, status.get("epochs_completed", 0)


def run_state(run: Run, active_jobs: set[str]) -> str:
    """finished, queued (on the cluster), failed (before), resume (has saved epochs) or new."""
    if recorded_state(run)[0]:
        return FINISHED
    job = run.marker("job")
    if job.exists() and job.read_text().strip() in active_jobs:
        return QUEUED
    if run.marker("failed").exists():
        return FAILED
    if run.record.exists() or run.checkpoint.exists():
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


def describe(run: Run, state: str) -> str:
    """A run's state in a few words, for listings."""
    if state == RESUME:
        return f"resume after {recorded_state(run)[1]}/{run.args.epochs}"
    if state == QUEUED:
        return f"queued (job {run.marker('job').read_text().strip()})"
    return state


def last_line(path: Path) -> str:
    """The last non-empty line of a log file, which usually says why a run stopped."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------------
# One run, as a process


def command(run: Run) -> list[str]:
    """The command that runs, or continues, a run."""
    return [sys.executable, str(EXPERIMENTS), *run.argv, "--resume"]


def start_process(run: Run, cwd: str | Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a run in its own session (so a terminal's Ctrl-C reaches only the sweep), appending
    its output to its log file. A failure noted by an earlier attempt no longer holds."""
    run.log.parent.mkdir(parents=True, exist_ok=True)
    run.marker("failed").unlink(missing_ok=True)
    with open(run.log, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command(run))}\n")
        log.flush()
        return subprocess.Popen(command(run), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                start_new_session=True)


def record_outcome(run: Run, returncode: int) -> str:
    """Mark a run whose process failed; returns done, interrupted or failed."""
    if returncode == 0:
        return "done"
    if returncode == INTERRUPTED:
        return "interrupted"
    if returncode == experiments.DIVERGED:
        return mark_failed(run, "diverged: a loss became non-finite; try a lower lr")
    return mark_failed(run, f"exit code {returncode}")


def mark_failed(run: Run, reason: str) -> str:
    """Note why a run failed next to its log, so later invocations list it and leave it alone."""
    run.marker("failed").write_text(f"{reason}\n")
    return "failed"


def threads_env(threads: int) -> dict[str, str]:
    """CPU threads for a run, unless the user chose them with OMP_NUM_THREADS."""
    return {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(max(1, threads))}


class Progress:
    """Prints one line per run that ends, counting over the whole grid."""

    def __init__(self, total: int, finished: int):
        self.total, self.finished = total, finished

    def report(self, run: Run, outcome: str, seconds: float | None = None) -> None:
        took = "" if seconds is None else f" ({seconds:.0f} s)"
        if outcome == "interrupted":
            print(f"        stopped {run.name}{took}; its completed epochs are saved", flush=True)
            return
        self.finished += 1
        detail = f"; log {run.log}" if outcome == "failed" else ""
        print(f"[{self.finished}/{self.total}] {outcome} {run.name}{took}{detail}", flush=True)


# --------------------------------------------------------------------------------------------------
# Local execution


@dataclass
class LocalJob:
    """A run in progress on this machine, and the GPU it was given."""

    run: Run
    process: subprocess.Popen
    gpu: str | None
    started: float = field(default_factory=time.monotonic)


def visible_gpus() -> list[str]:
    """The GPUs runs are spread over: those CUDA_VISIBLE_DEVICES names, else all CUDA devices."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        names = [name.strip() for name in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return [name for name in names if name and name != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def pick_gpu(run: Run, gpus: list[str], active: list[LocalJob]) -> str | None:
    """The least busy GPU for a run that lets experiments.py choose its CUDA device; else None."""
    if not gpus or run.args.device not in ("auto", "cuda"):
        return None
    return min(gpus, key=lambda gpu: sum(job.gpu == gpu for job in active))


def run_locally(runs: list[Run], jobs: int, progress: Progress) -> bool:
    """Run `jobs` runs at a time over the visible GPUs; returns False if Ctrl-C stopped the grid."""
    waiting, active, gpus = deque(runs), [], visible_gpus()
    threads = (os.cpu_count() or 1) // jobs
    try:
        while waiting or active:
            while waiting and len(active) < jobs:
                run = waiting.popleft()
                gpu = pick_gpu(run, gpus, active)
                env = threads_env(threads) | ({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})
                active.append(LocalJob(run, start_process(run, Path.cwd(), env), gpu))
            time.sleep(POLL_SECONDS)
            ended = [job for job in active if job.process.poll() is not None]
            active = [job for job in active if job.process.returncode is None]
            for job in ended:
                outcome = record_outcome(job.run, job.process.returncode)
                progress.report(job.run, outcome, time.monotonic() - job.started)
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


def ensure_data(runs: list[Run]) -> None:
    """Load (and so download, once, if missing) every data set the runs read, before they start."""
    for data_dir, dataset in dict.fromkeys((run.args.data_dir, run.args.dataset) for run in runs):
        try:
            datasets.load_dataset(data_dir, dataset)
        except datasets.DataError as error:
            raise SweepError(str(error)) from None


# --------------------------------------------------------------------------------------------------
# Slurm through submitit


@dataclass
class ClusterRun:
    """What one cluster job runs: a run with --resume, logged and marked like a local one.

    submitit calls `checkpoint` shortly before the job's time limit and requeues the job, which then
    continues the run from its last saved epoch.
    """

    run: Run
    cwd: str
    threads: int

    def __call__(self) -> str:
        process = start_process(self.run, self.cwd, threads_env(self.threads))
        return record_outcome(self.run, process.wait())

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


def submit(executor, sweep: Sweep, runs: list[Run], options: argparse.Namespace) -> list:
    """Submit the runs as one job array and note each run's job id next to its log."""
    with executor.batch():
        jobs = [executor.submit(ClusterRun(run, os.getcwd(), options.cpus_per_run)) for run in runs]
    for run, job in zip(runs, jobs, strict=True):
        run.marker("job").write_text(f"{job.job_id}\n")
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted {len(jobs)} runs as job array {array} (at most {options.max_parallel} at once); "
          f"logs in {sweep.log_dir}", flush=True)
    return jobs


def watch(runs: list[Run], jobs: list, progress: Progress) -> bool:
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


def job_outcome(run: Run, job) -> str:
    """What a finished cluster job's run came to; a job that died on its own counts as failed."""
    try:
        return job.result()
    except Exception as error:  # submitit re-raises whatever ended the job
        return mark_failed(run, f"job {job.job_id} ended: {str(error).splitlines()[0]}")


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
    p = experiments.OneLineParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                  formatter_class=experiments.DefaultsHelpFormatter)
    p.add_argument("sweep_file", help="the sweep file (TOML), e.g. sweeps/smoke.toml")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time on this machine, spread over the visible GPUs")
    p.add_argument("--dry-run", action="store_true",
                   help="list every run, its state and its command; start nothing")
    p.add_argument("--retry-failed", action="store_true", help="run the runs that failed before again")
    slurm = p.add_argument_group("Slurm (needs submitit: pip install -r requirements-slurm.txt)")
    slurm.add_argument("--slurm", action="store_true", help="submit the runs as a Slurm job array")
    slurm.add_argument("--time", type=minutes, help="time limit of one job, minutes or H:MM:SS (required); "
                                                    "a run that needs longer is requeued and continues")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--max-parallel", type=int, default=16, help="jobs of the array running at once")
    slurm.add_argument("--gpus-per-run", type=int, default=1, help="GPUs of each job (0: CPU only)")
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
    for name, least in [("jobs", 1), ("max_parallel", 1), ("gpus_per_run", 0), ("cpus_per_run", 1)]:
        value = getattr(options, name)
        if value < least:
            raise SweepError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    cluster_options = ["time", "partition", "max_parallel", "gpus_per_run", "cpus_per_run", "slurm_option",
                       "wait", "cluster"]
    given = [name for name in cluster_options if getattr(options, name) != parser.get_default(name)]
    if not options.slurm and given:
        raise SweepError(f"--{given[0].replace('_', '-')} applies to --slurm only")
    if options.slurm and options.jobs != 1:
        raise SweepError("--jobs applies to local runs; with --slurm, --max-parallel caps the running jobs")
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
             f"{count[FAILED]} failed before", f"{count[QUEUED]} queued on the cluster"]
    return f"{sweep.path}: {len(states)} runs: " + ", ".join(p for p in parts if not p.startswith("0 "))


def list_runs(sweep: Sweep) -> int:
    """--dry-run: every run's state and command."""
    states = current_states(sweep)
    for run in sweep.runs:
        print(f"{describe(run, states[run.name]):<22} {run.name}")
        print(f"    python experiments.py {shlex.join(run.argv)} --resume")
    print(plan_line(sweep, states))
    return 0


def runs_to_start(sweep: Sweep, states: dict[str, str], retry_failed: bool) -> list[Run]:
    """The runs to start or continue now."""
    wanted = {RESUME, NEW} | ({FAILED} if retry_failed else set())
    return [run for run in sweep.runs if states[run.name] in wanted]


def summarize(sweep: Sweep) -> int:
    """The final report: failed runs with their logs; exit code 0 only if every run finished."""
    states = current_states(sweep)
    failed = [run for run in sweep.runs if states[run.name] == FAILED]
    finished = sum(state == FINISHED for state in states.values())
    if finished == len(sweep.runs):
        print(f"all {finished} runs finished; their records are in {sweep.results_dir}")
        return 0
    print(f"{finished} of {len(sweep.runs)} runs finished, {len(failed)} failed")
    for run in failed:
        reason = run.marker("failed").read_text().strip()
        print(f"  failed {run.name} ({reason}); log {run.log}: {last_line(run.log)}")
    if failed:
        print("fix the cause, then rerun with --retry-failed")
    return 1


def run_sweep(sweep: Sweep, options: argparse.Namespace, argv: list[str]) -> int:
    """Start or continue every unfinished run, here or on the cluster, and report."""
    states = current_states(sweep)
    print(plan_line(sweep, states), flush=True)
    todo = runs_to_start(sweep, states, options.retry_failed)
    if todo:
        executor = executor_for(sweep, options) if options.slurm else None
        ensure_data(todo)
        progress = Progress(len(sweep.runs), sum(state == FINISHED for state in states.values()))
        if executor is not None:
            jobs = submit(executor, sweep, todo, options)
            if not options.wait:
                print(f"see their progress with: python sweep.py {shlex.quote(str(sweep.path))} --dry-run")
                return 0
            completed = watch(todo, jobs, progress)
        else:
            gpus = visible_gpus()
            print(f"running {min(options.jobs, len(todo))} at a time on "
                  f"{'GPUs ' + ', '.join(gpus) if gpus else 'the CPU'}; logs in {sweep.log_dir}", flush=True)
            completed = run_locally(todo, options.jobs, progress)
        if not completed:
            print(f"interrupted; continue with: python sweep.py {shlex.join(argv)}", file=sys.stderr)
            return INTERRUPTED
    return summarize(sweep)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep the command line names; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with experiments.interrupts_stop_the_run():
            options = parse_options(argv)
            sweep = load_sweep(options.sweep_file)
            if options.dry_run:
                return list_runs(sweep)
            with records.exclusive_lock(sweep.log_dir / ".lock"):  # one invocation per sweep at a time
                return run_sweep(sweep, options, argv)
    except (SweepError, experiments.UsageError) as error:
        print(f"sweep.py: error: {error}", file=sys.stderr)
        return 2
    except records.LockHeld as error:
        print(f"sweep.py: error: another sweep.py is working on this sweep ({error}); wait for it or "
              f"stop it first", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before any run started", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    # Run as the module `sweep`, so that cluster jobs find ClusterRun by that name when unpickling.
    import sweep

    sys.exit(sweep.main())
