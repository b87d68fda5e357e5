"""Train one configuration in the authors' code and in ours, several runs each, and compare them.

    OMP_NUM_THREADS=1 python tools/authors_comparison.py run /path/to/tracking-memorization \\
        docs/records/authors_comparison --runs 5 --data-dir ../shared/data
    python tools/authors_comparison.py compare docs/records/authors_comparison \\
        --figure docs/figures/authors_comparison/curves.png
    python tools/authors_comparison.py compare docs/records/authors_comparison --markdown

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import records  # noqa: E402
from analysis.naming import model_name  # noqa: E402
from analysis.reports import mean_std_text  # noqa: E402

SIDES = {"ours": "ours", "authors": "authors' code"}


@dataclass(frozen=True)
class Metric:
    """A compared quantity: its label in tables, its figure title (matplotlib mathtext) and decimals."""

    label: str
    title: str
    digits: int


METRICS = {
    "train_acc": Metric("training accuracy (%)", "training accuracy (%), noisy labels", 1),
    "train_noisy_acc": Metric("noisy-subset accuracy (%)", "noisy-subset training accuracy (%): memorization", 1),
    "test_acc": Metric("test accuracy (%)", "test accuracy (%)", 1),
    "r": Metric("r = Φ̃ before − Φ̃ after",
                r"$r = \tilde\Phi_{\mathrm{before}} - \tilde\Phi_{\mathrm{after}}$ (nats)", 4),
}
# What the authors' experiments.py pickles for each epoch, in its order, as our record's columns.
AUTHORS_FIELDS = ("epoch", "phi_before", "phi_after", "train_loss", "train_acc", "train_clean_loss",
                  "train_clean_acc", "train_noisy_loss", "train_noisy_acc", "test_loss", "test_acc")
# Our settings that the authors' code has no flag for, set to what their code does.
OUR_FIXED = {"optimizer": "sgd", "scheduler": "cosine", "noise_type": "symmetric", "probe_source": "train"}
LAST_EPOCHS = 10  # the window of the per-run averages that `compare` tests (the memorization phase)
PARAMETERS_LINE = re.compile(r"^parameters: (\d+)$", re.MULTILINE)
# Folders of a checkout that hold data or outputs, not code: left out of the temporary copy.
NOT_CODE = ("data", "results", "checkpoint", ".git", "__pycache__")


class HarnessError(Exception):
    """A problem with the input; reported as one line."""


class RunFailed(HarnessError):
    """A run of either code failed; reported as one line with the end of its error output."""


# --------------------------------------------------------------------------------------------------
# The configuration both codes run


@dataclass(frozen=True)
class Setting:
    """The experiment, in the flags that both experiments.py scripts read with the same meaning."""

    model: str = "resnet"
    scale: float = 0.25
    numsamples: int = 2000
    corruptprob: float = 0.5
    epochs: int = 60
    lr: float = 0.05
    batchsize: int = 128

    def flags(self, name: str, seed: int) -> list[str]:
        """The shared command line of run `name`; the authors' code reads --seed only on CUDA."""
        values = {**dataclasses.asdict(self), "seed": seed, "filename": name, "modelfilename": name}
        return [item for key, value in values.items() for item in (f"--{key}", str(value))]

    def result_name(self, name: str) -> str:
        """Both codes name their results <filename>_<model>_<epochs>_<lr>."""
        return f"{name}_{self.model}_{self.epochs}_{self.lr}"

    def title(self) -> str:
        return (f"{model_name(self.model, self.scale)}, {self.numsamples:,} images, "
                f"{self.corruptprob:.0%} symmetric noise, SGD lr {self.lr:g}, cosine over {self.epochs} epochs")


def run_name(seed: int) -> str:
    return f"seed{seed}"


# --------------------------------------------------------------------------------------------------
# The patches that let the authors' code run here


@dataclass(frozen=True)
class Patch:
    """A named text substitution in a file of the authors' code: `count` occurrences of `old`
    become `new`; any other number of occurrences stops the harness."""

    name: str
    file: str
    old: str
    new: str
    count: int
    why: str

    def line(self) -> str:
        """The patch as the harness prints it and the document lists it, line breaks shown as ↵."""
        return f"`{self.name}` ({self.file}, `{one_line(self.old)}` → `{one_line(self.new)}`): {self.why}"


def one_line(code: str) -> str:
    return " ↵ ".join(line.strip() for line in code.splitlines() if line.strip())


