"""The records of a comparison of our code with the authors': both sides' runs read back, their
per-epoch and per-run distributions compared (means, pooled run-to-run spread, the gap in units of
it, a two-sample t-test), the printed and markdown reports, and the figure of both sets of curves.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tools.authors_setting import LAST_EPOCHS, METRICS, OUR_FIXED, SIDES, HarnessError, Setting, patches

from runner import records
from analysis.reports import mean_std_text

@dataclass(frozen=True)
class Study:
    """The records of both sides: their common setting, the worker count of the authors' runs (which
    their patches name), and one row per side, run, epoch and metric (`value`)."""

    setting: Setting
    workers: int
    table: pd.DataFrame


def read_run(path: Path) -> records.RunRecord:
    try:
        record = records.read_record(path)
    except (OSError, ValueError, KeyError) as error:
        raise HarnessError(f"{path} is not a run record ({error})")
    if not record.meta.get("status", {}).get("finished"):
        raise HarnessError(f"{path} is not a finished run; finish it with `run` first")
    return record


def setting_of(path: Path, record: records.RunRecord, side: str) -> Setting:
    """The setting a record ran, checking that our runs had the settings the authors' code fixes."""
    args = record.meta.get("args", {})
    missing = [field.name for field in dataclasses.fields(Setting) if field.name not in args]
    differing = [key for key, value in OUR_FIXED.items() if side == "ours" and args.get(key) != value]
    if missing or differing:
        raise HarnessError(f"{path}: not a run of this comparison (settings {', '.join(missing + differing)})")
    return Setting(**{field.name: args[field.name] for field in dataclasses.fields(Setting)})


def run_rows(path: Path, record: records.RunRecord, side: str) -> pd.DataFrame:
    """One row per epoch and metric of one run."""
    epochs = pd.DataFrame(record.rows)
    epochs["r"] = epochs["phi_before"] - epochs["phi_after"]
    long = epochs.melt(id_vars="epoch", value_vars=list(METRICS), var_name="metric")
    return long.assign(side=side, run=path.stem)


def patched_with(path: Path, record: records.RunRecord) -> int:
    """The worker count of an authors' run, checking that it ran with the harness's patches."""
    about = record.meta.get("authors_code", {})
    workers = about.get("workers")
    if not isinstance(workers, int) or about.get("patches") != [patch.name for patch in patches(workers)]:
        raise HarnessError(f"{path}: not run with this harness's patches ({about.get('patches')})")
    return workers


def load_study(folder: Path) -> Study:
    """The finished records under <folder>/ours and <folder>/authors, which must share one setting
    and have at least two runs on each side (for a spread)."""
    tables, settings, workers = [], set(), set()
    for side in SIDES:
        paths = sorted((folder / side).glob(f"*{records.SUFFIX}"))
        if len(paths) < 2:
            raise HarnessError(f"{folder / side} holds {len(paths)} run record(s); a comparison needs two or "
                               f"more per side")
        for path in paths:
            record = read_run(path)
            settings.add(setting_of(path, record, side))
            if side == "authors":
                workers.add(patched_with(path, record))
            tables.append(run_rows(path, record, side))
    if len(settings) != 1 or len(workers) != 1:
        raise HarnessError(f"the records under {folder} do not all share one setting")
    return Study(settings.pop(), workers.pop(), pd.concat(tables, ignore_index=True))


