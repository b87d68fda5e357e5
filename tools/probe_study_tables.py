"""Print the tables of docs/REPRODUCTION.md's probe study, as markdown, from the records of the
probe-study population (sweeps/probe_study.toml): how noisy one probe batch is, whether averaging
batches helps, training images against held-out ones, what the probes cost, which samples the runs
memorized, and paired comparisons of the picks on the same test images.

    python -m tools.probe_study_tables docs/records/probe_study

Every run carries two extra probes of several batches per epoch (`train_probe_r<j>`,
`heldout_probe_r<j>`) beside the paper's one-batch probe that defines its ζ; ζ of k batches is
formed from the first k. tests/test_reproduction.py checks that the document quotes these tables
as they are printed here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


from analysis import detectors, loading, probes, reports, selection, uncertainty
from tools.reproduction_tables import (final_rows, markdown, memorizing, population, print_tables, run_title_line,
                                       spread)

SOURCES = {"train_probe": "training images", "heldout_probe": "held-out images"}
BATCH_COUNTS = (1, 2, 4)
SETTING = ["model", "scale", "optimizer", "lr_initial", "scheduler"]  # what the two seeds of a setting share
PICKS = {"region 1": "Region 1 (paper)", "lowest zeta above mean train acc": "lowest ζ above the mean training accuracy"}


def per_seed(table: pd.DataFrame, measure) -> pd.Series:
    """`measure(runs of one seed)` for each seed, as a Series by seed."""
    return pd.Series({int(seed): measure(runs) for seed, runs in table.groupby("seed")})


def noise_table(table: pd.DataFrame) -> str:
    """For each extra probe: the spread of r over the batches of an epoch against r itself; the
    standard error of ζ at the last epoch from one batch per epoch (the paper's probe; √k times that
    of k batches, since ζ is linear in the epochs' r) and from all k; the spread of ζ between the runs
    of a seed, which ζ is meant to rank, and between the two seeds of a setting; and the split-half
    reliability of ζ (Kendall τ across runs between ζ of two batches and ζ of the two others)."""
    rows = []
    for probe, label in SOURCES.items():
        columns = probes.batch_columns(table, probe)
        later = table[table["epoch"] >= 1]
        batch_sd = later[columns].std(axis=1, ddof=1)
        relative = batch_sd / later[columns].mean(axis=1).abs()
        final = probes.zeta_with_errors(table, probe)
        last = loading.runs_at_epoch(table)
        between_runs = final["zeta"].groupby(last["seed"]).std().mean()
        by_setting = final["zeta"].groupby([last[key] for key in SETTING])
        between_seeds = by_setting.std().median()
        seed_difference = (by_setting.max() - by_setting.min()).median()
        one_batch_se = final["zeta_se"].median() * len(columns) ** 0.5
        halves = len(columns) // 2
        first_half = loading.runs_at_epoch(probes.with_zeta_of(table, columns[:halves]))["zeta_paper"]
        second_half = loading.runs_at_epoch(probes.with_zeta_of(table, columns[halves:]))["zeta_paper"]
        taus = per_seed(last.assign(a=first_half, b=second_half),
                        lambda runs: selection.kendall(runs["a"], runs["b"]).tau)
        rows.append([label, f"{batch_sd.median():.4f}", f"{relative.median():.2f}",
                     f"{one_batch_se:.4f} / {final['zeta_se'].median():.4f}", f"{between_runs:.4f}",
                     f"{between_seeds:.4f}", f"{seed_difference:.4f}", f"{one_batch_se / between_runs:.2f}",
                     spread(taus, 2)])
    header = ["probe", "sd of r over an epoch's batches (median)", "that sd / r (median)",
              f"SE of ζ at the last epoch, 1 / {len(columns)} batches (median)", "sd of ζ between the runs of a seed",
              "sd of ζ between the seeds of a setting (median)", "difference of ζ between the two seeds of a setting (median)",
              "1-batch SE / sd between runs",
              "split-half τ (mean ± std over seeds)"]
    return markdown(header, rows)


BOOTSTRAP_DRAWS = 2000  # resamples of the runs for the intervals of the uncertainty components


def component_intervals(components: pd.DataFrame, draws: int = BOOTSTRAP_DRAWS) -> pd.DataFrame:
    """The 2.5 and 97.5 percentiles of each part of `probes.component_summary` over resamples of the
    runs with replacement (a fixed seed, so the table is the same every time)."""
    rng = np.random.default_rng(0)
    samples = [probes.component_summary(components.iloc[rng.integers(0, len(components), len(components))])
               for _ in range(draws)]
    return pd.DataFrame(samples).quantile([0.025, 0.975])


def uncertainty_table(table: pd.DataFrame) -> str:
    """The three parts of the uncertainty of ζ at the last epoch, as standard deviations over the
    runs (`probes.component_summary`), with 95 % bootstrap intervals over the runs and as a share
    of the sd of ζ between the runs of a seed."""
    components = probes.uncertainty_components(table)
    summary, intervals = probes.component_summary(components), component_intervals(components)
    last = loading.runs_at_epoch(table)
    between_runs = last["zeta_paper"].groupby(last["seed"]).std().mean()
    total = (summary["batch"] ** 2 + summary["label"] ** 2) ** 0.5
    parts = [("batch", "the draw of one probe batch per epoch", "the spread of r over the 4 batches of the extra "
              "training-image probe in each epoch"),
             ("label", "the draw of the random labels", "the paper's probe against the extra training-image probe "
              "(same images, labels of its own), beyond their batches' errors"),
             ("total", "both: what one run's ζ is uncertain by", "√(batch² + labels²)"),
             ("pool", "the image pool: training or held-out images", "the extra training-image probe against the "
              "held-out one, beyond their batches and label draws")]
    rows = []
    for key, label, how in parts:
        value = total if key == "total" else summary[key]
        interval = "–" if key == "total" else f"{intervals.loc[0.025, key]:.4f} to {intervals.loc[0.975, key]:.4f}"
        rows.append([label, how, f"{value:.4f}", interval, f"{100 * value / between_runs:.0f} %"])
    return markdown(["part of ζ's uncertainty", "measured from", "sd of ζ at the last epoch",
                     "95 % interval (bootstrap over the runs)", "share of the sd between the runs of a seed"], rows)


def uncertainty_line(table: pd.DataFrame) -> str:
    """The label-draw ratio, the mean offsets of the two comparisons, and how many runs of each seed's
    population lie within two standard errors of their seed's mean ζ by the batches alone and by the
    batches and the label draw together."""
    components = probes.uncertainty_components(table)
    summary = probes.component_summary(components)
    counts = {"batches": 0, "total": 0}
    for _, runs in table.groupby("seed"):
        chosen = selection.select_models(runs)
        counts["batches"] += len(probes.uncertain_regions(chosen, probes.main_batch_errors(runs)))
        counts["total"] += len(probes.uncertain_regions(chosen, probes.total_zeta_errors(runs, ratio=summary["ratio"])))
    runs = lambda count: f"{count} run{'s' * (count != 1)}"
    return (f"Over the {summary['runs']} runs, the label draw's variance is {summary['ratio']:.2f} times one batch's; "
            f"ζ of the paper's probe minus ζ of the extra training-image probe is {summary['label_offset']:+.4f} on "
            f"average, ζ of the training images minus ζ of the held-out images {summary['pool_offset']:+.4f} on "
            f"average. Within two standard errors of their seed's mean ζ: "
            f"{runs(counts['batches'])} by the batches' error alone, {runs(counts['total'])} by batches and label "
            f"draw together.")


def picked_runs(runs: pd.DataFrame) -> dict[str, str | float]:
    """The runs that Region 1 and the lowest ζ among the runs above the mean training accuracy pick
    in one seed's runs (NaN where Region 1 is empty)."""
    chosen = selection.select_models(runs)
    trainable = chosen.runs[chosen.runs["region"].isin([1, 2])]
    return {"region 1": chosen.picks.loc["region 1", "run"],
            "lowest zeta above mean train acc": trainable["zeta"].idxmin()}


def rule_picks(runs: pd.DataFrame) -> dict[str, float]:
    """Test accuracy of each ζ rule's pick (`picked_runs`) in one seed's runs."""
    accuracy = loading.runs_at_epoch(runs)["test_acc"]
    return {rule: accuracy.get(run, float("nan")) for rule, run in picked_runs(runs).items()}


def pick_text(accuracies: pd.Series) -> str:
    """Mean ± std over the seeds of a rule's picks, saying in how many seeds the rule picked none."""
    empty = int(accuracies.isna().sum())
    shown = spread(accuracies, 1)
    return f"{shown}; none in {empty} of {len(accuracies)} seeds" if empty else shown


def variant_specs(table: pd.DataFrame) -> dict[str, tuple[str, int]]:
    """Each probe and batch count compared: label -> (probe, batches per epoch): the paper's probe,
    then k = 1, 2, 4 batches of each extra probe."""
    found = {"the paper's probe, 1 batch": (probes.MAIN, 1)}
    for probe, label in SOURCES.items():
        available = len(probes.batch_columns(table, probe))
        found |= {f"{label}, {count} batch{'es' * (count > 1)}": (probe, count)
                  for count in BATCH_COUNTS if count <= available}
    return found


def variants(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The table with ζ of each probe and batch count of `variant_specs`."""
    return {label: table if probe == probes.MAIN else probes.with_zeta_of(table, probes.batch_columns(table, probe)[:count])
            for label, (probe, count) in variant_specs(table).items()}


def one_batch_error(table: pd.DataFrame, probe: str) -> pd.Series:
    """Per run at the last epoch: the batch standard error of ζ of one batch per epoch of `probe` (the
    paper's probe: from the extra training-image probe, `probes.main_batch_errors`)."""
    return probes.main_batch_errors(table) if probe == probes.MAIN else probes.one_batch_errors(table, probe)


def boundary_table(table: pd.DataFrame) -> str:
    """The runs whose region changes with the probe or batch count: under each, the run's ζ, the mean
    ζ of its seed that splits the regions, and its distance from that mean in standard errors of the
    batches alone and of the batches and the label draw together (`probes.LABEL_DRAW_RATIO`'s
    measurement on these runs)."""
    ratio = probes.label_draw_ratio(table)[0]
    placed = {label: {int(seed): selection.select_models(runs).runs["region"] for seed, runs in zetas.groupby("seed")}
              for label, zetas in variants(table).items()}
    moving = sorted({(seed, run) for seed in placed[next(iter(placed))] for run in placed[next(iter(placed))][seed].index
                     if len({regions[seed][run] for regions in placed.values()}) > 1})
    rows = []
    for seed, run in moving:
        for label, (probe, count) in variant_specs(table).items():
            runs = variants(table)[label].query("seed == @seed")
            chosen = selection.select_models(runs)
            one_batch = one_batch_error(runs, probe)[run]
            batch_se = one_batch / count ** 0.5
            distance = chosen.runs.loc[run, "zeta"] - chosen.zeta_mean
            rows.append([str(seed), run_title_line(loading.runs_at_epoch(runs).loc[run]), label,
                         f"{chosen.runs.loc[run, 'zeta']:.4f}", f"{chosen.zeta_mean:.4f}", str(chosen.runs.loc[run, "region"]),
                         f"{distance / batch_se:+.2f}", f"{distance / (batch_se ** 2 + ratio * one_batch ** 2) ** 0.5:+.2f}"])
    return markdown(["seed", "run", "ζ from", "its ζ", "mean ζ of the seed", "region",
                     "distance in batch SEs", "distance in batch-and-label SEs"], rows)


def averaging_table(table: pd.DataFrame) -> str:
    """Per probe and number of batches: τ(ζ, memorization) across each seed's runs and along the
    epochs of each run that ends above the clean fraction of its training set (it memorizes), and the
    test accuracy of each ζ rule's pick; mean ± std over seeds."""
    rows = []
    for label, zetas in variants(table).items():
        across = per_seed(zetas, lambda runs: selection.tau_across_runs(runs).tau)
        along = selection.tau_along_epochs(zetas)["tau"]
        along = along[memorizing(final_rows(zetas).reindex(along.index))].median()
        picks = per_seed(zetas, rule_picks).apply(pd.Series)
        rows.append([label, spread(across, 2), f"{along:.2f}", *(pick_text(picks[rule]) for rule in PICKS)])
    header = ["ζ from", "τ across runs", "τ along epochs, runs above the clean fraction (median)", *PICKS.values()]
    return markdown(header, rows)


def cost_table(table: pd.DataFrame) -> str:
    """Seconds per probe batch against the epoch that a run without the extra probes takes (the
    record's epoch time less theirs) and against the epoch without any probe (less the paper's probe
    too), per architecture (medians over its runs' epochs)."""
    extra_batches = sum(len(probes.batch_columns(table, probe)) for probe in SOURCES)
    rows = []
    for model, epochs in table.groupby("model"):
        per_batch = epochs["probe_seconds"].median()
        extra = (epochs["extra_probe_seconds"] / extra_batches).median()
        epoch = (epochs["seconds"] - epochs["extra_probe_seconds"]).median()
        bare = (epochs["seconds"] - epochs["extra_probe_seconds"] - epochs["probe_seconds"]).median()
        rows.append([str(model), f"{per_batch:.3f}", f"{extra:.3f}", f"{epoch:.2f}", f"{100 * per_batch / epoch:.1f} %",
                     f"{bare:.2f}", f"{100 * per_batch / bare:.1f} %"])
    return markdown(["model", "paper's probe, s", "one extra batch, s", "epoch without the extra probes, s",
                     "one batch / epoch", "epoch without any probe, s", "one batch / epoch without any probe"], rows)


SOURCE = {"last epoch": "recomputed from the per-sample files", "best test epoch": "the records' columns"}


def detectors_table(table: pd.DataFrame, folder: Path) -> str:
    """Each per-sample score as a detector of the wrong labels, mean ± std over all runs: at the last
    epoch recomputed from the per-sample files (the current forgetting convention), at the best
    test epoch as the records hold it; a column says which."""
    summary = detectors.detector_table(table, folder=folder)
    rows = []
    for (moment, score), group in summary.groupby(level=["moment", "score"], observed=True, sort=False):
        values = group.droplevel(["moment", "score"])
        rows.append([moment, score, *(reports.mean_std_text(values.loc[m, "mean"], values.loc[m, "std"], 3)
                                      for m in detectors.MEASURES), SOURCE[moment]])
    return markdown(["at", "score", "AUROC", "average precision", "from"], rows)


def never_learned_line(table: pd.DataFrame, folder: Path) -> str:
    """How many training samples each run never predicted as their label by its last epoch, and how
    many of those have a wrong label (medians over the runs, from the per-sample files)."""
    shares, wrong = [], []
    for run in loading.runs_at_epoch(table).index:
        samples = pd.read_csv(detectors.samples_path(folder, run))
        never = detectors.sample_suspicion(samples)["forgetting"] == float("inf")
        shares.append(100 * never.mean())
        wrong.append(100 * (samples["assigned"] != samples["true"])[never].mean())
    return (f"At the last epoch, a median {pd.Series(shares).median():.0f} % of a run's training samples had never "
            f"been predicted as their label, {pd.Series(wrong).median():.0f} % of them (median over the runs) "
            f"wrongly labelled.")


def paired_table(table: pd.DataFrame, folder: Path) -> str:
    """Per seed and ζ rule: the test accuracy of its pick and of training accuracy's pick on the same
    test images, each with its 95 % interval, and the exact McNemar test of their difference."""
    rows = []
    for seed, runs in table.groupby("seed"):
        by_train_acc = selection.select_models(runs).picks.loc["train acc", "run"]
        for rule, run in picked_runs(runs).items():
            if pd.isna(run):
                rows.append([str(int(seed)), PICKS[rule], "none", "–", "–", "–"])
                continue
            predictions = uncertainty.test_predictions(folder, run)
            compared = uncertainty.paired_comparison(predictions, uncertainty.test_predictions(folder, by_train_acc))
            rows.append([str(int(seed)), PICKS[rule], *(uncertainty.interval_text(accuracy, len(predictions))
                                                        for accuracy in (compared.accuracy_a, compared.accuracy_b)),
                         f"{compared.only_a} / {compared.only_b}", reports.p_value_text(compared.pvalue)])
    return markdown(["seed", "rule", "its pick: test accuracy (%) [95 % interval]", "training accuracy's pick",
                     "right only with the rule's / with training accuracy's", "McNemar p"], rows)


TABLES = {"noise": noise_table, "uncertainty": uncertainty_table, "uncertainty line": uncertainty_line,
          "averaging": averaging_table, "boundary": boundary_table, "cost": cost_table,
          "detectors": detectors_table, "never learned": never_learned_line, "paired": paired_table}
NEED_FOLDER = {"detectors", "never learned", "paired"}  # tables that read the files beside the records


def render(folder: str | Path, tables: list[str] | None = None) -> dict[str, str]:
    """The chosen tables (default: all) of the probe-study records in `folder`, by name."""
    table = population(folder)
    return {name: (TABLES[name](table, Path(folder)) if name in NEED_FOLDER else TABLES[name](table))
            for name in (tables or TABLES)}


def main(argv: list[str] | None = None) -> int:
    return print_tables(argv, render, list(TABLES), __doc__.split("\n")[0], "folder of the probe-study records")


if __name__ == "__main__":
    sys.exit(main())
