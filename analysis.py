"""The paper's figures and model-selection table from a folder of run records.

`results.ipynb` draws its figures with these functions; from the shell,

    python analysis.py RESULTS_DIR [--epoch N] [--convention paper|reference]

prints the four-region model-selection table, the model each selection rule picks and Kendall's τ
between susceptibility ζ and memorization (training accuracy on the noisy subset).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy.stats import kendalltau

import records
from models import ARCHITECTURES

# ζ is recomputed from the probe losses under both running-mean conventions (PAPER.md).
ZETA_COLUMNS = {"paper": "zeta_paper", "reference": "zeta_reference"}
# Columns copied from the record's header into every row of its run: column -> (section, key).
RUN_FIELDS = {
    "model": ("args", "model"),
    "scale": ("args", "scale"),
    "lr_initial": ("args", "lr"),
    "optimizer": ("args", "optimizer"),
    "scheduler": ("args", "scheduler"),
    "seed": ("args", "seed"),
    "corruptprob": ("args", "corruptprob"),
    "noise_type": ("noise", "type"),
    "noise_rate": ("noise", "corrupt_prob"),
    "ground_truth": ("noise", "ground_truth"),
    "dataset": ("data", "dataset"),
    "train_size": ("data", "train_size"),
    "num_classes": ("data", "num_classes"),
    "fraction_wrong": ("noise", "fraction_wrong"),
    "finished": ("status", "finished"),
}
# Below these counts a region split, a rank correlation across runs or τ along a run says little.
MIN_RUNS = 5
MIN_EPOCHS = 5
ACCURACY_CURVES = {
    "train_acc": "training, all",
    "train_clean_acc": "training, clean subset",
    "train_noisy_acc": "training, noisy subset (memorization)",
    "test_acc": "test",
}
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


def zeta_column(convention: str) -> str:
    """The table column holding ζ under `convention` ("paper" or "reference")."""
    if convention not in ZETA_COLUMNS:
        raise ValueError(f"unknown zeta convention {convention!r}; use one of {sorted(ZETA_COLUMNS)}")
    return ZETA_COLUMNS[convention]


def running_zetas(epochs: np.ndarray, drops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ζ of the paper and of the reference notebook at each of `epochs`, from the drops r_τ there.

    Paper: ζ(t) = Σ_{τ=1..t} r_τ / t; reference notebook: Σ_{τ=1..t−1} r_τ / t. Both are NaN at
    t = 0, and from the first missing or non-finite r_τ on, since a mean over a gap is undefined.
    """
    epochs = epochs.astype(int)
    by_epoch = np.full(epochs.max() + 1, np.nan)
    by_epoch[epochs] = drops
    by_epoch[0] = 0.0  # the probe at initialization enters neither mean
    sums = np.cumsum(by_epoch)
    t = np.arange(len(by_epoch), dtype=float)
    t[0] = np.nan
    paper = sums / t
    reference = np.concatenate([[np.nan], sums[:-1]]) / t
    return paper[epochs], reference[epochs]


def meta_value(meta: dict, section: str, key: str) -> object:
    """`meta[section][key]`, or None where the record lacks it."""
    value = meta.get(section)
    return value.get(key) if isinstance(value, dict) else None


def run_table(name: str, record: records.RunRecord) -> pd.DataFrame:
    """The epoch rows of one run record with ζ recomputed and the run's identifying fields."""
    frame = pd.DataFrame(record.rows, columns=records.COLUMNS).astype(float)
    frame = frame.sort_values("epoch", ignore_index=True)
    frame["epoch"] = frame["epoch"].astype(int)
    if not frame.empty:
        drops = (frame["phi_before"] - frame["phi_after"]).to_numpy()
        frame["zeta_paper"], frame["zeta_reference"] = running_zetas(frame["epoch"].to_numpy(), drops)
    for column, (section, key) in RUN_FIELDS.items():
        frame[column] = meta_value(record.meta, section, key)
    if frame["ground_truth"].isna().all():
        frame["ground_truth"] = frame[["train_clean_acc", "train_noisy_acc"]].notna().any().any()
    frame.insert(0, "run", name)
    return frame


@dataclass
class LoadedRuns:
    """Every readable run record of a folder as one table, one row per run per epoch."""

    table: pd.DataFrame
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> why it was skipped


