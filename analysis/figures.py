"""The paper's figures from the runs' table: each run's curves, ζ against memorization, the four
regions, the signals, the per-sample detectors of wrong labels, and the selection rules' regret. The only part of the analysis that needs matplotlib."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from analysis.detectors import MEASURES
from analysis.loading import (ACCURACY_CURVES, describe_epoch, filter_runs, known, run_curves, runs_at_epoch,
                              zeta_column)
from analysis.naming import model_name, optimizer_name, run_title
from analysis.regret import INTERVAL, WITHIN
from analysis.reports import mean_std_text
from analysis.selection import ModelSelection, kendall, tau_across_runs
from analysis.signal_rules import SIGNALS, signal_values
from runner import safe_files


FIGURE_FORMATS = ("png", "pdf")  # PNG to look at, PDF (vector) for a paper


def save_formats(figure: Figure, stem: Path, formats: tuple[str, ...] = FIGURE_FORMATS) -> list[Path]:
    """Write `figure` as `<stem>.<format>` for each of `formats`, creating the folder; return the paths.
    Raises `safe_files.UnwritableFile` where a file cannot be written (a full disk, a read-only
    folder, a file where the folder should be)."""
    paths = [stem.with_name(f"{stem.name}.{extension}") for extension in formats]
    for path in paths:
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=150)
        except OSError as error:
            raise safe_files.unwritable(path, error) from None
    return paths


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
    """Training accuracy against ζ with the region boundaries, points coloured by test accuracy (grey
    without a test set), each region labelled with its count of runs and their test accuracy, and
    the Region 1 pick circled; the title names the `population` (e.g. "seed 0") where one is given."""
    runs = selection.runs
    figure = Figure(figsize=(7.5, 6.5), layout="constrained")
    axes = figure.subplots()
    tested = runs["test_acc"].notna().any()
    points = axes.scatter(runs["zeta"], runs["train_acc"], c=runs["test_acc"] if tested else "gray",
                          cmap="viridis" if tested else None, s=40, edgecolors="white", linewidths=0.5, zorder=2)
    if tested:
        figure.colorbar(points, ax=axes, label="test accuracy (%)")
    axes.axhline(selection.train_acc_mean, color="dimgray", linestyle="--", linewidth=1.2, zorder=1,
                 label=f"mean training accuracy ({selection.train_acc_mean:.2f} %)")
    axes.axvline(selection.zeta_mean, color="dimgray", linestyle="-.", linewidth=1.2, zorder=1,
                 label=f"mean ζ ({selection.zeta_mean:.4f})")
    axes.margins(0.18)
    corners = {1: (0.01, 0.99), 2: (0.99, 0.99), 3: (0.01, 0.01), 4: (0.99, 0.01)}
    for region, (x, y) in corners.items():
        axes.text(x, y, region_label(region, selection.regions.loc[region]), transform=axes.transAxes,
                  ha="left" if x < 0.5 else "right", va="top" if y > 0.5 else "bottom", fontsize="small",
                  color="dimgray", zorder=4,
                  bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    pick = selection.picks.loc["region 1"]
    if pd.notna(pick["run"]):
        tested_pick = f" ({pick['test_acc']:.2f} % test accuracy)" if pd.notna(pick["test_acc"]) else ""
        axes.scatter(pick["zeta"], pick["train_acc"], s=220, facecolors="none", edgecolors="red",
                     linewidths=2, zorder=3, label=f"Region 1 pick: its highest training accuracy{tested_pick}")
    axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    axes.set(xlabel=f"susceptibility ζ ({selection.convention} convention)",
             ylabel="training accuracy (%)", title=f"Model selection at {describe_epoch(selection.epoch)}, "
                                                   f"{len(runs)} runs{f' of {population}' if population else ''}")
    return figure


def region_label(region: int, summary: pd.Series) -> str:
    """`Region 1: 3 runs, test 42.10 ± 1.20 %`: a region's count and test accuracy, on the plot."""
    count = int(summary["count"])
    text = f"Region {region}: {count} run{'s' * (count != 1)}"
    if pd.notna(summary["test_acc_mean"]):
        text += f"\ntest {mean_std_text(summary['test_acc_mean'], summary['test_acc_std'])} %"
    return text


