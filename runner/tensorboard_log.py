"""A run's record as TensorBoard scalars (`experiments.py --tensorboard DIR`): every column of every
saved epoch, under the run's name, at the epoch as the step.

A run that starts or resumes writes its events with `purge_step=0` and then its saved epochs again,
so TensorBoard drops whatever an earlier, interrupted or overwritten run of the same name left (also
an epoch saved in the record whose scalars an interrupt kept from being written): the curves of a
resumed run continue without a duplicated or a missing step.
"""
from __future__ import annotations

import math
from pathlib import Path

from runner import safe_files
from runner.errors import UsageError

RECORD_ONLY = ("epoch",)  # columns that are the step, not a scalar


class TensorBoardLog:
    """The TensorBoard event files of one run, in `<folder>/<run name>`."""

    def __init__(self, folder: str | Path, run_name: str, saved_rows: list[dict]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        try:
            self.writer = SummaryWriter(str(Path(folder) / run_name), purge_step=0)
        except OSError as error:
            raise safe_files.unwritable(Path(folder) / run_name, error) from None
        for row in saved_rows:
            self.add_row(row)

    def add_row(self, row: dict) -> None:
        """Write an epoch's row: each finite number under its column's name, at the row's epoch."""
        for column, value in row.items():
            if column not in RECORD_ONLY and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(column, value, global_step=row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