def load_runs(folder: str | Path) -> LoadedRuns:
    """Read every `*.csv` run record directly in `folder`.

    Other files (figures, hidden temporary files of a record being written) are ignored; a `.csv`
    file that is not a readable record is reported in `unreadable` rather than stopping the load.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    tables, unreadable = [], {}
    for path in sorted(folder.glob(f"*{records.SUFFIX}")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            tables.append(run_table(path.stem, records.read_record(path)))
        except (OSError, ValueError, csv.Error) as error:
            unreadable[path.name] = str(error)
    columns = ["run", *records.COLUMNS, *ZETA_COLUMNS.values(), *RUN_FIELDS]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    return LoadedRuns(table, unreadable)


def filter_runs(table: pd.DataFrame, patterns: list[str] | None) -> pd.DataFrame:
    """The rows of the runs whose names match any of the shell-style `patterns` (None: all runs)."""
    if patterns is None:
        return table
    names = table["run"].unique()
    unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
    if unmatched:
        raise ValueError(f"no run matches {unmatched}; runs: {sorted(names)}")
    keep = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    return table[table["run"].isin(keep)]


class MixedPopulations(ValueError):
    """The runs were trained on different data, so their ζ cannot be compared."""


def population_label(run: pd.Series) -> str:
    """The data a run was trained on, as one word: dataset, noise type and rate, training-set size
    (`cifar10/symmetric-0.5/n1000`); a part the record lacks is `?`."""
    noise = str(run["noise_type"]) if known(run["noise_type"]) else "?"
    if known(run["noise_rate"]):
        noise += f"-{run['noise_rate']:g}"
    size = f"n{int(run['train_size'])}" if known(run["train_size"]) else "?"
    return "/".join([str(run["dataset"]) if known(run["dataset"]) else "?", noise, size])


def populations(table: pd.DataFrame) -> pd.Series:
    """Per run, the label of the data it was trained on (see `population_label`)."""
    first_rows = table.drop_duplicates("run").set_index("run")
    return first_rows.apply(population_label, axis=1).rename("data")


def select_population(table: pd.DataFrame, data: str | None = None, selector: str = "--data {}") -> pd.DataFrame:
    """The runs trained on the data labelled `data`; with None, all runs, provided they share their data.

    ζ, the region boundaries and τ across runs compare models trained on the same data only, so runs
    on several datasets, noise types or rates or training-set sizes raise MixedPopulations, naming the
    groups and how to pick one (`selector` with the label in place of {}).
    """
    labels = populations(table)
    counts = labels.value_counts().sort_index()
    if data is not None:
        if data not in counts.index:
            raise ValueError(f"no run was trained on {data}; the runs' data: {', '.join(counts.index)}")
        return table[table["run"].isin(labels.index[labels == data])]
    if len(counts) > 1:
        groups = ", ".join(f"{label} ({count} run{'s' * (count > 1)})" for label, count in counts.items())
        raise MixedPopulations(f"the runs were trained on {len(counts)} different data ({groups}), and zeta "
                               f"compares only models trained on the same data; pick one with "
                               f"{selector.format(counts.index[0])}")
    return table


def zeta_mismatches(table: pd.DataFrame) -> list[str]:
    """Runs whose stored `susceptibility` column disagrees with ζ recomputed by the paper's formula."""
    close = np.isclose(table["susceptibility"], table["zeta_paper"], rtol=1e-6, atol=1e-9,
                       equal_nan=True)
    return sorted(table.loc[~close, "run"].unique())


def run_curves(table: pd.DataFrame, run: str, convention: str = "paper") -> pd.DataFrame:
    """Per epoch of `run`: training accuracy (all, clean, noisy subset), test accuracy and ζ."""
    rows = table[table["run"] == run].set_index("epoch")
    curves = rows[list(ACCURACY_CURVES)].copy()
    curves["zeta"] = rows[zeta_column(convention)]
    return curves


