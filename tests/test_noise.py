"""Label noise beyond the symmetric kind: asymmetric flips, CIFAR-10N human labels, and CIFAR-100."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runner import errors
from runner import checkpoints
import datasets
from runner import noisy_data
import experiments
from runner import label_noise
from runner import records
from runner import streams
from conftest import human_label_arrays, one_line_refusal, run_args

# Wrong-label rates of CIFAR-10N as published by its authors (fractions of the 50,000 images).
PUBLISHED_RATES = {"cifar10n-aggre": 0.090, "cifar10n-worst": 0.402, "cifar10n-random1": 0.172,
                   "cifar10n-random2": 0.181, "cifar10n-random3": 0.176}


def one_epoch_run(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """The tiny run of conftest, one epoch long."""
    return run_args(data_dir, out, *extra, epochs=1)


def finished_record(out: Path) -> records.RunRecord:
    return records.read_record(out / "results" / "t_cnn_1_0.05.csv")


def write_pt(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    torch.save(arrays, path)
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------------------------------
# Asymmetric noise


def test_asymmetric_noise_flips_only_the_listed_cifar10_classes_at_the_requested_rate():
    labels = np.repeat(np.arange(10), 20000)
    noisy = label_noise.asymmetric_noise(labels, 0.3, label_noise.class_flips(10), streams.numpy_rng(0, "a"))
    for cls in range(10):
        changed = noisy[labels == cls] != cls
        if cls in label_noise.CIFAR10_FLIPS:
            assert set(noisy[labels == cls][changed]) == {label_noise.CIFAR10_FLIPS[cls]}
            assert changed.mean() == pytest.approx(0.3, abs=0.015)
        else:
            assert not changed.any()
    assert label_noise.CIFAR10_FLIPS == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def test_asymmetric_noise_is_fixed_by_the_seed_and_leaves_symmetric_runs_unchanged(synthetic_cifar10):
    train, test = datasets.load_cifar(synthetic_cifar10)
    draw = lambda seed, kind="asymmetric": noisy_data.make_noisy_data(
        train, test, num_classes=10, numsamples=None, corrupt_prob=0.5, probe_source="train",
        seed=seed, noise_type=kind).assigned_labels
    assert np.array_equal(draw(1), draw(1)) and not np.array_equal(draw(1), draw(2))
    symmetric = label_noise.symmetric_noise(train.labels, 0.5, 10, streams.numpy_rng(1, "noise"))
    assert np.array_equal(draw(1, "symmetric"), symmetric)


def test_cifar100_flips_to_the_next_class_of_the_same_superclass():
    flips = label_noise.class_flips(100)
    superclass = {fine: coarse for coarse, group in enumerate(label_noise.CIFAR100_SUPERCLASSES)
                  for fine in group}
    assert sorted(superclass) == list(range(100))
    assert all(superclass[int(flips[c])] == superclass[c] and flips[c] != c for c in range(100))
    cycled = np.arange(100)
    for _ in range(5):
        cycled = flips[cycled]
    assert np.array_equal(cycled, np.arange(100))  # one cycle through the five classes of each group
    assert flips[4] == 30 and flips[95] == 4  # beaver -> dolphin, whale -> beaver


def test_asymmetric_noise_needs_a_cifar_class_count():
    with pytest.raises(errors.DataError, match="CIFAR-10 and CIFAR-100, not for 14 classes"):
        label_noise.class_flips(14)


# --------------------------------------------------------------------------------------------------
# CIFAR-10N: the real files


def test_real_cifar10n_rates_match_the_published_ones(real_cifar10n):
    arrays = label_noise.read_label_file(real_cifar10n / "CIFAR-10_human.pt")
    clean = arrays["clean_label"]
    assert len(clean) == 50000
    for noise_type, published in PUBLISHED_RATES.items():
        noisy = label_noise.human_labels(real_cifar10n / "CIFAR-10_human.pt", noise_type, clean)
        assert (noisy != clean).mean() == pytest.approx(published, abs=0.001), noise_type


def test_real_subset_file_lines_up_with_the_real_subset(real_cifar10, real_cifar10n):
    train, test = datasets.load_cifar(real_cifar10)
    full = label_noise.read_label_file(real_cifar10n / "CIFAR-10_human.pt")
    layout = json.loads((real_cifar10 / "cifar-10-batches-py" / "subset_index.json").read_text())
    rows = np.concatenate([np.arange(part["official_offset"], part["official_offset"] + part["rows"])
                           for name, part in layout.items() if name.startswith("data_batch")])
    assert np.array_equal(full["clean_label"][rows], train.labels)
    subset_file = real_cifar10n / "CIFAR-10_human_subset.npz"
    for noise_type, key in label_noise.CIFAR10N_KEYS.items():
        assert np.array_equal(label_noise.human_labels(subset_file, noise_type, train.labels), full[key][rows])
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=1000, corrupt_prob=0.5,
                                    probe_source="train", seed=0, noise_type="cifar10n-worst",
                                    noise_file=subset_file)
    assert np.array_equal(data.assigned_labels, full["worse_label"][rows][data.train_index])
    assert np.array_equal(data.true_labels, train.labels[data.train_index])


@pytest.mark.e2e
def test_the_full_file_on_the_real_subset_is_rejected(real_cifar10, real_cifar10n, tmp_path, capsys):
    argv = one_epoch_run(real_cifar10, tmp_path, "--noise-type", "cifar10n-aggre",
                    "--noise-file", str(real_cifar10n / "CIFAR-10_human.pt"))
    assert "has 50000 labels but the training set has 5170 images" in one_line_refusal(argv, capsys)
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------------
# CIFAR-10N: label files


def test_pt_and_npz_label_files_read_the_same(tmp_path):
    arrays = human_label_arrays(np.random.default_rng(0).integers(0, 10, 500))
    from_pt = label_noise.read_label_file(write_pt(tmp_path / "labels.pt", arrays))
    from_npz = label_noise.read_label_file(write_npz(tmp_path / "labels.npz", arrays))
    for key, values in arrays.items():
        assert np.array_equal(from_pt[key], values) and np.array_equal(from_npz[key], values)


def test_a_pt_file_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"clean_label": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(errors.DataError, match="holds objects other than integer label arrays"):
        label_noise.read_label_file(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("spoil, message", [
    (lambda a: {k: v[:-1] for k, v in a.items()}, "has 299 labels but the training set has 300 images"),
    (lambda a: {**a, "clean_label": np.roll(a["clean_label"], 1)}, "belongs to other images: its clean_label"),
    (lambda a: {k: v for k, v in a.items() if k != "worse_label"}, "has no worse_label array"),
])
@pytest.mark.e2e
def test_mismatched_label_files_are_rejected_in_one_line(synthetic_cifar10, tmp_path, capsys, spoil, message):
    train, _ = datasets.load_cifar(synthetic_cifar10)
    path = write_pt(tmp_path / "labels.pt", spoil(human_label_arrays(train.labels)))
    argv = one_epoch_run(synthetic_cifar10, tmp_path, "--noise-type", "cifar10n-worst", "--noise-file", str(path))
    assert message in one_line_refusal(argv, capsys)


@pytest.mark.parametrize("extra, message", [
    (["--noise-type", "cifar10n-aggre"], "needs --noise-file"),
    (["--noise-file", "labels.pt"], "--noise-file is read only with a cifar10n --noise-type"),
    (["--noise-type", "cifar10n-aggre", "--noise-file", "x.pt", "--dataset", "cifar100"],
     "human labels of CIFAR-10, not of cifar100"),
    (["--noise-type", "cifar10n-aggre", "--noise-file", "missing.pt"], "--noise-file missing.pt not found"),
])
@pytest.mark.e2e
def test_noise_arguments_that_do_not_fit_are_one_line_errors(synthetic_cifar10, tmp_path, capsys, extra, message):
    assert message in one_line_refusal(one_epoch_run(synthetic_cifar10, tmp_path, *extra), capsys)


@pytest.mark.e2e
def test_cifar10n_run_trains_on_the_files_labels_and_records_the_noise(synthetic_cifar10, tmp_path):
    train, _ = datasets.load_cifar(synthetic_cifar10)
    arrays = human_label_arrays(train.labels)
    path = write_npz(tmp_path / "labels.npz", arrays)
    argv = one_epoch_run(synthetic_cifar10, tmp_path, "--noise-type", "cifar10n-worst",
                    "--noise-file", str(path), "--numsamples", "64")
    assert experiments.main(argv) == 0
    noise = finished_record(tmp_path).meta["noise"]
    state = checkpoints.load_checkpoint(tmp_path / "checkpoint" / "t_cnn_1_0.05.pt")
    index, assigned = state["labels"]["train_index"].numpy(), state["labels"]["assigned"].numpy()
    assert np.array_equal(assigned, arrays["worse_label"][index])
    wrong = int((assigned != train.labels[index]).sum())
    assert noise == {"type": "cifar10n-worst", "corrupt_prob": None, "noise_file": str(path),
                     "ground_truth": True, "labels_changed": wrong, "fraction_wrong": wrong / 64}


# --------------------------------------------------------------------------------------------------
# CIFAR-100 end to end


@pytest.mark.e2e
def test_cifar100_run_with_asymmetric_noise(synthetic_cifar100, tmp_path):
    argv = one_epoch_run(synthetic_cifar100, tmp_path, "--dataset", "cifar100", "--noise-type", "asymmetric",
                    "--corruptprob", "0.4", "--numsamples", "64")
    assert experiments.main(argv) == 0
    record = finished_record(tmp_path)
    assert record.meta["data"]["num_classes"] == 100 and record.meta["data"]["train_size"] == 64
    assert record.meta["noise"]["type"] == "asymmetric" and record.meta["noise"]["corrupt_prob"] == 0.4
    assert 0 < record.meta["noise"]["labels_changed"] < 64
    state = checkpoints.load_checkpoint(tmp_path / "checkpoint" / "t_cnn_1_0.05.pt")
    true, assigned = state["labels"]["true"].numpy(), state["labels"]["assigned"].numpy()
    changed = assigned != true
    assert np.array_equal(assigned[changed], label_noise.class_flips(100)[true[changed]])
    assert list(state["model"].values())[-1].shape == (100,)  # the classifier's bias: 100 outputs
    row = record.rows[0]
    assert all(np.isfinite(row[c]) for c in ("train_acc", "train_clean_acc", "train_noisy_acc", "test_acc"))
