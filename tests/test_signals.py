"""The signals recorded next to ζ: prediction changes, margins and the noisy hold-out set."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from runner import errors
from runner import batching
from runner import checkpoints
import datasets
from runner import noisy_data
import experiments
from runner import label_noise
import models
from runner import records
from runner import training
import susceptibility
from conftest import DEVICES, as_format_1, human_label_arrays, run_args, write_image_folder
from runner.sample_scores import TrainingSignals, margins
from runner.training import evaluate, train_one_epoch

SIGNAL_COLUMNS = ["noisy_holdout_loss", "noisy_holdout_acc", "pred_changes", "neg_margin",
                  "neg_margin_precision", "neg_margin_recall"]


def observe_epoch(signals: TrainingSignals, logits: list[list[float]], assigned: list[int],
                  losses: list[float] | None = None) -> dict:
    """One epoch in which every sample is seen once, in one batch; returns the epoch's summary."""
    signals.start_epoch(int(signals.epochs_seen.max()))  # the epochs every sample has been seen so far
    losses = torch.tensor(losses if losses is not None else [0.0] * len(assigned))
    signals.observe(torch.arange(len(assigned)), torch.tensor(logits, dtype=torch.float32),
                    torch.tensor(assigned), losses)
    return signals.summary()


def test_prediction_changes_count_samples_whose_class_changed_since_the_last_epoch():
    signals = TrainingSignals(4, torch.device("cpu"))
    first = observe_epoch(signals, [[1, 0], [1, 0], [0, 1], [0, 1]], [0, 0, 1, 1])
    assert math.isnan(first["pred_changes"])  # nothing to compare with yet
    second = observe_epoch(signals, [[1, 0], [0, 1], [0, 1], [1, 0]], [0, 0, 1, 1])
    assert second["pred_changes"] == 50.0  # samples 1 and 3 changed class
    third = observe_epoch(signals, [[1, 0], [0, 1], [0, 1], [1, 0]], [0, 0, 1, 1])
    assert third["pred_changes"] == 0.0


def test_margin_is_the_assigned_logit_minus_the_largest_other():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.5, 3.0, 3.0]])
    assert margins(logits, torch.tensor([0, 2, 1])).tolist() == [1.0, -2.0, 0.0]


def test_negative_running_margins_flag_wrong_labels_with_precision_and_recall():
    noisy = torch.tensor([False, True, True, False])
    signals = TrainingSignals(4, torch.device("cpu"), noisy)
    # Margins per sample: epoch 1 (+1, -2, +1, -1), epoch 2 (+1, -2, -3, +3): running means
    # (+1, -2, -1, +1): samples 1 and 2 are negative, both wrong; both wrong labels are caught.
    observe_epoch(signals, [[1, 0], [2, 0], [0, 1], [1, 0]], [0, 1, 1, 1])
    row = observe_epoch(signals, [[1, 0], [2, 0], [3, 0], [0, 3]], [0, 1, 1, 1])
    assert row["neg_margin"] == 50.0
    assert row["neg_margin_precision"] == 100.0 and row["neg_margin_recall"] == 100.0
    # With the first sample's label wrong as well, one wrong label of three goes unflagged.
    signals = TrainingSignals(4, torch.device("cpu"), torch.tensor([True, True, True, False]))
    observe_epoch(signals, [[1, 0], [2, 0], [0, 1], [1, 0]], [0, 1, 1, 1])
    row = observe_epoch(signals, [[1, 0], [2, 0], [3, 0], [0, 3]], [0, 1, 1, 1])
    assert row["neg_margin_precision"] == 100.0 and row["neg_margin_recall"] == pytest.approx(200 / 3)


def test_without_ground_truth_only_the_truth_free_signals_are_given():
    signals = TrainingSignals(2, torch.device("cpu"))
    row = observe_epoch(signals, [[0, 1], [1, 0]], [0, 0])
    assert row["neg_margin"] == 50.0
    assert math.isnan(row["neg_margin_precision"]) and math.isnan(row["neg_margin_recall"])


class AlwaysClassZero(nn.Module):
    def forward(self, images):
        return torch.tensor([[1.0, 0.0]]).expand(len(images), 2)


# The sums' precision each device offers: MPS has no float64, so a run there would fail to start.
ACCUMULATOR = {"cpu": torch.float64, "cuda": torch.float64, "mps": torch.float32}


@pytest.mark.parametrize("device", DEVICES)
def test_margin_and_loss_sums_take_the_widest_type_of_their_device(device):
    signals = TrainingSignals(4, torch.device(device))
    assert signals.margin_sum.dtype == signals.loss_sum.dtype == ACCUMULATOR[device]


def test_sums_on_mps_are_float32_whether_or_not_this_machine_has_mps():
    assert training.accumulator_dtype(torch.device("mps")) == ACCUMULATOR["mps"]