def runs_at_epoch(table: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """One row per run, indexed by run: its last epoch (None) or `epoch`; runs short of it are left out."""
    if epoch is None:
        rows = table.loc[table.groupby("run")["epoch"].idxmax()]
    else:
        rows = table[table["epoch"] == epoch]
    return rows.set_index("run").sort_index()


def describe_epoch(epoch: int | None) -> str:
    """How reports and titles name the epoch at which runs are compared."""
    return "the last epoch of each run" if epoch is None else f"epoch {epoch}"


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

    runs: pd.DataFrame       # per run: train_acc, zeta, test_acc, train_noisy_acc, region
    train_acc_mean: float
    zeta_mean: float
    regions: pd.DataFrame    # per region 1-4: REGIONS' columns, count, test_acc_mean, test_acc_std
    picks: pd.DataFrame      # per rule of SELECTION_RULES: the picked run and its values
    left_out: list[str]      # runs without training accuracy, ζ or test accuracy at the epoch
    epoch: int | None
    convention: str


def region_of(train_acc_high: pd.Series, zeta_low: pd.Series) -> pd.Series:
    """Region 1 (high, low), 2 (high, high), 3 (low, low) or 4 (low, high) of training accuracy and ζ."""
    return 1 + 2 * (~train_acc_high).astype(int) + (~zeta_low).astype(int)


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
        "oracle": best_run(runs, "test_acc"),
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
    Raises ValueError when no run can be placed.
    """
    snapshot = runs_at_epoch(table, epoch)
    values = pd.DataFrame({"train_acc": snapshot["train_acc"],
                           "zeta": snapshot[zeta_column(convention)],
                           "test_acc": snapshot["test_acc"],
                           "train_noisy_acc": snapshot["train_noisy_acc"]})
    runs = values.dropna(subset=["train_acc", "zeta", "test_acc"])
    if runs.empty:
        raise ValueError(f"no run has training accuracy, zeta and test accuracy at {describe_epoch(epoch)}")
    train_acc_mean, zeta_mean = runs["train_acc"].mean(), runs["zeta"].mean()
    train_acc_high = (runs["train_acc"] > train_acc_mean) & ~on_boundary(runs["train_acc"], train_acc_mean)
    zeta_low = (runs["zeta"] < zeta_mean) & ~on_boundary(runs["zeta"], zeta_mean)
    runs = runs.assign(region=region_of(train_acc_high, zeta_low))
    left_out = sorted(set(table["run"]) - set(runs.index))
    return ModelSelection(runs, float(train_acc_mean), float(zeta_mean), region_summary(runs),
                          rule_picks(runs), left_out, epoch, convention)


def on_boundary(values: pd.Series, mean: float) -> pd.Series:
    """Which values equal `mean` (up to rounding in computing it)."""
    return pd.Series(np.isclose(values, mean, rtol=1e-9, atol=1e-12), index=values.index)


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


class Signal(NamedTuple):
    """A quantity a run records that might select models without clean labels."""

    label: str     # what it is, for tables and axes
    rule: str      # the name of the selection rule that uses it alone
    higher: bool   # whether a higher value should mean a better model


# The signals compared across runs, by table column.
SIGNALS = {
    "train_acc": Signal("training accuracy", "train acc", True),
    "zeta": Signal("susceptibility ζ", "zeta", False),
    "noisy_holdout_acc": Signal("noisy hold-out accuracy", "noisy hold-out", True),
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
    return values


def compare_signals(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> pd.DataFrame:
    """Model selection by each signal across runs: the run each rule picks and its test accuracy,
    and Kendall's τ between the signal and test accuracy over the runs that have it.

    Rules: the paper's Region 1 rule, each signal alone (highest training and hold-out accuracy,
    lowest ζ, prediction changes and negative-margin fraction) and the oracle (highest test
    accuracy). A good signal has τ of the sign of its direction: positive where higher is better.
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
        "noisy hold-out": extreme("noisy_holdout_acc", True),
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


@dataclass
class SeedPopulations:
    """The paper's comparisons within each seed's population of runs, and their spread over seeds.

    A population is every run of one seed (on the same data): the regions, the rule picks and τ across
    runs are computed inside it, as the paper does for its one population, and then summarized over
    the populations, so that each rule's pick has a mean ± std and τ a spread.
    """

    taus: pd.DataFrame      # per seed: Kendall's tau of zeta against memorization across its runs
    picks: pd.DataFrame     # per rule (rows of compare_signals) and seed (columns): the pick's test accuracy
    summary: pd.DataFrame   # per rule: populations, mean and sample std over them of the pick's test accuracy
    regions: pd.DataFrame   # per region (placed within each population): runs over all seeds, test accuracy
    selections: dict[int, ModelSelection]


