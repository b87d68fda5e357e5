"""The other signals of memorization that need no clean label, as rules: selecting models across runs
by each signal, and stopping a run early (Label Wave, noisy hold-out, ζ)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from runner import records
from analysis.loading import runs_at_epoch, zeta_column
from analysis.uncertainty import bounds_text
from analysis.selection import best_run, kendall, select_models


class Signal(NamedTuple):
    """A quantity a run records that might select models without clean labels."""

    label: str     # what it is, for tables and axes
    rule: str      # the name of the selection rule that uses it alone
    higher: bool   # whether a higher value should mean a better model


# The signals compared across runs, by table column.
SIGNALS = {
    "train_acc": Signal("training accuracy", "train acc", True),
    "zeta": Signal("susceptibility ζ", "zeta", False),
    records.NOISY_HOLDOUT_ACC: Signal("noisy hold-out accuracy", "noisy hold-out", True),
    "pred_changes": Signal("prediction changes (%)", "prediction changes", False),
    "neg_margin": Signal("negative-margin fraction (%)", "negative margins", False),
}
LABEL_WAVE_WINDOW = 3    # epochs in the moving average of prediction changes
LABEL_WAVE_PATIENCE = 3  # epochs without a new minimum of that average before stopping


def signal_values(table: pd.DataFrame, epoch: int | None, convention: str) -> pd.DataFrame:
    """Per run at `epoch` (None: each run's last): every signal of `SIGNALS` and the test accuracy."""
    snapshot = runs_at_epoch(table, epoch)
    values = snapshot[[column for column in SIGNALS if column != "zeta"] + ["test_acc"]].copy()
    values.insert(1, "zeta", snapshot[zeta_column(convention)])
    values["test_size"] = snapshot["test_size"]
    return values


def compare_signals(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> pd.DataFrame:
    """Model selection by each signal across runs: the run each rule picks and its test accuracy,
    and Kendall's τ between the signal and test accuracy over the runs that have it.

    Rules: the paper's Region 1 rule, each signal alone (highest training and hold-out accuracy,
    lowest ζ, prediction changes and negative-margin fraction) and the oracle (highest test
    accuracy). A good signal has τ of the sign of its direction: positive where higher is better.
    `test_acc_95` is the 95 % binomial interval of each pick's test accuracy.
    """
    values = signal_values(table, epoch, convention)
    rows = {}
    selection = select_models(table, epoch, convention)
    region_pick = selection.picks.loc["region 1", "run"]
    rows["region 1"] = {"signal": "Region 1 (training accuracy, ζ)", "direction": "",
                        "run": region_pick, "test_acc": values["test_acc"].get(region_pick, np.nan)}
    for column, (label, rule, higher) in SIGNALS.items():
        runs = values.dropna(subset=[column, "test_acc"])
        pick = best_run(runs, column, largest=higher)
        correlation = kendall(values[column], values["test_acc"])
        rows[rule] = {"signal": label, "direction": "highest" if higher else "lowest",
                      "run": pick, "test_acc": runs["test_acc"].get(pick, np.nan),
                      "tau_test_acc": correlation.tau, "pvalue": correlation.pvalue, "runs": correlation.n}
    rows["oracle"] = {"signal": "test accuracy", "direction": "highest",
                      "run": best_run(values.dropna(subset=["test_acc"]), "test_acc"),
                      "test_acc": values["test_acc"].max()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.insert(frame.columns.get_loc("test_acc") + 1, "test_acc_95",
                 [bounds_text(row["test_acc"], values["test_size"].get(row["run"], np.nan))
                  for _, row in frame.iterrows()])
    frame.index.name = "rule"
    return frame


def label_wave_epoch(epochs: pd.Series, changes: pd.Series, window: int = LABEL_WAVE_WINDOW,
                     patience: int = LABEL_WAVE_PATIENCE) -> float:
    """Label Wave's stopping epoch: the first local minimum of the moving average of prediction
    changes, confirmed once `patience` epochs pass without a lower average; if the run ends
    first, the epoch of the lowest average. NaN without prediction changes."""
    average = pd.Series(changes.to_numpy(), index=epochs.to_numpy()).rolling(window, min_periods=window).mean()
    best_epoch, best, waited = np.nan, np.inf, 0
    for epoch, value in average.dropna().items():
        if value < best:
            best_epoch, best, waited = epoch, value, 0
        else:
            waited += 1
            if waited >= patience:
                break
    return best_epoch


def stopping_epochs(rows: pd.DataFrame, zeta: str, window: int, patience: int) -> dict[str, float]:
    """The epoch each early-stopping rule picks within one run (rows sorted by epoch)."""
    def extreme(column: str, largest: bool, frame: pd.DataFrame = rows) -> float:
        values = frame.set_index("epoch")[column].dropna()
        if values.empty:
            return np.nan
        return values.idxmax() if largest else values.idxmin()

    return {
        "label wave": label_wave_epoch(rows["epoch"], rows["pred_changes"], window, patience),
        "noisy hold-out": extreme(records.NOISY_HOLDOUT_ACC, True),
        "zeta": extreme(zeta, False, rows[rows["epoch"] >= 1]),
        "last epoch": float(rows["epoch"].max()),
        "oracle": extreme("test_acc", True),
    }


def compare_stopping(table: pd.DataFrame, convention: str = "paper", window: int = LABEL_WAVE_WINDOW,
                     patience: int = LABEL_WAVE_PATIENCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Early stopping within each run: the epoch each rule stops at and the test accuracy there.

    Rules: Label Wave (first local minimum of the moving average of prediction changes), highest
    noisy hold-out accuracy, lowest ζ from epoch 1 on, the last epoch (no stopping) and the oracle
    (best test accuracy). Returns the per-run table (one row per run and rule) and, per rule, the
    mean over runs of the test accuracy at the stop and of its shortfall from the run's best.
    """
    zeta = zeta_column(convention)
    rows = []
    for run, epochs in table.sort_values("epoch").groupby("run"):
        tests = epochs.set_index("epoch")["test_acc"]
        for rule, stop in stopping_epochs(epochs, zeta, window, patience).items():
            test_acc = tests.get(stop, np.nan) if pd.notna(stop) else np.nan
            rows.append({"run": run, "rule": rule, "epoch": stop, "test_acc": test_acc,
                         "best_test_acc": tests.max(), "shortfall": tests.max() - test_acc})
    per_run = pd.DataFrame(rows, columns=["run", "rule", "epoch", "test_acc", "best_test_acc", "shortfall"])
    summary = per_run.groupby("rule", sort=False).agg(
        runs=("test_acc", "count"), test_acc_mean=("test_acc", "mean"), shortfall_mean=("shortfall", "mean"),
        shortfall_std=("shortfall", "std"))
    return per_run, summary
