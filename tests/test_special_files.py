"""The data layer reads regular files only: a FIFO (or a folder) where a batch, an image list, a listed
image, an image cache or a label file should be is refused in one line, or replaced where it is a
cache, and never opened: opening a FIFO would block until another process writes to it."""
import contextlib
import errno
import os
import stat
import threading
from pathlib import Path

import pytest

import datasets
import experiments
from conftest import run_args, write_cifar, write_image_folder


class Fifo:
    """A FIFO at `path` that notes whether anyone opened it for reading, and lets such a reader go at
    once (it sees an empty file) instead of blocking the test forever."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path, self.was_read, self.stop = path, False, threading.Event()
        self.watcher = threading.Thread(target=self.release_readers, daemon=True)

    def release_readers(self) -> None:
        while not self.stop.wait(0.01):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # a FIFO: only with a reader
            except OSError as error:
                if error.errno not in (errno.ENXIO, errno.ENOENT):
                    raise
                continue
            self.was_read |= stat.S_ISFIFO(os.fstat(descriptor).st_mode)  # not the file that replaced it
            os.close(descriptor)


@contextlib.contextmanager
def fifo_at(path: Path):
    fifo = Fifo(path)
    fifo.watcher.start()
    try:
        yield fifo
    finally:
        fifo.stop.set()
        fifo.watcher.join()


def refused(argv: list[str], out: Path, capsys) -> str:
    assert experiments.main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message
    assert not (out / "results").exists()
    return message


def test_a_fifo_named_like_a_cifar_batch_is_refused_without_being_opened(tmp_path, capsys):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    batch = data / "cifar-10-batches-py" / "data_batch_1"
    batch.unlink()
    with fifo_at(batch) as fifo:
        message = refused(run_args(data, tmp_path / "out"), tmp_path / "out", capsys)
    assert f"CIFAR batch {batch} is a FIFO (named pipe), not a file" in message
    assert not fifo.was_read


def test_a_folder_named_like_a_cifar_batch_is_refused_as_a_folder(tmp_path):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    batch = data / "cifar-10-batches-py" / "test_batch"
    batch.unlink()
    batch.mkdir()
    with pytest.raises(datasets.DataError, match="test_batch is a folder, not a file"):
        datasets.load_cifar(data)


def test_a_fifo_listed_as_an_image_is_refused_without_being_opened(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "images", train=12, test=6)
    image = folder / "images" / "train" / "0" / "4.png"
    image.unlink()
    with fifo_at(image) as fifo:
        message = refused(run_args(folder, tmp_path / "out", "--dataset", "folder"), tmp_path / "out", capsys)
    assert f"image {image} (listed in {folder / 'train.txt'}) is a FIFO (named pipe), not an image file" in message
    assert not fifo.was_read


def test_a_fifo_as_the_image_list_is_refused_without_being_opened(tmp_path):
    folder = write_image_folder(tmp_path / "images", train=12, test=6)
    (folder / "test.txt").unlink()
    with fifo_at(folder / "test.txt") as fifo:
        with pytest.raises(datasets.DataError, match="test.txt is a FIFO \\(named pipe\\), not a text file"):
            datasets.load_folder(folder)
    assert not fifo.was_read


def test_a_fifo_in_place_of_the_image_cache_is_replaced_without_being_opened(tmp_path):
    folder = write_image_folder(tmp_path / "images", train=12, test=6)
    cache = folder / "train_32px.npz"
    with fifo_at(cache) as fifo:
        train, _ = datasets.load_folder(folder)
    assert not fifo.was_read and cache.is_file() and len(train) == 12


def test_a_fifo_as_the_noise_file_is_refused_without_being_opened(tmp_path, capsys):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    with fifo_at(tmp_path / "labels.npz") as fifo:
        argv = run_args(data, tmp_path / "out", "--noise-type", "cifar10n-worst",
                        "--noise-file", str(tmp_path / "labels.npz"))
        message = refused(argv, tmp_path / "out", capsys)
    assert f"--noise-file {tmp_path / 'labels.npz'} is a FIFO (named pipe), not a label file" in message
    assert not fifo.was_read