def seed_populations(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> SeedPopulations:
    """Split the runs by seed and compare the selection rules and τ within each seed's population."""
    taus, picks, selections, placed = {}, {}, {}, []
    for seed, runs in table.groupby("seed"):
        seed = int(seed)
        selections[seed] = select_models(runs, epoch, convention)
        taus[seed] = asdict(tau_across_runs(runs, epoch, convention))
        picks[f"seed {seed}"] = compare_signals(runs, epoch, convention)["test_acc"]
        placed.append(selections[seed].runs)
    picks = pd.DataFrame(picks)
    summary = pd.DataFrame({"populations": picks.notna().sum(axis=1), "test_acc_mean": picks.mean(axis=1),
                            "test_acc_std": picks.std(axis=1)})
    return SeedPopulations(pd.DataFrame.from_dict(taus, orient="index").rename_axis("seed"), picks, summary,
                           region_summary(pd.concat(placed)), selections)


def along_summary(along: pd.DataFrame) -> str:
    """One line on τ along the epochs of each run: its median, and how many runs have it positive
    and significant (p < 0.05)."""
    known_taus = along.dropna(subset=["tau"])
    positive = int(((known_taus["tau"] > 0) & (known_taus["pvalue"] < 0.05)).sum())
    return (f"tau(zeta, noisy-subset accuracy) along the epochs of each run: median {known_taus['tau'].median():.3f} "
            f"over {len(known_taus)} runs; positive with p < 0.05 in {positive}")


def seed_populations_report(populations_: SeedPopulations, along: pd.DataFrame) -> str:
    """The text of `analysis.py --per-seed`: τ per population, each rule's pick over the populations,
    the regions pooled over them, and τ along each run's epochs."""
    taus = populations_.taus
    return "\n".join([
        f"{len(taus)} seed populations; Kendall tau(zeta, noisy-subset training accuracy) across the runs "
        f"of each:",
        format_table(taus),
        f"mean over populations {mean_std_text(taus['tau'].mean(), taus['tau'].std(), digits=3)}",
        "",
        "Test accuracy of each rule's pick, per population and as mean ± std over populations:",
        format_table(populations_.picks.join(populations_.summary)),
        "",
        "Regions, placed within each population, pooled over the populations:",
        format_table(populations_.regions),
        "",
        along_summary(along),
    ])


FIGURE_FORMATS = ("png", "pdf")  # PNG to look at, PDF (vector) for a paper


def save_formats(figure: Figure, stem: Path, formats: tuple[str, ...] = FIGURE_FORMATS) -> list[Path]:
    """Write `figure` as `<stem>.<format>` for each of `formats`, creating the folder; return the paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{extension}") for extension in formats]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths


def save_figure(figure: Figure, folder: str | Path, name: str,
                formats: tuple[str, ...] = FIGURE_FORMATS) -> list[Path]:
    """Write `figure` as `<folder>/figures/<name>.png` and `.pdf` (or `formats`); return the paths."""
    return save_formats(figure, Path(folder) / "figures" / name, formats)


def write_figures(table: pd.DataFrame, selection: "ModelSelection", out_dir: str | Path,
                  epoch: int | None = None, convention: str = "paper",
                  curves: list[str] | None = None, formats: tuple[str, ...] = FIGURE_FORMATS,
                  compare: list[str] | None = None) -> list[Path]:
    """The notebook's figures as files in `out_dir`, each in every one of `formats`: ζ against
    memorization across runs, the four regions, the signals, the curves of the runs matching the
    `curves` patterns (none by default), and those matching the `compare` patterns side by side
    (`compare`, in the order of the patterns)."""
    chosen = sorted(filter_runs(table, curves)["run"].unique()) if curves else []
    figures = {f"curves_{run}": plot_run(table, run, convention) for run in chosen}
    if compare:
        compared = [run for pattern in compare for run in sorted(filter_runs(table, [pattern])["run"].unique())]
        figures["compare"] = plot_runs(table, list(dict.fromkeys(compared)), convention)
    figures["zeta_vs_memorization"] = plot_zeta_vs_memorization(table, epoch, convention)
    figures["regions"] = plot_regions(selection)
    figures["signals"] = plot_signals(table, epoch, convention)
    return [path for name, figure in figures.items() for path in save_formats(figure, Path(out_dir) / name, formats)]


def known(value) -> bool:
    """Whether a record field holds a value (not None, not NaN)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def model_name(model, scale) -> str:
    """`ResNet-18 ×0.25`: the architecture's usual name and the width multiplier."""
    if not known(model):
        return "unknown model"
    name = re.split(r",| \(| 1x", ARCHITECTURES.get(model, model))[0]
    return f"{name} ×{scale:g}" if known(scale) else name


def optimizer_name(optimizer: str) -> str:
    """`SGD`, `Adam`: an optimizer as papers write it."""
    return {"sgd": "SGD", "adam": "Adam"}.get(optimizer, optimizer)


def run_title(run: pd.Series) -> str:
    """A run as a paper names it: model and width, optimizer, learning rate and schedule; its data."""
    training = [model_name(run["model"], run["scale"])]
    optimizer = optimizer_name(run["optimizer"]) if known(run["optimizer"]) else ""
    learning_rate = f"lr {run['lr_initial']:g}" if known(run["lr_initial"]) else ""
    if optimizer or learning_rate:
        training.append(f"{optimizer} {learning_rate}".strip())
    if known(run["scheduler"]):
        training.append(f"{run['scheduler']} schedule")
    return ", ".join(training) + "\n" + describe_data(run)


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "folder": "image-folder"}


