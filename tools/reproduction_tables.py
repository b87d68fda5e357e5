"""Print the tables of docs/REPRODUCTION.md for a folder of run records, as markdown.

docs/REPRODUCTION.md quotes these tables; tests/test_reproduction.py renders them again from the
committed records and checks that every line is in the document, so no number there can drift from
the records. Each table is computed with the analysis package's own functions, within each seed's population
where the paper's comparisons are concerned (see `seeds.seed_populations`).

    python -m tools.reproduction_tables docs/records/memorization_symmetric
    python -m tools.reproduction_tables docs/records/pilot_n2000 --tables settings
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


from analysis import loading, naming, reports, seeds, selection, signal_rules, uncertainty

SETTING = ["model", "scale", "optimizer", "lr_initial", "scheduler"]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: pd.Series, digits: int) -> str:
    """Mean ± sample std of `values` (the mean alone for one value, a dash for none)."""
    values = values.dropna()
    std = values.std() if len(values) > 1 else np.nan
    return reports.mean_std_text(values.mean() if len(values) else np.nan, std, digits)


def run_title_line(run: pd.Series) -> str:
    """`ResNet-18 ×0.25, SGD lr 0.05, cosine`: one training setting, from `naming.run_title`."""
    return naming.run_title(run).split("\n")[0].replace(" schedule", "")


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: its setting, seed, last-epoch values, peak test accuracy and the epoch of the peak."""
    last = loading.runs_at_epoch(table)
    peaks = table.loc[table.groupby("run")["test_acc"].idxmax()].set_index("run")
    last = last.assign(peak_test_acc=peaks["test_acc"], peak_epoch=peaks["epoch"], zeta=last["zeta_paper"])
    return last.assign(penalty=last["peak_test_acc"] - last["test_acc"])


def settings_table(table: pd.DataFrame) -> str:
    """Per training setting, mean ± std over its seeds at the last epoch: training accuracy, the
    noisy subset's (memorization), ζ, test accuracy, its peak over the epochs and the memorization
    penalty (peak minus last)."""
    runs = final_rows(table)
    rows = []
    for _, group in runs.groupby(SETTING, sort=True):
        rows.append([run_title_line(group.iloc[0]), str(len(group)), spread(group["train_acc"], 1),
                     spread(group["train_noisy_acc"], 1), spread(group["zeta"], 3),
                     spread(group["test_acc"], 1), spread(group["peak_test_acc"], 1),
                     spread(group["peak_epoch"], 0), spread(group["penalty"], 1)])
    header = ["setting", "seeds", "train acc", "noisy subset", "ζ", "test acc", "peak test acc",
              "peak epoch", "penalty"]
    return markdown(header, rows)


def memorizing(runs: pd.DataFrame) -> pd.Series:
    """Which runs end with a training accuracy above the clean fraction of their training set: they
    must have fitted part of their wrong labels."""
    return runs["train_acc"] > 100 * (1 - runs["fraction_wrong"])


def regime_line(table: pd.DataFrame) -> str:
    """How many runs end above the clean fraction of their training set, and the memorization
    penalty of those runs and of the others."""
    runs = final_rows(table)
    above = memorizing(runs)
    clean = 100 * (1 - runs["fraction_wrong"]).mean()
    penalties = [f"{spread(runs.loc[chosen, 'penalty'], 1)} points in {label}"
                 for chosen, label in ((above, "those runs"), (~above, "the others")) if chosen.any()]
    return (f"{int(above.sum())} of {len(runs)} run{'s' * (len(runs) != 1)} end above the clean fraction of their training set "
            f"({clean:.1f} %). Memorization penalty (peak minus last test accuracy): "
            f"{' and '.join(penalties)}.")


def cost_line(table: pd.DataFrame) -> str:
    """The runs' training time as their records give it."""
    hours = table["seconds"].sum() / 3600
    count = table["run"].nunique()
    return f"{count} run{'s' * (count != 1)}, {hours:.2f} hours of training in all (the sum of the epoch times in the records)."


def tau_table(table: pd.DataFrame) -> str:
    """Kendall's τ between final ζ and final noisy-subset accuracy across the runs of each seed,
    their mean ± std, and across all runs."""
    populations = seeds.seed_populations(table)
    rows = [[f"seed {seed}", str(int(row["n"])), f"{row['tau']:.2f}", reports.p_value_text(row["pvalue"])]
            for seed, row in populations.taus.iterrows()]
    rows.append(["mean ± std over seeds", "", spread(populations.taus["tau"], 2), ""])
    overall = selection.tau_across_runs(table)
    rows.append(["all runs", str(overall.n), f"{overall.tau:.2f}", reports.p_value_text(overall.pvalue)])
    return markdown(["population", "runs", "τ", "p"], rows)


def along_table(table: pd.DataFrame) -> str:
    """τ between ζ(t) and noisy-subset accuracy along the epochs of each run, for the runs that
    end above the clean fraction and for the others."""
    along = selection.tau_along_epochs(table).dropna(subset=["tau"])
    above = memorizing(final_rows(table).reindex(along.index))
    rows = []
    for label, chosen in (("end above the clean fraction", above), ("the others", ~above), ("all", above | ~above)):
        taus = along.loc[chosen]
        significant = int(((taus["tau"] > 0) & (taus["pvalue"] < 0.05)).sum())
        rows.append([label, str(len(taus)), f"{taus['tau'].median():.2f}", f"{significant} of {len(taus)}"])
    return markdown(["runs", "count", "median τ along epochs", "τ > 0 with p < 0.05"], rows)


