"""Model selection across runs without clean labels: the paper's four regions, the run each rule picks,
Kendall's τ between ζ and memorization, and warnings where too few runs or epochs make them fragile.

Pure functions of the runs' table (see `loading`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from analysis.loading import describe_epoch, runs_at_epoch, zeta_column


# Below these counts a region split, a rank correlation across runs or τ along a run says little.
MIN_RUNS = 5
MIN_EPOCHS = 5
# The four regions of the model-selection study, split at the mean training accuracy and mean ζ.
REGIONS = pd.DataFrame(
    {"train_acc": ["high", "high", "low", "low"], "zeta": ["low", "high", "low", "high"],
     "meaning": ["trainable, resists memorization", "trainable, memorizes",
                 "not trainable, resists memorization", "neither"]},
    index=pd.Index([1, 2, 3, 4], name="region"))
SELECTION_RULES = {
    "region 1": "Region 1, highest training accuracy in it",
    "train acc": "training accuracy alone, highest",
    "zeta": "zeta alone, lowest",
    "oracle": "oracle, highest test accuracy",
}


@dataclass(frozen=True)
class Correlation:
    """Kendall's τ-b with its two-sided p-value over `n` pairs."""

    tau: float
    pvalue: float
    n: int


def kendall(x, y) -> Correlation:
    """Kendall's τ over the pairs where both values are finite; NaN with fewer than two such pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    n = int(finite.sum())
    if n < 2:
        return Correlation(np.nan, np.nan, n)
    result = kendalltau(x[finite], y[finite])
    return Correlation(float(result.statistic), float(result.pvalue), n)


def tau_across_runs(table: pd.DataFrame, epoch: int | None = None,
                    convention: str = "paper") -> Correlation:
    """τ between the runs' ζ and their noisy-subset training accuracy at `epoch` (None: each run's last)."""
    runs = runs_at_epoch(table, epoch)
    return kendall(runs[zeta_column(convention)], runs["train_noisy_acc"])


def tau_along_epochs(table: pd.DataFrame, convention: str = "paper") -> pd.DataFrame:
    """Per run, τ between ζ(t) and noisy-subset training accuracy over the epochs t of that run."""
    column = zeta_column(convention)
    taus = {run: asdict(kendall(rows[column], rows["train_noisy_acc"]))
            for run, rows in table.groupby("run")}
    return pd.DataFrame.from_dict(taus, orient="index", columns=["tau", "pvalue", "n"])


@dataclass
class ModelSelection:
    """The four-region study of one epoch: each run's region, the regions' test accuracy, each rule's pick."""

    runs: pd.DataFrame       # per run: train_acc, zeta, test_acc, train_noisy_acc, test_size, region
    train_acc_mean: float
    zeta_mean: float
    regions: pd.DataFrame    # per region 1-4: REGIONS' columns, count, test_acc_mean, test_acc_std
    picks: pd.DataFrame      # per rule of SELECTION_RULES: the picked run and its values
    left_out: list[str]      # runs without training accuracy or ζ at the epoch
    epoch: int | None
    convention: str


def region_of(train_acc_high: pd.Series, zeta_low: pd.Series) -> pd.Series:
    """Region 1 (high, low), 2 (high, high), 3 (low, low) or 4 (low, high) of training accuracy and ζ."""
    return 1 + 2 * (~train_acc_high).astype(int) + (~zeta_low).astype(int)


def regions_at(train_acc, zeta, train_acc_mean, zeta_mean):
    """The region of each run given the means that split them (arrays of any shape, broadcast
    against the means): "high" training accuracy is above its mean and "low" ζ below its mean, so a
    run at a mean (up to the rounding in computing it, see `on_boundary`) counts as low training
    accuracy or high ζ."""
    train_acc_high = (train_acc > train_acc_mean) & ~at_mean(train_acc, train_acc_mean)
    zeta_low = (zeta < zeta_mean) & ~at_mean(zeta, zeta_mean)
    return region_of(train_acc_high, zeta_low)


def best_run(runs: pd.DataFrame, column: str, largest: bool = True) -> str | None:
    """The run with the largest (or smallest) `column`, the first by name on ties; None if no run."""
    if runs.empty:
        return None
    return runs[column].idxmax() if largest else runs[column].idxmin()