def describe_data(run: pd.Series) -> str:
    """`symmetric noise p = 0.5 (45.1 % wrong), 4000 cifar10 images`, from what the record holds."""
    if not known(run["noise_type"]):
        noise = "noise unknown"
    elif run["noise_type"] == "given":
        noise = "labels as given"
    else:
        noise = f"{run['noise_type']} noise" + (f" p = {run['noise_rate']:g}" if known(run["noise_rate"]) else "")
        if known(run["fraction_wrong"]):
            noise += f" ({100 * run['fraction_wrong']:.1f} % wrong)"
    size = f"{int(run['train_size'])} " if known(run["train_size"]) else ""
    dataset = f"{DATASET_NAMES.get(run['dataset'], run['dataset'])} " if known(run["dataset"]) else ""
    return f"{noise}, {size}{dataset}training images"


def chance_level(run: pd.Series) -> float:
    """Accuracy (%) of guessing a class uniformly at random; NaN where the class count is unknown."""
    return 100 / run["num_classes"] if known(run["num_classes"]) and run["num_classes"] > 0 else np.nan


def fit_range(values: list[float], margin: float = 0.08, low: float = -np.inf, high: float = np.inf) -> tuple:
    """Axis limits that hold every finite value with a small margin, clipped to [low, high]."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None
    bottom, top = finite.min(), finite.max()
    pad = margin * (top - bottom) if top > bottom else max(abs(top) * margin, 1e-3)
    return max(bottom - pad, low), min(top + pad, high)


def draw_run(accuracy_axes, zeta_axes, table: pd.DataFrame, run: str,
             convention: str = "paper") -> tuple[list[float], list[float]]:
    """Draw one run's accuracies on `accuracy_axes` and ζ on `zeta_axes`, marking chance level;
    return the values drawn on each, to fit the axes' ranges. Curves without data are left out."""
    curves = run_curves(table, run, convention)
    about = table[table["run"] == run].iloc[0]
    shown = [column for column in ACCURACY_CURVES if curves[column].notna().any()]
    for column in shown:
        accuracy_axes.plot(curves.index, curves[column], marker=".", label=ACCURACY_CURVES[column])
    chance = chance_level(about)
    if np.isfinite(chance):
        accuracy_axes.axhline(chance, color="gray", linestyle=":", linewidth=1,
                              label=f"chance ({chance:.0f} %)")
    zeta_axes.plot(curves.index, curves["zeta"], marker=".", color="black")
    zeta_axes.set(xlabel="epoch (0-based, as in the record)")
    zeta_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (accuracy_axes, zeta_axes):
        axes.grid(alpha=0.3)
    return [*curves[shown].to_numpy().ravel(), chance], curves["zeta"].tolist()


def plot_runs(table: pd.DataFrame, runs: list[str], convention: str = "paper") -> Figure:
    """Accuracies (top) and ζ (bottom) of each run over its epochs, the runs side by side on shared
    axes so that they compare at a glance; the axes fit the curves and mark chance level."""
    figure = Figure(figsize=(3.5 + 3.5 * len(runs), 6.5), layout="constrained")
    grid = figure.subplots(2, len(runs), sharex="col", sharey="row", height_ratios=[3, 2], squeeze=False)
    accuracies, zetas = [], []
    for column, run in enumerate(runs):
        run_accuracies, run_zetas = draw_run(grid[0, column], grid[1, column], table, run, convention)
        accuracies += run_accuracies
        zetas += run_zetas
    grid[0, 0].set(ylabel="accuracy (%)", ylim=fit_range(accuracies, low=0, high=100))
    grid[0, 0].legend(fontsize="small", loc="best")
    grid[1, 0].set(ylabel=f"susceptibility ζ\n({convention} convention)", ylim=fit_range(zetas))
    titles = [run_title(table[table["run"] == run].iloc[0]) for run in runs]
    if len(runs) == 1:
        figure.suptitle(titles[0], fontsize="medium")
        return figure
    trainings, data = zip(*(title.split("\n") for title in titles))
    shared_data = len(set(data)) == 1  # then said once, above the runs
    if shared_data:
        figure.suptitle(data[0], fontsize="medium")
    for axes, training, about in zip(grid[0], trainings, data):
        axes.set_title(training if shared_data else f"{training}\n{about}", fontsize="small")
    return figure


