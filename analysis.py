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
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import kendalltau

import records

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
    "ground_truth": ("noise", "ground_truth"),
    "finished": ("status", "finished"),
}
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

    "High" training accuracy is above its mean and "low" ζ below its mean, so a run exactly at a
    mean counts as low training accuracy or high ζ. Raises ValueError when no run can be placed.
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
    runs = runs.assign(region=region_of(runs["train_acc"] > train_acc_mean, runs["zeta"] < zeta_mean))
    left_out = sorted(set(table["run"]) - set(runs.index))
    return ModelSelection(runs, float(train_acc_mean), float(zeta_mean), region_summary(runs),
                          rule_picks(runs), left_out, epoch, convention)


# The signals compared across runs: column -> (what it is, whether a higher value is better).
SIGNALS = {
    "train_acc": ("training accuracy", True),
    "zeta": ("susceptibility ζ", False),
    "noisy_holdout_acc": ("noisy hold-out accuracy", True),
    "pred_changes": ("prediction changes (%)", False),
    "neg_margin": ("negative-margin fraction (%)", False),
}
# Model-selection rules besides the paper's Region 1 rule: name -> (signal column, higher is better).
SIGNAL_RULES = {
    "train acc": ("train_acc", True),
    "zeta": ("zeta", False),
    "noisy hold-out": ("noisy_holdout_acc", True),
    "prediction changes": ("pred_changes", False),
    "negative margins": ("neg_margin", False),
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
    for rule, (column, higher) in SIGNAL_RULES.items():
        runs = values.dropna(subset=[column, "test_acc"])
        pick = best_run(runs, column, largest=higher)
        correlation = kendall(values[column], values["test_acc"])
        rows[rule] = {"signal": SIGNALS[column][0], "direction": "highest" if higher else "lowest",
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


def save_png(figure: Figure, path: Path) -> Path:
    """Write `figure` as a PNG file at `path`, creating its folder, and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def save_figure(figure: Figure, folder: str | Path, name: str) -> Path:
    """Write `figure` as `<folder>/figures/<name>.png` and return that path."""
    return save_png(figure, Path(folder) / "figures" / f"{name}.png")


def write_figures(table: pd.DataFrame, selection: "ModelSelection", out_dir: str | Path,
                  epoch: int | None = None, convention: str = "paper",
                  curves: list[str] | None = None) -> list[Path]:
    """The notebook's figures as PNG files in `out_dir`: ζ against memorization across runs, the four
    regions, and the curves of the runs matching the `curves` patterns (none by default)."""
    chosen = sorted(filter_runs(table, curves)["run"].unique()) if curves else []
    figures = {f"curves_{run}": plot_run(table, run, convention) for run in chosen}
    figures["zeta_vs_memorization"] = plot_zeta_vs_memorization(table, epoch, convention)
    figures["regions"] = plot_regions(selection)
    figures["signals"] = plot_signals(table, epoch, convention)
    return [save_png(figure, Path(out_dir) / f"{name}.png") for name, figure in figures.items()]


def plot_run(table: pd.DataFrame, run: str, convention: str = "paper") -> Figure:
    """Accuracies (left) and ζ (right) of one run versus epoch; curves without data are left out."""
    curves = run_curves(table, run, convention)
    figure = Figure(figsize=(11, 4), layout="constrained")
    accuracy_axes, zeta_axes = figure.subplots(1, 2)
    for column, label in ACCURACY_CURVES.items():
        if curves[column].notna().any():
            accuracy_axes.plot(curves.index, curves[column], marker=".", label=label)
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
    accuracy_axes.legend(fontsize="small")
    zeta_axes.plot(curves.index, curves["zeta"], marker=".")
    zeta_axes.set(xlabel="epoch", ylabel=f"susceptibility ζ ({convention} convention)")
    for axes in (accuracy_axes, zeta_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(run)
    return figure


def plot_zeta_vs_memorization(table: pd.DataFrame, epoch: int | None = None,
                              convention: str = "paper") -> Figure:
    """ζ against noisy-subset training accuracy across runs, with Kendall's τ in the title."""
    runs = runs_at_epoch(table, epoch)
    correlation = tau_across_runs(table, epoch, convention)
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.scatter(runs[zeta_column(convention)], runs["train_noisy_acc"])
    axes.set(xlabel=f"susceptibility ζ ({convention} convention)",
             ylabel="training accuracy on the noisy subset (%)",
             title=f"Kendall τ = {correlation.tau:.3f} (p = {correlation.pvalue:.3g}, "
                   f"{correlation.n} runs), {describe_epoch(epoch)}")
    axes.title.set_fontsize("medium")
    return figure


def plot_regions(selection: ModelSelection) -> Figure:
    """Training accuracy against ζ with the region boundaries, points colored by test accuracy,
    the Region 1 pick marked, and the per-region table under the plot."""
    runs = selection.runs
    figure = Figure(figsize=(7, 7.5), layout="constrained")
    axes, table_axes = figure.subplots(2, 1, height_ratios=[4, 1.3])
    points = axes.scatter(runs["zeta"], runs["train_acc"], c=runs["test_acc"], cmap="viridis", zorder=2)
    figure.colorbar(points, ax=axes, label="test accuracy (%)")
    axes.axhline(selection.train_acc_mean, color="gray", linestyle="--")
    axes.axvline(selection.zeta_mean, color="gray", linestyle="--")
    for region, (x, y) in {1: (0.02, 0.97), 2: (0.98, 0.97), 3: (0.02, 0.03), 4: (0.98, 0.03)}.items():
        axes.text(x, y, f"Region {region}", transform=axes.transAxes, ha="left" if x < 0.5 else "right",
                  va="top" if y > 0.5 else "bottom", color="gray", zorder=1)
    axes.margins(0.15)
    pick = selection.picks.loc["region 1"]
    if pd.notna(pick["run"]):
        axes.scatter(pick["zeta"], pick["train_acc"], s=250, facecolors="none", edgecolors="red",
                     linewidths=2, zorder=3)
        axes.annotate(f"Region 1 pick: {pick['run']}", (pick["zeta"], pick["train_acc"]),
                      xytext=(12, -14), textcoords="offset points", color="red", fontsize="small")
    axes.set(xlabel=f"susceptibility ζ ({selection.convention} convention)",
             ylabel="training accuracy (%)", title=f"Model selection at {describe_epoch(selection.epoch)}")
    draw_region_table(table_axes, selection.regions)
    return figure


def plot_signals(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> Figure:
    """Test accuracy against each signal across runs, one panel per signal, Kendall's τ on each."""
    values = signal_values(table, epoch, convention)
    figure = Figure(figsize=(3.2 * len(SIGNALS), 3.6), layout="constrained")
    for axes, (column, (label, higher)) in zip(figure.subplots(1, len(SIGNALS), sharey=True), SIGNALS.items()):
        correlation = kendall(values[column], values["test_acc"])
        axes.set_xlabel(label + (" (↑ better)" if higher else " (↓ better)"))
        if correlation.n == 0:
            axes.text(0.5, 0.5, "not recorded", transform=axes.transAxes, ha="center", color="gray")
            axes.set_xticks([])
            continue
        axes.scatter(values[column], values["test_acc"], s=18)
        axes.set_title(f"τ = {correlation.tau:.2f} (p = {correlation.pvalue:.2g}, {correlation.n} runs)",
                       fontsize="small")
    figure.axes[0].set_ylabel("test accuracy (%)")
    figure.suptitle(f"Signals without clean labels against test accuracy, {describe_epoch(epoch)}")
    return figure


def mean_std_text(mean: float, std: float) -> str:
    """"mean ± std", the mean alone for a single run, a dash for an empty region."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def draw_region_table(axes, regions: pd.DataFrame) -> None:
    """Draw the per-region count and test accuracy mean ± std as a table filling `axes`."""
    cells = [[str(region), row["train_acc"], row["zeta"], str(row["count"]),
              mean_std_text(row["test_acc_mean"], row["test_acc_std"])]
             for region, row in regions.iterrows()]
    axes.axis("off")
    axes.table(cellText=cells, colLabels=["region", "train acc", "ζ", "runs", "test acc (%)"],
               loc="center", cellLoc="center")


def selection_report(selection: ModelSelection, across: Correlation, along: pd.DataFrame) -> str:
    """The text that the shell entry point prints: regions, rule picks, per-run values and τ."""
    runs = selection.runs.join(along[["tau", "pvalue"]].add_suffix("_along_epochs"))
    picks = selection.picks.rename(index=SELECTION_RULES)
    lines = [
        f"{len(selection.runs)} runs at {describe_epoch(selection.epoch)}; "
        f"zeta by the {selection.convention} convention",
        f"boundaries: mean training accuracy {selection.train_acc_mean:.2f} %, "
        f"mean zeta {selection.zeta_mean:.4g}",
        "",
        selection.regions.to_string(float_format="{:.2f}".format),
        "",
        picks.to_string(float_format="{:.4g}".format),
        "",
        runs.to_string(float_format="{:.4g}".format),
        "",
        f"Kendall tau(zeta, noisy-subset training accuracy) across {across.n} runs: "
        f"{across.tau:.3f} (p = {across.pvalue:.3g})",
    ]
    if selection.left_out:
        lines.append(f"left out (no training accuracy, zeta or test accuracy there): "
                     f"{', '.join(selection.left_out)}")
    return "\n".join(lines)


def signals_report(table: pd.DataFrame, epoch: int | None, convention: str) -> str:
    """The two comparison tables of the signals: model selection across runs, early stopping within."""
    selection = compare_signals(table, epoch, convention)
    _, stopping = compare_stopping(table, convention)
    return "\n".join([
        f"Model selection by each signal at {describe_epoch(epoch)} (tau: Kendall's tau between the "
        f"signal and test accuracy across runs)",
        selection.to_string(float_format="{:.3g}".format, na_rep="–"),
        "",
        f"Early stopping within runs (Label Wave: moving average over {LABEL_WAVE_WINDOW} epochs, "
        f"patience {LABEL_WAVE_PATIENCE}); means over runs, shortfall = best test accuracy of the run "
        f"minus the test accuracy at the stop",
        stopping.to_string(float_format="{:.2f}".format, na_rep="–"),
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the four-region model-selection table and "
                                                 "Kendall's tau for a folder of run records.")
    parser.add_argument("folder", help="folder holding the run records (*.csv)")
    parser.add_argument("--epoch", type=int, default=None,
                        help="0-based epoch to compare the runs at (default: each run's last)")
    parser.add_argument("--convention", choices=sorted(ZETA_COLUMNS), default="paper",
                        help="running mean of zeta: the paper's (default) or the reference notebook's")
    parser.add_argument("--figures", metavar="DIR", default=None,
                        help="also write the across-run figures as PNG files into DIR")
    parser.add_argument("--curves", metavar="PATTERN", nargs="+", default=None,
                        help="with --figures, also each matching run's curves (e.g. '*')")
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
        selection = select_models(loaded.table, args.epoch, args.convention)
        across = tau_across_runs(loaded.table, args.epoch, args.convention)
        along = tau_along_epochs(loaded.table, args.convention)
        print(selection_report(selection, across, along))
        print()
        print(signals_report(loaded.table, args.epoch, args.convention))
        if args.figures:
            paths = write_figures(loaded.table, selection, args.figures, args.epoch, args.convention,
                                  args.curves)
            print(f"wrote {len(paths)} figures to {args.figures}")
    except (FileNotFoundError, ValueError) as error:
        print(f"analysis.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
