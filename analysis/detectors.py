"""Which samples are memorized: the per-sample scores of the runs (AUM, cumulative loss, forgetting
events, learned-at, prediction changes) compared as detectors of the wrong labels, by the AUROC and
average precision the records hold for every epoch, or, at the last epoch, recomputed from the
per-sample file each run writes beside its record (`<run>.samples.csv.gz`).

Recomputing matters for forgetting events: a sample never predicted as its label counts as
forgotten infinitely often (Toneva et al.), as `signals.TrainingSignals.suspicion` counts it now;
records written before counted it as 0 forgetting events, so their `forgetting_*` columns hold the
other convention at every epoch. The per-sample file holds the last epoch only, so only that epoch
can be recomputed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

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


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under the ROC curve of `scores` (higher flags) for finding the `positive` samples:
    the Mann-Whitney statistic with tied scores given their mean rank, as `signals.auroc`."""
    positive = np.asarray(positive, dtype=bool)
    ranks = rankdata(scores)
    hits, misses = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - hits * (hits + 1) / 2) / (hits * misses))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """The precision at each distinct threshold of `scores`, from the highest down, weighted by the
    recall it adds (tied scores enter together), as `signals.average_precision`."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    ordered = np.asarray(scores, dtype=float)[order]
    ends = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    found = np.cumsum(np.asarray(positive, dtype=float)[order])[ends]
    return float(np.diff(found, prepend=0.0) / found[-1] @ (found / (ends + 1)))


def sample_suspicion(samples: pd.DataFrame) -> pd.DataFrame:
    """Each score of a per-sample file turned so that a higher value flags a likely wrong label, as
    `signals.TrainingSignals.suspicion` turns it: a sample seen but never learned (no learned-at and
    no forgetting event) has infinitely many forgetting events, one not learned now is learned at ∞."""
    never = samples["aum"].notna() & samples["learned_at"].isna() & (samples["forgetting"] == 0)
    return pd.DataFrame({"aum": -samples["aum"], "csl": samples["csl"],
                         "forgetting": samples["forgetting"].astype(float).mask(never, np.inf),
                         "learned_at": samples["learned_at"].fillna(np.inf), "changes": samples["changes"]})


def samples_path(folder: str | Path, run: str) -> Path:
    """Where a run keeps its per-sample scores beside its record."""
    return Path(folder) / f"{run}{records.SAMPLES_SUFFIX}"


def sample_file_values(folder: str | Path, table: pd.DataFrame) -> pd.DataFrame | None:
    """Per run, score and measure at its last epoch, recomputed from its per-sample file and the
    known noise (long format, as `detector_values`); None unless every run with detector columns has
    such a file with true labels."""
    last = runs_at_epoch(table)
    last = last[last[records.DETECTOR_COLUMNS].notna().any(axis=1)]
    paths = {run: samples_path(folder, run) for run in last.index}
    if last.empty or not all(path.is_file() for path in paths.values()):
        return None
    rows = []
    for run, path in paths.items():
        samples = pd.read_csv(path)
        if samples["true"].isna().any():
            return None
        wrong = (samples["assigned"] != samples["true"]).to_numpy()
        for score, values in sample_suspicion(samples).items():
            values = values.to_numpy()
            rows += [(run, last.loc[run, "seed"], score, "auroc", auroc(values, wrong)),
                     (run, last.loc[run, "seed"], score, "ap", average_precision(values, wrong))]
    return pd.DataFrame(rows, columns=["run", "seed", "score", "measure", "value"]).assign(moment="last epoch")


def detector_values(table: pd.DataFrame, folder: str | Path | None = None) -> pd.DataFrame:
    """Per run, moment (`MOMENTS`), score and measure: the detector's value; long format. With the
    records' `folder`, the last epoch's values are recomputed from the per-sample files where every
    run has one (`sample_file_values`); otherwise, and at the best-test epoch, they are the
    records' own."""
    recomputed = sample_file_values(folder, table) if folder is not None else None
    frames = [] if recomputed is None else [recomputed]
    moments = (("last epoch", runs_at_epoch(table)), ("best test epoch", best_test_rows(table)))
    for moment, rows in moments[len(frames):]:
        long = rows[records.DETECTOR_COLUMNS + ["seed"]].reset_index().melt(
            id_vars=["run", "seed"], var_name="column", value_name="value")
        parts = long["column"].str.rsplit("_", n=1, expand=True)
        frames.append(long.assign(moment=moment, score=parts[0], measure=parts[1]))
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def detector_table(table: pd.DataFrame, by_seed: bool = False, folder: str | Path | None = None) -> pd.DataFrame:
    """Each score's AUROC and average precision as a detector of the wrong labels, at each run's last
    epoch and at its best-test epoch: mean and sample std over the runs (`by_seed`: over the runs of
    each seed), with the number of runs. Rows in the order of `records.SAMPLE_SCORES`. With the
    records' `folder`, the last epoch's values come from the per-sample files (`detector_values`)."""
    values = detector_values(table, folder)
    keys = ["moment", "score", "measure"] + (["seed"] if by_seed else [])
    values["score"] = pd.Categorical(values["score"], categories=list(records.SAMPLE_SCORES), ordered=True)
    values["moment"] = pd.Categorical(values["moment"], categories=list(MOMENTS), ordered=True)
    return values.groupby(keys, observed=True)["value"].agg(runs="count", mean="mean", std="std")


def detector_curves(table: pd.DataFrame, measure: str = "auroc") -> pd.DataFrame:
    """Per epoch (rows) and score (columns): the mean over runs of the score's `measure`."""
    columns = {f"{score}_{measure}": score for score in records.SAMPLE_SCORES}
    return table.groupby("epoch")[list(columns)].mean().rename(columns=columns)