def plot_run(table: pd.DataFrame, run: str, convention: str = "paper") -> Figure:
    """Accuracies (top) and ζ (bottom) of one run over its epochs, on a shared epoch axis."""
    return plot_runs(table, [run], convention)


def plot_zeta_vs_memorization(table: pd.DataFrame, epoch: int | None = None,
                              convention: str = "paper") -> Figure:
    """ζ against noisy-subset training accuracy across runs, a marker per architecture and a colour
    per optimizer, with Kendall's τ and its p-value in the title."""
    runs = runs_at_epoch(table, epoch)
    correlation = tau_across_runs(table, epoch, convention)
    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    draw_by_model_and_optimizer(axes, runs[zeta_column(convention)], runs["train_noisy_acc"], runs)
    axes.set(xlabel=f"susceptibility ζ ({convention} convention)",
             ylabel="training accuracy on the noisy subset (%)\n(memorization)",
             title=f"Kendall τ = {correlation.tau:.2f}, p = {correlation.pvalue:.2g} "
                   f"({correlation.n} runs, {describe_epoch(epoch)})")
    axes.title.set_fontsize("medium")
    axes.grid(alpha=0.3)
    return figure


MARKERS = "osD^vP*Xph<>"


def draw_by_model_and_optimizer(axes, x: pd.Series, y: pd.Series, runs: pd.DataFrame, legend: bool = True,
                                **style) -> None:
    """Scatter the runs with a marker per architecture and a colour per optimizer, and (with
    `legend`) a legend of both."""
    models = sorted(runs["model"].dropna().unique())
    optimizers = sorted(runs["optimizer"].dropna().unique())
    colours = {name: f"C{i}" for i, name in enumerate(optimizers)}
    markers = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(models)}
    for (model, optimizer), group in runs.groupby([runs["model"].fillna("?"), runs["optimizer"].fillna("?")]):
        axes.scatter(x[group.index], y[group.index], marker=markers.get(model, "o"),
                     color=colours.get(optimizer, "gray"), s=45, zorder=2, **style)
    handles = [Line2D([], [], marker=markers[m], color="dimgray", linestyle="", label=model_name(m, None))
               for m in models]
    handles += [Patch(color=colours[o], label=optimizer_name(o)) for o in optimizers]
    if handles and legend:
        axes.legend(handles=handles, fontsize="small", loc="best", framealpha=0.8)


def plot_regions(selection: ModelSelection, population: str = "") -> Figure:
    """Training accuracy against ζ with the region boundaries, points coloured by test accuracy,
    the Region 1 pick circled and named in the legend, and the per-region table under the plot; the
    title names the `population` (e.g. "seed 0") where one is given."""
    runs = selection.runs
    figure = Figure(figsize=(7.5, 7.5), layout="constrained")
    axes, table_axes = figure.subplots(2, 1, height_ratios=[4, 1.3])
    points = axes.scatter(runs["zeta"], runs["train_acc"], c=runs["test_acc"], cmap="viridis", s=40,
                          edgecolors="white", linewidths=0.5, zorder=2)
    figure.colorbar(points, ax=axes, label="test accuracy (%)")
    axes.axhline(selection.train_acc_mean, color="dimgray", linestyle="--", linewidth=1.2, zorder=1,
                 label=f"mean training accuracy ({selection.train_acc_mean:.2f} %)")
    axes.axvline(selection.zeta_mean, color="dimgray", linestyle="-.", linewidth=1.2, zorder=1,
                 label=f"mean ζ ({selection.zeta_mean:.4f})")
    axes.margins(0.18)
    corners = {1: (0.01, 0.99), 2: (0.99, 0.99), 3: (0.01, 0.01), 4: (0.99, 0.01)}
    for region, (x, y) in corners.items():
        axes.text(x, y, f"Region {region}", transform=axes.transAxes, ha="left" if x < 0.5 else "right",
                  va="top" if y > 0.5 else "bottom", fontsize="small", fontweight="bold", color="dimgray",
                  zorder=4, bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8,
                                  "edgecolor": "none"})
    pick = selection.picks.loc["region 1"]
    if pd.notna(pick["run"]):
        axes.scatter(pick["zeta"], pick["train_acc"], s=220, facecolors="none", edgecolors="red",
                     linewidths=2, zorder=3, label=f"Region 1 pick: {pick['run']}")
    axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    axes.set(xlabel=f"susceptibility ζ ({selection.convention} convention)",
             ylabel="training accuracy (%)", title=f"Model selection at {describe_epoch(selection.epoch)}, "
                                                   f"{len(runs)} runs{f' of {population}' if population else ''}")
    draw_region_table(table_axes, selection.regions)
    return figure