def test_holdout_accuracy_is_the_share_of_noisy_labels_predicted():
    labels = torch.tensor([0, 1, 0, 0, 1])
    row = evaluate(AlwaysClassZero(), [(torch.zeros(5, 3, 2, 2), labels)], prefix="noisy_holdout")
    assert row["noisy_holdout_acc"] == 60.0
    assert row["noisy_holdout_loss"] == pytest.approx(-math.log(math.e / (math.e + 1)) * 0.6
                                                      - math.log(1 / (math.e + 1)) * 0.4)


def fake_dataset(size: int, seed: int = 0) -> datasets.ImageSet:
    labels = np.random.default_rng(seed).integers(0, 10, size)
    return datasets.ImageSet(np.zeros((size, 3, 1, 1), dtype=np.uint8), labels)


def drawn(train, holdout: int, **overrides) -> noisy_data.NoisyData:
    options = dict(num_classes=10, numsamples=len(train) // 2, corrupt_prob=0.5, probe_source="heldout",
                   seed=7, noisy_holdout=holdout)
    return noisy_data.make_noisy_data(train, fake_dataset(10), **{**options, **overrides})


def test_holdout_is_disjoint_from_training_and_probe_sets_and_leaves_them_as_they_were():
    train = fake_dataset(20000)
    data, plain = drawn(train, 5000), drawn(train, 0)
    holdout = data.holdout.index
    assert len(holdout) == len(np.unique(holdout)) == 5000
    assert not set(holdout) & set(data.train_index) and not set(holdout) & set(data.probe.index)
    assert np.array_equal(data.train_index, plain.train_index)  # the training set never shrinks
    assert np.array_equal(data.assigned_labels, plain.assigned_labels)
    assert len(data.probe.index) == len(plain.probe.index) - 5000


def test_holdout_labels_follow_the_symmetric_noise_rate():
    data = drawn(fake_dataset(60000), 20000)
    assert np.array_equal(data.holdout.true_labels, fake_dataset(60000).labels[data.holdout.index])
    wrong = (data.holdout.labels != data.holdout.true_labels).mean()
    assert wrong == pytest.approx(0.5 * 0.9, abs=0.012)
    assert data.holdout.summary(True) == {"size": 20000, "fraction_wrong": wrong,
                                          "source": "training images outside the training subset"}


def test_holdout_labels_follow_asymmetric_flips():
    data = drawn(fake_dataset(40000), 10000, noise_type="asymmetric", corrupt_prob=0.6)
    flips = label_noise.class_flips(10)
    true, noisy = data.holdout.true_labels, data.holdout.labels
    changed = noisy != true
    assert np.array_equal(noisy[changed], flips[true[changed]])  # only to the partner class
    flippable = flips[true] != true
    assert changed[flippable].mean() == pytest.approx(0.6, abs=0.02)


def test_holdout_labels_of_cifar10n_are_the_human_labels_of_those_images(tmp_path):
    train = fake_dataset(3000)
    arrays = human_label_arrays(train.labels)
    np.savez(tmp_path / "human.npz", **arrays)
    data = drawn(train, 500, noise_type="cifar10n-worst", noise_file=tmp_path / "human.npz")
    assert np.array_equal(data.holdout.labels, arrays["worse_label"][data.holdout.index])


def test_too_large_a_holdout_is_one_clear_error():
    with pytest.raises(errors.DataError, match="--noisy-holdout 600 needs that many training images "
                                                 "outside the --numsamples subset, but 500 are left"):
        drawn(fake_dataset(1000), 600)


def tiny_run(data_dir: Path, out: Path, *extra: str, epochs: int = 3) -> list[str]:
    """The tiny run of conftest on 200 images."""
    return run_args(data_dir, out, "--numsamples", "200", *extra, epochs=epochs, name="s")


def read_rows(out: Path, epochs: int = 3) -> list[dict]:
    return records.read_record(out / "results" / f"s_cnn_{epochs}_0.05.csv").rows


@pytest.mark.e2e
def test_a_run_records_every_signal_and_the_holdout_leaves_the_other_columns_bit_identical(
        synthetic_cifar10, tmp_path):
    assert experiments.main(tiny_run(synthetic_cifar10, tmp_path / "with", "--noisy-holdout", "80")) == 0
    assert experiments.main(tiny_run(synthetic_cifar10, tmp_path / "without")) == 0
    with_holdout, without = read_rows(tmp_path / "with"), read_rows(tmp_path / "without")
    for row in with_holdout[1:]:
        assert all(math.isfinite(row[column]) for column in SIGNAL_COLUMNS), row
    assert all(math.isnan(row[c]) for row in without for c in ("noisy_holdout_loss", "noisy_holdout_acc"))
    unchanged = [c for c in records.COLUMNS
                 if c not in ("noisy_holdout_loss", "noisy_holdout_acc", *records.TIMING_COLUMNS)]
    assert [[r[c] for c in unchanged] for r in with_holdout] == [[r[c] for c in unchanged] for r in without]
    meta = records.read_record(tmp_path / "with" / "results" / "s_cnn_3_0.05.csv").meta
    assert meta["data"]["noisy_holdout"]["size"] == 80


