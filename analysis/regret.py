"""How many runs model selection without clean labels needs: from a population of runs, draw
sub-populations of m runs many times, let each rule pick one run of each, and measure its regret,
the test accuracy of the best run drawn (the oracle's pick) minus that of the rule's pick.

The paper's regions are split at the population's mean training accuracy and mean ζ, so their
reliability depends on how many runs make the population; the draws show how. Pure functions of
the runs' values at one epoch (`runs_values`); the regions are placed as `selection.select_models`
places them.

The Region 1 rule picks nothing when Region 1 is empty: its regret is then undefined, and the
share of such draws is reported beside it. The rule with a fallback takes, in that case, the run
with the lowest ζ among those above the mean training accuracy (Region 2 then), the run closest
to Region 1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from runner import records
from analysis.selection import regions_at
from analysis.signal_rules import signal_values

RULES = {
    "region 1": "Region 1 (paper): highest training accuracy in it",
    "region 1 or lowest zeta above mean": "Region 1, or where it is empty the lowest ζ above the mean training accuracy",
    "zeta": "lowest ζ",
    "train acc": "highest training accuracy",
    "noisy hold-out": "highest noisy hold-out accuracy",
}
DRAWS = 2000        # sub-populations drawn per population and size
WITHIN = 1.0        # points of test accuracy: a pick this close to the oracle's counts as a good one
INTERVAL = (5, 95)  # percentiles of the regret: a 90 % interval
MIN_RUNS = 4        # the smallest sub-population: below it a mean splits nothing
NONE = -1           # the index of no pick


def runs_values(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> pd.DataFrame:
    """Per run at `epoch` (None: each run's last): training accuracy, ζ, noisy hold-out accuracy and
    test accuracy, for the runs that have the first two and the last (as `select_models` keeps them)."""
    values = signal_values(table, epoch, convention)
    return values[["train_acc", "zeta", records.NOISY_HOLDOUT_ACC, "test_acc"]].dropna(
        subset=["train_acc", "zeta", "test_acc"])


def draw_subsets(runs: int, size: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` random sub-populations of `size` of `runs` runs, without replacement within each:
    an array (draws, size) of run positions."""
    return rng.permuted(np.tile(np.arange(runs), (draws, 1)), axis=1)[:, :size]


def best_of(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per row, the position of the largest of `values` among the `allowed` (the first on ties);
    `NONE` where none is allowed."""
    masked = np.where(allowed, values, -np.inf)
    return np.where(allowed.any(axis=1), masked.argmax(axis=1), NONE)


def rule_positions(train_acc: np.ndarray, zeta: np.ndarray, holdout: np.ndarray) -> dict[str, np.ndarray]:
    """Per rule of `RULES` and per row of the (draws, size) arrays: the position of its pick within
    the row, `NONE` where it picks nothing."""
    regions = regions_at(train_acc, zeta, train_acc.mean(axis=1, keepdims=True), zeta.mean(axis=1, keepdims=True))
    everywhere = np.ones_like(regions, dtype=bool)
    region_1 = best_of(train_acc, regions == 1)
    closest = best_of(-zeta, np.isin(regions, (1, 2)))
    return {"region 1": region_1, "region 1 or lowest zeta above mean": np.where(region_1 == NONE, closest, region_1),
            "zeta": best_of(-zeta, everywhere), "train acc": best_of(train_acc, everywhere),
            "noisy hold-out": best_of(holdout, np.isfinite(holdout))}


def draw_regrets(values: pd.DataFrame, size: int, draws: int, rng: np.random.Generator) -> pd.DataFrame:
    """Regret (points of test accuracy below the best run drawn) of each rule in `draws`
    sub-populations of `size` runs of `values` (`runs_values`); one row per draw, NaN where the rule
    picked nothing."""
    subsets = draw_subsets(len(values), size, draws, rng)
    take = lambda column: values[column].to_numpy(dtype=float)[subsets]
    test_acc = take("test_acc")
    oracle = test_acc.max(axis=1)
    regrets = {}
    for rule, positions in rule_positions(take("train_acc"), take("zeta"), take(records.NOISY_HOLDOUT_ACC)).items():
        picked = np.take_along_axis(test_acc, np.maximum(positions, 0)[:, None], axis=1)[:, 0]
        regrets[rule] = np.where(positions == NONE, np.nan, oracle - picked)
    return pd.DataFrame(regrets)


def summarize_regrets(regrets: pd.DataFrame) -> pd.DataFrame:
    """Per rule: the draws, the share (%) in which it picked nothing, and over the draws in which it
    picked, the median regret, its 90 % interval and the share (%) within `WITHIN` points."""
    rows = {}
    for rule, values in regrets.items():
        picked = values.dropna()
        low, median, high = (np.percentile(picked, [INTERVAL[0], 50, INTERVAL[1]]) if len(picked)
                             else (np.nan,) * 3)
        rows[rule] = {"draws": len(values), "none": 100 * values.isna().mean(), "median": median,
                      "low": low, "high": high,
                      "within": 100 * (picked <= WITHIN + 1e-9).mean() if len(picked) else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("rule")


def default_sizes(largest: int) -> list[int]:
    """Sub-population sizes from `MIN_RUNS` to `largest`: about eight, evenly spread, both ends in."""
    return sorted({int(round(size)) for size in np.linspace(MIN_RUNS, largest, 8)}) if largest > MIN_RUNS else [largest]


def regret_study(populations: list[pd.DataFrame], sizes: list[int] | None = None, draws: int = DRAWS,
                 seed: int = 0) -> pd.DataFrame:
    """Each rule's regret in sub-populations of each size m drawn from each population of runs
    (`runs_values`), `draws` per population and size, the populations' draws taken together; a
    population smaller than m is left out at m. Rows (m, rule) with `summarize_regrets`' columns and
    `populations`, how many populations were drawn from. Raises ValueError where no population has
    `MIN_RUNS` runs."""
    largest = max((len(values) for values in populations), default=0)
    if largest < MIN_RUNS:
        raise ValueError(f"the regret study needs a population of at least {MIN_RUNS} runs with training "
                         f"accuracy, zeta and test accuracy; the largest has {largest}")
    frames = {}
    for size in sizes or default_sizes(largest):
        rng = np.random.default_rng([seed, size])  # each size its own draws, whichever other sizes are asked for
        drawn = [draw_regrets(values, size, draws, rng) for values in populations if len(values) >= size]
        if drawn:
            frames[size] = summarize_regrets(pd.concat(drawn, ignore_index=True)).assign(populations=len(drawn))
    return pd.concat(frames, names=["m"])


def seed_values(table: pd.DataFrame, epoch: int | None = None, convention: str = "paper") -> list[pd.DataFrame]:
    """`runs_values` of each seed's population of runs."""
    return [runs_values(runs, epoch, convention) for _, runs in table.groupby("seed")]
