"""The one unpickler that reads CIFAR batch files: it builds the dictionaries, strings, lists and
numpy arrays of the official batches and nothing else, so that a crafted file can neither run code
nor make it allocate far more memory than the file holds (a pickle can refer to the same data again
and again, or ask numpy for large empty arrays)."""
from __future__ import annotations

import math
import pickle
from typing import BinaryIO

import numpy as np


class ForbiddenObject(pickle.UnpicklingError):
    """A pickle refers to something other than the numpy arrays of an official CIFAR batch."""


class OversizedBatch(pickle.UnpicklingError):
    """A pickle that would build far more than its file holds: it refers to the same data again and
    again, or asks numpy for large empty arrays, as no official batch does."""


class ArrayType:
    """Stands in for `numpy.ndarray` in a batch pickle: arrays name their type to `_reconstruct`, but a
    pickle cannot call it to allocate an array of any size it likes."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles the official CIFAR batches (dictionaries of strings, lists and numpy arrays) and
    refuses every other global, so that a crafted batch file cannot run code when it is read.

    The empty arrays the pickle has numpy make (and then fills from its bytes) may take at most
    `budget` bytes together: the size of the file, which is all an official batch needs."""

    # Array reconstruction under numpy 1 and 2 names, and the bytes of protocol-2 pickles of Python 3.
    ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                     ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                     ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def __init__(self, file, budget: int):
        super().__init__(file, encoding="latin1")
        self.budget = budget

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ARRAY_GLOBALS:
            raise ForbiddenObject(f"{module}.{name}")
        if name in ("ndarray", "_reconstruct"):
            return ArrayType if name == "ndarray" else self.empty_array
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)

    def empty_array(self, subtype, shape: tuple, dtype) -> np.ndarray:
        """numpy's `_reconstruct`: the empty array that the pickle then fills, within the budget."""
        if subtype is not ArrayType:
            raise ForbiddenObject(f"an array of type {subtype!r}")
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        if size > self.budget:
            raise OversizedBatch(f"an empty array of {size:,} bytes")
        self.budget -= size
        return np.ndarray(shape, dtype)


MAX_NESTING = 4  # lists in lists of a batch's data or labels: an official batch has arrays and flat lists


def values_built(value, walked: dict[int, int], depth: int = 0) -> int:
    """How many values `np.asarray(value)` builds: an array's size, or the sum over the items of a
    list, tuple or object array, where a part that is referred to many times counts each time.
    `walked` holds the counts of the containers already walked, so each is walked only once."""
    if id(value) in walked:
        return walked[id(value)]
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.size
    if not isinstance(value, (list, tuple, np.ndarray)):
        return 1
    if depth == MAX_NESTING:
        raise OversizedBatch(f"lists nested more than {MAX_NESTING} deep")
    items = value.ravel() if isinstance(value, np.ndarray) else value
    walked[id(value)] = sum(values_built(item, walked, depth + 1) for item in items)
    return walked[id(value)]


def check_unpacked_size(batch, label_key: str, file_size: int) -> None:
    """Refuse a batch whose data and labels would unpack to more values than its file has bytes: each
    value of an official batch takes at least a byte of the file."""
    walked: dict[int, int] = {}
    parts = [batch.get(key) for key in ("data", label_key)] if isinstance(batch, dict) else []
    count = sum(values_built(part, walked) for part in parts)
    if count > file_size:
        raise OversizedBatch(f"{count:,} values")


def load_batch(file: BinaryIO, label_key: str, file_size: int):
    """The batch a file of `file_size` bytes holds, built within the bounds above; ForbiddenObject or
    OversizedBatch where it asks for more."""
    batch = BatchUnpickler(file, budget=file_size).load()
    check_unpacked_size(batch, label_key, file_size)
    return batch
