"""The text the analysis prints: tables with the same decimals in every row, and the reports of
`python -m analysis`."""
from __future__ import annotations

import pandas as pd

from analysis.loading import describe_epoch
from analysis.seeds import SeedPopulations
from analysis.selection import (SELECTION_RULES, Correlation, ModelSelection, correlation_warnings, kendall,
                                select_models, selection_warnings)
from analysis.signal_rules import LABEL_WAVE_PATIENCE, LABEL_WAVE_WINDOW, compare_signals, compare_stopping
from analysis.detectors import detector_table, sample_file_values
from analysis.loading import runs_at_epoch
from analysis.probes import (batch_columns, label_draw_ratio, probes_with_batches, total_zeta_errors,
                             uncertain_regions, zeta_with_errors)
from analysis.regret import INTERVAL, RULES, WITHIN
from analysis.uncertainty import bounds_text


def mean_std_text(mean: float, std: float, digits: int = 2) -> str:
    """"mean ± std", the mean alone for a single value, a dash for none."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


COUNT_COLUMNS = {"region", "count", "runs", "n", "epoch", "seed", "train_size", "num_classes", "populations"}
SETTING_COLUMNS = {"scale", "lr_initial", "corruptprob", "noise_rate"}  # printed as given


def p_value_text(p: float) -> str:
    """A p-value with two significant digits (`2.3e-08`, `0.041`), which a fixed number of decimals
    would print as 0.000; a dash for none."""
    return "–" if pd.isna(p) else f"{p:.2g}"


def column_formatter(column: str):
    """How a table column prints its numbers: the same decimals in every row, by what it holds
    (accuracies 2, ζ 4, τ 3, counts and epochs none, settings as given), p-values with two
    significant digits; a dash where there is none."""
    if column in SETTING_COLUMNS:
        return lambda value: "–" if pd.isna(value) else f"{value:g}"
    if column.startswith("pvalue"):
        return p_value_text
    if "zeta" in column:
        digits = 4
    elif column.startswith("tau"):
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
    runs = selection.runs.drop(columns="test_size").join(along[["tau", "pvalue"]].add_suffix("_along_epochs"))
    picks = with_test_interval(selection.picks).rename(index=SELECTION_RULES)
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
        f"{across.tau:.3f} (p = {p_value_text(across.pvalue)})",
    ]
    if selection.left_out:
        lines.append(f"left out (no training accuracy or zeta there): "
                     f"{', '.join(selection.left_out)}")
    lines += [f"warning: {warning}" for warning in selection_warnings(selection) + correlation_warnings(across, along)]
    return "\n".join(lines)


def with_test_interval(picks: pd.DataFrame) -> pd.DataFrame:
    """Picks with the 95 % binomial interval of their test accuracy in place of the test-set size."""
    intervals = [bounds_text(acc, size) for acc, size in zip(picks["test_acc"], picks["test_size"])]
    picks = picks.drop(columns="test_size")
    picks.insert(picks.columns.get_loc("test_acc") + 1, "test_acc_95", intervals)
    return picks


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


def along_summary(along: pd.DataFrame) -> str:
    """One line on τ along the epochs of each run: its median, and how many runs have it positive
    and significant (p < 0.05)."""
    known_taus = along.dropna(subset=["tau"])
    positive = int(((known_taus["tau"] > 0) & (known_taus["pvalue"] < 0.05)).sum())
    return (f"tau(zeta, noisy-subset accuracy) along the epochs of each run: median {known_taus['tau'].median():.3f} "
            f"over {len(known_taus)} runs; positive with p < 0.05 in {positive}")


def seed_populations_report(populations_: SeedPopulations, along: pd.DataFrame) -> str:
    """The text of `python -m analysis --per-seed`: τ per population, each rule's pick over the populations,
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


def probes_report(table: pd.DataFrame, epoch: int | None, convention: str) -> str:
    """For records that keep each probe batch's r: ζ of each such probe with its standard error,
    τ between it and memorization across runs, and the runs whose region the standard error of the
    ζ that splits the regions leaves open."""
    lines = [f"zeta of each probe from all its batches, with its standard error, at {describe_epoch(epoch)}:"]
    per_probe = {}
    for probe in probes_with_batches(table):
        values = zeta_with_errors(table, probe, epoch, convention)
        per_probe[f"{probe} ({len(batch_columns(table, probe))} batches)"] = values["zeta"].map(
            lambda value: "–" if pd.isna(value) else f"{value:.4f}") + values["zeta_se"].map(
            lambda error: "" if pd.isna(error) else f" ± {error:.4f}")
        tau = kendall(values["zeta"], runs_at_epoch(table, epoch)["train_noisy_acc"].reindex(values.index))
        lines.append(f"  {probe}: Kendall tau(zeta, noisy-subset accuracy) {tau.tau:.3f} "
                     f"(p = {p_value_text(tau.pvalue)}, {tau.n} runs)")
    lines += ["", pd.DataFrame(per_probe).to_string()]
    ratio, source = label_draw_ratio(table, epoch, convention)
    errors = total_zeta_errors(table, epoch, convention, ratio)
    if errors.notna().any():
        selection = select_models(table, epoch, convention)
        open_runs = uncertain_regions(selection, errors)
        lines += ["", f"runs within two standard errors of the mean zeta ({selection.zeta_mean:.4f}), whose "
                      f"region is therefore not settled: {len(open_runs)} (the standard error counts the draw "
                      f"of the probe batches and of the probe set's random labels, whose variance is taken as "
                      f"{ratio:.2f} times one batch's, {source})"]
        if len(open_runs):
            lines.append(format_table(open_runs))
    return "\n".join(lines)


def detectors_report(table: pd.DataFrame, folder: str | None = None) -> str:
    """The per-sample scores as detectors of the wrong labels: AUROC and average precision at each
    run's last and best-test epoch, mean ± std over the runs and per seed; with the records'
    `folder`, the last epoch's from the per-sample files where every run has one."""
    overall = detector_table(table, folder=folder)
    text = overall.assign(value=[mean_std_text(m, s, 3) for m, s in zip(overall["mean"], overall["std"])])
    wide = text["value"].unstack("measure")
    per_seed = detector_table(table, by_seed=True, folder=folder)
    seeds = per_seed.assign(value=per_seed["mean"].map(lambda v: f"{v:.3f}"))["value"].unstack(["seed", "measure"])
    source = ("last epoch recomputed from the per-sample files, best test epoch from the records"
              if folder is not None and sample_file_values(folder, table) is not None else "from the records")
    return "\n".join([
        f"Per-sample scores as detectors of the wrong labels (mean ± std over the runs with ground truth; {source}):",
        wide.to_string(), "", "The same per seed (mean over its runs):", seeds.to_string()])


def regret_report(study: pd.DataFrame, scope: str) -> str:
    """The text of `python -m analysis --regret`: per sub-population size m and rule, the regret of its
    pick (the best drawn run's test accuracy minus the pick's, in points) over the draws."""
    frame = study.rename(index=RULES, level="rule").rename(columns={
        "none": "no pick (%)", "median": "median regret", "low": f"p{INTERVAL[0]}", "high": f"p{INTERVAL[1]}",
        "within": f"within {WITHIN:g} pt (%)"})
    return "\n".join([
        f"Regret of each rule in random sub-populations of m runs ({scope}): the best drawn run's test "
        f"accuracy minus the pick's, in points; median and {INTERVAL[1] - INTERVAL[0]} % interval over the "
        f"draws in which the rule picks a run (Region 1 picks none where it is empty: 'no pick')",
        format_table(frame)])