@pytest.mark.e2e
def test_watching_the_signals_leaves_training_bit_identical(synthetic_cifar10):
    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=None, corrupt_prob=0.5,
                                    probe_source="train", seed=0)
    batches = batching.DeviceBatches(data, torch.device("cpu"), 32, 100)
    states = []
    for watcher in (None, TrainingSignals(len(data.train_index), torch.device("cpu"))):
        torch.manual_seed(0)
        model = models.create_model("cnn", 0.125)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for epoch in range(2):
            train_one_epoch(model, optimizer, batches.train_batches(
                susceptibility.torch_generator(0, batches.device, "train", epoch)), signals=watcher)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.e2e
def test_an_interrupted_run_resumes_with_the_same_signals(synthetic_cifar10, tmp_path, monkeypatch):
    argv = tiny_run(synthetic_cifar10, tmp_path / "whole", "--noisy-holdout", "50", epochs=4)
    assert experiments.main(argv) == 0
    cut = tiny_run(synthetic_cifar10, tmp_path / "cut", "--noisy-holdout", "50", epochs=4)
    original = experiments.summary_line

    def interrupt_after_epoch_1(row, epochs):
        if row["epoch"] == 1:
            raise KeyboardInterrupt
        return original(row, epochs)

    monkeypatch.setattr(experiments, "summary_line", interrupt_after_epoch_1)
    assert experiments.main(cut) == errors.INTERRUPTED
    assert len(read_rows(tmp_path / "cut", epochs=4)) == 2
    monkeypatch.setattr(experiments, "summary_line", original)
    assert experiments.main([*cut, "--resume"]) == 0
    resumed, whole = read_rows(tmp_path / "cut", epochs=4), read_rows(tmp_path / "whole", epochs=4)
    same = str(records.rows_without_timings(resumed)) == str(records.rows_without_timings(whole))
    assert same  # compared as text, where NaN cells are equal
    history = [checkpoints.load_checkpoint(out / "checkpoint" / "s_cnn_4_0.05.pt")["signals"]
               for out in (tmp_path / "cut", tmp_path / "whole")]
    assert all(torch.equal(history[0][k], history[1][k]) for k in history[0])


@pytest.mark.e2e
def test_a_folder_dataset_holds_out_its_own_training_images_and_says_so(tmp_path):
    folder = write_image_folder(tmp_path / "clothes", train=90)
    argv = ["--model", "cnn", "--scale", "0.125", "--epochs", "1", "--batchsize", "16", "--lr", "0.05",
            "--dataset", "folder", "--data-dir", str(folder), "--device", "cpu", "--noisy-holdout", "20",
            "--results-dir", str(tmp_path / "results"), "--checkpoint-dir", str(tmp_path / "ck"),
            "--filename", "f"]
    assert experiments.main(argv) == 0
    record = records.read_record(tmp_path / "results" / "f_cnn_1_0.05.csv")
    assert record.meta["data"]["train_size"] == 70
    assert record.meta["data"]["noisy_holdout"] == {"size": 20, "fraction_wrong": None,
                                                    "source": "held out of the training images"}
    assert math.isfinite(record.rows[0]["noisy_holdout_acc"])


@pytest.mark.e2e
def test_a_holdout_larger_than_what_is_left_is_refused_in_one_line(synthetic_cifar10, tmp_path, capsys):
    assert experiments.main(tiny_run(synthetic_cifar10, tmp_path, "--noisy-holdout", "101")) == 2
    err = capsys.readouterr().err
    assert "--noisy-holdout 101 needs that many" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.e2e
def test_a_checkpoint_without_the_signals_history_resumes_and_says_they_start_afresh(
        synthetic_cifar10, tmp_path, capsys):
    argv = tiny_run(synthetic_cifar10, tmp_path, epochs=3)
    assert experiments.main(argv) == 0
    checkpoint = tmp_path / "checkpoint" / "s_cnn_3_0.05.pt"
    state = checkpoints.load_checkpoint(checkpoint)
    state["rows"], state["epochs_completed"], state["finished"] = state["rows"][:2], 2, False
    checkpoints.save_checkpoint(checkpoint, as_format_1(state, leave_out=("signals", "holdout")))
    capsys.readouterr()
    assert experiments.main([*argv, "--resume"]) == 0
    assert "holds no last_prediction, margin_sum, epochs_seen, loss_sum" in capsys.readouterr().err
    rows = read_rows(tmp_path)
    assert len(rows) == 3 and math.isnan(rows[2]["pred_changes"])  # no previous prediction to compare
