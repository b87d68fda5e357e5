"""How many runs model selection needs: the regret of each rule in random sub-populations of a
population of runs, on values whose answers are worked out by hand."""
import math

import numpy as np
import pandas as pd
import pytest

from runner import records
from analysis import cli, regret
from test_analysis import two_epoch_run

HOLDOUT = records.NOISY_HOLDOUT_ACC


def population(**zetas: float) -> pd.DataFrame:
    """Four runs, one per region when `a`'s ζ is low: a (train 90, test 40), b (80, 45), c (50, 30),
    d (40, 35); the noisy hold-out accuracy is highest for b, the best run."""
    values = {"a": (90.0, 0.1, 50.0, 40.0), "b": (80.0, 0.5, 60.0, 45.0),
              "c": (50.0, 0.05, 40.0, 30.0), "d": (40.0, 0.6, 45.0, 35.0)}
    frame = pd.DataFrame.from_dict(values, orient="index", columns=["train_acc", "zeta", HOLDOUT, "test_acc"])
    return frame.assign(zeta=[zetas.get(name, zeta) for name, zeta in frame["zeta"].items()])


def whole(values: pd.DataFrame) -> pd.Series:
    """Each rule's regret when the draw is the whole population (the same in every draw)."""
    regrets = regret.draw_regrets(values, len(values), 3, np.random.default_rng(0))
    assert (regrets.nunique(dropna=False) == 1).all()
    return regrets.iloc[0]


def test_each_rule_s_regret_is_the_best_test_accuracy_drawn_minus_its_pick_s():
    # Means: training accuracy 65, zeta 0.3125: a is in Region 1, b in 2, c in 3, d in 4.
    regrets = whole(population())
    assert regrets.to_dict() == {"region 1": 5.0, "region 1 or lowest zeta above mean": 5.0,
                                 "zeta": 15.0, "train acc": 5.0, "noisy hold-out": 0.0}


def test_an_empty_region_1_picks_nothing_and_the_fallback_takes_the_lowest_zeta_above_the_mean_train_acc():
    # a's zeta 0.55 moves the mean to 0.425: a and b are in Region 2, and b has the lower zeta.
    regrets = whole(population(a=0.55))
    assert math.isnan(regrets["region 1"])
    assert regrets["region 1 or lowest zeta above mean"] == 0.0 and regrets["zeta"] == 15.0
    summary = regret.summarize_regrets(regret.draw_regrets(population(a=0.55), 4, 5, np.random.default_rng(0)))
    assert summary.loc["region 1", "none"] == 100.0 and math.isnan(summary.loc["region 1", "median"])
    assert summary.loc["region 1 or lowest zeta above mean", ["none", "median", "within"]].tolist() == [0.0, 0.0, 100.0]


def test_sub_populations_hold_distinct_runs_and_every_regret_is_at_least_zero():
    subsets = regret.draw_subsets(6, 4, 50, np.random.default_rng(1))
    assert subsets.shape == (50, 4) and all(len(set(row)) == 4 for row in subsets)
    six = pd.concat([population(), population().rename(index=lambda name: name + "2").assign(zeta=0.3)])
    regrets = regret.draw_regrets(six, 3, 200, np.random.default_rng(2))
    assert (regrets.stack().dropna() >= 0).all() and regrets["zeta"].notna().all()


def test_the_study_summarizes_each_size_over_the_populations_that_are_large_enough():
    five = pd.concat([population(), population().iloc[:1].rename(index={"a": "e"})])
    study = regret.regret_study([population(), five], sizes=[4, 5], draws=10)
    assert study.loc[(4, "zeta"), "populations"] == 2 and study.loc[(5, "zeta"), "populations"] == 1
    assert study.loc[(4, "zeta"), "draws"] == 20
    again = regret.regret_study([population(), five], sizes=[5], draws=10)
    pd.testing.assert_frame_equal(again.loc[[5]], study.loc[[5]])  # each size draws the same whatever else is asked
    with pytest.raises(ValueError, match="at least 4 runs"):
        regret.regret_study([population().iloc[:3]])


def test_the_command_line_prints_the_regret_of_the_user_s_runs(tmp_path, capsys):
    for name, (train_acc, zeta, _, test_acc) in population().iterrows():
        two_epoch_run(tmp_path, name, train_acc, zeta, test_acc)
    figures = tmp_path / "figures"
    assert cli.main([str(tmp_path), "--regret", "--draws", "20", "--figures", str(figures), "--formats", "png"]) == 0
    assert (figures / "regret.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "Regret of each rule in random sub-populations of m runs (drawn from all the runs)" in out
    assert "Region 1 (paper): highest training accuracy in it" in out
    assert cli.main([str(tmp_path), "--regret", "--draws", "0"]) == 2
    assert capsys.readouterr().err.strip() == "analysis: error: --draws must be at least 1, got 0"
    for name in ("b", "c"):
        (tmp_path / f"{name}.csv").unlink()
    capsys.readouterr()
    assert cli.main([str(tmp_path), "--regret"]) == 2
    assert "the regret study needs a population of at least 4 runs" in capsys.readouterr().err
