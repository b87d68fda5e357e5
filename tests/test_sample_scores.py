"""Per-sample scores of the training samples (AUM, cumulative loss, forgetting events, learned-at,
prediction changes), their accuracy as detectors of wrong labels, and the files a run writes
beside its record."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import mannwhitneyu

from runner import errors
from runner import checkpoints
import experiments
from runner import records
from analysis import detectors
from conftest import checkpoint_path, interrupt_at_epoch, record_path, run_args
from runner.sample_scores import TrainingSignals, auroc, average_precision

from tools import benchmark


def observe(signals: TrainingSignals, epoch: int, predicted: list[int], assigned: list[int],
            losses: list[float]) -> None:
    """One epoch in which each sample is seen once and predicted as given (logit 1 for that class)."""
    signals.start_epoch(epoch)
    logits = torch.nn.functional.one_hot(torch.tensor(predicted), 3).float()
    signals.observe(torch.arange(len(predicted)), logits, torch.tensor(assigned), torch.tensor(losses))


def test_each_score_follows_its_definition_on_a_worked_example():
    # Sample 0: right, right, right.  Sample 1: right, wrong, right (one forgetting event).
    # Sample 2: wrong, right, right (learned at epoch 1).  Sample 3: right, right, wrong (not learned).
    signals = TrainingSignals(4, torch.device("cpu"))
    assigned = [0, 1, 2, 0]
    observe(signals, 0, [0, 1, 0, 0], assigned, [0.5, 1.0, 2.0, 0.25])
    observe(signals, 1, [0, 0, 2, 0], assigned, [0.5, 3.0, 1.0, 0.25])
    observe(signals, 2, [0, 1, 2, 1], assigned, [0.5, 1.0, 0.5, 4.0])
    scores = {name: values.tolist() for name, values in signals.scores().items()}
    assert scores["forgetting"] == [0, 1, 0, 1]
    assert scores["csl"] == [1.5, 5.0, 3.5, 4.5]
    assert scores["learned_at"][:3] == [0, 2, 1] and math.isnan(scores["learned_at"][3])
    assert scores["changes"] == [0, 2, 1, 1]
    # Margins: +1 where the sample is predicted as its label, -1 otherwise; their mean over epochs.
    assert scores["aum"] == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3])


def test_a_sample_never_predicted_as_its_label_is_the_most_suspicious_by_forgetting():
    # Sample 0: wrong, wrong (never learned).  Sample 1: right, wrong (forgotten once, not learned now).
    # Sample 2: right, right.  Sample 3: never seen.
    signals = TrainingSignals(4, torch.device("cpu"))
    for epoch, predicted in enumerate(([1, 1, 2], [1, 0, 2])):
        signals.start_epoch(epoch)
        logits = torch.nn.functional.one_hot(torch.tensor(predicted), 3).float()
        signals.observe(torch.arange(3), logits, torch.tensor([0, 1, 2]), torch.ones(3))
    assert signals.never_learned().tolist() == [True, False, False, False]
    assert signals.scores()["forgetting"].tolist() == [0, 1, 0, 0]
    assert signals.suspicion()["forgetting"].tolist() == [math.inf, 1, 0, 0]


def test_auroc_is_the_mann_whitney_statistic_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    positive = rng.random(300) < 0.3
    expected = mannwhitneyu(scores[positive], scores[~positive]).statistic / (positive.sum() * (~positive).sum())
    assert auroc(torch.tensor(scores), torch.tensor(positive)).item() == pytest.approx(expected, rel=1e-12)
    perfect = auroc(torch.tensor([0.1, 0.2, 0.9, 0.8]), torch.tensor([False, False, True, True]))
    assert perfect.item() == 1.0
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([True, True])).item())


def test_the_analysis_computes_auroc_and_average_precision_as_the_run_does():
    rng = np.random.default_rng(2)
    scores = np.append(rng.integers(0, 6, 300).astype(float), [np.inf] * 20)  # ties, and never-learned samples
    positive = rng.random(320) < 0.4
    assert detectors.auroc(scores, positive) == pytest.approx(
        auroc(torch.tensor(scores), torch.tensor(positive)).item(), rel=1e-12)
    assert detectors.average_precision(scores, positive) == pytest.approx(
        average_precision(torch.tensor(scores), torch.tensor(positive)).item(), rel=1e-12)


def average_precision_by_definition(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP = Σ over the distinct thresholds, highest first, of (recall gained) × precision there."""
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = scores >= threshold
        recall = (chosen & positive).sum() / positive.sum()
        total += (recall - previous_recall) * (chosen & positive).sum() / chosen.sum()
        previous_recall = recall
    return total


