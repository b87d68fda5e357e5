"""The paper's comparisons within each seed's population of runs, and their spread over the seeds."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from analysis.selection import ModelSelection, region_summary, select_models, tau_across_runs
from analysis.signal_rules import compare_signals


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
