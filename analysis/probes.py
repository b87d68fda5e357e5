"""ζ from the recorded r of each probe batch: ζ with its standard error, ζ formed from any subset of
a probe's batches (so that one, two or four batches per epoch compare on the same runs), and the
runs whose place in the four regions their ζ's uncertainty leaves open.

A record keeps each batch's r where its run probed several batches per epoch (`probe_r0`, ...) or
carried extra probes (`train_probe_r0`, `heldout_probe_r0`, ...; see `records.BATCH_COLUMN`).

ζ's whole uncertainty has three parts. The draw of each epoch's batches (and their augmentation)
shows in the spread of the batches within an epoch. The draw of the probe set's random labels is
made once per run and shared by every batch, so no number of batches averages it out; it shows where
a run carries an extra probe on the same training images with random labels of its own: the two ζ
differ by their batches and by their label draws. The image pool (training images or images the
network never trained on) is a choice of probe, shown by the extra probe on held-out images.
`uncertainty_components` measures the three; `total_zeta_errors` gives a run's ζ the standard
error of its batches and its label draw together, which `uncertain_regions` uses.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from runner import records
from analysis.loading import runs_at_epoch, zeta_column, zetas_at
from analysis.selection import ModelSelection
from susceptibility.zeta import drop_standard_errors, zeta_standard_errors

MAIN = "probe"  # the probe that defines the run's ζ
EXTRA_TRAIN, EXTRA_HELDOUT = "train_probe", "heldout_probe"  # extra probes on training and held-out images
# The variance that the draw of the probe set's random labels adds to ζ, as a multiple of the
# variance that the draw of one batch per epoch adds, at the last epoch: measured on the 32 runs of
# docs/records/probe_study (`label_draw_ratio` there; tests/test_reproduction.py checks that it is
# what those records give). Used for runs whose own records cannot measure it.
LABEL_DRAW_RATIO = 0.54


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


def one_batch_errors(table: pd.DataFrame, probe: str, epoch: int | None = None,
                     convention: str = "paper") -> pd.Series:
    """Per run at `epoch`: the standard error that one batch per epoch of `probe` leaves ζ, √k times
    that of ζ of its k batches (ζ is linear in each epoch's r); NaN with fewer than two batches."""
    columns = batch_columns(table, probe)
    return zeta_with_errors(table, probe, epoch, convention)["zeta_se"] * len(columns) ** 0.5


def label_draw_comparable(table: pd.DataFrame) -> bool:
    """Whether the records carry what measures the label-draw part: an extra probe of several
    batches on the training images beside a main probe on the training images too."""
    sources = set(table.drop_duplicates("run")["probe_source"].dropna()) if "probe_source" in table else set()
    return sources == {"train"} and len(batch_columns(table, EXTRA_TRAIN)) > 1


def uncertainty_components(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> pd.DataFrame:
    """Per run at `epoch` (None: each run's last), for records with an extra probe on the training
    images beside a main probe on them too: ζ of the main probe and of each extra probe (all its
    batches), their batch standard errors (the main probe's from its own batches, or else from the
    extra training probe's spread, since it draws batches from the same images), the label-draw
    difference (main minus extra training probe: other labels and other batches) and the image-pool
    difference (extra training minus extra held-out probe: other images, labels and batches; NaN
    without a held-out probe)."""
    if not label_draw_comparable(table):
        raise ValueError("the records carry no extra probe of several batches on the training images beside "
                         "a main probe on them (--extra-probes train with --extra-probe-batches 2 or more)")
    train = zeta_with_errors(table, EXTRA_TRAIN, epoch, convention)
    heldout = (zeta_with_errors(table, EXTRA_HELDOUT, epoch, convention) if batch_columns(table, EXTRA_HELDOUT)
               else pd.DataFrame(np.nan, index=train.index, columns=train.columns))
    main = runs_at_epoch(table, epoch)[zeta_column(convention)]
    return pd.DataFrame({"zeta": main, "zeta_train": train["zeta"], "zeta_heldout": heldout["zeta"],
                         "se_main": main_batch_errors(table, epoch, convention),
                         "main_batches": max(len(batch_columns(table, MAIN)), 1), "se_train": train["zeta_se"],
                         "se_heldout": heldout["zeta_se"], "label_difference": main - train["zeta"],
                         "pool_difference": train["zeta"] - heldout["zeta"]})


def main_batch_errors(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> pd.Series:
    """Per run: the batch standard error of its ζ, from the main probe's batches where it has
    several, else from an extra probe's on the same training images (scaled to the main probe's
    batches per epoch, here one); NaN where neither is recorded."""
    if batch_columns(table, MAIN):
        return zeta_with_errors(table, MAIN, epoch, convention)["zeta_se"]
    if label_draw_comparable(table):
        return one_batch_errors(table, EXTRA_TRAIN, epoch, convention)
    return pd.Series(np.nan, index=runs_at_epoch(table, epoch).index)


def mean_square(values: pd.Series) -> float:
    """The mean of the squares of the known values."""
    return float((values.dropna() ** 2).mean())


def component_summary(components: pd.DataFrame) -> dict[str, float]:
    """The three parts of ζ's uncertainty over the runs of `uncertainty_components`, each as a
    standard deviation (the root of its variance, averaged over the runs): `batch`, of one batch per
    epoch (k·SE²_main for a main probe of k batches); `label`, of the label draw, from E[(main − extra
    training)²] = SE²_main + SE²_train + 2 σ²_label; `pool`, of the image pool beyond batches and
    labels, from E[(extra training − extra held-out)²] = SE²_train + SE²_held-out + 2 σ²_label + σ²_pool
    (its mean offset included). A variance that comes out negative is reported as 0. Also `ratio`,
    σ²_label over the one-batch variance, and the mean of each difference (`label_offset`,
    `pool_offset`)."""
    batch = mean_square(components["se_main"] * components["main_batches"] ** 0.5)
    label = (mean_square(components["label_difference"]) - mean_square(components["se_main"])
             - mean_square(components["se_train"])) / 2
    pool = (mean_square(components["pool_difference"]) - mean_square(components["se_train"])
            - mean_square(components["se_heldout"]) - 2 * label)
    return {"batch": batch ** 0.5, "label": max(label, 0.0) ** 0.5, "pool": max(pool, 0.0) ** 0.5,
            "ratio": max(label, 0.0) / batch, "label_offset": float(components["label_difference"].mean()),
            "pool_offset": float(components["pool_difference"].mean()), "runs": len(components)}


def label_draw_ratio(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> tuple[float, str]:
    """The label-draw variance of ζ over its one-batch batch variance, and where it comes from: the
    records themselves where they carry an extra probe on the training images beside the main one
    (`component_summary` over their runs), else `LABEL_DRAW_RATIO`, measured on the probe study."""
    if label_draw_comparable(table):
        summary = component_summary(uncertainty_components(table, epoch, convention))
        return summary["ratio"], f"measured on these {summary['runs']} runs' extra probe on the training images"
    return LABEL_DRAW_RATIO, "as measured on the probe study of docs/REPRODUCTION.md"


def total_zeta_errors(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper",
                      ratio: float | None = None) -> pd.Series:
    """Per run: the standard error of its ζ from the draw of its batches and the draw of its random
    labels together, √(SE² + ρ·k·SE²), with SE the batch part of k batches per epoch
    (`main_batch_errors`; k·SE² is one batch's variance) and ρ the label-draw ratio (default:
    `label_draw_ratio`). NaN where the batch part is unknown (one batch per epoch, no extra probe)."""
    ratio = label_draw_ratio(table, epoch, convention)[0] if ratio is None else ratio
    batches = max(len(batch_columns(table, MAIN)), 1)
    errors = main_batch_errors(table, epoch, convention)
    return errors * (1 + ratio * batches) ** 0.5