def test_average_precision_follows_its_definition_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 8, 200).astype(float)
    positive = rng.random(200) < 0.4
    value = average_precision(torch.tensor(scores), torch.tensor(positive)).item()
    assert value == pytest.approx(average_precision_by_definition(scores, positive), rel=1e-12)
    # Worked by hand: ranking 1 (positive), 2 (negative), 3 (positive): (1/2)(1/1) + (1/2)(2/3).
    hand = average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True]))
    assert hand.item() == pytest.approx(0.5 + 1 / 3)


def test_the_summary_scores_each_detector_of_the_wrong_labels():
    noisy = torch.tensor([False, True, True, False])
    signals = TrainingSignals(4, torch.device("cpu"), noisy)
    observe(signals, 0, [0, 0, 0, 0], [0, 1, 2, 0], [0.1, 2.0, 3.0, 0.2])
    row = signals.summary()
    # The wrong labels (samples 1, 2) have the lower margins and the higher losses: perfect detectors.
    assert (row["aum_auroc"], row["csl_auroc"], row["aum_ap"], row["csl_ap"]) == (1.0, 1.0, 1.0, 1.0)
    assert row["learned_at_auroc"] == 1.0  # learned at epoch 0 against never learned
    assert row["changes_auroc"] == 0.5  # no change yet: all tied
    # The wrong labels were never predicted: forgotten infinitely often, as Toneva et al. count them.
    assert row["forgetting_auroc"] == 1.0 and row["forgetting_ap"] == 1.0
    assert set(records.DETECTOR_COLUMNS) <= set(row)
    assert all(math.isnan(TrainingSignals(4, torch.device("cpu")).summary()[c]) for c in records.DETECTOR_COLUMNS)


def read_samples(out) -> pd.DataFrame:
    return pd.read_csv(record_path(out, epochs=3).with_name("t_cnn_3_0.05.samples.csv.gz"))


@pytest.mark.e2e
def test_a_run_writes_its_per_sample_scores_and_test_predictions_beside_its_record(synthetic_cifar10, tmp_path):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--numsamples", "200", epochs=3)) == 0
    samples = read_samples(tmp_path)
    assert list(samples.columns) == ["index", "assigned", "true", *records.SAMPLE_SCORES]
    state = checkpoints.load_checkpoint(checkpoint_path(tmp_path, epochs=3))
    assert samples["index"].tolist() == state["labels"]["train_index"].tolist()
    assert samples["assigned"].tolist() == state["labels"]["assigned"].tolist()
    assert samples["true"].tolist() == state["labels"]["true"].tolist()
    assert samples["csl"].to_numpy() == pytest.approx(state["signals"]["loss_sum"].numpy())
    record = records.read_record(record_path(tmp_path, epochs=3))
    wrong = samples["assigned"] != samples["true"]
    last = record.rows[-1]
    expected_auroc = mannwhitneyu(samples["csl"][wrong], samples["csl"][~wrong]).statistic / (wrong.sum() * (~wrong).sum())
    assert last["csl_auroc"] == pytest.approx(expected_auroc, rel=1e-9)
    predictions = pd.read_csv(record_path(tmp_path, epochs=3).with_name("t_cnn_3_0.05.test.csv.gz"))
    assert list(predictions.columns) == ["index", "label", "predicted"] and len(predictions) == 100
    assert 100 * (predictions["label"] == predictions["predicted"]).mean() == pytest.approx(last["test_acc"])


