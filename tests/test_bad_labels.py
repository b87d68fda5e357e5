"""Labels that cannot index the network's outputs are refused when the data is read, in one line and
before anything is written: CIFAR batches and CIFAR-10N label files with negative, out-of-range,
float or 2-D labels, and batches without images."""
import pickle
from pathlib import Path

import numpy as np
import pytest

import datasets
import experiments
from conftest import human_label_arrays, run_args, write_cifar


def edit_batch(data_dir: Path, name: str, edit) -> None:
    """Rewrite one batch of the CIFAR-10 folder under `data_dir` with `edit` applied to its dict."""
    path = data_dir / "cifar-10-batches-py" / name
    with open(path, "rb") as f:
        batch = pickle.load(f)
    edit(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def refused(argv: list[str], out: Path, capsys) -> str:
    """Run experiments.py, check that it refused in one line and wrote nothing; return the line."""
    assert experiments.main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message
    assert not (out / "results").exists() and not (out / "checkpoint").exists()
    return message


def set_first_label(value):
    def edit(batch):
        batch["labels"][0] = value
    return edit


def empty(batch):
    batch["data"], batch["labels"] = batch["data"][:0], []


BATCH_EDITS = {
    "negative": (set_first_label(-1), "holds a negative label (-1)"),
    "out of range": (set_first_label(99), "holds label 99, outside the 10 classes 0 to 9"),
    "float": (lambda batch: batch.update(labels=[label + 0.5 for label in batch["labels"]]),
              "holds float64 labels, not integers"),
    "2-D": (lambda batch: batch.update(labels=[[label] for label in batch["labels"]]),
            "holds labels of shape (20, 1), not one label per image"),
    "empty": (empty, "holds no images"),
}


@pytest.mark.parametrize("case", BATCH_EDITS)
def test_a_cifar_batch_with_unusable_labels_is_refused_in_one_line(tmp_path, capsys, case):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    edit, expected = BATCH_EDITS[case]
    edit_batch(data, "data_batch_3", edit)
    message = refused(run_args(data, tmp_path / "out"), tmp_path / "out", capsys)
    assert f"CIFAR batch {data / 'cifar-10-batches-py' / 'data_batch_3'} {expected}" in message
    assert "replace it from the official archive" in message


def test_a_test_batch_label_outside_cifar10_classes_is_refused(tmp_path):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    edit_batch(data, "test_batch", set_first_label(10))
    with pytest.raises(datasets.DataError, match="test_batch holds label 10, outside the 10 classes"):
        datasets.load_cifar(data)


def test_official_batches_still_load_with_their_labels(tmp_path):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    with open(data / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        labels = pickle.load(f)["labels"]
    train, _ = datasets.load_cifar(data)
    assert train.labels.dtype == np.int64 and train.labels[:20].tolist() == labels


def spoiled_labels(case: str, clean: np.ndarray) -> dict[str, np.ndarray]:
    arrays = human_label_arrays(clean)
    worse = arrays["worse_label"]
    arrays["worse_label"] = {"out of range": np.where(np.arange(len(worse)) == 5, 10, worse),
                             "negative": np.where(np.arange(len(worse)) == 5, -3, worse),
                             "float": worse.astype(np.float64),
                             "2-D": np.stack([worse, worse])}[case]
    return arrays


LABEL_FILE_PROBLEMS = {"out of range": "label 10, outside the 10 classes 0 to 9",
                       "negative": "a negative label (-3)", "float": "float64 labels, not integers",
                       "2-D": "labels of shape (2, 100), not one label per image"}


@pytest.mark.parametrize("case", LABEL_FILE_PROBLEMS)
def test_a_noise_file_with_unusable_labels_is_refused_in_one_line(tmp_path, capsys, case):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    train, _ = datasets.load_cifar(data)
    noise_file = tmp_path / "labels.npz"
    np.savez(noise_file, **spoiled_labels(case, train.labels))
    argv = run_args(data, tmp_path / "out", "--noise-type", "cifar10n-worst", "--noise-file", str(noise_file))
    message = refused(argv, tmp_path / "out", capsys)
    assert f"--noise-file {noise_file}: its worse_label array holds {LABEL_FILE_PROBLEMS[case]}" in message
