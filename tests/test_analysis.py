"""The analysis on constructed run records whose answers can be worked out by hand."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from runner import records
from analysis import cli, figures, loading, reports, seeds, selection, signal_rules

# name: (training accuracy, zeta, test accuracy) at the last epoch. Means: training accuracy 57.5,
# zeta 21.5 / 6; regions a, c: 1; b: 2; d: 3; e, f: 4.
SELECTION_RUNS = {
    "a": (90.0, 1.0, 70.0),
    "b": (95.0, 5.0, 60.0),
    "c": (70.0, 2.0, 75.0),
    "d": (40.0, 0.5, 50.0),
    "e": (30.0, 6.0, 30.0),
    "f": (20.0, 7.0, 20.0),
}


def epoch_row(epoch: int, drop: float, train_acc: float, test_acc: float,
              noisy_acc: float = math.nan, stored_zeta: float = math.nan) -> dict:
    """A record row whose probe loss falls by `drop`; clean and noisy cells empty unless given."""
    return {"epoch": epoch, "lr": 0.1, "phi_before": 10.0, "phi_after": 10.0 - drop,
            "susceptibility": stored_zeta, "train_loss": 1.0, "train_acc": train_acc,
            "train_noisy_acc": noisy_acc, "train_clean_acc": math.nan if math.isnan(noisy_acc) else 50.0,
            "test_loss": 1.0, "test_acc": test_acc, "seconds": 0.1}


def write_run(folder, name: str, rows: list[dict], ground_truth: bool = True, **meta) -> None:
    meta = {"args": {"model": "cnn", "scale": 1.0, "lr": 0.1, "seed": 0},
            "noise": {"ground_truth": ground_truth}, **meta}
    records.write_record(folder / f"{name}.csv", records.RunRecord(meta, rows))


def two_epoch_run(folder, name: str, train_acc: float, zeta: float, test_acc: float,
                  noisy_acc: float = math.nan) -> None:
    """A run whose last epoch (1) has these values; at epoch 1 the paper's zeta is r_1 itself."""
    write_run(folder, name, [epoch_row(0, 3.0, 10.0, 10.0, noisy_acc / 2, math.nan),
                             epoch_row(1, zeta, train_acc, test_acc, noisy_acc, zeta)])


@pytest.fixture
def selection_table(tmp_path) -> pd.DataFrame:
    for name, (train_acc, zeta, test_acc) in SELECTION_RUNS.items():
        two_epoch_run(tmp_path, name, train_acc, zeta, test_acc)
    return loading.load_runs(tmp_path).table