def plot_signals(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> Figure:
    """Test accuracy against each signal across runs, one panel per signal, Kendall's τ on each."""
    values = signal_values(table, epoch, convention)
    runs = runs_at_epoch(table, epoch)
    figure = Figure(figsize=(3.2 * len(SIGNALS), 3.8), layout="constrained")
    panels = figure.subplots(1, len(SIGNALS), sharey=True)
    for number, (axes, (column, (label, _, higher))) in enumerate(zip(panels, SIGNALS.items())):
        correlation = kendall(values[column], values["test_acc"])
        axes.set_xlabel(label + (" (↑ better)" if higher else " (↓ better)"))
        if correlation.n == 0:
            axes.text(0.5, 0.5, "not recorded", transform=axes.transAxes, ha="center", color="gray")
            axes.set_xticks([])
            continue
        draw_by_model_and_optimizer(axes, values[column], values["test_acc"], runs, legend=number == 0)
        axes.set_title(f"τ = {correlation.tau:.2f} (p = {correlation.pvalue:.2g}, {correlation.n} runs)",
                       fontsize="small")
        axes.grid(alpha=0.3)
    figure.axes[0].set_ylabel("test accuracy (%)")
    figure.suptitle(f"Signals without clean labels against test accuracy, {describe_epoch(epoch)}")
    return figure


def mean_std_text(mean: float, std: float, digits: int = 2) -> str:
    """"mean ± std", the mean alone for a single value, a dash for none."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def draw_region_table(axes, regions: pd.DataFrame) -> None:
    """Draw the per-region count and test accuracy mean ± std as a table filling `axes`."""
    cells = [[str(region), row["train_acc"], row["zeta"], str(row["count"]),
              mean_std_text(row["test_acc_mean"], row["test_acc_std"])]
             for region, row in regions.iterrows()]
    axes.axis("off")
    axes.table(cellText=cells, colLabels=["region", "train acc", "ζ", "runs", "test acc (%)"],
               loc="center", cellLoc="center")


COUNT_COLUMNS = {"region", "count", "runs", "n", "epoch", "seed", "train_size", "num_classes", "populations"}
SETTING_COLUMNS = {"scale", "lr_initial", "corruptprob", "noise_rate"}  # printed as given


def column_formatter(column: str):
    """How a table column prints its numbers: the same decimals in every row, by what it holds
    (accuracies 2, ζ 4, τ and p-values 3, counts and epochs none, settings as given); a dash
    where there is none."""
    if column in SETTING_COLUMNS:
        return lambda value: "–" if pd.isna(value) else f"{value:g}"
    if "zeta" in column:
        digits = 4
    elif column.startswith(("tau", "pvalue")):
        digits = 3
    elif column in COUNT_COLUMNS:
        digits = 0
    else:
        digits = 2
    return lambda value: "–" if pd.isna(value) else f"{value:.{digits}f}"


def number_formatters(frame: pd.DataFrame) -> dict:
    """`column_formatter` of each number column of `frame`."""
    return {column: column_formatter(column) for column in frame.columns
            if pd.api.types.is_float_dtype(frame[column])}


def format_table(frame: pd.DataFrame) -> str:
    """`frame` as text with the same decimals in every row of a number column."""
    return frame.to_string(formatters=number_formatters(frame), na_rep="–")


def styled(frame: pd.DataFrame):
    """`frame` for display in a notebook, with the decimals of `format_table`."""
    return frame.style.format(number_formatters(frame))


def selection_report(selection: ModelSelection, across: Correlation, along: pd.DataFrame) -> str:
    """The text that the shell entry point prints: regions, rule picks, per-run values and τ."""
    runs = selection.runs.join(along[["tau", "pvalue"]].add_suffix("_along_epochs"))
    picks = selection.picks.rename(index=SELECTION_RULES)
    lines = [
        f"{len(selection.runs)} runs at {describe_epoch(selection.epoch)}; "
        f"zeta by the {selection.convention} convention",
        f"boundaries: mean training accuracy {selection.train_acc_mean:.2f} %, "
        f"mean zeta {selection.zeta_mean:.4f}",
        "",
        format_table(selection.regions),
        "",
        format_table(picks),
        "",
        format_table(runs),
        "",
        f"Kendall tau(zeta, noisy-subset training accuracy) across {across.n} runs: "
        f"{across.tau:.3f} (p = {across.pvalue:.3f})",
    ]
    if selection.left_out:
        lines.append(f"left out (no training accuracy, zeta or test accuracy there): "
                     f"{', '.join(selection.left_out)}")
    lines += [f"warning: {warning}" for warning in selection_warnings(selection) + correlation_warnings(across, along)]
    return "\n".join(lines)


def signals_report(table: pd.DataFrame, epoch: int | None, convention: str) -> str:
    """The two comparison tables of the signals: model selection across runs, early stopping within."""
    selection = compare_signals(table, epoch, convention)
    _, stopping = compare_stopping(table, convention)
    return "\n".join([
        f"Model selection by each signal at {describe_epoch(epoch)} (tau: Kendall's tau between the "
        f"signal and test accuracy across runs)",
        format_table(selection),
        "",
        f"Early stopping within runs (Label Wave: moving average over {LABEL_WAVE_WINDOW} epochs, "
        f"patience {LABEL_WAVE_PATIENCE}); means over runs, shortfall = best test accuracy of the run "
        f"minus the test accuracy at the stop",
        format_table(stopping),
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the four-region model-selection table and "
                                                 "Kendall's tau for a folder of run records.",
                                     allow_abbrev=False)
    parser.add_argument("folder", help="folder holding the run records (*.csv)")
    parser.add_argument("--data", metavar="DATA", default=None,
                        help="analyse only the runs trained on this data (dataset/noise-rate/size, e.g. "
                             "cifar10/symmetric-0.5/n1000); needed when the folder holds runs on several")
    parser.add_argument("--epoch", type=int, default=None,
                        help="0-based epoch to compare the runs at (default: each run's last)")
    parser.add_argument("--convention", choices=sorted(ZETA_COLUMNS), default="paper",
                        help="running mean of zeta: the paper's (default) or the reference notebook's")
    parser.add_argument("--figures", metavar="DIR", default=None,
                        help="also write the across-run figures into DIR")
    parser.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=list(FIGURE_FORMATS),
                        help="file formats of every figure (default: png pdf)")
    parser.add_argument("--curves", metavar="PATTERN", nargs="+", default=None,
                        help="with --figures, also each matching run's curves (e.g. '*')")
    parser.add_argument("--compare", metavar="PATTERN", nargs="+", default=None,
                        help="with --figures, also the curves of the matching runs side by side on shared "
                             "axes, in the order of the patterns (compare.png)")
    parser.add_argument("--per-seed", action="store_true",
                        help="also treat each seed's runs as a population of its own and summarize the "
                             "rules and tau over the populations (with --figures: a region plot per seed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Shell entry point; returns the exit status (1 with a one-line message on stderr on failure)."""
    args = parse_args(argv)
    try:
        loaded = load_runs(args.folder)
        for name, reason in loaded.unreadable.items():
            print(f"analysis.py: skipped {name}: {reason}", file=sys.stderr)
        if loaded.table.empty:
            raise ValueError(f"no run records in {args.folder}")
        for run in zeta_mismatches(loaded.table):
            print(f"analysis.py: {run}: stored susceptibility differs from the recomputed one",
                  file=sys.stderr)
        table = select_population(loaded.table, args.data)
        selection = select_models(table, args.epoch, args.convention)
        across = tau_across_runs(table, args.epoch, args.convention)
        along = tau_along_epochs(table, args.convention)
        print(f"data: {populations(table).iloc[0]}")
        print(selection_report(selection, across, along))
        print()
        print(signals_report(table, args.epoch, args.convention))
        per_seed = seed_populations(table, args.epoch, args.convention) if args.per_seed else None
        if per_seed is not None:
            print()
            print(seed_populations_report(per_seed, along))
        if args.figures:
            paths = write_figures(table, selection, args.figures, args.epoch, args.convention,
                                  args.curves, tuple(args.formats), args.compare)
            for seed, seed_selection in (per_seed.selections.items() if per_seed else ()):
                paths += save_formats(plot_regions(seed_selection, f"seed {seed}"),
                                      Path(args.figures) / f"regions_seed{seed}", tuple(args.formats))
            print(f"wrote {len(paths)} figure files to {args.figures}")
    except (FileNotFoundError, ValueError) as error:
        print(f"analysis.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