def compare_sides(values: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """For each group of `keys`: each side's mean, standard deviation and run count, the pooled
    standard deviation, the gap between the means (ours minus theirs) in units of it, the p-value of
    the two-sample t-test that this gap is, and the 95 % interval of the difference of the means."""
    summary = values.groupby([*keys, "side"])["value"].agg(["mean", "std", "count"]).unstack("side")
    summary.columns = [f"{side}_{statistic}" for statistic, side in summary.columns]
    n_ours, n_authors = summary["ours_count"], summary["authors_count"]
    pooled_variance = ((n_ours - 1) * summary["ours_std"] ** 2 + (n_authors - 1) * summary["authors_std"] ** 2) \
        / (n_ours + n_authors - 2)
    summary["pooled_sd"] = np.sqrt(pooled_variance)
    difference = summary["ours_mean"] - summary["authors_mean"]
    summary["gap"] = difference / summary["pooled_sd"].where(summary["pooled_sd"] > 0)
    standard_error = summary["pooled_sd"] * np.sqrt(1 / n_ours + 1 / n_authors)
    degrees = n_ours + n_authors - 2
    summary["p"] = 2 * stats.t.sf((difference / standard_error.where(standard_error > 0)).abs(), degrees)
    half_width = stats.t.ppf(0.975, degrees) * standard_error
    summary["difference_low"], summary["difference_high"] = difference - half_width, difference + half_width
    return summary


def per_epoch(study: Study) -> pd.DataFrame:
    return compare_sides(study.table, ["metric", "epoch"])


def summary_labels(epochs: int) -> dict[str, tuple[str, int]]:
    """The rows of the per-run comparison, with their label and decimals."""
    labels = {metric: (f"{about.label}, mean of the last {LAST_EPOCHS} epochs", about.digits)
              for metric, about in METRICS.items()}
    return labels | {"zeta": (f"ζ at the last epoch (mean of r over epochs 1 to {epochs - 1})", METRICS["r"].digits)}


def run_summaries(study: Study) -> pd.DataFrame:
    """The comparison of one number per run: each metric's average over the last LAST_EPOCHS
    epochs, and ζ at the last epoch, the mean of r from epoch 1 on (the paper's running mean)."""
    table = study.table
    late = table[table["epoch"] >= study.setting.epochs - LAST_EPOCHS]
    zeta = table[(table["metric"] == "r") & (table["epoch"] >= 1)].assign(metric="zeta")
    per_run = pd.concat([late, zeta]).groupby(["metric", "side", "run"], as_index=False)["value"].mean()
    return compare_sides(per_run, ["metric"])


def sign_rows(comparison: pd.DataFrame) -> list[list[str]]:
    """Per metric, in how many epochs our mean is the higher one, and in how many the t-test of
    that epoch gives p < 0.05."""
    rows = []
    for metric, about in METRICS.items():
        epochs = comparison.loc[metric]
        rows.append([about.label, f"{int((epochs['gap'] > 0).sum())} of {len(epochs)}",
                     f"{int((epochs['p'] < 0.05).sum())} of {len(epochs)}"])
    return rows


def selected_epochs(epochs: int) -> list[int]:
    """The epochs the document's table shows: 0, 5, every tenth and the last."""
    return sorted({epoch for epoch in (0, 5, *range(10, epochs, 10), epochs - 1) if epoch < epochs})


def run_counts(study: Study) -> dict[str, int]:
    return study.table.groupby("side")["run"].nunique().to_dict()


def gap_text(gap: float) -> str:
    return "–" if pd.isna(gap) else f"{gap:+.2f}"


def epoch_rows(comparison: pd.DataFrame, metric: str, epochs: list[int]) -> list[list[str]]:
    """The cells of one metric's rows at `epochs`: epoch, both means, pooled sd, gap."""
    digits = METRICS[metric].digits
    return [[str(epoch), f"{row.ours_mean:.{digits}f}", f"{row.authors_mean:.{digits}f}",
             f"{row.pooled_sd:.{digits}f}", gap_text(row.gap)]
            for epoch, row in comparison.loc[metric].loc[epochs].iterrows()]


def summary_rows(comparison: pd.DataFrame, epochs: int) -> list[list[str]]:
    """The cells of the per-run comparison (`run_summaries`), one row per summary: the 95 % interval
    of the difference in the metric's units and in pooled standard deviations."""
    rows = []
    for metric, (label, digits) in summary_labels(epochs).items():
        row = comparison.loc[metric]
        rows.append([label, mean_std_text(row.ours_mean, row.ours_std, digits),
                     mean_std_text(row.authors_mean, row.authors_std, digits), f"{row.pooled_sd:.{digits}f}",
                     gap_text(row.gap), f"{row.p:.2g}",
                     f"{row.difference_low:+.{digits}f} to {row.difference_high:+.{digits}f}",
                     f"{row.difference_low / row.pooled_sd:+.2f} to {row.difference_high / row.pooled_sd:+.2f}"])
    return rows


def power(gap: float, runs_a_side: int, alpha: float = 0.05) -> float:
    """The probability that the two-sample t-test at level `alpha` (two-sided) finds a true gap of
    `gap` pooled standard deviations between two sides of `runs_a_side` runs each."""
    degrees = 2 * runs_a_side - 2
    shift = gap / np.sqrt(2 / runs_a_side)
    critical = stats.t.ppf(1 - alpha / 2, degrees)
    return float(stats.nct.sf(critical, degrees, shift) + stats.nct.cdf(-critical, degrees, shift))


def runs_for_power(gap: float, wanted: float = 0.8) -> int:
    """The fewest runs a side with which the t-test finds a true gap of `gap` pooled standard
    deviations with probability `wanted`."""
    runs = 2
    while power(gap, runs) < wanted:
        runs += 1
    return runs


def power_line(study: Study) -> str:
    """What the study's size can tell: the t-test's power to find true gaps of one and of half a pooled
    standard deviation with the smaller side's runs, and the runs a side needed for 80 %."""
    runs = min(run_counts(study).values())
    return (f"With {runs} runs a side, the two-sample t-test at p < 0.05 finds a true gap of 1 pooled sd "
            f"{100 * power(1.0, runs):.0f} % of the time and one of 0.5 sd {100 * power(0.5, runs):.0f} % of "
            f"the time; finding a gap of 0.5 sd 80 % of the time takes {runs_for_power(0.5)} runs a side.")


def headers(study: Study) -> tuple[str, str]:
    counts = run_counts(study)
    return tuple(f"{label} ({counts[side]} runs)" for side, label in SIDES.items())


def text_report(study: Study) -> str:
    """Every epoch of every metric, then the per-run comparison and the signs of the gaps, as
    aligned text."""
    ours, authors = headers(study)
    comparison = per_epoch(study)
    lines = [study.setting.title()]
    for metric, about in METRICS.items():
        lines += ["", about.label, f"{'epoch':>5}  {ours:>16}  {authors:>24}  {'pooled sd':>9}  {'gap (sd)':>8}"]
        epochs = sorted(study.table["epoch"].unique())
        lines += [f"{e:>5}  {o:>16}  {a:>24}  {s:>9}  {g:>8}"
                  for e, o, a, s, g in epoch_rows(comparison, metric, epochs)]
    lines += ["", "one number per run, mean ± sd over runs; p: two-sample t-test; interval: 95 % of ours minus theirs",
              f"{'':<60}  {ours:>16}  {authors:>24}  {'pooled sd':>9}  {'gap (sd)':>8}  {'p':>5}  {'interval':>20}"
              f"  {'in sd':>14}"]
    lines += [f"{m:<60}  {o:>16}  {a:>24}  {s:>9}  {g:>8}  {p:>5}  {i:>20}  {d:>14}"
              for m, o, a, s, g, p, i, d in summary_rows(run_summaries(study), study.setting.epochs)]
    lines += ["", power_line(study)]
    lines += ["", f"{'':<26}  {'epochs with ours higher':>23}  {'epochs with p < 0.05':>20}"]
    lines += [f"{m:<26}  {h:>23}  {p:>20}" for m, h, p in sign_rows(comparison)]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_report(study: Study) -> str:
    """The patches, the per-epoch table at the selected epochs, the per-run table and the signs of
    the gaps, as the document quotes them."""
    ours, authors = headers(study)
    comparison = per_epoch(study)
    epochs = selected_epochs(study.setting.epochs)
    rows = [[about.label, *cells] for metric, about in METRICS.items()
            for cells in epoch_rows(comparison, metric, epochs)]
    return "\n\n".join([
        "\n".join(f"- {patch.line()}" for patch in patches(study.workers)),
        markdown_table(["metric", "epoch", f"{ours}, mean", f"{authors}, mean", "pooled sd", "gap (sd)"], rows),
        markdown_table(["one number per run", ours, authors, "pooled sd", "gap (sd)", "t-test p",
                        "95 % interval of the difference", "the interval in pooled sds"],
                       summary_rows(run_summaries(study), study.setting.epochs)),
        power_line(study),
        markdown_table(["metric", "epochs where ours' mean is higher", "epochs with t-test p < 0.05"],
                       sign_rows(comparison)),
    ])


def plot_study(study: Study):
    """Both sides' curves of the four metrics: the mean over runs, and the band from the lowest to
    the highest run at each epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    colours = {"ours": "#1f77b4", "authors": "#d95f02"}
    figure = Figure(figsize=(10, 7), layout="constrained")
    counts = run_counts(study)
    for axes, letter, (metric, about) in zip(figure.subplots(2, 2, sharex=True).flat, "abcd", METRICS.items()):
        curves = study.table[study.table["metric"] == metric].groupby(["side", "epoch"])["value"]
        spread = curves.agg(["mean", "min", "max"])
        for side, name in SIDES.items():
            band = spread.loc[side]
            axes.fill_between(band.index, band["min"], band["max"], color=colours[side], alpha=0.25, linewidth=0)
            axes.plot(band.index, band["mean"], color=colours[side], linewidth=1.8,
                      label=f"{name}: mean and range of {counts[side]} runs")
        axes.set_title(f"({letter}) {about.title}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        axes.grid(alpha=0.3)
        if metric == "r":
            axes.axhline(0, color="gray", linewidth=0.8)
    for axes in figure.axes[2:]:
        axes.set_xlabel("epoch")
    figure.axes[0].legend(loc="lower right", fontsize="small")
    figure.suptitle(study.setting.title())
    return figure


def save_figure(figure, path: Path) -> None:
    """Write `figure` to `path`, in the format its suffix names, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, dpi=150)
    except ValueError as error:  # an unknown format
        raise HarnessError(f"--figure {path}: {error}")