def region_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per region: its definition, how many runs it holds, their test accuracy mean and sample std."""
    stats = runs.groupby("region")["test_acc"].agg(["size", "mean", "std"])
    stats = stats.reindex(REGIONS.index)
    summary = REGIONS.copy()
    summary["count"] = stats["size"].fillna(0).astype(int)
    summary["test_acc_mean"], summary["test_acc_std"] = stats["mean"], stats["std"]
    return summary


def rule_picks(runs: pd.DataFrame) -> pd.DataFrame:
    """The run each selection rule picks, with its training accuracy, ζ, test accuracy and region."""
    picked = {
        "region 1": best_run(runs[runs["region"] == 1], "train_acc"),
        "train acc": best_run(runs, "train_acc"),
        "zeta": best_run(runs, "zeta", largest=False),
        "oracle": best_run(runs.dropna(subset=["test_acc"]), "test_acc"),  # none without a test set
    }
    picks = runs.reindex(list(picked.values()))
    picks.insert(0, "run", list(picked.values()))
    picks.index = pd.Index(list(picked), name="rule")
    return picks


def select_models(table: pd.DataFrame, epoch: int | None = None,
                  convention: str = "paper") -> ModelSelection:
    """Split the runs at the mean training accuracy and mean ζ of `epoch` (None: each run's last).

    "High" training accuracy is above its mean and "low" ζ below its mean, so a run at a mean (up
    to the rounding in computing it, see `on_boundary`) counts as low training accuracy or high ζ.
    Runs without a test set are placed and picked like the others; only the oracle needs test
    accuracy. Raises ValueError when no run can be placed.
    """
    snapshot = runs_at_epoch(table, epoch)
    values = pd.DataFrame({"train_acc": snapshot["train_acc"],
                           "zeta": snapshot[zeta_column(convention)],
                           "test_acc": snapshot["test_acc"],
                           "train_noisy_acc": snapshot["train_noisy_acc"],
                           "test_size": snapshot["test_size"]})
    runs = values.dropna(subset=["train_acc", "zeta"])  # runs without a test set are placed too
    if runs.empty:
        raise ValueError(f"no run has training accuracy and zeta at {describe_epoch(epoch)}")
    train_acc_mean, zeta_mean = runs["train_acc"].mean(), runs["zeta"].mean()
    runs = runs.assign(region=regions_at(runs["train_acc"], runs["zeta"], train_acc_mean, zeta_mean))
    left_out = sorted(set(table["run"]) - set(runs.index))
    return ModelSelection(runs, float(train_acc_mean), float(zeta_mean), region_summary(runs),
                          rule_picks(runs), left_out, epoch, convention)


def at_mean(values, mean):
    """Which of `values` (an array of any shape, broadcast against `mean`) equal `mean` up to
    rounding in computing it."""
    return np.isclose(values, mean, rtol=1e-9, atol=1e-12)


def on_boundary(values: pd.Series, mean: float) -> pd.Series:
    """Which values equal `mean` (up to rounding in computing it)."""
    return pd.Series(at_mean(values, mean), index=values.index)


def listed(names) -> str:
    """Up to five names, then how many more."""
    names = list(names)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def selection_warnings(selection: ModelSelection) -> list[str]:
    """Why a region split may mislead: too few runs to split, or runs exactly on a boundary, whose
    region is then a convention rather than a finding."""
    runs, warnings = selection.runs, []
    if len(runs) < MIN_RUNS:
        warnings.append(f"only {len(runs)} run{'s' * (len(runs) != 1)} to split into regions; with fewer "
                        f"than {MIN_RUNS} the means and the regions say little")
    for column, mean, side in (("train_acc", selection.train_acc_mean, "training accuracy, counted as low"),
                               ("zeta", selection.zeta_mean, "zeta, counted as high")):
        on_it = runs.index[on_boundary(runs[column], mean)]
        if len(on_it):
            warnings.append(f"exactly on the mean {side}: {listed(on_it)}")
    return warnings


def correlation_warnings(across: Correlation, along: pd.DataFrame) -> list[str]:
    """Rank correlations that rest on too few runs (across) or too few epochs (along a run)."""
    warnings = []
    if across.n < MIN_RUNS:
        warnings.append(f"Kendall's tau across runs rests on {across.n} run{'s' * (across.n != 1)} with "
                        f"noisy-subset accuracy; fewer than {MIN_RUNS} give no usable rank correlation")
    short = along.index[(along["n"] > 0) & (along["n"] < MIN_EPOCHS)]
    if len(short):
        warnings.append(f"tau along epochs rests on fewer than {MIN_EPOCHS} epochs with zeta in "
                        f"{len(short)} run{'s' * (len(short) != 1)}: {listed(short)}")
    return warnings