@pytest.mark.e2e
def test_per_sample_scores_are_the_same_after_an_interrupt_and_a_resume(synthetic_cifar10, tmp_path, monkeypatch):
    whole = run_args(synthetic_cifar10, tmp_path / "whole", "--numsamples", "200", epochs=3)
    assert experiments.main(whole) == 0
    cut = run_args(synthetic_cifar10, tmp_path / "cut", "--numsamples", "200", epochs=3)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main(cut) == errors.INTERRUPTED
    monkeypatch.undo()
    assert read_samples(tmp_path / "cut")["learned_at"].notna().any()  # the saved epochs' scores are there
    assert experiments.main([*cut, "--resume"]) == 0
    pd.testing.assert_frame_equal(read_samples(tmp_path / "cut"), read_samples(tmp_path / "whole"))


@pytest.mark.e2e
def test_a_checkpoint_without_the_newer_histories_resumes_and_names_them(synthetic_cifar10, tmp_path, capsys):
    argv = run_args(synthetic_cifar10, tmp_path, "--numsamples", "200", epochs=3)
    assert experiments.main(argv) == 0
    path = checkpoint_path(tmp_path, epochs=3)
    state = checkpoints.load_checkpoint(path)
    state["rows"], state["epochs_completed"], state["finished"] = state["rows"][:2], 2, False
    kept = ("last_prediction", "margin_sum", "epochs_seen")  # what checkpoints of format 2 held
    state["signals"] = {name: state["signals"][name] for name in kept}
    old = {**state, "format": 2}
    del old["extra_probes"]
    checkpoints.save_checkpoint(path, old)
    capsys.readouterr()
    assert experiments.main([*argv, "--resume"]) == 0
    assert ("holds no loss_sum, last_correct, forgetting, learned_at, prediction_changes history"
            in capsys.readouterr().err)


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_folder,) = folder.iterdir()
    events = EventAccumulator(str(run_folder), size_guidance={"scalars": 0}).Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.e2e
def test_tensorboard_holds_every_column_once_per_epoch_also_after_an_interrupt(synthetic_cifar10, tmp_path,
                                                                                 monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    board = tmp_path / "board"
    argv = run_args(synthetic_cifar10, tmp_path, "--numsamples", "200", "--tensorboard", str(board), epochs=3)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main(argv) == errors.INTERRUPTED
    monkeypatch.undo()
    assert experiments.main([*argv, "--resume"]) == 0
    rows = records.read_record(record_path(tmp_path, epochs=3)).rows
    scalars = tensorboard_scalars(board)
    for column in ("test_acc", "phi_before", "csl_auroc", "seconds"):
        assert scalars[column] == [(row["epoch"], pytest.approx(row[column], rel=1e-6)) for row in rows], column
    assert [step for step, _ in scalars["susceptibility"]] == [1, 2]  # undefined (empty) at epoch 0
    assert experiments.main([*argv, "--overwrite"]) == 0  # a run started over replaces its curves
    assert [step for step, _ in tensorboard_scalars(board)["test_acc"]] == [0, 1, 2]


@pytest.mark.e2e
def test_the_benchmark_times_the_per_sample_scores_with_the_epoch_and_alone(capsys):
    benchmark.main(["--model", "cnn", "--scale", "0.125", "--train-size", "256", "--test-size", "64",
                    "--paths", "device,signals", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["device", "signals", "network"]
    alone = lines[5].split("timed alone: ")[1].split(" s per epoch")[0]
    assert float(alone) > 0 and lines[5].endswith("% of the signals path's epoch")