def test_running_zetas_follow_both_conventions():
    paper, reference = (loading.zetas_at(np.arange(4), np.array([5.0, 1.0, 2.0, 3.0]), convention)
                        for convention in ("paper", "reference"))
    np.testing.assert_allclose(paper, [np.nan, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(reference, [np.nan, 0.0, 0.5, 1.0])


def test_running_zetas_are_undefined_after_a_missing_epoch():
    paper, reference = (loading.zetas_at(np.array([0, 1, 3]), np.array([5.0, 1.0, 2.0]), convention)
                        for convention in ("paper", "reference"))
    np.testing.assert_allclose(paper, [np.nan, 1.0, np.nan])
    np.testing.assert_allclose(reference, [np.nan, 0.0, np.nan])


def test_load_runs_skips_unrelated_files_and_reports_unreadable_ones(tmp_path):
    two_epoch_run(tmp_path, "a", 90.0, 1.0, 70.0)
    two_epoch_run(tmp_path, "b", 95.0, 5.0, 60.0)
    (tmp_path / "notes.txt").write_text("not a record")
    (tmp_path / "broken.csv").write_text("a,b\n1,2\n")
    (tmp_path / ".a.csv.tmp").write_text("partial")
    (tmp_path / "figures").mkdir()
    loaded = loading.load_runs(tmp_path)
    assert list(loaded.unreadable) == ["broken.csv"]
    assert loaded.table.groupby("run")["epoch"].apply(list).to_dict() == {"a": [0, 1], "b": [0, 1]}
    assert loaded.table["model"].eq("cnn").all()


def test_a_record_without_epochs_yet_adds_no_rows(tmp_path):
    two_epoch_run(tmp_path, "a", 90.0, 1.0, 70.0)
    write_run(tmp_path, "starting", [])
    loaded = loading.load_runs(tmp_path)
    assert loaded.unreadable == {} and set(loaded.table["run"]) == {"a"}


def test_load_runs_of_a_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        loading.load_runs(tmp_path / "absent")


def test_zeta_is_recomputed_and_a_wrong_stored_value_reported(tmp_path):
    write_run(tmp_path, "wrong", [epoch_row(0, 1.0, 10.0, 10.0), epoch_row(1, 2.0, 20.0, 20.0, stored_zeta=9.0)])
    two_epoch_run(tmp_path, "right", 20.0, 2.0, 20.0)
    table = loading.load_runs(tmp_path).table
    assert table.loc[table["run"] == "wrong", "zeta_paper"].tolist()[1] == 2.0
    assert loading.zeta_mismatches(table) == ["wrong"]


def test_ground_truth_is_inferred_when_the_header_lacks_it(tmp_path):
    records.write_record(tmp_path / "bare.csv", records.RunRecord({}, [epoch_row(0, 1.0, 10.0, 10.0)]))
    table = loading.load_runs(tmp_path).table
    assert not table["ground_truth"].any()
    assert table["model"].isna().all()


def test_run_curves_give_accuracies_and_the_chosen_zeta(tmp_path):
    write_run(tmp_path, "r", [epoch_row(e, d, 10.0 * e, 5.0 * e, 2.0 * e)
                              for e, d in enumerate([5.0, 1.0, 2.0, 3.0])])
    table = loading.load_runs(tmp_path).table
    paper = loading.run_curves(table, "r")
    reference = loading.run_curves(table, "r", "reference")
    assert paper["train_noisy_acc"].tolist() == [0.0, 2.0, 4.0, 6.0]
    np.testing.assert_allclose(paper["zeta"], [np.nan, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(reference["zeta"], [np.nan, 0.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        loading.run_curves(table, "r", "mean")


def test_filter_runs_by_name_and_pattern(selection_table):
    assert sorted(loading.filter_runs(selection_table, ["a", "[de]"])["run"].unique()) == ["a", "d", "e"]
    assert loading.filter_runs(selection_table, None) is selection_table
    with pytest.raises(ValueError, match="zz"):
        loading.filter_runs(selection_table, ["zz"])


def test_kendall_tau_by_hand():
    # (1,3,2,4) against (1,2,3,4): one discordant pair of six, tau = 4/6; 4 of the 24 orders have at
    # most one inversion, so the one-sided p is 1/6 and the two-sided 1/3.
    correlation = selection.kendall([1, 2, 3, 4], [1, 3, 2, 4])
    assert correlation.tau == pytest.approx(2 / 3)
    assert correlation.pvalue == pytest.approx(1 / 3)
    assert correlation.n == 4


def test_kendall_ignores_missing_pairs_and_needs_two():
    assert selection.kendall([1, 2, np.nan, 3], [3, 2, 1, np.nan]).n == 2
    assert math.isnan(selection.kendall([1, np.nan], [1, 2]).tau)


def test_tau_across_runs_at_the_last_and_at_a_chosen_epoch(tmp_path):
    # Last epoch: zeta 1, 2, 3, 4 against noisy accuracy 10, 30, 20, 40 -> tau 2/3.
    # Epoch 0: noisy accuracy 5, 15, 10, 20 but zeta undefined -> no pair.
    for name, zeta, noisy in [("p", 1.0, 10.0), ("q", 2.0, 30.0), ("r", 3.0, 20.0), ("s", 4.0, 40.0)]:
        two_epoch_run(tmp_path, name, 50.0, zeta, 50.0, noisy)
    write_run(tmp_path, "unknown", [epoch_row(0, 1.0, 10.0, 10.0), epoch_row(1, 9.0, 50.0, 50.0)],
              ground_truth=False)
    table = loading.load_runs(tmp_path).table
    last = selection.tau_across_runs(table)
    assert (last.tau, last.n) == (pytest.approx(2 / 3), 4)
    assert selection.tau_across_runs(table, epoch=0).n == 0
    assert selection.tau_across_runs(table, epoch=1, convention="reference").n == 4


def test_tau_along_epochs_of_each_run(tmp_path):
    # zeta(t) = 1, 1.5, 2 (rising); noisy accuracy 1, 3, 2 -> tau 1/3.
    write_run(tmp_path, "r", [epoch_row(e, d, 50.0, 50.0, n)
                              for e, d, n in [(0, 9.0, 0.0), (1, 1.0, 1.0), (2, 2.0, 3.0), (3, 3.0, 2.0)]])
    along = selection.tau_along_epochs(loading.load_runs(tmp_path).table)
    assert along.loc["r", "tau"] == pytest.approx(1 / 3)
    assert along.loc["r", "n"] == 3


def test_regions_means_and_standard_deviations(selection_table):
    chosen = selection.select_models(selection_table)
    assert chosen.train_acc_mean == pytest.approx(57.5)
    assert chosen.zeta_mean == pytest.approx(21.5 / 6)
    assert chosen.runs["region"].to_dict() == {"a": 1, "b": 2, "c": 1, "d": 3, "e": 4, "f": 4}
    regions = chosen.regions
    assert regions["count"].tolist() == [2, 1, 1, 2]
    np.testing.assert_allclose(regions["test_acc_mean"], [72.5, 60.0, 50.0, 25.0])
    np.testing.assert_allclose(regions["test_acc_std"], [math.sqrt(12.5), np.nan, np.nan, math.sqrt(50)])


def test_each_selection_rule_picks_its_model(selection_table):
    picks = selection.select_models(selection_table).picks
    assert picks["run"].to_dict() == {"region 1": "a", "train acc": "b", "zeta": "d", "oracle": "c"}
    assert picks["test_acc"].tolist() == [70.0, 60.0, 50.0, 75.0]


def test_a_run_at_the_mean_counts_as_low_accuracy_and_high_zeta(tmp_path):
    for name, train_acc, zeta in [("x", 60.0, 1.0), ("y", 50.0, 2.0), ("z", 40.0, 3.0)]:
        two_epoch_run(tmp_path, name, train_acc, zeta, 50.0)
    chosen = selection.select_models(loading.load_runs(tmp_path).table)
    assert chosen.runs["region"].to_dict() == {"x": 1, "y": 4, "z": 4}


def test_a_run_at_a_mean_that_rounding_moved_is_placed_as_the_warning_says(tmp_path):
    """The mean of ζ = 0.1, 0.2, 0.3 computes to 0.20000000000000004, just above y's ζ."""
    for name, train_acc, zeta in [("x", 60.0, 0.1), ("y", 50.0, 0.2), ("z", 40.0, 0.3)]:
        two_epoch_run(tmp_path, name, train_acc, zeta, 50.0)
    chosen = selection.select_models(loading.load_runs(tmp_path).table)
    assert chosen.zeta_mean != 0.2 and chosen.runs.loc["y", "region"] == 4  # high ζ, as at the mean
    assert "exactly on the mean zeta, counted as high: y" in selection.selection_warnings(chosen)


def test_empty_region_1_picks_nothing(tmp_path):
    for name, train_acc, zeta in [("x", 60.0, 3.0), ("y", 40.0, 1.0)]:
        two_epoch_run(tmp_path, name, train_acc, zeta, 50.0)
    chosen = selection.select_models(loading.load_runs(tmp_path).table)
    assert chosen.regions["count"].tolist() == [0, 1, 1, 0]
    assert pd.isna(chosen.picks.loc["region 1", "run"])
    assert figures.plot_regions(chosen, "seed 3").axes[0].get_title().endswith("2 runs of seed 3")


def test_selection_at_an_epoch_without_zeta_raises(selection_table):
    with pytest.raises(ValueError, match="epoch 0"):
        selection.select_models(selection_table, epoch=0)


def test_runs_short_of_the_chosen_epoch_are_left_out(selection_table, tmp_path):
    write_run(tmp_path, "long", [epoch_row(e, 1.0, 50.0, 50.0) for e in range(3)])
    table = loading.load_runs(tmp_path).table
    assert selection.select_models(table, epoch=2).left_out == list("abcdef")
    assert selection.select_models(table).left_out == []


@pytest.mark.e2e
def test_figures_drop_missing_curves_and_save_as_png_and_pdf(tmp_path):
    write_run(tmp_path, "known", [epoch_row(e, 1.0, 50.0, 40.0, 10.0) for e in range(3)])
    write_run(tmp_path, "unknown", [epoch_row(e, 1.0, 50.0, 40.0) for e in range(3)], ground_truth=False)
    table = loading.load_runs(tmp_path).table
    assert len(figures.plot_run(table, "known").axes[0].lines) == 4
    unknown = figures.plot_run(table, "unknown")
    assert len(unknown.axes[0].lines) == 2
    figure_dir = tmp_path / "figures"
    paths = figures.save_formats(unknown, figure_dir / "curves_unknown")
    assert paths == [figure_dir / "curves_unknown.png", figure_dir / "curves_unknown.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert figures.save_formats(unknown, figure_dir / "only.pdf", formats=("pdf",)) == [figure_dir / "only.pdf.pdf"]
    memorization = figures.plot_zeta_vs_memorization(table).axes[0]  # only the run with a noisy subset
    assert memorization.get_title() == "Kendall τ = nan, p = nan (1 runs, the last epoch of each run)"
    drawn = [np.isfinite(np.asarray(points.get_offsets(), dtype=float)).all(axis=1).sum()
             for points in memorization.collections]
    assert drawn == [1]


@pytest.mark.e2e
def test_runs_compared_side_by_side_share_their_axes_and_name_their_shared_data_once(tmp_path):
    write_run(tmp_path, "low", [epoch_row(e, 0.1, 50.0, 40.0, 10.0) for e in range(3)], **data_meta())
    write_run(tmp_path, "high", [epoch_row(e, 2.0, 90.0, 30.0, 80.0) for e in range(3)], **data_meta(),
              args={"model": "resnet", "scale": 0.25, "lr": 0.05, "optimizer": "sgd", "seed": 0})
    table = loading.load_runs(tmp_path).table
    figure = figures.plot_runs(table, ["high", "low"])
    (high_accuracy, low_accuracy), (high_zeta, low_zeta) = figure.axes[:2], figure.axes[2:]
    assert high_accuracy.get_ylim() == low_accuracy.get_ylim() and high_zeta.get_ylim() == low_zeta.get_ylim()
    assert low_zeta.get_ylim()[0] < 0.1 < 2.0 < low_zeta.get_ylim()[1]  # both runs' ζ fit on either
    assert high_accuracy.get_title() == "ResNet-18 ×0.25, SGD lr 0.05"
    assert low_accuracy.get_title() == "5-layer CNN ×1, lr 0.1"
    assert figure.get_suptitle() == "symmetric noise p = 0.5 (45.0 % wrong), 1000 CIFAR-10 training images"
    out = tmp_path / "figures"
    assert cli.main([str(tmp_path), "--figures", str(out), "--formats", "png", "--compare", "lo*", "h*"]) == 0
    assert (out / "compare.png").stat().st_size > 1000


EXPECTED_REPORT = """
data: ?/?/?
6 runs at the last epoch of each run; zeta by the paper convention
boundaries: mean training accuracy 57.50 %, mean zeta 3.5833

       train_acc  zeta                              meaning  count test_acc_mean test_acc_std
region
1           high   low      trainable, resists memorization      2         72.50         3.54
2           high  high                 trainable, memorizes      1         60.00            –
3            low   low  not trainable, resists memorization      1         50.00            –
4            low  high                              neither      2         25.00         7.07

                                          run train_acc   zeta test_acc test_acc_95 train_noisy_acc  region
rule
Region 1, highest training accuracy in it   a     90.00 1.0000    70.00           –               –       1
training accuracy alone, highest            b     95.00 5.0000    60.00           –               –       2
zeta alone, lowest                          d     40.00 0.5000    50.00           –               –       3
oracle, highest test accuracy               c     70.00 2.0000    75.00           –               –       1

    train_acc   zeta test_acc train_noisy_acc  region tau_along_epochs pvalue_along_epochs
run
a       90.00 1.0000    70.00               –       1                –                   –
b       95.00 5.0000    60.00               –       2                –                   –
c       70.00 2.0000    75.00               –       1                –                   –
d       40.00 0.5000    50.00               –       3                –                   –
e       30.00 6.0000    30.00               –       4                –                   –
f       20.00 7.0000    20.00               –       4                –                   –

Kendall tau(zeta, noisy-subset training accuracy) across 0 runs: nan (p = –)
warning: Kendall's tau across runs rests on 0 runs with noisy-subset accuracy; fewer than 5 give no usable rank correlation
"""


def test_p_values_keep_two_significant_digits_however_small():
    assert [reports.p_value_text(p) for p in (2.345e-08, 0.04123, 0.5, float("nan"))] == \
        ["2.3e-08", "0.041", "0.5", "–"]
    table = pd.DataFrame({"tau": [0.76], "pvalue": [3.7e-14]}, index=["all runs"])
    assert reports.format_table(table).split() == ["tau", "pvalue", "all", "runs", "0.760", "3.7e-14"]


def words_by_line(text: str) -> list[list[str]]:
    """The words of each non-blank line, so that a comparison ignores column widths."""
    return [line.split() for line in text.splitlines() if line.strip()]


def test_shell_entry_point_prints_the_table_and_tau(selection_table, tmp_path, capsys):
    assert cli.main([str(tmp_path)]) == 0
    printed = words_by_line(capsys.readouterr().out)
    expected = words_by_line(EXPECTED_REPORT)
    assert printed[:len(expected)] == expected
    rest = {tuple(line[:2]): line for line in printed[len(expected):]}
    assert rest[("Model", "selection")][:4] == ["Model", "selection", "by", "each"]
    assert rest[("train", "acc")][-7:-3] == ["highest", "b", "60.00", "–"]  # the pick, its test accuracy, no test size
    assert rest[("Early", "stopping")] and rest[("last", "epoch")][2:4] == ["6", "50.83"]


def test_shell_entry_point_fails_in_one_line(tmp_path, capsys):
    assert cli.main([str(tmp_path / "absent")]) == 2
    assert cli.main([str(tmp_path)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"analysis: error: no such folder: {tmp_path / 'absent'}",
                      f"analysis: error: no run records in {tmp_path}"]


@pytest.mark.e2e
def test_shell_entry_point_writes_the_figures_when_asked(selection_table, tmp_path, capsys):
    out = tmp_path / "figures_here"
    assert cli.main([str(tmp_path), "--figures", str(out), "--formats", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["regions.png", "signals.png", "zeta_vs_memorization.png"]
    assert cli.main([str(tmp_path), "--figures", str(out), "--curves", "a", "[ef]"]) == 0
    stems = ["curves_a", "curves_e", "curves_f", "regions", "signals", "zeta_vs_memorization"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{stem}.{extension}" for stem in stems for extension in ("png", "pdf"))
    assert all((out / name).stat().st_size > 1000 for name in names)
    assert f"wrote 12 figure files to {out}" in capsys.readouterr().out
    assert cli.main([str(tmp_path), "--figures", str(out), "--curves", "zz*"]) == 2
    assert capsys.readouterr().err.startswith("analysis: error: no run matches ['zz*']")


def signal_run(folder, name: str, test_accs: list[float], changes: list[float], holdout: list[float],
               drops: list[float], train_acc: float = 50.0, neg_margin: float = 10.0) -> None:
    """A run whose every epoch has the given test accuracy, prediction changes, hold-out accuracy
    and probe drop (so ζ is their running mean from epoch 1)."""
    rows = []
    for epoch, (test_acc, change, held, drop) in enumerate(zip(test_accs, changes, holdout, drops)):
        row = epoch_row(epoch, drop, train_acc, test_acc)
        row.update(pred_changes=change, noisy_holdout_acc=held, neg_margin=neg_margin)
        rows.append(row)
    write_run(folder, name, rows)


def test_compare_signals_picks_each_signals_best_run_and_ranks_signals_by_kendall_tau(tmp_path):
    # Last-epoch values (train acc, zeta, hold-out acc, prediction changes, negative margins, test acc):
    # a: 90, 1, 40, 5, 30, 70   b: 60, 3, 30, 9, 20, 50   c: 30, 2, 20, 2, 10, 30
    for name, train, drop, held, change, margin, test in [("a", 90, 1.0, 40, 5, 30, 70),
                                                          ("b", 60, 3.0, 30, 9, 20, 50),
                                                          ("c", 30, 2.0, 20, 2, 10, 30)]:
        signal_run(tmp_path, name, [10, test], [math.nan, change], [5, held], [9.0, drop], train, margin)
    table = signal_rules.compare_signals(loading.load_runs(tmp_path).table)
    assert table.loc["train acc", "run"] == "a" and table.loc["zeta", "run"] == "a"
    assert table.loc["noisy hold-out", "run"] == "a" and table.loc["prediction changes", "run"] == "c"
    assert table.loc["negative margins", "run"] == "c" and table.loc["oracle", "run"] == "a"
    assert table.loc["negative margins", "test_acc"] == 30
    # Means: train 60, zeta 2: a is in Region 1 (90 > 60, 1 < 2), b in 2, c in 3.
    assert table.loc["region 1", "run"] == "a" and table.loc["region 1", "test_acc"] == 70
    assert table.loc["noisy hold-out", "tau_test_acc"] == pytest.approx(1.0)
    assert table.loc["negative margins", "tau_test_acc"] == pytest.approx(1.0)
    assert table.loc["prediction changes", "tau_test_acc"] == pytest.approx(1 / 3)
    assert table.loc["zeta", "tau_test_acc"] == pytest.approx(-1 / 3) and table.loc["zeta", "runs"] == 3


def test_label_wave_stops_at_the_first_local_minimum_of_the_moving_average():
    epochs = pd.Series(range(10))
    # Moving averages over 2 epochs from epoch 2: 9, 7, 5, 6, 7, 8, 3, 2: the first minimum (5, epoch
    # 4) is confirmed by 2 epochs without a lower value; with patience 4 the later dip wins.
    changes = pd.Series([math.nan, 10, 8, 6, 4, 8, 6, 10, -4, 8])
    assert signal_rules.label_wave_epoch(epochs, changes, window=2, patience=2) == 4
    assert signal_rules.label_wave_epoch(epochs, changes, window=2, patience=4) == 9
    assert math.isnan(signal_rules.label_wave_epoch(epochs, pd.Series([math.nan] * 10), window=2, patience=2))


def test_compare_stopping_reports_each_rules_epoch_and_its_shortfall(tmp_path):
    # Test accuracy peaks at epoch 3 (60); hold-out accuracy at epoch 2; zeta (running mean of the
    # drops 4, 2, 1, 3, 3 from epoch 1 on: 4, 3, 2.33, 2.5, 2.6) is lowest at epoch 3.
    signal_run(tmp_path, "r", test_accs=[10, 30, 50, 60, 40, 35],
               changes=[math.nan, 50, 30, 20, 25, 30, ], holdout=[5, 20, 45, 40, 30, 20],
               drops=[9.0, 4.0, 2.0, 1.0, 3.0, 3.0])
    per_run, summary = signal_rules.compare_stopping(loading.load_runs(tmp_path).table, window=1, patience=2)
    stops = per_run.set_index("rule")
    assert stops.loc["label wave", "epoch"] == 3 and stops.loc["label wave", "shortfall"] == 0
    assert stops.loc["noisy hold-out", "epoch"] == 2 and stops.loc["noisy hold-out", "test_acc"] == 50
    assert stops.loc["zeta", "epoch"] == 3
    assert stops.loc["last epoch", "epoch"] == 5 and stops.loc["last epoch", "shortfall"] == 25
    assert stops.loc["oracle", "test_acc"] == 60
    assert summary.loc["noisy hold-out", "shortfall_mean"] == 10 and summary.loc["oracle", "runs"] == 1


def test_runs_without_the_opt_in_signals_still_get_the_others(tmp_path):
    for name, (train_acc, zeta, test_acc) in SELECTION_RUNS.items():
        two_epoch_run(tmp_path, name, train_acc, zeta, test_acc)
    table = loading.load_runs(tmp_path).table
    compared = signal_rules.compare_signals(table)
    assert compared.loc["noisy hold-out", "runs"] == 0 and pd.isna(compared.loc["noisy hold-out", "run"])
    assert compared.loc["train acc", "run"] == "b" and compared.loc["region 1", "run"] == "a"
    _, summary = signal_rules.compare_stopping(table)
    assert summary.loc["label wave", "runs"] == 0 and summary.loc["last epoch", "runs"] == 6


def data_meta(dataset: str = "cifar10", noise_type: str = "symmetric", rate: float | None = 0.5,
              size: int = 1000) -> dict:
    """The record header sections that say what data a run was trained on."""
    return {"data": {"dataset": dataset, "train_size": size, "num_classes": 10},
            "noise": {"ground_truth": True, "type": noise_type, "corrupt_prob": rate, "fraction_wrong": 0.45}}


def run_on(folder, name: str, train_acc: float, zeta: float, test_acc: float, **data) -> None:
    write_run(folder, name, [epoch_row(0, 3.0, 10.0, 10.0, 5.0), epoch_row(1, zeta, train_acc, test_acc, 20.0, zeta)],
              **data_meta(**data))


def test_runs_are_grouped_by_dataset_noise_type_rate_and_training_set_size(tmp_path):
    run_on(tmp_path, "a", 90, 1, 70)
    run_on(tmp_path, "b", 80, 2, 60)
    run_on(tmp_path, "c", 80, 2, 60, rate=0.8)
    run_on(tmp_path, "d", 80, 2, 60, size=2000)
    run_on(tmp_path, "e", 80, 2, 60, noise_type="cifar10n-worst", rate=None)
    run_on(tmp_path, "f", 80, 2, 60, dataset="cifar100")
    labels = loading.populations(loading.load_runs(tmp_path).table)
    assert labels.to_dict() == {"a": "cifar10/symmetric-0.5/n1000", "b": "cifar10/symmetric-0.5/n1000",
                                "c": "cifar10/symmetric-0.8/n1000", "d": "cifar10/symmetric-0.5/n2000",
                                "e": "cifar10/cifar10n-worst/n1000", "f": "cifar100/symmetric-0.5/n1000"}


def test_records_in_folders_below_are_named_not_silently_ignored(tmp_path, capsys):
    for name in "abcde":
        run_on(tmp_path / "smoke", name, 90 - 10 * ord(name), 1 + ord(name), 50)
    assert cli.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"analysis: not read: the folders below hold .csv files of their own: {tmp_path / 'smoke'} (5); "
        f"analyse one folder at a time",
        f"analysis: error: no run records in {tmp_path}"]
    assert cli.main([str(tmp_path / "smoke")]) == 0
    assert "not read" not in capsys.readouterr().err


def test_mixed_populations_are_refused_in_one_line_naming_the_groups_and_the_option(tmp_path, capsys):
    for name, rate in [("a", 0.5), ("b", 0.5), ("c", 0.8)]:
        run_on(tmp_path, name, 90 - 10 * ord(name), 1 + ord(name), 50, rate=rate)
    figure_dir = tmp_path / "figures_here"
    assert cli.main([str(tmp_path), "--figures", str(figure_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not figure_dir.exists()
    assert captured.err == ("analysis: error: the runs were trained on 2 different data "
                            "(cifar10/symmetric-0.5/n1000 (2 runs), cifar10/symmetric-0.8/n1000 (1 run)), "
                            "and zeta compares only models trained on the same data; pick one with "
                            "--data cifar10/symmetric-0.5/n1000\n")
    table = loading.load_runs(tmp_path).table
    with pytest.raises(loading.MixedPopulations, match='pick one with DATA = "cifar10/symmetric-0.5/n1000"'):
        loading.select_population(table, selector='DATA = "{}"')

    assert cli.main([str(tmp_path), "--data", "cifar10/symmetric-0.8/n1000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data: cifar10/symmetric-0.8/n1000\n1 runs at")
    assert cli.main([str(tmp_path), "--data", "cifar10/symmetric-0.2/n1000"]) == 2
    assert capsys.readouterr().err == ("analysis: error: no run was trained on cifar10/symmetric-0.2/n1000; "
                                       "the runs' data: cifar10/symmetric-0.5/n1000, cifar10/symmetric-0.8/n1000\n")


def test_too_few_runs_and_runs_on_a_boundary_are_warned_about(tmp_path):
    # Training accuracy 40, 50, 60 (mean 50) and zeta 1, 2, 3 (mean 2): run b sits on both boundaries.
    for name, train_acc, zeta in [("a", 40, 1.0), ("b", 50, 2.0), ("c", 60, 3.0)]:
        run_on(tmp_path, name, train_acc, zeta, 50)
    chosen = selection.select_models(loading.load_runs(tmp_path).table)
    assert selection.selection_warnings(chosen) == [
        "only 3 runs to split into regions; with fewer than 5 the means and the regions say little",
        "exactly on the mean training accuracy, counted as low: b",
        "exactly on the mean zeta, counted as high: b"]


def test_enough_runs_off_the_boundaries_give_no_region_warning(selection_table):
    assert selection.selection_warnings(selection.select_models(selection_table)) == []


def test_correlations_on_too_few_runs_or_epochs_are_warned_about(tmp_path):
    for name, epochs in [("short", 3), ("long", 6)]:
        write_run(tmp_path, name, [epoch_row(e, 1.0 + e, 10.0 * e, 5.0 * e, 2.0 * e) for e in range(epochs)])
    table = loading.load_runs(tmp_path).table
    along = selection.tau_along_epochs(table)
    assert along["n"].to_dict() == {"long": 5, "short": 2}
    assert selection.correlation_warnings(selection.tau_across_runs(table), along) == [
        "Kendall's tau across runs rests on 2 runs with noisy-subset accuracy; fewer than 5 give no "
        "usable rank correlation",
        "tau along epochs rests on fewer than 5 epochs with zeta in 1 run: short"]
    enough = selection.Correlation(0.5, 0.1, 5)
    assert selection.correlation_warnings(enough, along[along.index == "long"]) == []


def test_every_number_column_of_the_report_has_the_same_decimals_in_every_row(tmp_path, capsys):
    for name, train_acc, zeta, test_acc in [("a", 90, 1.0, 70), ("b", 95.5, 0.123456, 60.25),
                                            ("c", 7, 12.5, 100), ("d", 40.125, 0.5, 50), ("e", 33, 2, 3)]:
        run_on(tmp_path, name, train_acc, zeta, test_acc)
    assert cli.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["train_acc", "zeta", "test_acc"])
    rows = [line.split() for line in lines[header + 2:header + 7]]
    columns = lines[header].split()
    for position, column in enumerate(columns[:4], start=1):
        decimals = {len(row[position].partition(".")[2]) for row in rows}
        assert decimals == {4 if column == "zeta" else 2}, (column, rows)


def seeded_run(folder, name: str, seed: int, train_acc: float, zeta: float, test_acc: float,
               noisy_acc: float) -> None:
    """A two-epoch run of `seed` whose last epoch has these values."""
    rows = [epoch_row(0, 3.0, 10.0, 10.0, noisy_acc / 2), epoch_row(1, zeta, train_acc, test_acc, noisy_acc)]
    write_run(folder, name, rows, args={"model": "cnn", "scale": 1.0, "lr": 0.1, "seed": seed})


def test_seed_populations_compare_the_rules_within_each_seed_and_summarize_over_seeds(tmp_path):
    # Seed 0: means train 60, zeta 2 -> a0 region 1 (test 70); b0 and c0 (at the means) region 4.
    # Seed 1: means train 50, zeta 3 -> b1 region 1 (test 40), a1 region 2 (picked by train acc),
    # c1 region 4.
    for name, seed, train, zeta, test, noisy in [("a0", 0, 90, 1.0, 70, 10), ("b0", 0, 60, 3.0, 50, 30),
                                                 ("c0", 0, 30, 2.0, 30, 20), ("a1", 1, 80, 5.0, 20, 60),
                                                 ("b1", 1, 60, 1.0, 40, 10), ("c1", 1, 10, 3.0, 60, 40)]:
        seeded_run(tmp_path, name, seed, train, zeta, test, noisy)
    table = loading.load_runs(tmp_path).table
    result = seeds.seed_populations(table)
    assert result.picks.loc["region 1"].tolist() == [70, 40]
    assert result.picks.loc["train acc"].tolist() == [70, 20]
    assert result.picks.loc["oracle"].tolist() == [70, 60]
    assert result.summary.loc["train acc", "test_acc_mean"] == 45
    assert result.summary.loc["region 1", "test_acc_std"] == pytest.approx(np.std([70, 40], ddof=1))
    assert result.summary.loc["zeta", "populations"] == 2
    # tau(zeta, noisy): seed 0 ranks (1, 3, 2) against (10, 30, 20): 1; seed 1 (5, 1, 3) against (60, 10, 40): 1
    assert result.taus["tau"].tolist() == pytest.approx([1.0, 1.0])
    assert result.regions["count"].tolist() == [2, 1, 0, 3]  # a0, b1 | a1 | – | b0, c0, c1
    assert result.regions.loc[1, "test_acc_mean"] == 55


@pytest.mark.e2e
def test_per_seed_option_prints_the_summary_and_writes_a_region_plot_per_seed(tmp_path, capsys):
    for name, seed, train, zeta, test, noisy in [("a0", 0, 90, 1.0, 70, 10), ("b0", 0, 60, 3.0, 50, 30),
                                                 ("a1", 1, 80, 5.0, 20, 60), ("b1", 1, 60, 1.0, 40, 10)]:
        seeded_run(tmp_path, name, seed, train, zeta, test, noisy)
    out = tmp_path / "figures"
    assert cli.main([str(tmp_path), "--per-seed", "--figures", str(out), "--formats", "png"]) == 0
    printed = capsys.readouterr().out
    assert "2 seed populations" in printed and "mean over populations 1.000 ± 0.000" in printed
    assert {"regions_seed0.png", "regions_seed1.png"} <= {p.name for p in out.iterdir()}