def plot_signals(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> Figure:
    """Test accuracy against each signal across runs, one panel per signal the runs recorded with
    their test accuracy, Kendall's τ on each."""
    values = signal_values(table, epoch, convention)
    runs = runs_at_epoch(table, epoch)
    shown = {column: spec for column, spec in SIGNALS.items() if kendall(values[column], values["test_acc"]).n}
    figure = Figure(figsize=(3.2 * max(len(shown), 1), 3.8), layout="constrained")
    if not shown:
        figure.text(0.5, 0.5, "no run has a test accuracy to compare the signals with", ha="center", color="gray")
        return figure
    panels = np.atleast_1d(figure.subplots(1, len(shown), sharey=True))
    for number, (axes, (column, (label, _, higher))) in enumerate(zip(panels, shown.items())):
        correlation = kendall(values[column], values["test_acc"])
        axes.set_xlabel(label + (" (↑ better)" if higher else " (↓ better)"))
        draw_by_model_and_optimizer(axes, values[column], values["test_acc"], runs, legend=number == 0)
        axes.set_title(f"τ = {correlation.tau:.2f} (p = {correlation.pvalue:.2g}, {correlation.n} runs)",
                       fontsize="small")
        axes.grid(alpha=0.3)
    figure.axes[0].set_ylabel("test accuracy (%)")
    figure.suptitle(f"Signals without clean labels against test accuracy, {describe_epoch(epoch)}")
    return figure


SCORE_LABELS = {"aum": "AUM (low margin)", "csl": "cumulative loss", "forgetting": "forgetting events",
                "learned_at": "learned late or never", "changes": "prediction changes"}


def plot_detectors(table: pd.DataFrame) -> Figure:
    """Each per-sample score's AUROC (left) and average precision (right) for finding the wrong
    labels, over the epochs: the mean over the runs with a band of ± one standard deviation, chance
    level marked (AUROC 0.5; precision the mean share of wrong labels)."""
    figure = Figure(figsize=(11, 4.6), layout="constrained")
    panels = figure.subplots(1, 2, sharex=True)
    for axes, (measure, label) in zip(panels, MEASURES.items()):
        columns = {f"{score}_{measure}": score for score in SCORE_LABELS}
        grouped = table.groupby("epoch")[list(columns)]
        mean, spread = grouped.mean(), grouped.std()
        for column, score in columns.items():
            line, = axes.plot(mean.index, mean[column], label=SCORE_LABELS[score])
            axes.fill_between(mean.index, mean[column] - spread[column], mean[column] + spread[column],
                              color=line.get_color(), alpha=0.15, linewidth=0)
        chance = 0.5 if measure == "auroc" else table.drop_duplicates("run")["fraction_wrong"].mean()
        axes.axhline(chance, color="gray", linestyle=":", linewidth=1, label="chance")
        axes.set(xlabel="epoch (0-based, as in the record)", ylabel=label, ylim=(0, 1))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    figure.legend(*panels[0].get_legend_handles_labels(), loc="outside lower center", ncol=6, fontsize="small",
                  frameon=False)
    runs = table["run"].nunique()
    figure.suptitle(f"Which labels are wrong: per-sample scores as detectors, mean ± std over {runs} runs",
                    fontsize="medium")
    return figure


# How the regret figure draws each rule of `regret.RULES`: label, colour, line style.
REGRET_STYLES = {
    "region 1 or lowest zeta above mean": ("Region 1 (paper), else lowest ζ above mean train acc", "C3", "-"),
    "region 1": ("Region 1 (paper), where it holds a run", "C3", ":"),
    "noisy hold-out": ("highest noisy hold-out accuracy", "C2", "-"),
    "train acc": ("highest training accuracy", "C0", "-"),
    "zeta": ("lowest ζ", "C1", "-"),
}


def plot_regret(studies: dict[str, pd.DataFrame], drawn_from: str = "a seed's population") -> Figure:
    """One column per population (`regret.regret_study` of each, by title): above, each rule's median
    regret over the sub-populations of m runs (solid) and the upper end of its 90 % interval (thin,
    dashed; the lower end is 0 or near it for every rule but ζ's); below, the share of draws whose
    pick is within one point of the best run drawn, and how often Region 1 is empty."""
    figure = Figure(figsize=(max(4 * len(studies) + 1, 7), 6.6), layout="constrained")
    panels = figure.subplots(2, len(studies), sharex="col", sharey="row", squeeze=False)
    for column, (title, study) in enumerate(studies.items()):
        top, bottom = panels[0, column], panels[1, column]
        for rule, (label, colour, style) in REGRET_STYLES.items():
            values = study.xs(rule, level="rule")
            top.plot(values.index, values["median"], color=colour, linestyle=style, marker="o", markersize=3,
                     label=label)
            if style == "-":
                top.plot(values.index, values["high"], color=colour, linestyle="--", linewidth=0.8, alpha=0.8)
            bottom.plot(values.index, values["within"], color=colour, linestyle=style, marker="o", markersize=3)
        empty = study.xs("region 1", level="rule")["none"]
        bottom.plot(empty.index, empty, color="gray", linestyle="--", label="Region 1 empty (% of draws)")
        top.set_title(title, fontsize="medium")
        bottom.set_xlabel(f"runs drawn from {drawn_from} (m)")
        bottom.set_ylim(-3, 103)
        for axes in (top, bottom):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
    panels[0, 0].set_ylabel(f"regret (points)\nmedian; {INTERVAL[1]}th percentile dashed")
    panels[1, 0].set_ylabel(f"draws within {WITHIN:g} point of the best (%)")
    handles, labels = panels[0, 0].get_legend_handles_labels()
    extra_handles, extra_labels = panels[1, 0].get_legend_handles_labels()
    figure.legend(handles + extra_handles, labels + extra_labels, loc="outside lower center",
                  ncol=3 if len(studies) > 1 else 2, fontsize="small", frameon=False)
    figure.suptitle("Selecting one of m runs without clean labels\nregret = best test accuracy among the m "
                    "minus the pick's", fontsize="medium")
    return figure
