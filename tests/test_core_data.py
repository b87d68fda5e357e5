"""The data side of a run: reading CIFAR batches, subset, label noise, probe set, augmentation."""
import dataclasses
import functools
import hashlib
import http.server
import pickle
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from runner import errors
from runner import batching
import datasets
from runner import noisy_data
from runner import label_noise
from runner import streams
import susceptibility
from conftest import write_cifar


def test_symmetric_noise_rate_matches_p_times_one_minus_one_over_c():
    labels = np.random.default_rng(0).integers(0, 10, 200_000)
    for p in (0.2, 0.5, 0.8):
        noisy = label_noise.symmetric_noise(labels, p, 10, streams.numpy_rng(7, "noise"))
        wrong = (noisy != labels).mean()
        assert wrong == pytest.approx(p * (1 - 1 / 10), abs=0.004)
        assert noisy.min() >= 0 and noisy.max() <= 9


def test_noise_is_identical_for_a_seed_and_different_for_another():
    labels = np.arange(5000) % 10
    draw = lambda seed: label_noise.symmetric_noise(labels, 0.5, 10, streams.numpy_rng(seed, "noise"))
    assert np.array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_zero_noise_keeps_every_label():
    labels = np.arange(1000) % 10
    assert np.array_equal(label_noise.symmetric_noise(labels, 0.0, 10, streams.numpy_rng(0, "n")), labels)


def test_subset_has_the_requested_size_is_deterministic_and_disjoint_from_the_rest():
    subset, rest = noisy_data.choose_subset(1000, 300, streams.numpy_rng(3, "subset"))
    again, _ = noisy_data.choose_subset(1000, 300, streams.numpy_rng(3, "subset"))
    other, _ = noisy_data.choose_subset(1000, 300, streams.numpy_rng(4, "subset"))
    assert len(subset) == 300 and len(rest) == 700
    assert len(np.union1d(subset, rest)) == 1000
    assert np.array_equal(subset, again) and not np.array_equal(subset, other)


@pytest.mark.parametrize("numsamples", [0, -5, 1001])
def test_subset_out_of_range_is_a_clear_error(numsamples):
    with pytest.raises(errors.DataError, match="--numsamples .* choose 1 to 1000"):
        noisy_data.choose_subset(1000, numsamples, streams.numpy_rng(0, "subset"))


def test_streams_of_one_seed_are_independent_and_repeatable():
    assert susceptibility.derive_seed(5, "train", 3) == susceptibility.derive_seed(5, "train", 3)
    assert len({susceptibility.derive_seed(5, "train", 3), susceptibility.derive_seed(5, "train", 4),
                susceptibility.derive_seed(5, "probe", 3), susceptibility.derive_seed(6, "train", 3)}) == 4


def test_reads_whichever_batches_the_folder_holds(tmp_path):
    root = write_cifar(tmp_path, train_per_batch=7, test_size=5)
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    train, test = datasets.load_cifar(root)
    assert len(train) == 28 and len(test) == 5
    assert train.images.shape == (28, 3, 32, 32) and train.images.dtype == np.uint8


def test_reads_the_official_row_layout_as_red_green_blue_planes(tmp_path):
    root = write_cifar(tmp_path, train_per_batch=3, test_size=2)
    path = root / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    image = datasets.read_batch(path, "labels").images[1]
    assert np.array_equal(image[0].ravel(), raw["data"][1][:1024])
    assert np.array_equal(image[2].ravel(), raw["data"][1][2048:])


def test_a_truncated_batch_is_reported_by_name(tmp_path):
    root = write_cifar(tmp_path, train_per_batch=7, test_size=5)
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(errors.DataError, match="data_batch_2.*corrupt or truncated"):
        datasets.load_cifar(root)


def test_missing_data_without_network_names_folder_and_archive(tmp_path, monkeypatch):
    offline = datasets.CifarSource(**{**datasets.CIFAR["cifar10"].__dict__,
                                      "url": "http://127.0.0.1:9/cifar-10-python.tar.gz"})
    monkeypatch.setitem(datasets.CIFAR, "cifar10", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.DataError) as error:
        datasets.load_cifar(empty)
    message = str(error.value)
    assert "cifar-10-batches-py not found in" in message and str(empty) in message
    assert "cifar-10-python.tar.gz" in message and "\n" not in message


def test_probe_set_defaults_to_the_training_subset_with_fresh_random_labels(synthetic_cifar10):
    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=200, corrupt_prob=0.5,
                                    probe_source="train", seed=0)
    assert np.array_equal(data.probe.index, data.train_index)
    assert not np.array_equal(data.probe.labels, data.assigned_labels)
    assert np.array_equal(data.true_labels, train.labels[data.train_index])


def test_heldout_probe_set_uses_images_outside_the_subset(synthetic_cifar10):
    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=200, corrupt_prob=0.5,
                                    probe_source="heldout", seed=0)
    assert len(data.probe.index) == len(train) - 200
    assert not set(data.probe.index) & set(data.train_index)
    with pytest.raises(errors.DataError, match="heldout needs training images outside"):
        noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=None, corrupt_prob=0.5,
                                 probe_source="heldout", seed=0)


