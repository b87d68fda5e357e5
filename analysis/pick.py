"""One recommended run of a population, chosen without clean labels: `python -m analysis FOLDER --pick`.

Which rule recommends, and below how many runs its pick is flagged as unreliable, come from the
regret by population size measured on the committed populations (`regret`, and the tables of
docs/REPRODUCTION.md, "How many models the selection rule needs"; drawn within each seed's 16 runs):

- The noisy hold-out accuracy (runs with --noisy-holdout) picked within 1 point of the best run in
  65 to 100 % of the draws at every size from 4 runs, under symmetric and CIFAR-10N noise alike; it
  is recommended wherever every run recorded it.
- Otherwise the paper's rule with its fallback (Region 1's highest training accuracy; where Region 1
  is empty, the lowest ζ above the mean training accuracy): within 1 point in 40 to 56 % of the draws
  of 4 to 8 runs under symmetric noise (69 to 78 % under CIFAR-10N), and in 62 % or more in every
  population from 12 runs on. Training accuracy alone and ζ alone get worse with every run added.

A rule counts as reliable from the smallest size at which its pick was within 1 point of the best
in `RELIABLE_SHARE` % of the draws or more in every measured population (`RELIABLE_FROM`; a test
recomputes it from the committed records). Below 4 runs nothing was measured.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.loading import populations
from analysis.regret import MIN_RUNS, NONE, RULES, rule_positions
from analysis.signal_rules import signal_values
from runner import records

HOLDOUT, PAPER = "noisy hold-out", "region 1 or lowest zeta above mean"
RELIABLE_SHARE = 60  # % of draws within `regret.WITHIN` points of the best run
RELIABLE_FROM = {HOLDOUT: 4, PAPER: 12}  # runs, measured (see the module's docstring)
MEASURED = "docs/REPRODUCTION.md, \"How many models the selection rule needs\""
WHY = {
    HOLDOUT: ("every run recorded its noisy hold-out accuracy, the rule that picked within 1 point of the best "
              "run in 65 to 100 % of the measured draws at every population size from 4 runs"),
    PAPER: ("no noisy hold-out accuracy was recorded (train with --noisy-holdout N to have it); of the rules "
            "that need no clean label, this one did not get worse as runs were added, where training "
            "accuracy alone and zeta alone did"),
}
OTHER_RULES = (HOLDOUT, PAPER, "zeta", "train acc")  # the paper's rule without fallback is PAPER's pick where it picks


def pick_values(table: pd.DataFrame, epoch: int | None, convention: str) -> pd.DataFrame:
    """Per run at `epoch` (None: each run's last): training accuracy, ζ, noisy hold-out accuracy and
    test accuracy (NaN without a test set), for the runs with training accuracy and ζ."""
    values = signal_values(table, epoch, convention)
    return values[["train_acc", "zeta", records.NOISY_HOLDOUT_ACC, "test_acc"]].dropna(subset=["train_acc", "zeta"])


def rule_picks(values: pd.DataFrame) -> dict[str, str | None]:
    """The run each rule of `regret.RULES` picks among `values`, placed as `regret` places them;
    None where it picks nothing."""
    arrays = [values[column].to_numpy(dtype=float)[None] for column in ("train_acc", "zeta", records.NOISY_HOLDOUT_ACC)]
    positions = rule_positions(*arrays)
    return {rule: (values.index[position[0]] if position[0] != NONE else None) for rule, position in positions.items()}


def recommended_rule(values: pd.DataFrame) -> str:
    """The noisy hold-out accuracy where every run has it, else the paper's rule with its fallback."""
    return HOLDOUT if values[records.NOISY_HOLDOUT_ACC].notna().all() else PAPER


def highest_training_accuracy(values: pd.DataFrame) -> str:
    """The run of highest training accuracy, the lowest ζ among those tied: the paper's rule where
    no run is above the mean training accuracy (all runs tie)."""
    return values.sort_values(["train_acc", "zeta"], ascending=[False, True], kind="stable").index[0]


def pick_warnings(rule: str, runs: int, region_1_empty: bool) -> list[str]:
    """Why the pick may be unreliable: a population smaller than the rule was measured reliable at,
    an empty Region 1."""
    warnings = []
    if runs < MIN_RUNS:
        warnings.append(f"only {runs} run{'s' * (runs != 1)}: no rule was measured on fewer than {MIN_RUNS} "
                        f"({MEASURED}); train more runs")
    elif runs < RELIABLE_FROM[rule]:
        warnings.append(f"only {runs} runs: this rule picked within 1 point of the best run in at least "
                        f"{RELIABLE_SHARE} % of the measured draws only from {RELIABLE_FROM[rule]} runs on "
                        f"({MEASURED}); train more runs, or add --noisy-holdout N to every run")
    if rule == PAPER and region_1_empty:
        warnings.append("Region 1 (training accuracy above its mean, zeta below its mean) is empty; the pick "
                        "comes from the rule's fallback")
    return warnings


def checkpoint_of(folder: Path, run: str) -> str | None:
    """The checkpoint path a run's record names (its --checkpoint-dir, as given, and file name)."""
    meta = records.read_record(folder / f"{run}{records.SUFFIX}").meta
    directory, name = meta.get("args", {}).get("checkpoint_dir"), meta.get("run", {}).get("checkpoint")
    return str(Path(directory) / name) if directory and name else None


def finite_or_none(value) -> float | None:
    """A number for JSON: None where it is missing."""
    return float(value) if value is not None and math.isfinite(value) else None


def recommend(table: pd.DataFrame, folder: str | Path, epoch: int | None = None,
              convention: str = "paper") -> dict:
    """The recommended run of a population (one data population, see `loading.select_population`),
    the rule that chose it and why, the other rules' picks where they differ, and warnings.
    Raises ValueError where no run has training accuracy and ζ."""
    values = pick_values(table, epoch, convention)
    if values.empty:
        raise ValueError("no run has training accuracy and zeta to pick from (a run needs 2 epochs for zeta)")
    rule, picks = recommended_rule(values), rule_picks(values)
    run = picks[rule] or highest_training_accuracy(values)  # PAPER picks nothing where all runs tie
    row = values.loc[run]
    others = {other: picks[other] for other in OTHER_RULES
              if other != rule and picks[other] is not None and picks[other] != run}
    return {
        "data": str(populations(table).iloc[0]), "runs": len(values), "run": run,
        "record": str(Path(folder) / f"{run}{records.SUFFIX}"), "checkpoint": checkpoint_of(Path(folder), run),
        "rule": rule, "rule_description": RULES[rule], "why": WHY[rule],
        "values": {column: finite_or_none(row[column]) for column in values.columns},
        "other_rules": others,
        "warnings": pick_warnings(rule, len(values), picks["region 1"] is None),
    }


def pick_report(recommendation: dict) -> str:
    """The recommendation as a few lines of text."""
    values = recommendation["values"]
    shown = ", ".join(f"{name} {value:.{4 if name == 'zeta' else 2}f}" for name, value in values.items()
                      if value is not None)  # the decimals of the analysis' tables
    lines = [f"pick: {recommendation['run']} ({shown})",
             f"checkpoint: {recommendation['checkpoint']}",
             f"rule: {recommendation['rule_description']}, among {recommendation['runs']} runs of "
             f"{recommendation['data']}",
             f"why: {recommendation['why']}"]
    lines += [f"{RULES[rule]} would pick {run} instead" for rule, run in recommendation["other_rules"].items()]
    lines += [f"warning: {warning}" for warning in recommendation["warnings"]]
    return "\n".join(lines)


def pick_json(recommendation: dict) -> str:
    """The recommendation as JSON, for scripts."""
    return json.dumps(recommendation, indent=2, default=lambda value: value.item() if isinstance(value, np.generic) else str(value))
