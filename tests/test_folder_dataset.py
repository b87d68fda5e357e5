"""A folder of images with label lists (real noisy data whose ground truth is unknown)."""
import math
from pathlib import Path

import numpy as np
import pytest

import datasets
import experiments
from runner import records
from analysis import loading
from conftest import CLASS_COLOURS, one_line_refusal, run_args, write_image_folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "clothes")


def folder_run(data_dir: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    """The tiny run of conftest on a folder dataset, in batches of 16."""
    return run_args(data_dir, out, "--dataset", "folder", *extra, epochs=epochs, name="f", batchsize=16)


def test_folder_images_are_rgb_32_by_32_with_their_listed_labels(image_folder):
    train, test = datasets.load_folder(image_folder)
    assert train.images.shape == (64, 3, 32, 32) and test.images.shape == (24, 3, 32, 32)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert list(train.labels[:6]) == [0, 1, 2, 0, 1, 2]
    centre = train.images[:, :, 16, 16].astype(int)
    assert np.abs(centre[0] - CLASS_COLOURS[0]).max() <= 8  # JPEG, red
    assert centre[1][0] == centre[1][1] == centre[1][2]  # greyscale PNG, three equal channels
    assert np.abs(centre[2] - CLASS_COLOURS[2]).max() <= 1  # RGBA PNG, blue


def test_resized_images_are_cached_and_rebuilt_when_the_list_changes(image_folder, monkeypatch):
    first, _ = datasets.load_folder(image_folder)
    assert (image_folder / "train_32px.npz").is_file() and (image_folder / "test_32px.npz").is_file()

    def no_decoding(path, list_path):
        raise AssertionError(f"decoded {path} although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(datasets, "read_image", no_decoding)
        cached, _ = datasets.load_folder(image_folder)
    assert np.array_equal(cached.images, first.images) and np.array_equal(cached.labels, first.labels)
    lines = (image_folder / "train.txt").read_text().splitlines()
    (image_folder / "train.txt").write_text("\n".join(lines[:-1]) + "\n")
    shorter, _ = datasets.load_folder(image_folder)
    assert np.array_equal(shorter.images, first.images[:-1])


@pytest.mark.e2e
def test_clothing1m_style_lists_convert_with_the_documented_one_liner(tmp_path):
    """README: awk turns Clothing1M's `<path> <label>` key-value file and a list of the split's
    images into train.txt; here on a miniature of those files."""
    import subprocess

    (tmp_path / "noisy_label_kv.txt").write_text("images/a.jpg 3\nimages/b.jpg 7\nimages/c.jpg 1\n")
    (tmp_path / "noisy_train_key_list.txt").write_text("images/c.jpg\nimages/a.jpg\n")
    command = "awk 'NR==FNR {label[$1]=$2; next} {print $1, label[$1]}' " \
              "noisy_label_kv.txt noisy_train_key_list.txt > train.txt"
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert (tmp_path / "train.txt").read_text() == "images/c.jpg 1\nimages/a.jpg 3\n"


@pytest.mark.parametrize("spoil, message", [
    (lambda root: (root / "train.txt").unlink(), "image list {root}/train.txt not found"),
    (lambda root: (root / "images/train/0/3.jpg").unlink(), "image {root}/images/train/0/3.jpg (listed in"),
    (lambda root: (root / "images/train/0/3.jpg").write_bytes(b"not an image"),
     "cannot read image {root}/images/train/0/3.jpg (listed in {root}/train.txt)"),
    (lambda root: (root / "test.txt").write_text("images/test/0/0.jpg cat\n"),
     "{root}/test.txt, line 1: expected one `relative/path/to/image.jpg <label>` per line"),
    (lambda root: (root / "test.txt").write_text("\n"), "image list {root}/test.txt lists no images"),
])
@pytest.mark.e2e
def test_bad_folder_data_is_a_one_line_error_naming_the_file(image_folder, tmp_path, capsys, spoil, message):
    spoil(image_folder)
    assert message.format(root=image_folder) in one_line_refusal(folder_run(image_folder, tmp_path), capsys)


@pytest.mark.parametrize("extra, message", [
    (["--noise-type", "symmetric"], "does not apply to --dataset folder"),
    (["--num_classes", "2"], "the labels go up to 2, but there are 2 classes"),
])
@pytest.mark.e2e
def test_folder_arguments_that_do_not_fit_are_one_line_errors(image_folder, tmp_path, capsys, extra, message):
    assert message in one_line_refusal(folder_run(image_folder, tmp_path, *extra), capsys)


@pytest.mark.e2e
def test_folder_run_records_zeta_and_training_accuracy_without_clean_noisy_columns(image_folder, tmp_path, capsys):
    assert experiments.main(folder_run(image_folder, tmp_path)) == 0
    output = capsys.readouterr().out
    assert "labels as given (ground truth unknown)" in output
    epoch_lines = [line for line in output.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 2 and not any("clean" in l or "noisy" in l for l in epoch_lines)
    path = tmp_path / "results" / "f_cnn_2_0.05.csv"
    record = records.read_record(path)
    assert record.meta["noise"] == {"type": "given", "corrupt_prob": None, "noise_file": None,
                                    "ground_truth": False, "labels_changed": None, "fraction_wrong": None}
    assert record.meta["data"]["num_classes"] == 3 and record.meta["data"]["dataset"] == "folder"
    for row in record.rows:
        for column in ("train_clean_loss", "train_clean_acc", "train_noisy_loss", "train_noisy_acc"):
            assert math.isnan(row[column]), column
        for column in ("phi_before", "phi_after", "train_loss", "train_acc", "test_acc"):
            assert math.isfinite(row[column]), column
    assert math.isfinite(record.rows[1]["susceptibility"])
    assert ",,,," in path.read_text().splitlines()[-1]  # the four columns are empty cells
    assert experiments.main(folder_run(image_folder, tmp_path, "--resume")) == 0  # same resolved classes
    table = loading.load_runs(tmp_path / "results").table
    assert not table["ground_truth"].any() and table["train_acc"].notna().all()