def patches(workers: int) -> tuple[Patch, ...]:
    """What the authors' code needs to run offline on a current torch and this machine, and to say
    how wide its network is."""
    return (
        Patch("no-download", "dataset.py", "download=True", "download=False", 2,
              "read the CIFAR-10 folder that the harness links as ./data instead of downloading it"),
        Patch("no-checksum", "dataset.py", "    def corrupt_labels(self",
              "    def _check_integrity(self):\n        return True\n\n    def corrupt_labels(self", 1,
              "skip torchvision's MD5 check against the official archive, which any other folder in the "
              "official format (such as a subset) fails"),
        Patch("schedule-spans-epochs", "experiments.py", "T_max=200", "T_max=args.epochs", 1,
              "the cosine schedule anneals over --epochs, as ours does, not over a fixed 200 epochs"),
        Patch("workers", "dataset.py", "num_workers = 11", f"num_workers = {workers}", 1,
              f"DataLoader worker processes: {workers} (the harness's --workers) instead of 11"),
        Patch("report-parameters", "experiments.py", "    net = net.to(device)\n",
              "    net = net.to(device)\n    print('parameters:', sum(p.numel() for p in net.parameters()))\n", 1,
              "print the network's parameter count, which the harness checks against ours"),
    )


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


# --------------------------------------------------------------------------------------------------
# Running both codes


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

    from machine import environment

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
        run_script(python, code / "experiments.py", argv, code, "the authors' experiments.py")
        seconds = time.perf_counter() - started
        rows = read_authors_results(code / "results" / f"{setting.result_name(run_name(seed))}.pkl")
    if len(rows) != setting.epochs:
        raise RunFailed(f"the authors' run {run_name(seed)} recorded {len(rows)} of {setting.epochs} epochs")
    about = {"checkout": str(checkout), "commit": git_commit(checkout), "sha256": code_digest(checkout),
             "patches": [patch.name for patch in patches(workers)], "workers": workers}
    records.write_record(record, authors_record(rows, setting, seed, argv, about, seconds))


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


# --------------------------------------------------------------------------------------------------
# Comparing the two sides


@dataclass(frozen=True)
class Study:
    """The records of both sides: their common setting, the worker count of the authors' runs (which
    their patches name), and one row per side, run, epoch and metric (`value`)."""

    setting: Setting
    workers: int
    table: pd.DataFrame


def read_run(path: Path) -> records.RunRecord:
    try:
        record = records.read_record(path)
    except (OSError, ValueError, KeyError) as error:
        raise HarnessError(f"{path} is not a run record ({error})")
    if not record.meta.get("status", {}).get("finished"):
        raise HarnessError(f"{path} is not a finished run; finish it with `run` first")
    return record


def setting_of(path: Path, record: records.RunRecord, side: str) -> Setting:
    """The setting a record ran, checking that our runs had the settings the authors' code fixes."""
    args = record.meta.get("args", {})
    missing = [field.name for field in dataclasses.fields(Setting) if field.name not in args]
    differing = [key for key, value in OUR_FIXED.items() if side == "ours" and args.get(key) != value]
    if missing or differing:
        raise HarnessError(f"{path}: not a run of this comparison (settings {', '.join(missing + differing)})")
    return Setting(**{field.name: args[field.name] for field in dataclasses.fields(Setting)})


def run_rows(path: Path, record: records.RunRecord, side: str) -> pd.DataFrame:
    """One row per epoch and metric of one run."""
    epochs = pd.DataFrame(record.rows)
    epochs["r"] = epochs["phi_before"] - epochs["phi_after"]
    long = epochs.melt(id_vars="epoch", value_vars=list(METRICS), var_name="metric")
    return long.assign(side=side, run=path.stem)


def patched_with(path: Path, record: records.RunRecord) -> int:
    """The worker count of an authors' run, checking that it ran with the harness's patches."""
    about = record.meta.get("authors_code", {})
    workers = about.get("workers")
    if not isinstance(workers, int) or about.get("patches") != [patch.name for patch in patches(workers)]:
        raise HarnessError(f"{path}: not run with this harness's patches ({about.get('patches')})")
    return workers


def load_study(folder: Path) -> Study:
    """The finished records under <folder>/ours and <folder>/authors, which must share one setting
    and have at least two runs on each side (for a spread)."""
    tables, settings, workers = [], set(), set()
    for side in SIDES:
        paths = sorted((folder / side).glob(f"*{records.SUFFIX}"))
        if len(paths) < 2:
            raise HarnessError(f"{folder / side} holds {len(paths)} run record(s); a comparison needs two or "
                               f"more per side")
        for path in paths:
            record = read_run(path)
            settings.add(setting_of(path, record, side))
            if side == "authors":
                workers.add(patched_with(path, record))
            tables.append(run_rows(path, record, side))
    if len(settings) != 1 or len(workers) != 1:
        raise HarnessError(f"the records under {folder} do not all share one setting")
    return Study(settings.pop(), workers.pop(), pd.concat(tables, ignore_index=True))


