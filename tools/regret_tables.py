"""Print the tables of docs/REPRODUCTION.md's study of how many runs model selection needs, as
markdown, from the records of one population (memorization_symmetric, memorization_cifar10n,
probe_study), and draw its figure from several.

    python -m tools.regret_tables docs/records/memorization_cifar10n
    python -m tools.regret_tables figure docs/figures/regret.png docs/records/memorization_symmetric \
        docs/records/memorization_cifar10n docs/records/probe_study

Sub-populations of m runs are drawn from each seed's population and from all the runs pooled
(`analysis.regret.regret_study`, a fixed seed, so the tables are the same every time);
tests/test_reproduction.py checks that the document and the README quote them as printed here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


from analysis import figures, regret
from tools.reproduction_tables import markdown, population, print_tables

WITHIN_SEED_SIZES = (4, 6, 8, 12, 16)
POOLED_SIZES = (4, 8, 16, 32, 48)
HEADLINE_SIZE = 8  # the runs of the README's line: half a seed's population
NOISE = {"symmetric": "symmetric noise", "cifar10n-worst": "CIFAR-10N worst labels"}
TITLES = {"memorization_symmetric": "symmetric noise", "memorization_cifar10n": "CIFAR-10N worst labels",
          "probe_study": "symmetric noise, probe study"}
LABELS = {"region 1": "Region 1 (paper)",
          "region 1 or lowest zeta above mean": "Region 1, or where empty the lowest ζ above the mean training accuracy",
          "zeta": "lowest ζ", "train acc": "highest training accuracy", "noisy hold-out": "highest noisy hold-out accuracy"}


def study(table: pd.DataFrame, pooled: bool, sizes: tuple[int, ...] | None = None) -> pd.DataFrame:
    """The regret study of the population: drawn within each seed's runs, or from all runs pooled;
    at `sizes` up to the population's (default: the tables' sizes, the full size included)."""
    populations = [regret.runs_values(table)] if pooled else regret.seed_values(table)
    largest = max(len(values) for values in populations)
    chosen = sizes or (POOLED_SIZES if pooled else WITHIN_SEED_SIZES)
    return regret.regret_study(populations, sorted({size for size in chosen if size < largest} | {largest}))


def cell(row: pd.Series) -> str:
    """`0.0 [0.0, 5.5]; 73 %`: median regret, its 90 % interval and the share within one point; a dash
    where the rule never picked."""
    if pd.isna(row["median"]):
        return "–"
    return f"{row['median']:.1f} [{row['low']:.1f}, {row['high']:.1f}]; {row['within']:.0f} %"


def regret_table(result: pd.DataFrame) -> str:
    """Rules (rows) by sub-population size (columns), and how often Region 1 was empty."""
    sizes = result.index.get_level_values("m").unique()
    rows = [[LABELS[rule], *(cell(result.loc[(size, rule)]) for size in sizes)] for rule in regret.RULES]
    rows.insert(1, ["Region 1 empty (% of draws)",
                    *(f"{result.loc[(size, 'region 1'), 'none']:.0f} %" for size in sizes)])
    return markdown(["rule", *(f"m = {size}" for size in sizes)], rows)


def within_seeds_table(table: pd.DataFrame) -> str:
    return regret_table(study(table, pooled=False))


def pooled_table(table: pd.DataFrame) -> str:
    return regret_table(study(table, pooled=True))


def headline_line(table: pd.DataFrame) -> str:
    """The README's figure of the population: with `HEADLINE_SIZE` runs of a seed's population, how
    often the paper's rule (with its fallback where Region 1 is empty) picked within `regret.WITHIN`
    points of the best run drawn (see `HEADLINE`), and how often Region 1 was empty."""
    result = study(table, pooled=False).xs(HEADLINE_SIZE, level="m")
    noise = NOISE.get(str(table["noise_type"].iloc[0]), str(table["noise_type"].iloc[0]))
    return (f"in {result.loc['region 1 or lowest zeta above mean', 'within']:.0f} % of draws here under {noise} "
            f"(Region 1 empty in {result.loc['region 1', 'none']:.0f} % of them)")


HEADLINE = f"with {HEADLINE_SIZE} models, the rule's pick was within {regret.WITHIN:g} point of the best"


TABLES = {"within seeds": within_seeds_table, "pooled": pooled_table, "headline": headline_line}


def render(folder: str | Path, tables: list[str] | None = None) -> dict[str, str]:
    """The chosen tables (default: all) of the population in `folder`, by name."""
    table = population(folder)
    return {name: TABLES[name](table) for name in (tables or TABLES)}


def figure_main(argv: list[str]) -> int:
    """`figure OUT FOLDER...`: the regret figure of the populations, drawn within each seed's runs at
    every size from 4 to the seeds' population."""
    parser = argparse.ArgumentParser(prog="regret_tables.py figure", allow_abbrev=False)
    parser.add_argument("out", help="the figure's path (PNG, PDF or SVG)")
    parser.add_argument("folders", nargs="+", help="folders of the populations' records")
    args = parser.parse_args(argv)
    try:
        studies = {}
        for folder in args.folders:
            table = population(folder)
            largest = max(len(values) for values in regret.seed_values(table))
            title = (f"{TITLES.get(Path(folder).name, Path(folder).name)} ({table['run'].nunique()} runs, "
                     f"{table['seed'].nunique()} seeds)")
            studies[title] = study(table, pooled=False, sizes=tuple(range(regret.MIN_RUNS, largest + 1)))
    except (FileNotFoundError, ValueError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    figures.plot_regret(studies).savefig(args.out, dpi=150)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["figure"]:
        return figure_main(argv[1:])
    return print_tables(argv, render, list(TABLES), __doc__.split("\n")[0], "folder of one population's records")


if __name__ == "__main__":
    sys.exit(main())