def test_noise_summary_counts_changed_labels(synthetic_cifar10):
    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=None, corrupt_prob=0.8,
                                    probe_source="train", seed=1)
    summary = data.noise_summary()
    assert summary["labels_changed"] == int((data.assigned_labels != train.labels).sum()) > 0
    assert summary["fraction_wrong"] == summary["labels_changed"] / len(train)


def test_batch_sizes_cover_every_image_even_a_lone_remainder():
    assert batching.batch_sizes(300, 128) == [128, 128, 44]
    assert batching.batch_sizes(257, 128) == [128, 128, 1]
    assert batching.batch_sizes(256, 128) == [128, 128]
    assert batching.batch_sizes(1, 128) == [1]


def test_a_folder_dataset_may_keep_one_image_to_train_on_beside_its_noisy_holdout():
    images = np.zeros((5, 3, 32, 32), dtype=np.uint8)
    train, test = datasets.ImageSet(images, np.arange(5)), datasets.ImageSet(images[:2], np.arange(2))
    make = lambda holdout: noisy_data.make_noisy_data(
        train, test, num_classes=5, numsamples=None, corrupt_prob=0.0, probe_source="train", seed=0,
        noise_type=label_noise.GIVEN, noisy_holdout=holdout)
    assert len(make(4).train_index) == 1
    with pytest.raises(errors.DataError, match="--noisy-holdout 5 leaves none of the 5 training images"):
        make(5)


def test_a_subset_of_one_image_is_allowed():
    subset, rest = noisy_data.choose_subset(1000, 1, streams.numpy_rng(0, "subset"))
    assert len(subset) == 1 and len(rest) == 999


def test_normalize_uses_the_reference_constants():
    """Mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010) of the reference: a white
    pixel becomes (1 - mean) / std and a black one -mean / std, worked out by hand."""
    pixels = torch.tensor([255, 0], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    expected = torch.tensor([[2.514088, 2.596790, 2.753731], [-2.429066, -2.418255, -2.221393]])
    assert torch.allclose(batching.normalize(pixels).view(2, 3), expected, atol=1e-5)


def test_real_subset_loads_with_its_documented_sizes(real_cifar10):
    train, test = datasets.load_cifar(real_cifar10)
    assert (len(train), len(test)) == (5170, 1017)
    assert set(np.unique(train.labels)) == set(range(10))



# --------------------------------------------------------------------------------------------------
# The download of a missing CIFAR folder, served here by a web server on this machine


@pytest.fixture
def web_folder(tmp_path, monkeypatch) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its URL."""
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    folder = tmp_path / "served"
    folder.mkdir()
    quiet = type("QuietHandler", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=folder))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def official_archive(tmp_path: Path, folder: Path) -> Path:
    """A small cifar-10-python.tar.gz in `folder`, laid out as the official one: the batch folder at
    its top."""
    source = write_cifar(tmp_path / "source", train_per_batch=4, test_size=3)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def serve(monkeypatch, url: str, md5: str) -> None:
    """Make CIFAR-10's download fetch `url` and expect the MD5 checksum `md5`."""
    official = datasets.CIFAR["cifar10"]
    monkeypatch.setitem(datasets.CIFAR, "cifar10", dataclasses.replace(official, url=url, md5=md5))


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_a_missing_cifar_folder_is_downloaded_verified_and_extracted(tmp_path, web_folder, monkeypatch):
    folder, url = web_folder
    archive = official_archive(tmp_path, folder)
    serve(monkeypatch, f"{url}/{archive.name}", md5_of(archive))
    data_dir = empty_folder(tmp_path / "data")
    train, test = datasets.load_cifar(data_dir)
    expected_train, expected_test = datasets.load_cifar(tmp_path / "source")
    assert np.array_equal(train.images, expected_train.images) and np.array_equal(test.labels, expected_test.labels)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_an_intact_archive_in_the_data_dir_is_extracted_without_a_download(tmp_path, web_folder, monkeypatch):
    folder, url = web_folder
    archive = official_archive(tmp_path, folder)
    serve(monkeypatch, f"{url}/absent.tar.gz", md5_of(archive))  # fetching it would fail
    data_dir = empty_folder(tmp_path / "data")
    shutil.copy(archive, data_dir)
    train, _ = datasets.load_cifar(data_dir)
    assert len(train) == 20


def test_a_download_without_the_official_checksum_is_one_line_and_leaves_nothing(tmp_path, web_folder,
                                                                                  monkeypatch):
    folder, url = web_folder
    archive = official_archive(tmp_path, folder)
    serve(monkeypatch, f"{url}/{archive.name}", "0" * 32)
    data_dir = empty_folder(tmp_path / "data")
    with pytest.raises(errors.DataError) as error:
        datasets.load_cifar(data_dir)
    assert "cifar-10-python.tar.gz does not have the official MD5 checksum 000" in str(error.value)
    assert "\n" not in str(error.value) and list(data_dir.iterdir()) == []
