"""Which samples are memorized: the per-sample scores of the runs (AUM, cumulative loss, forgetting
events, learned-at, prediction changes) compared as detectors of the wrong labels, by the AUROC and
average precision the records hold for every epoch."""
from __future__ import annotations

import pandas as pd

from runner import records
from analysis.loading import runs_at_epoch

MEASURES = {"auroc": "AUROC", "ap": "average precision"}
MOMENTS = {"last epoch": "at each run's last epoch", "best test epoch": "at each run's epoch of best test accuracy"}


def has_detectors(table: pd.DataFrame) -> bool:
    """Whether the records hold detector columns with values (runs with ground truth, recorded
    since the per-sample scores were kept)."""
    return all(column in table for column in records.DETECTOR_COLUMNS) and \
        table[records.DETECTOR_COLUMNS].notna().any().any()


def best_test_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run, indexed by run: its epoch of highest test accuracy (the first on ties)."""
    return table.loc[table.groupby("run")["test_acc"].idxmax()].set_index("run").sort_index()


def detector_values(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, moment (`MOMENTS`), score and measure: the detector's value; long format."""
    frames = []
    for moment, rows in (("last epoch", runs_at_epoch(table)), ("best test epoch", best_test_rows(table))):
        long = rows[records.DETECTOR_COLUMNS + ["seed"]].reset_index().melt(
            id_vars=["run", "seed"], var_name="column", value_name="value")
        parts = long["column"].str.rsplit("_", n=1, expand=True)
        frames.append(long.assign(moment=moment, score=parts[0], measure=parts[1]))
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def detector_table(table: pd.DataFrame, by_seed: bool = False) -> pd.DataFrame:
    """Each score's AUROC and average precision as a detector of the wrong labels, at each run's last
    epoch and at its best-test epoch: mean and sample std over the runs (`by_seed`: over the runs of
    each seed), with the number of runs. Rows in the order of `records.SAMPLE_SCORES`."""
    values = detector_values(table)
    keys = ["moment", "score", "measure"] + (["seed"] if by_seed else [])
    values["score"] = pd.Categorical(values["score"], categories=list(records.SAMPLE_SCORES), ordered=True)
    values["moment"] = pd.Categorical(values["moment"], categories=list(MOMENTS), ordered=True)
    return values.groupby(keys, observed=True)["value"].agg(runs="count", mean="mean", std="std")


def detector_curves(table: pd.DataFrame, measure: str = "auroc") -> pd.DataFrame:
    """Per epoch (rows) and score (columns): the mean over runs of the score's `measure`."""
    columns = {f"{score}_{measure}": score for score in records.SAMPLE_SCORES}
    return table.groupby("epoch")[list(columns)].mean().rename(columns=columns)
