"""Run records and checkpoints on disk, always written atomically.

A run record is a CSV file that a text editor and `pandas.read_csv(path, comment="#")` both open:
commented header lines `# <section>: <json>` describe the run (arguments, environment, data, noise,
status), then one row per epoch with the columns of `COLUMNS`. This module needs no torch, so that
the analysis of records runs without it; checkpoints are written by `checkpoints`.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

FORMAT_VERSION = 1
SUFFIX = ".csv"
TEMPORARY_BYTES = 8  # random bytes in the name of an atomic write's temporary file, written as hex

COLUMNS = [
    "epoch",             # 0-based; the probe runs at the start of the epoch, before its training
    "lr",                # learning rate used during this epoch
    "phi_before",        # random-label loss of the probe batch before the probe step
    "phi_after",         # the same loss after one optimizer step on it
    "susceptibility",    # zeta: mean of phi_before - phi_after over epochs 1..epoch (paper)
    "train_loss", "train_acc",              # on the fly, augmented batches, train mode
    "train_clean_loss", "train_clean_acc",  # samples whose assigned label is the true one
    "train_noisy_loss", "train_noisy_acc",  # samples whose assigned label is wrong
    "test_loss", "test_acc",
    "noisy_holdout_loss", "noisy_holdout_acc",  # held-out images with noisy labels (--noisy-holdout)
    "pred_changes",      # % of training samples whose prediction differs from the previous epoch's
    "neg_margin",        # % of training samples whose margin, averaged over epochs, is negative
    "neg_margin_precision", "neg_margin_recall",  # % of them with a wrong label; % of wrong labels caught
    "seconds",           # wall time of the epoch: probe, training and test
]
TIMING_COLUMNS = ("seconds",)
# The evaluation passes, each recorded as <prefix>_loss and <prefix>_acc.
TEST, NOISY_HOLDOUT = "test", "noisy_holdout"
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


def atomic_write(path: str | Path, write) -> None:
    """Write a file through `write(binary_file)` into a temporary sibling, then rename it over `path`.

    A crash, Ctrl-C or power loss at any moment leaves either the old file or the new one, never a
    partial file: the data are flushed to disk before the rename, and the rename itself after it.
    The file gets the permissions the user's umask gives any new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(TEMPORARY_BYTES)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def remove_stale_temporaries(path: str | Path) -> None:
    """Remove the temporary files that `atomic_write` of `path` left behind when its process was
    killed mid-write (by SIGKILL, say, at a cluster's time limit).

    Call it only while holding the lock of `path`: then no other process is writing it. The names
    matched are those of `path`'s temporary files only, never another file's.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{{2 * TEMPORARY_BYTES}}}\.tmp")
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name):
            entry.unlink(missing_ok=True)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the file system can: some (network
    file systems among them) refuse to sync a folder, and the file itself is on disk already."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(handle)


class LockHeld(Exception):
    """Another process holds the lock; its message names that process."""


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock file `path` for the duration of the block, or raise LockHeld at once.

    The operating system releases the lock when its process ends, however it ends, so a file left
    behind by a killed process is stale and simply taken over. The file holds the holder's process
    id and is removed on release, with the folders made for it if they stayed empty.
    """
    path = Path(path)
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise LockHeld(f"process {holder} holds {path}") from None
        if same_file(handle, path):
            break
        handle.close()  # the holder removed the file as we opened it: lock the new one
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
        remove_if_empty(made)


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders, innermost first, as long as they are empty: those made only to hold a lock
    file leave no trace when nothing else was written into them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def same_file(handle, path: Path) -> bool:
    """Whether the open file `handle` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


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
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in record.rows:
        writer.writerow([format_value(row.get(column)) for column in COLUMNS])
    return out.getvalue()


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
