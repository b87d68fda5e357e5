"""The safe unpickler of CIFAR batches builds no more than a file of its size can honestly hold: a
batch that repeats references to the same data ("memo bomb"), nests them, or asks numpy for large
empty arrays is refused in one line before its values are built."""
import pickle
from pathlib import Path

import numpy as np
import pytest

import datasets
import experiments
from conftest import run_args, write_cifar

RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, under this numpy's name


class EmptyArray:
    """Pickles as numpy's reconstruction of an empty array of `shape`, as array pickles begin."""

    def __init__(self, shape: tuple):
        self.shape = shape

    def __reduce__(self):
        return RECONSTRUCT, (np.ndarray, self.shape, b"B")


def with_batch(tmp_path: Path, batch: dict) -> tuple[Path, Path]:
    """A CIFAR-10 folder whose data_batch_2 is `batch`, pickled as the official batches are."""
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    path = data / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, path


ROW = [7] * 3072


BOMBS = {
    "repeated rows": ({"data": [ROW] * 3000, "labels": [0] * 3000}, "would unpack to 9,219,000 values"),
    "nested repeats": ({"data": [[ROW] * 100] * 100, "labels": [0] * 100}, "would unpack to 30,720,100 values"),
    "repeated labels": ({"data": np.zeros((1, 3072), np.uint8), "labels": [[0] * 1000] * 1000},
                        "would unpack to 1,003,072 values"),
    "empty array": ({"data": EmptyArray((20000, 3072)), "labels": [0]},
                    "would unpack to an empty array of 61,440,000 bytes"),
}


@pytest.mark.parametrize("case", BOMBS)
def test_a_batch_that_unpacks_to_far_more_than_its_file_is_refused(tmp_path, case):
    batch, expected = BOMBS[case]
    data, path = with_batch(tmp_path, batch)
    with pytest.raises(datasets.DataError) as error:
        datasets.load_cifar(data)
    size = path.stat().st_size
    assert str(error.value) == (f"CIFAR batch {path} {expected} from a file of {size:,} bytes, which no "
                                f"official batch does; it was not loaded. Replace it from the official archive")


def test_a_memo_bomb_stops_a_run_in_one_line_before_anything_is_written(tmp_path, capsys):
    data, path = with_batch(tmp_path, BOMBS["repeated rows"][0])
    assert experiments.main(run_args(data, tmp_path / "out")) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"experiments.py: error: CIFAR batch {path} would unpack to") and "\n" not in message
    assert not (tmp_path / "out" / "results").exists()


def test_lists_nested_deeper_than_any_batch_are_refused(tmp_path):
    data, _ = with_batch(tmp_path, {"data": [[[[[0]]]]], "labels": [0]})
    with pytest.raises(datasets.DataError, match="would unpack to lists nested more than 4 deep"):
        datasets.load_cifar(data)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batches_of_every_protocol_with_arrays_or_lists_still_load(tmp_path, protocol):
    data = write_cifar(tmp_path / "data", train_per_batch=20, test_size=20)
    images = np.random.default_rng(0).integers(0, 256, (20, 3072), dtype=np.uint8)
    for name, values in (("data_batch_1", images), ("data_batch_2", images.tolist())):
        batch = {"data": values, "labels": list(range(10)) * 2, "filenames": ["x.png"] * 20}
        (data / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    train, _ = datasets.load_cifar(data)
    assert np.array_equal(train.images[:40].reshape(40, 3072), np.concatenate([images, images]))
