"""Run records and the per-sample tables beside them: their columns, and how they are written
(atomically, through `safe_files`) and read.

A run record is a CSV file that a text editor and `pandas.read_csv(path, comment="#")` both open:
commented header lines `# <section>: <json>` describe the run (arguments, environment, data, noise,
status), then one row per epoch with the columns of `COLUMNS`. This module needs no torch, so that
the analysis of records runs without it.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from runner.safe_files import atomic_write

FORMAT_VERSION = 1
SUFFIX = ".csv"

# The evaluation passes, each recorded as <prefix>_loss and <prefix>_acc.
TEST, NOISY_HOLDOUT = "test", "noisy_holdout"
NOISY_HOLDOUT_ACC = f"{NOISY_HOLDOUT}_acc"
# The per-sample scores of the training subset (see `signals`), each read as a detector of wrong
# labels: its column in the per-sample file, and `<name>_auroc`, `<name>_ap` in the record.
SAMPLE_SCORES = {
    "aum": "area under the margin: the mean margin over the epochs (low: likely wrong)",
    "csl": "cumulative sample loss: the training loss summed over the epochs (high: likely wrong)",
    "forgetting": "forgetting events: right in one epoch, wrong in the next (many, or never right: likely wrong)",
    "learned_at": "the epoch from which the sample stays predicted as its label (late or never: likely wrong)",
    "changes": "prediction changes between consecutive epochs (many: likely wrong)",
}
DETECTOR_COLUMNS = [f"{score}_{measure}" for score in SAMPLE_SCORES for measure in ("auroc", "ap")]
COLUMNS = [
    "epoch",             # 0-based; the probe runs at the start of the epoch, before its training
    "lr",                # learning rate used during this epoch
    "phi_before",        # random-label loss of the probe batch before the probe step
    "phi_after",         # the same loss after one optimizer step on it
    "susceptibility",    # zeta: mean of phi_before - phi_after over epochs 1..epoch (paper)
    "train_loss", "train_acc",              # on the fly, augmented batches, train mode
    "train_clean_loss", "train_clean_acc",  # samples whose assigned label is the true one
    "train_noisy_loss", "train_noisy_acc",  # samples whose assigned label is wrong
    f"{TEST}_loss", f"{TEST}_acc",
    f"{NOISY_HOLDOUT}_loss", NOISY_HOLDOUT_ACC,  # held-out images with noisy labels (--noisy-holdout)
    "pred_changes",      # % of training samples whose prediction differs from the previous epoch's
    "neg_margin",        # % of training samples whose margin, averaged over epochs, is negative
    "neg_margin_precision", "neg_margin_recall",  # % of them with a wrong label; % of wrong labels caught
    *DETECTOR_COLUMNS,   # each per-sample score's AUROC and average precision for the wrong labels
    "seconds",           # wall time of the epoch: probes, training and test, without compiling (--compile)
    "probe_seconds",     # of which the probe that defines zeta
    "extra_probe_seconds",  # and the extra probes (--extra-probes)
    "compile_seconds",   # time torch.compile spent compiling during the epoch (--compile)
    "save_seconds",      # writing the epoch's per-sample scores and test predictions (before its checkpoint)
]
TIMING_COLUMNS = ("seconds", "probe_seconds", "extra_probe_seconds", "compile_seconds", "save_seconds")
# Files written next to a run's record `<name>.csv`: per training sample and per test image,
# compressed CSV (which `pandas.read_csv` reads as it is), so that `*.csv` still finds the records.
SAMPLES_SUFFIX, TEST_PREDICTIONS_SUFFIX = ".samples.csv.gz", ".test.csv.gz"


def rows_without_timings(rows: list[dict]) -> list[dict]:
    """Epoch rows without their wall times (`TIMING_COLUMNS`), which differ between identical runs."""
    return [{key: value for key, value in row.items() if key not in TIMING_COLUMNS} for row in rows]


def batch_column(probe: str, batch: int) -> str:
    """The column of r of one batch of a probe: `probe_r0`, `heldout_probe_r3`; a run with several
    probe batches per epoch, or with extra probes, adds such columns after `COLUMNS`."""
    return f"{probe}_r{batch}"


BATCH_COLUMN = re.compile(r"^(?P<probe>(?:[a-z]+_)?probe)_r(?P<batch>\d+)$")
# Columns that are finite in a run that has not diverged, with what they measure; the hold-out loss
# is there only with --noisy-holdout.
MUST_BE_FINITE = {"phi_before": "probe loss before the step (phi_before)",
                  "phi_after": "probe loss after the step (phi_after)", f"{TEST}_loss": "test loss",
                  f"{NOISY_HOLDOUT}_loss": "noisy hold-out loss"}


@dataclass
class RunRecord:
    """The header sections and the per-epoch rows of one run."""

    meta: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def format_value(value) -> str:
    """A CSV cell: integers as such, floats at full precision, missing values as empty cells."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_record(record: RunRecord) -> str:
    """The text of a run record."""
    out = io.StringIO()
    out.write("# run record of experiments.py; read with records.read_record or "
              "pandas.read_csv(path, comment='#')\n")
    out.write(f"# format: {FORMAT_VERSION}\n")
    for section, value in record.meta.items():
        out.write(f"# {section}: {json.dumps(value, sort_keys=True)}\n")
    columns = record_columns(record.rows)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in record.rows:
        writer.writerow([format_value(row.get(column)) for column in columns])
    return out.getvalue()


def record_columns(rows: list[dict]) -> list[str]:
    """`COLUMNS`, then the per-batch columns of r (see `batch_column`) the rows hold, in their order."""
    batches = dict.fromkeys(key for row in rows for key in row if BATCH_COLUMN.match(key))
    return [*COLUMNS, *batches]


def table_bytes(columns: dict[str, list]) -> bytes:
    """A gzip-compressed CSV file of equally long columns, with a header line and no comments, which
    `pandas.read_csv(path)` reads as it is; missing values (None, NaN) are empty cells. The same
    columns give the same bytes (no time stamp in the gzip header)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([format_value(value) for value in row] for row in zip(*columns.values(), strict=True))
    return gzip.compress(out.getvalue().encode(), mtime=0)


def write_table(path: str | Path, columns: dict[str, list]) -> None:
    """Atomically (re)write the table of `columns` (see `table_bytes`) at `path`."""
    packed = table_bytes(columns)
    atomic_write(path, lambda f: f.write(packed))


def write_record(path: str | Path, record: RunRecord) -> None:
    """Atomically (re)write the run record at `path`."""
    text = render_record(record).encode()
    atomic_write(path, lambda f: f.write(text))


def parse_value(cell: str) -> float | int | None:
    if cell == "":
        return math.nan
    number = float(cell)
    return int(number) if number.is_integer() and "." not in cell and "e" not in cell else number


def read_record(path: str | Path) -> RunRecord:
    """Read a run record written by `write_record`; raises ValueError if it is not one."""
    meta, table = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# "):
                key, sep, value = line[2:].partition(": ")
                if sep:  # the first line is a title, without a "key: " part
                    meta[key] = json.loads(value)
            elif line.strip():
                table.append(line)
    if meta.get("format") != FORMAT_VERSION or not table:
        raise ValueError(f"{path} is not a run record of format {FORMAT_VERSION}")
    rows = []
    for number, row in enumerate(csv.DictReader(table), start=1):
        if None in row or None in row.values():
            raise ValueError(f"{path}: epoch row {number} does not have one cell per column")
        rows.append({key: parse_value(cell) for key, cell in row.items()})
    meta.pop("format")
    return RunRecord(meta, rows)