def regions_table(table: pd.DataFrame) -> str:
    """The four regions placed within each seed's population, pooled: runs and test accuracy, and
    how many populations have the region empty."""
    populations = seeds.seed_populations(table)
    empty = {region: sum(seed_selection.regions.loc[region, "count"] == 0
                         for seed_selection in populations.selections.values())
             for region in selection.REGIONS.index}
    rows = [[str(region), row["train_acc"], row["zeta"], str(row["count"]),
             reports.mean_std_text(row["test_acc_mean"], row["test_acc_std"], 1),
             f"{empty[region]} of {len(populations.selections)}"]
            for region, row in populations.regions.iterrows()]
    return markdown(["region", "train acc", "ζ", "runs", "test acc (%)", "empty in"], rows)


def picks_table(table: pd.DataFrame) -> str:
    """Test accuracy of each rule's pick in each seed's population, with its 95 % binomial interval
    on the test set, and the mean ± std over the populations."""
    populations = seeds.seed_populations(table)
    picks = populations.picks
    test_size = int(table["test_size"].dropna().iloc[0])
    labels = {"region 1": "Region 1 (paper)", "train acc": "training accuracy alone", "zeta": "ζ alone",
              "noisy hold-out": "noisy hold-out accuracy", "prediction changes": "prediction changes",
              "negative margins": "negative-margin fraction", "oracle": "oracle (test accuracy)"}
    rows = [[labels.get(rule, rule)] + [uncertainty.interval_text(value, test_size) for value in picks.loc[rule]]
            + [spread(picks.loc[rule], 1)] for rule in picks.index]
    return markdown(["rule"] + list(picks.columns) + ["mean ± std"], rows)


def region_1_line(table: pd.DataFrame) -> str:
    """How many runs Region 1 holds in each seed's population, and how far below their seed's mean ζ
    (the boundary) those runs lie."""
    counts, below = [], []
    for seed_selection in seeds.seed_populations(table).selections.values():
        inside = seed_selection.runs[seed_selection.runs["region"] == 1]
        counts.append(str(len(inside)))
        below += list(seed_selection.zeta_mean - inside["zeta"])
    held = f"holds {', '.join(counts[:-1])} and {counts[-1]} runs in the {len(counts)} seeds' populations"
    if not below:
        return f"Region 1 {held}."
    distance = f"{min(below):.3f}" if len(below) == 1 else f"{min(below):.3f} to {max(below):.3f}"
    return f"Region 1 {held}, with ζ {distance} below their seed's mean ζ (the boundary)."


def trainable_line(table: pd.DataFrame) -> str:
    """A comparison chosen after seeing the data, not the paper's rule: within each seed's runs above
    the mean training accuracy (Regions 1 and 2), the test accuracy of the run with the lowest ζ
    against that of the run with the highest training accuracy."""
    lowest_zeta, highest_train = [], []
    for seed_selection in seeds.seed_populations(table).selections.values():
        trainable = seed_selection.runs[seed_selection.runs["region"].isin([1, 2])]
        lowest_zeta.append(trainable.loc[trainable["zeta"].idxmin(), "test_acc"])
        highest_train.append(trainable.loc[trainable["train_acc"].idxmax(), "test_acc"])
    return (f"Among the runs above the mean training accuracy of their seed, the lowest ζ picks runs of "
            f"{spread(pd.Series(lowest_zeta), 1)} % test accuracy, the highest training accuracy runs of "
            f"{spread(pd.Series(highest_train), 1)} %.")


def stopping_table(table: pd.DataFrame) -> str:
    """Early stopping within each run: the test accuracy each rule stops at and its shortfall from
    the run's best, mean ± std over all runs."""
    per_run, _ = signal_rules.compare_stopping(table)
    labels = {"label wave": "Label Wave (prediction changes)", "noisy hold-out": "highest noisy hold-out accuracy",
              "zeta": "lowest ζ (from epoch 1)", "last epoch": "last epoch (no stopping)",
              "oracle": "oracle (best test accuracy)"}
    rows = [[labels.get(rule, rule), str(int(group["test_acc"].notna().sum())), spread(group["epoch"], 0),
             spread(group["test_acc"], 1), spread(group["shortfall"], 1)]
            for rule, group in per_run.groupby("rule", sort=False)]
    return markdown(["rule", "runs", "stop epoch", "test acc", "shortfall"], rows)


TABLES = {
    "settings": settings_table,
    "regime": regime_line,
    "cost": cost_line,
    "tau": tau_table,
    "along": along_table,
    "regions": regions_table,
    "picks": picks_table,
    "region 1": region_1_line,
    "trainable": trainable_line,
    "stopping": stopping_table,
}


def population(folder: str | Path) -> pd.DataFrame:
    """The epochs of the runs of the one population whose records are in `folder`."""
    table = loading.load_runs(folder).table
    if table.empty:
        raise ValueError(f"no run records in {folder}")
    return loading.select_population(table)


def render(folder: str | Path, tables: list[str] | None = None) -> dict[str, str]:
    """The chosen tables (default: all) of the single population in `folder`, by name."""
    table = population(folder)
    return {name: TABLES[name](table) for name in (tables or TABLES)}


def print_tables(argv: list[str] | None, render, names: list[str], description: str, folder_help: str) -> int:
    """The command line of a table tool: `render(folder, tables)` printed as markdown, each table
    after an HTML comment naming it; a folder without records is one line on stderr and exit 2."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("folder", help=folder_help)
    parser.add_argument("--tables", nargs="+", choices=names, help="tables to print (default: all)")
    args = parser.parse_args(argv)
    try:
        rendered = render(args.folder, args.tables)
    except (FileNotFoundError, ValueError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    for name, text in rendered.items():
        print(f"<!-- {name} -->\n{text}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return print_tables(argv, render, list(TABLES), __doc__.split("\n")[0],
                        "folder of run records of one population (same data)")


if __name__ == "__main__":
    sys.exit(main())
