"""The analysis of what a run's probes and per-sample scores record: ζ from any subset of a probe's
batches with its standard error, runs whose region is open, the detectors' table, and the
uncertainty of test accuracies (binomial interval, paired test), on constructed records whose
answers are worked out by hand."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from runner import records
from analysis import cli, detectors, loading, probes, selection, uncertainty

EPOCHS = 3


def batch_rows(drops_by_epoch: list[list[float]], train_acc: float, test_acc: float, noisy: float = 40.0,
               detector: float = 0.5) -> list[dict]:
    """Rows whose main probe has one batch per epoch, the first of `drops`, and whose extra training
    probe has all of them as its batches; every detector column at `detector` (and the test
    accuracy `test_acc` in the last epoch, 10 points less before)."""
    rows = []
    for epoch, drops in enumerate(drops_by_epoch):
        row = {"epoch": epoch, "lr": 0.1, "phi_before": 10.0, "phi_after": 10.0 - drops[0], "train_loss": 1.0,
               "train_acc": train_acc, "train_clean_acc": 50.0, "train_noisy_acc": noisy, "test_loss": 1.0,
               "test_acc": test_acc - 10 * (epoch < EPOCHS - 1), "seconds": 1.0}
        row |= {column: detector + 0.1 * epoch for column in records.DETECTOR_COLUMNS}
        row |= {records.batch_column("train_probe", j): drop for j, drop in enumerate(drops)}
        rows.append(row)
    return rows


def write(folder, name: str, rows: list[dict], seed: int = 0, probe_source: str | None = None) -> None:
    meta = {"args": {"model": "cnn", "scale": 1.0, "lr": 0.1, "seed": seed, "probe_source": probe_source},
            "noise": {"ground_truth": True, "fraction_wrong": 0.45}, "data": {"test_size": 1000}}
    records.write_record(folder / f"{name}.csv", records.RunRecord(meta, rows))


def test_zeta_from_a_subset_of_the_batches_and_its_standard_error(tmp_path):
    write(tmp_path, "a", batch_rows([[9.0, 9.0], [1.0, 3.0], [2.0, 6.0]], 80.0, 40.0))
    table = loading.load_runs(tmp_path).table
    columns = probes.batch_columns(table, "train_probe")
    assert columns == ["train_probe_r0", "train_probe_r1"] and probes.probes_with_batches(table) == ["train_probe"]
    first = probes.zeta_of_batches(table, columns[:1])
    both = probes.zeta_of_batches(table, columns)
    assert math.isnan(first[0]) and first[1:].tolist() == [1.0, 1.5]  # (1 + 2) / 2
    assert both[1:].tolist() == [2.0, 3.0]  # r = 2, then 4: (2 + 4) / 2
    # SE of each epoch's r: |a - b| / 2 for two batches: 1 and 2; SE(zeta(2)) = sqrt(1 + 4) / 2.
    errors = probes.zeta_errors_of_batches(table, columns)
    assert errors[1:].tolist() == pytest.approx([1.0, math.sqrt(5) / 2])
    assert probes.zeta_with_errors(table, "train_probe").loc["a"].tolist() == pytest.approx([3.0, math.sqrt(5) / 2])


def test_runs_within_two_standard_errors_of_the_split_are_named(tmp_path):
    # zeta (paper, epoch 2) of the main probe: 0.5, 1.0 and 3.0, so the split lies at 1.5; the batches
    # of the extra probe give standard errors of 0.25, 0.5 and 0.
    write(tmp_path, "low", batch_rows([[0, 0], [0.0, 1.0], [1.0, 1.0]], 90.0, 60.0))
    write(tmp_path, "middle", batch_rows([[0, 0], [1.0, 2.0], [1.0, 2.0]], 80.0, 50.0))
    write(tmp_path, "high", batch_rows([[0, 0], [3.0, 3.0], [3.0, 3.0]], 70.0, 40.0))
    table = loading.load_runs(tmp_path).table
    chosen = selection.select_models(table)
    assert chosen.zeta_mean == pytest.approx(1.5)
    errors = probes.zeta_with_errors(table, "train_probe")["zeta_se"]
    open_runs = probes.uncertain_regions(chosen, errors)
    assert list(open_runs.index) == ["middle"]  # |1.0 - 1.5| = 0.5 < 2 x 0.354; "low" is 4 SE away
    assert open_runs.loc["middle", "distance_in_se"] == pytest.approx(0.5 / (math.sqrt(0.25 + 0.25) / 2))


def test_the_uncertainty_components_worked_out_by_hand():
    components = pd.DataFrame({"se_main": [1.0, 1.0], "main_batches": 1, "se_train": [0.5, 0.5],
                               "se_heldout": [0.5, 0.5], "label_difference": [2.0, -2.0],
                               "pool_difference": [3.0, -3.0]})
    summary = probes.component_summary(components)
    # 4 = 1 + 0.25 + 2 label; 9 = 0.25 + 0.25 + 2 label + pool.
    assert summary["batch"] == 1.0 and summary["label"] == pytest.approx(math.sqrt(1.375))
    assert summary["ratio"] == pytest.approx(1.375) and summary["pool"] == pytest.approx(math.sqrt(5.75))
    assert (summary["label_offset"], summary["pool_offset"], summary["runs"]) == (0.0, 0.0, 2)
    smaller = probes.component_summary(components.assign(label_difference=[1.0, -1.0]))
    assert (smaller["label"], smaller["ratio"]) == (0.0, 0.0)  # a negative variance estimate counts as none
    # A main probe of 4 batches: the same SE is half one batch's, so the ratio is to 4 times its variance.
    four = probes.component_summary(components.assign(main_batches=4))
    assert (four["batch"], four["label"], four["ratio"]) == (2.0, pytest.approx(math.sqrt(1.375)), pytest.approx(1.375 / 4))


def test_the_standard_error_of_zeta_counts_the_label_draw_beside_the_batches(tmp_path):
    # The main probe (one batch per epoch, the first of each list) and an extra probe on the same
    # training images with labels of its own (both batches).
    write(tmp_path, "a", batch_rows([[0, 0], [1.0, 3.0], [2.0, 6.0]], 80.0, 40.0), probe_source="train")
    write(tmp_path, "b", batch_rows([[0, 0], [2.0, 2.0], [4.0, 2.0]], 70.0, 40.0), probe_source="train")
    table = loading.load_runs(tmp_path).table
    assert probes.label_draw_comparable(table)
    one_batch = probes.main_batch_errors(table)  # sqrt(2) x the SE of two batches: sqrt(5) / 2 and 1 / 2
    assert one_batch.tolist() == pytest.approx([math.sqrt(10) / 2, math.sqrt(2) / 2])
    assert probes.total_zeta_errors(table, ratio=0.5).tolist() == pytest.approx((one_batch * math.sqrt(1.5)).tolist())
    components = probes.uncertainty_components(table)
    assert components["label_difference"].tolist() == pytest.approx([1.5 - 3.0, 3.0 - 2.5])
    assert components["pool_difference"].isna().all()  # no held-out probe
    # (2.25 + 0.25) / 2 - (2.5 + 0.5) / 2 - (1.25 + 0.25) / 2 < 0: no label-draw part measurable here.
    assert probes.label_draw_ratio(table) == (0.0, "measured on these 2 runs' extra probe on the training images")
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    write(heldout, "a", batch_rows([[0, 0], [1.0, 3.0], [2.0, 6.0]], 80.0, 40.0), probe_source="heldout")
    other = loading.load_runs(heldout).table
    assert probes.label_draw_ratio(other)[0] == probes.LABEL_DRAW_RATIO
    assert probes.total_zeta_errors(other).isna().all()  # the main probe's batches: not measured
    with pytest.raises(ValueError, match="no extra probe"):
        probes.uncertainty_components(other)


def test_the_detector_table_summarizes_the_last_and_the_best_test_epoch_over_runs_and_seeds(tmp_path):
    write(tmp_path, "a", batch_rows([[1.0], [1.0], [1.0]], 80.0, 40.0, detector=0.5), seed=0)
    write(tmp_path, "b", batch_rows([[1.0], [1.0], [1.0]], 80.0, 40.0, detector=0.7), seed=1)
    table = loading.load_runs(tmp_path).table
    assert detectors.has_detectors(table)
    summary = detectors.detector_table(table)
    last = summary.loc[("last epoch", "csl", "auroc")]
    assert (last["runs"], last["mean"], last["std"]) == (2, pytest.approx(0.8), pytest.approx(math.sqrt(0.02)))
    assert summary.loc[("best test epoch", "aum", "ap"), "mean"] == pytest.approx(0.8)  # best test at the last epoch
    assert list(summary.index.get_level_values("score").unique()) == list(records.SAMPLE_SCORES)
    per_seed = detectors.detector_table(table, by_seed=True)
    assert per_seed.loc[("last epoch", "aum", "auroc", 1), "mean"] == pytest.approx(0.9)
    curves = detectors.detector_curves(table)
    assert curves["aum"].tolist() == pytest.approx([0.6, 0.7, 0.8])


def write_samples(folder, run: str, forgetting: list[int], learned_at: list[float], wrong: list[bool]) -> None:
    """A per-sample file whose AUM, loss and changes are uninformative (all equal)."""
    size = len(wrong)
    pd.DataFrame({"index": range(size), "assigned": [1] * size, "true": [0 if w else 1 for w in wrong],
                  "aum": [0.5] * size, "csl": [1.0] * size, "forgetting": forgetting, "learned_at": learned_at,
                  "changes": [2] * size}).to_csv(detectors.samples_path(folder, run), index=False)


def test_the_last_epoch_detectors_are_recomputed_from_the_per_sample_files_with_never_learned_most_suspicious(tmp_path):
    write(tmp_path, "a", batch_rows([[1.0], [1.0], [1.0]], 80.0, 40.0, detector=0.5), seed=0)
    # The two wrong labels: one never learned (infinitely many forgetting events), one forgotten 3 times.
    write_samples(tmp_path, "a", [0, 3, 1, 0], [math.nan, math.nan, 2, 1], [True, True, False, False])
    table = loading.load_runs(tmp_path).table
    suspicion = detectors.sample_suspicion(pd.read_csv(detectors.samples_path(tmp_path, "a")))
    assert suspicion["forgetting"].tolist() == [math.inf, 3, 1, 0]
    summary = detectors.detector_table(table, folder=tmp_path)
    assert summary.loc[("last epoch", "forgetting", "auroc"), "mean"] == 1.0
    assert summary.loc[("last epoch", "csl", "auroc"), "mean"] == 0.5  # all tied
    assert summary.loc[("best test epoch", "forgetting", "auroc"), "mean"] == pytest.approx(0.7)  # the record's
    detectors.samples_path(tmp_path, "a").unlink()  # without the file: the record's own values
    assert detectors.detector_table(table, folder=tmp_path).loc[("last epoch", "forgetting", "auroc"), "mean"] == \
        pytest.approx(0.7)


def test_the_command_line_reports_the_probes_and_the_detectors_when_the_records_have_them(tmp_path, capsys):
    for name, drops, train_acc in (("a", 1.0, 90), ("b", 2.0, 80), ("c", 3.0, 70)):
        write(tmp_path, name, batch_rows([[drops, drops + 1]] * EPOCHS, train_acc, 50.0))
    assert cli.main([str(tmp_path), "--figures", str(tmp_path / "figures"), "--formats", "png"]) == 0
    out = capsys.readouterr().out
    assert "train_probe (2 batches)" in out and "1.5000 ± 0.3536" in out
    assert "Per-sample scores as detectors of the wrong labels" in out
    assert (tmp_path / "figures" / "detectors.png").stat().st_size > 10_000


def test_wilson_intervals_worked_out_by_hand():
    low, high = uncertainty.accuracy_interval(50.0, 100)
    assert (low, high) == pytest.approx((40.383, 59.617), abs=1e-3)
    low, high = uncertainty.accuracy_interval(0.0, 20)  # never below 0, unlike the normal approximation
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(16.11, abs=1e-2)
    assert uncertainty.interval_text(42.58, 1017) == "42.6 [39.6, 45.6]"
    assert uncertainty.bounds_text(float("nan"), 1017) == "–" and uncertainty.interval_text(42.5, None) == "42.5"


def test_a_paired_comparison_counts_the_images_only_one_model_gets_right():
    labels = np.arange(20) % 10
    a = pd.DataFrame({"index": range(20), "label": labels, "predicted": labels})  # all right
    wrong = labels.copy()
    wrong[:6] = (wrong[:6] + 1) % 10  # six wrong
    b = pd.DataFrame({"index": range(20), "label": labels, "predicted": wrong})
    compared = uncertainty.paired_comparison(a, b)
    assert (compared.accuracy_a, compared.accuracy_b, compared.only_a, compared.only_b) == (100.0, 70.0, 6, 0)
    assert compared.pvalue == pytest.approx(binomtest(6, 6, 0.5).pvalue) == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="not for the same test images"):
        uncertainty.paired_comparison(a, b.assign(label=np.roll(labels, 1)))
