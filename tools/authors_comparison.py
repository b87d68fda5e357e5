"""Train one configuration in the authors' code and in ours, several runs each, and compare them.

    OMP_NUM_THREADS=1 python -m tools.authors_comparison run /path/to/tracking-memorization \\
        docs/records/authors_comparison --runs 5 --data-dir ../shared/data
    python -m tools.authors_comparison compare docs/records/authors_comparison \\
        --figure docs/figures/authors_comparison/curves.png
    python -m tools.authors_comparison compare docs/records/authors_comparison --markdown

`run` takes a checkout of the authors' repository (mahf93/tracking-memorization) where the user put
it, copies it into a temporary folder, applies the patches of `patches` there (each a named text
substitution that fails if its target is not where it should be; the checkout itself is never
changed) and runs its experiments.py there, then ours, run after run. The authors' pickled results
are converted to our record format (the columns of `records.COLUMNS`, empty where their code
measures nothing), so both sides land as run records, under <records>/authors and <records>/ours.
A finished record is kept and its run not repeated, so an interrupted study continues where it
stopped. Before training, a zero-epoch run of the authors' code reports its network's parameter
count, which must equal ours: `--scale` must mean the same width in both codes.

The authors' code draws its label noise from the clock, and its weights, subset and batch order
unseeded, so its runs cannot be repeated: the two codes compare through the distributions of their
runs. `compare` prints, for each epoch and for training accuracy, noisy-subset accuracy, test accuracy
and r = Φ̃_before − Φ̃_after, both means, the pooled run-to-run standard deviation and the gap between
the means in units of it; then the same, with a two-sample t-test and the 95 % interval of the
difference, for one number per run (each metric's average over the last epochs, and the paper's ζ
at the last epoch), and in how many epochs each side is ahead. `--figure` draws both sets of curves
with their run-to-run range.

The defaults of `run` are the setting of the study in docs/REPRODUCTION.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.authors_setting import (OUR_FIXED, ROOT, SIDES, HarnessError, Patch, RunFailed, Setting, model_name,
                             patches, run_name)
from tools.authors_study import load_study, markdown_report, plot_study, save_figure, text_report

from runner import records

# What the authors' experiments.py pickles for each epoch, in its order, as our record's columns.
AUTHORS_FIELDS = ("epoch", "phi_before", "phi_after", "train_loss", "train_acc", "train_clean_loss",
                  "train_clean_acc", "train_noisy_loss", "train_noisy_acc", "test_loss", "test_acc")
PARAMETERS_LINE = re.compile(r"^parameters: (\d+)$", re.MULTILINE)
# Folders of a checkout that hold data or outputs, not code: left out of the temporary copy.
NOT_CODE = ("data", "results", "checkpoint", ".git", "__pycache__")


def apply_patch(code: Path, patch: Patch) -> None:
    """Apply `patch` to the copy of the authors' code in `code`, or raise HarnessError naming it."""
    path = code / patch.file
    text = path.read_text() if path.is_file() else ""
    found = text.count(patch.old)
    if found != patch.count:
        raise HarnessError(f"patch {patch.name}: {patch.file} holds {found} occurrence(s) of {patch.old.strip()!r}, "
                           f"not {patch.count}; this checkout differs from the code the harness was written for")
    path.write_text(text.replace(patch.old, patch.new))