def compare_sides(values: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """For each group of `keys`: each side's mean, standard deviation and run count, the pooled
    standard deviation, the gap between the means (ours minus theirs) in units of it, the p-value of
    the two-sample t-test that this gap is, and the 95 % interval of the difference of the means."""
    summary = values.groupby([*keys, "side"])["value"].agg(["mean", "std", "count"]).unstack("side")
    summary.columns = [f"{side}_{statistic}" for statistic, side in summary.columns]
    n_ours, n_authors = summary["ours_count"], summary["authors_count"]
    pooled_variance = ((n_ours - 1) * summary["ours_std"] ** 2 + (n_authors - 1) * summary["authors_std"] ** 2) \
        / (n_ours + n_authors - 2)
    summary["pooled_sd"] = np.sqrt(pooled_variance)
    difference = summary["ours_mean"] - summary["authors_mean"]
    summary["gap"] = difference / summary["pooled_sd"].where(summary["pooled_sd"] > 0)
    standard_error = summary["pooled_sd"] * np.sqrt(1 / n_ours + 1 / n_authors)
    degrees = n_ours + n_authors - 2
    summary["p"] = 2 * stats.t.sf((difference / standard_error.where(standard_error > 0)).abs(), degrees)
    half_width = stats.t.ppf(0.975, degrees) * standard_error
    summary["difference_low"], summary["difference_high"] = difference - half_width, difference + half_width
    return summary


def per_epoch(study: Study) -> pd.DataFrame:
    return compare_sides(study.table, ["metric", "epoch"])


def summary_labels(epochs: int) -> dict[str, tuple[str, int]]:
    """The rows of the per-run comparison, with their label and decimals."""
    labels = {metric: (f"{about.label}, mean of the last {LAST_EPOCHS} epochs", about.digits)
              for metric, about in METRICS.items()}
    return labels | {"zeta": (f"ζ at the last epoch (mean of r over epochs 1 to {epochs - 1})", METRICS["r"].digits)}


def run_summaries(study: Study) -> pd.DataFrame:
    """The comparison of one number per run: each metric's average over the last LAST_EPOCHS
    epochs, and ζ at the last epoch, the mean of r from epoch 1 on (the paper's running mean)."""
    table = study.table
    late = table[table["epoch"] >= study.setting.epochs - LAST_EPOCHS]
    zeta = table[(table["metric"] == "r") & (table["epoch"] >= 1)].assign(metric="zeta")
    per_run = pd.concat([late, zeta]).groupby(["metric", "side", "run"], as_index=False)["value"].mean()
    return compare_sides(per_run, ["metric"])


def sign_rows(comparison: pd.DataFrame) -> list[list[str]]:
    """Per metric, in how many epochs our mean is the higher one, and in how many the t-test of
    that epoch gives p < 0.05."""
    rows = []
    for metric, about in METRICS.items():
        epochs = comparison.loc[metric]
        rows.append([about.label, f"{int((epochs['gap'] > 0).sum())} of {len(epochs)}",
                     f"{int((epochs['p'] < 0.05).sum())} of {len(epochs)}"])
    return rows


def selected_epochs(epochs: int) -> list[int]:
    """The epochs the document's table shows: 0, 5, every tenth and the last."""
    return sorted({epoch for epoch in (0, 5, *range(10, epochs, 10), epochs - 1) if epoch < epochs})


def run_counts(study: Study) -> dict[str, int]:
    return study.table.groupby("side")["run"].nunique().to_dict()


def gap_text(gap: float) -> str:
    return "–" if pd.isna(gap) else f"{gap:+.2f}"


def epoch_rows(comparison: pd.DataFrame, metric: str, epochs: list[int]) -> list[list[str]]:
    """The cells of one metric's rows at `epochs`: epoch, both means, pooled sd, gap."""
    digits = METRICS[metric].digits
    return [[str(epoch), f"{row.ours_mean:.{digits}f}", f"{row.authors_mean:.{digits}f}",
             f"{row.pooled_sd:.{digits}f}", gap_text(row.gap)]
            for epoch, row in comparison.loc[metric].loc[epochs].iterrows()]


def summary_rows(comparison: pd.DataFrame, epochs: int) -> list[list[str]]:
    """The cells of the per-run comparison (`run_summaries`), one row per summary."""
    rows = []
    for metric, (label, digits) in summary_labels(epochs).items():
        row = comparison.loc[metric]
        rows.append([label, mean_std_text(row.ours_mean, row.ours_std, digits),
                     mean_std_text(row.authors_mean, row.authors_std, digits), f"{row.pooled_sd:.{digits}f}",
                     gap_text(row.gap), f"{row.p:.2g}",
                     f"{row.difference_low:+.{digits}f} to {row.difference_high:+.{digits}f}"])
    return rows


def headers(study: Study) -> tuple[str, str]:
    counts = run_counts(study)
    return tuple(f"{label} ({counts[side]} runs)" for side, label in SIDES.items())


def text_report(study: Study) -> str:
    """Every epoch of every metric, then the per-run comparison and the signs of the gaps, as
    aligned text."""
    ours, authors = headers(study)
    comparison = per_epoch(study)
    lines = [study.setting.title()]
    for metric, about in METRICS.items():
        lines += ["", about.label, f"{'epoch':>5}  {ours:>16}  {authors:>24}  {'pooled sd':>9}  {'gap (sd)':>8}"]
        epochs = sorted(study.table["epoch"].unique())
        lines += [f"{e:>5}  {o:>16}  {a:>24}  {s:>9}  {g:>8}"
                  for e, o, a, s, g in epoch_rows(comparison, metric, epochs)]
    lines += ["", "one number per run, mean ± sd over runs; p: two-sample t-test; interval: 95 % of ours minus theirs",
              f"{'':<60}  {ours:>16}  {authors:>24}  {'pooled sd':>9}  {'gap (sd)':>8}  {'p':>5}  {'interval':>20}"]
    lines += [f"{m:<60}  {o:>16}  {a:>24}  {s:>9}  {g:>8}  {p:>5}  {i:>20}"
              for m, o, a, s, g, p, i in summary_rows(run_summaries(study), study.setting.epochs)]
    lines += ["", f"{'':<26}  {'epochs with ours higher':>23}  {'epochs with p < 0.05':>20}"]
    lines += [f"{m:<26}  {h:>23}  {p:>20}" for m, h, p in sign_rows(comparison)]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_report(study: Study) -> str:
    """The patches, the per-epoch table at the selected epochs, the per-run table and the signs of
    the gaps, as the document quotes them."""
    ours, authors = headers(study)
    comparison = per_epoch(study)
    epochs = selected_epochs(study.setting.epochs)
    rows = [[about.label, *cells] for metric, about in METRICS.items()
            for cells in epoch_rows(comparison, metric, epochs)]
    return "\n\n".join([
        "\n".join(f"- {patch.line()}" for patch in patches(study.workers)),
        markdown_table(["metric", "epoch", f"{ours}, mean", f"{authors}, mean", "pooled sd", "gap (sd)"], rows),
        markdown_table(["one number per run", ours, authors, "pooled sd", "gap (sd)", "t-test p",
                        "95 % interval of the difference"], summary_rows(run_summaries(study), study.setting.epochs)),
        markdown_table(["metric", "epochs where ours' mean is higher", "epochs with t-test p < 0.05"],
                       sign_rows(comparison)),
    ])


def plot_study(study: Study):
    """Both sides' curves of the four metrics: the mean over runs, and the band from the lowest to
    the highest run at each epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    colours = {"ours": "#1f77b4", "authors": "#d95f02"}
    figure = Figure(figsize=(10, 7), layout="constrained")
    counts = run_counts(study)
    for axes, letter, (metric, about) in zip(figure.subplots(2, 2, sharex=True).flat, "abcd", METRICS.items()):
        curves = study.table[study.table["metric"] == metric].groupby(["side", "epoch"])["value"]
        spread = curves.agg(["mean", "min", "max"])
        for side, name in SIDES.items():
            band = spread.loc[side]
            axes.fill_between(band.index, band["min"], band["max"], color=colours[side], alpha=0.25, linewidth=0)
            axes.plot(band.index, band["mean"], color=colours[side], linewidth=1.8,
                      label=f"{name}: mean and range of {counts[side]} runs")
        axes.set_title(f"({letter}) {about.title}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        axes.grid(alpha=0.3)
        if metric == "r":
            axes.axhline(0, color="gray", linewidth=0.8)
    for axes in figure.axes[2:]:
        axes.set_xlabel("epoch")
    figure.axes[0].legend(loc="lower right", fontsize="small")
    figure.suptitle(study.setting.title())
    return figure


def save_figure(figure, path: Path) -> None:
    """Write `figure` to `path`, in the format its suffix names, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, dpi=150)
    except ValueError as error:  # an unknown format
        raise HarnessError(f"--figure {path}: {error}")


# --------------------------------------------------------------------------------------------------
# Command line


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
