"""ζ from the recorded r of each probe batch: ζ with its standard error, ζ formed from any subset of
a probe's batches (so that one, two or four batches per epoch compare on the same runs), and the
runs whose place in the four regions their ζ's uncertainty leaves open.

A record keeps each batch's r where its run probed several batches per epoch (`probe_r0`, ...) or
carried extra probes (`train_probe_r0`, `heldout_probe_r0`, ...; see `records.BATCH_COLUMN`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from runner import records
from analysis.loading import runs_at_epoch, zeta_column, zetas_at
from analysis.selection import ModelSelection
from susceptibility.zeta import drop_standard_errors, zeta_standard_errors

MAIN = "probe"  # the probe that defines the run's ζ


def batch_columns(table: pd.DataFrame, probe: str) -> list[str]:
    """The columns of r of a probe's batches that hold values, in batch order."""
    found = {}
    for column in table.columns:
        match = records.BATCH_COLUMN.match(column)
        if match and match["probe"] == probe and table[column].notna().any():
            found[int(match["batch"])] = column
    return [found[batch] for batch in sorted(found)]


def probes_with_batches(table: pd.DataFrame) -> list[str]:
    """The probes whose batches the records keep: the main one first, then the extra ones by name."""
    names = {records.BATCH_COLUMN.match(c)["probe"] for c in table.columns if records.BATCH_COLUMN.match(c)}
    names = [name for name in names if batch_columns(table, name)]
    return sorted(names, key=lambda name: (name != MAIN, name))


def zeta_of_batches(table: pd.DataFrame, columns: list[str], convention: str = "paper") -> pd.Series:
    """Per row of `table`, ζ of its run at that epoch with r taken as the mean of the given batch
    columns (one column: that batch alone)."""
    drops = table[columns].mean(axis=1)
    zetas = pd.Series(np.nan, index=table.index)
    for _, rows in table.groupby("run"):
        zetas[rows.index] = zetas_at(rows["epoch"].to_numpy(), drops[rows.index].to_numpy(), convention)
    return zetas


def zeta_errors_of_batches(table: pd.DataFrame, columns: list[str], convention: str = "paper") -> pd.Series:
    """Per row of `table`, the standard error of `zeta_of_batches` from the spread of the batches'
    r within each epoch (NaN with fewer than two batches)."""
    errors = pd.Series(np.nan, index=table.index)
    for _, rows in table.sort_values("epoch").groupby("run"):
        per_epoch = drop_standard_errors(rows[columns].to_numpy())
        errors[rows.index] = zeta_standard_errors(per_epoch, convention)
    return errors


def zeta_with_errors(table: pd.DataFrame, probe: str, epoch: int | None = None,
                     convention: str = "paper") -> pd.DataFrame:
    """Per run at `epoch` (None: each run's last): ζ from all of a probe's batches and its standard
    error."""
    columns = batch_columns(table, probe)
    values = table.assign(zeta=zeta_of_batches(table, columns, convention),
                          zeta_se=zeta_errors_of_batches(table, columns, convention))
    return runs_at_epoch(values, epoch)[["zeta", "zeta_se"]]


def with_zeta_of(table: pd.DataFrame, columns: list[str], convention: str = "paper") -> pd.DataFrame:
    """`table` with its ζ column (of `convention`) replaced by ζ of the given batch columns, so that
    every rule and rank correlation of the analysis can be applied to it."""
    return table.assign(**{zeta_column(convention): zeta_of_batches(table, columns, convention)})


def uncertain_regions(selection: ModelSelection, errors: pd.Series) -> pd.DataFrame:
    """The runs whose ζ lies within two standard errors of the mean ζ that splits the regions: their
    side of the split, and so their region, is not settled by their probes."""
    runs = selection.runs.join(errors.rename("zeta_se"), how="left")
    distance = (runs["zeta"] - selection.zeta_mean).abs()
    close = runs[distance < 2 * runs["zeta_se"]]
    return close.assign(distance_in_se=distance[close.index] / close["zeta_se"])[
        ["zeta", "zeta_se", "distance_in_se", "region"]]