def code_digest(checkout: Path) -> str:
    """SHA-256 over the relative paths and contents of the code files of `checkout` (those the
    harness copies): which code ran, also where the checkout is not a git repository."""
    digest = hashlib.sha256()
    files = (p for p in checkout.rglob("*") if p.is_file() and not set(p.relative_to(checkout).parts) & set(NOT_CODE))
    for path in sorted(files):
        digest.update(path.relative_to(checkout).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def git_commit(checkout: Path) -> str | None:
    """The commit a git checkout is at, or None for a plain folder (or where git is missing)."""
    try:
        result = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def check_checkout(checkout: Path) -> None:
    """Raise HarnessError unless `checkout` holds the two files the patches change."""
    missing = [name for name in ("experiments.py", "dataset.py") if not (checkout / name).is_file()]
    if missing:
        raise HarnessError(f"{checkout} is not a checkout of the authors' repository "
                           f"(mahf93/tracking-memorization): no {' and no '.join(missing)}")


def check_data_dir(data_dir: Path) -> None:
    """Raise HarnessError unless `data_dir` is what both codes read CIFAR-10 from."""
    if not (data_dir / "cifar-10-batches-py").is_dir():
        raise HarnessError(f"{data_dir} holds no cifar-10-batches-py folder; give --data-dir the folder above it")


def patched_copy(checkout: Path, folder: Path, workers: int, data_dir: Path) -> Path:
    """A copy of the authors' code in `folder`, patched, with ./data linked to `data_dir` and an
    empty ./results for their results file."""
    code = folder / "code"
    shutil.copytree(checkout, code, ignore=shutil.ignore_patterns(*NOT_CODE))
    for patch in patches(workers):
        apply_patch(code, patch)
    (code / "data").symlink_to(data_dir.resolve(), target_is_directory=True)
    (code / "results").mkdir()
    return code


def run_script(python: str, script: Path, argv: list[str], cwd: Path, who: str) -> str:
    """Run a Python script to its end and return its standard output; raise RunFailed with the end
    of its error output if it fails."""
    result = subprocess.run([python, str(script), *argv], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise RunFailed(f"{who} failed (exit {result.returncode}): {tail}")
    return result.stdout


def authors_parameter_count(checkout: Path, setting: Setting, workers: int, data_dir: Path, python: str) -> int:
    """The parameter count of the authors' network, from a zero-epoch run of their patched code."""
    with tempfile.TemporaryDirectory(prefix="authors-code-") as folder:
        code = patched_copy(checkout, Path(folder), workers, data_dir)
        flags = dataclasses.replace(setting, epochs=0).flags("parameters", 0)
        output = run_script(python, code / "experiments.py", flags, code, "the authors' experiments.py")
    match = PARAMETERS_LINE.search(output)
    if match is None:
        raise HarnessError("the authors' experiments.py printed no parameter count; the report-parameters "
                           "patch did not take effect")
    return int(match.group(1))


def check_same_network(checkout: Path, setting: Setting, workers: int, data_dir: Path, python: str) -> int:
    """Raise HarnessError unless both codes build networks with the same number of parameters;
    return that number."""
    from models import create_model  # torch is needed here, not for `compare`

    ours = sum(p.numel() for p in create_model(setting.model, setting.scale).parameters())
    theirs = authors_parameter_count(checkout, setting, workers, data_dir, python)
    if ours != theirs:
        raise HarnessError(f"--model {setting.model} --scale {setting.scale:g} builds {ours:,} parameters in ours "
                           f"and {theirs:,} in the authors' code: --scale means another width there")
    return ours


def read_authors_results(path: Path) -> list[dict]:
    """The epoch rows of the authors' results file: lists (AUTHORS_FIELDS) dumped one per epoch by
    one pickler, whose memo they share, so one unpickler reads them in turn. The file was written
    moments ago by the run the harness started; reading its tensors needs torch."""
    missing = set(AUTHORS_FIELDS) - set(records.COLUMNS)
    if missing:
        raise HarnessError(f"the record format has no column {', '.join(sorted(missing))}")
    rows = []
    with open(path, "rb") as f:
        unpickler = pickle.Unpickler(f)
        while True:
            try:
                entry = unpickler.load()
            except EOFError:
                return rows
            if len(entry) != len(AUTHORS_FIELDS):
                raise HarnessError(f"{path}: an epoch holds {len(entry)} values, not {len(AUTHORS_FIELDS)}")
            row = {column: float(value) for column, value in zip(AUTHORS_FIELDS, entry)}
            rows.append({**row, "epoch": int(row["epoch"])})


def authors_record(rows: list[dict], setting: Setting, seed: int, argv: list[str], code: dict,
                   seconds: float) -> records.RunRecord:
    """Our run record of one run of the authors' code: their values in our columns, the rest empty."""
    import torch

    from runner.machine import environment

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as their code chooses
    return records.RunRecord({
        "run": {"name": setting.result_name(run_name(seed)), "code": "authors"},
        "args": {**dataclasses.asdict(setting), "seed": seed},
        "authors_code": code,
        "command": ["python", "experiments.py", *argv],
        "environment": environment(device),
        "noise": {"type": "symmetric", "corrupt_prob": setting.corruptprob,
                  "drawn": "by the authors' code, seeded from the clock; not recorded"},
        "status": {"epochs_completed": len(rows), "epochs_planned": setting.epochs,
                   "finished": len(rows) == setting.epochs, "stopped_because": None},
        "wall_seconds": round(seconds, 1),
    }, rows)


def run_authors(checkout: Path, setting: Setting, seed: int, record: Path, workers: int, data_dir: Path,
                python: str) -> None:
    """One run of the authors' patched code in a temporary copy, converted to our record at `record`."""
    argv = setting.flags(run_name(seed), seed)
    with tempfile.TemporaryDirectory(prefix="authors-code-") as folder:
        code = patched_copy(checkout, Path(folder), workers, data_dir)
        started = time.perf_counter()
        console = run_script(python, code / "experiments.py", argv, code, "the authors' experiments.py")
        seconds = time.perf_counter() - started
        results = code / "results" / f"{setting.result_name(run_name(seed))}.pkl"
        rows = read_authors_results(results)
        keep_raw_output(results, console, record)
    if len(rows) != setting.epochs:
        raise RunFailed(f"the authors' run {run_name(seed)} recorded {len(rows)} of {setting.epochs} epochs")
    about = {"checkout": str(checkout), "commit": git_commit(checkout), "sha256": code_digest(checkout),
             "patches": [patch.name for patch in patches(workers)], "workers": workers}
    records.write_record(record, authors_record(rows, setting, seed, argv, about, seconds))


def keep_raw_output(results: Path, console: str, record: Path) -> None:
    """Keep the authors' pickled results and console output in <records>/authors/raw, beside the
    record made from them, so that a reader can check the conversion."""
    raw = record.parent / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(results, raw / f"{record.stem}.pkl")
    (raw / f"{record.stem}.log").write_text(console)


def run_ours(setting: Setting, seed: int, records_dir: Path, checkpoint_dir: Path, data_dir: Path,
             python: str) -> None:
    """One run of our experiments.py, writing its record into `records_dir`; an interrupted run
    continues from its checkpoint."""
    name = setting.result_name(run_name(seed))
    restart = "--resume" if (checkpoint_dir / f"{name}.pt").exists() else "--overwrite"
    fixed = [item for key, value in OUR_FIXED.items() for item in (f"--{key.replace('_', '-')}", value)]
    argv = [*setting.flags(run_name(seed), seed), *fixed, "--data-dir", str(data_dir),
            "--results-dir", str(records_dir), "--checkpoint-dir", str(checkpoint_dir), restart]
    run_script(python, ROOT / "experiments.py", argv, Path.cwd(), "our experiments.py")


def finished(record: Path) -> bool:
    """Whether `record` holds a finished run (one that is unreadable is run again)."""
    try:
        return records.read_record(record).meta.get("status", {}).get("finished", False)
    except (OSError, ValueError):
        return False


def run_study(checkout: Path, out: Path, setting: Setting, runs: int, workers: int, data_dir: Path,
              checkpoint_dir: Path, python: str) -> None:
    """Train runs 0..runs-1 of both codes, alternating, skipping those already finished."""
    check_checkout(checkout)
    check_data_dir(data_dir)
    for patch in patches(workers):
        print(f"patch {patch.line()}")
    count = check_same_network(checkout, setting, workers, data_dir, python)
    print(f"both codes build {model_name(setting.model, setting.scale)} with {count:,} parameters")
    for seed in range(runs):
        for side in SIDES:
            record = out / side / f"{setting.result_name(run_name(seed))}.csv"
            if finished(record):
                print(f"{side} {run_name(seed)}: {record} is finished; kept")
                continue
            started = time.perf_counter()
            if side == "authors":
                run_authors(checkout, setting, seed, record, workers, data_dir, python)
            else:
                run_ours(setting, seed, out / side, checkpoint_dir, data_dir, python)
            print(f"{side} {run_name(seed)}: {setting.epochs} epochs in {time.perf_counter() - started:.0f} s, {record}",
                  flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="train both codes and keep their records")
    running.add_argument("checkout", type=Path, help="a checkout of mahf93/tracking-memorization (left unchanged)")
    running.add_argument("out", type=Path, help="folder of the records: <out>/ours and <out>/authors")
    running.add_argument("--runs", type=int, default=3, help="runs per side")
    running.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
                         help="folder holding cifar-10-batches-py")
    running.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoint") / "authors_comparison",
                         help="folder of our runs' checkpoints")
    running.add_argument("--workers", type=int, default=0, help="DataLoader workers of the authors' code")
    running.add_argument("--python", default=sys.executable, help="Python that runs both codes")
    for field in dataclasses.fields(Setting):
        running.add_argument(f"--{field.name}", type=type(field.default), default=field.default, help="(both codes)")
    comparing = commands.add_parser("compare", help="compare the records of both sides")
    comparing.add_argument("out", type=Path, help="folder holding ours/ and authors/")
    comparing.add_argument("--figure", type=Path, help="write the figure there (.png, .pdf, .svg)")
    comparing.add_argument("--markdown", action="store_true", help="print the document's tables instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            if args.runs < 2 or args.workers < 0:
                raise HarnessError("--runs must be 2 or more and --workers 0 or more")
            setting = Setting(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Setting)})
            run_study(args.checkout, args.out, setting, args.runs, args.workers, args.data_dir,
                      args.checkpoint_dir, args.python)
            return 0
        study = load_study(args.out)
        print(markdown_report(study) if args.markdown else text_report(study))
        if args.figure:
            save_figure(plot_study(study), args.figure)
            print(f"figure: {args.figure}")
        return 0
    except HarnessError as error:
        print(f"authors_comparison.py: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, RunFailed) else 2


if __name__ == "__main__":
    sys.exit(main())
