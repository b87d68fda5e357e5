"""The datasets a run reads: CIFAR-10 and CIFAR-100 in their official python format, or a folder of
images with label lists (real noisy data such as Clothing1M, whose ground truth is unknown).

What a run draws from them (its subset, noisy labels, probe sets and hold-out set) is in
`noisy_data`; how labels are corrupted in `label_noise`; batching and augmentation in `batching`.
"""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runner import safe_files
from runner.errors import DataError
from runner.file_kinds import irregular_kind
from runner.label_noise import label_problem

IMAGE_SIZE = 32  # every image is 32x32, the models' input size; a folder's images are resized to it


@dataclass(frozen=True)
class CifarSource:
    """Where one CIFAR variant lives and how its official python batches are named."""

    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int


CIFAR = {
    "cifar10": CifarSource(
        folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        label_key="labels", num_classes=10),
    "cifar100": CifarSource(
        folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",), test_files=("test",), label_key="fine_labels", num_classes=100),
}


DEFAULT_DATA_DIR = "./data"  # where CIFAR is downloaded when --data-dir is left out


# --------------------------------------------------------------------------------------------------
# Reading the official python batches


@dataclass
class ImageSet:
    """uint8 images of shape (n, 3, 32, 32) with their int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


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


def read_batch(path: Path, label_key: str, num_classes: int | None = None) -> ImageSet:
    """Read one pickled batch of the official python format, or say which file is broken.

    With `num_classes`, every label must be one of these classes (CIFAR-10's ten, say), so that a
    stray label cannot silently widen the run's class count."""
    kind = irregular_kind(path)
    if kind:
        raise DataError(f"CIFAR batch {path} is {kind}, not a file; replace it with the batch file from "
                        f"the official archive")
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            batch = BatchUnpickler(f, budget=file_size).load()
        check_unpacked_size(batch, label_key, file_size)
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key])
        images = data.reshape(len(data), 3, IMAGE_SIZE, IMAGE_SIZE)
    except ForbiddenObject as error:
        raise DataError(f"CIFAR batch {path} refers to {error}, which an official batch never holds; "
                        f"it was not loaded, since it could run code. Replace it from the official archive")
    except OversizedBatch as error:
        raise DataError(f"CIFAR batch {path} would unpack to {error} from a file of {file_size:,} bytes, "
                        f"which no official batch does; it was not loaded. Replace it from the official "
                        f"archive")
    except Exception as error:  # any unpickling or shape failure means the same thing to the user
        raise DataError(f"cannot read CIFAR batch {path} ({type(error).__name__}: {error}); "
                        f"the file is corrupt or truncated, replace it from the official archive")
    check_batch(path, images, labels, num_classes)
    return ImageSet(images, labels.astype(np.int64))


def check_batch(path: Path, images: np.ndarray, labels: np.ndarray, num_classes: int | None) -> None:
    """Refuse a batch that no official archive holds: one without images, or whose labels are not
    one integer class per image."""
    problem = label_problem(labels, num_classes)
    if problem is None and len(images) != len(labels):
        problem = f"{len(images)} images but {len(labels)} labels"
    if problem is None and len(images) == 0:
        problem = "no images"
    if problem:
        raise DataError(f"CIFAR batch {path} holds {problem}; replace it from the official archive")


def read_batches(folder: Path, names: tuple[str, ...], source: CifarSource) -> ImageSet:
    """Concatenate whichever of the named batches exist in `folder` (a subset may hold fewer)."""
    present = [folder / name for name in names if (folder / name).exists()]
    if not present:
        raise DataError(f"no batch files ({', '.join(names)}) in {folder}; "
                        f"extract the official archive there")
    parts = [read_batch(path, source.label_key, source.num_classes) for path in present]
    return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def download(source: CifarSource, data_dir: Path) -> None:
    """Fetch the official archive into `data_dir` (unless the one there is intact), verify its MD5
    checksum and extract it. A failure leaves nothing it made behind: neither the archive, nor a
    partly extracted folder, nor the folder made for them."""
    archive = data_dir / source.archive
    new_paths = [path for path in (archive, data_dir / source.folder, data_dir) if not path.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fetch_verified(source, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(data_dir, filter="data")
    except Exception as error:
        remove(new_paths)
        raise DataError(
            f"{source.folder} not found in {data_dir} and the download failed ({error}); "
            f"place {source.archive} from {source.url} in {data_dir} and extract it there")


def fetch_verified(source: CifarSource, archive: Path) -> None:
    """Download `archive` unless it is there with the official MD5 checksum (a damaged one, such as
    an interrupted download, is fetched again), and refuse a download without that checksum."""
    from torchvision.datasets.utils import check_integrity, download_url

    if check_integrity(str(archive), source.md5):
        return
    archive.unlink(missing_ok=True)
    download_url(source.url, str(archive.parent), archive.name)
    if not check_integrity(str(archive), source.md5):
        raise OSError(f"{archive.name} does not have the official MD5 checksum {source.md5}")


def remove(paths: list[Path]) -> None:
    """Delete the files and folders of `paths` that exist."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_data_dir(data_dir: Path, source: CifarSource) -> None:
    """Refuse a --data-dir that cannot be meant: a file, a missing folder (only the default one is
    made, for the download), or the batch folder itself instead of its parent."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is a file, not a folder; give the folder that holds "
                        f"{source.folder}")
    if not data_dir.exists() and data_dir != Path(DEFAULT_DATA_DIR):
        raise DataError(f"--data-dir {data_dir} does not exist; give the folder that holds "
                        f"{source.folder}, or leave --data-dir out to download into {DEFAULT_DATA_DIR}")
    if any((data_dir / name).is_file() for name in source.train_files):
        raise DataError(f"--data-dir {data_dir} holds the batch files themselves; point --data-dir at "
                        f"its parent, {data_dir.resolve().parent}")


def load_cifar(data_dir: str | Path, dataset: str = "cifar10") -> tuple[ImageSet, ImageSet]:
    """Training and test sets of `dataset` from `data_dir`, downloaded only if the folder is missing."""
    source = CIFAR[dataset]
    data_dir = Path(data_dir)
    check_data_dir(data_dir, source)
    folder = data_dir / source.folder
    if not folder.is_dir():
        download(source, data_dir)
    try:
        next(folder.iterdir(), None)
    except OSError as error:
        raise DataError(f"cannot read {folder} ({error.strerror}); check its permissions")
    train = read_batches(folder, source.train_files, source)
    test = read_batches(folder, source.test_files, source)
    return train, test


# --------------------------------------------------------------------------------------------------
# A folder of images with label lists (real noisy data, ground truth unknown)

FOLDER = "folder"
DATASETS = (*CIFAR, FOLDER)
LIST_FORMAT = "one `relative/path/to/image.jpg <label>` per line"


def read_image_list(path: Path) -> tuple[list[str], np.ndarray]:
    """Image paths (relative to the list's folder) and integer labels of one list file."""
    kind = irregular_kind(path)
    if kind:
        raise DataError(f"image list {path} is {kind}, not a text file; replace it with a file of "
                        f"{LIST_FORMAT}")
    if not path.is_file():
        raise DataError(f"image list {path} not found; a folder dataset needs train.txt and "
                        f"test.txt there, {LIST_FORMAT}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read image list {path} ({error}); it must be UTF-8 text, {LIST_FORMAT}")
    names, labels = [], []
    for number, line in enumerate(lines, 1):
        parts = line.strip().rsplit(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{path}, line {number}: expected {LIST_FORMAT} with a label of 0 or "
                            f"more, got {line.strip()!r}")
        names.append(parts[0])
        labels.append(int(parts[1]))
    if not names:
        raise DataError(f"image list {path} lists no images; {LIST_FORMAT}")
    return names, np.array(labels, dtype=np.int64)


def read_image(path: Path, list_path: Path) -> np.ndarray:
    """One image file as uint8 RGB of shape (3, 32, 32): squeezed to the models' input size."""
    from PIL import Image

    kind = irregular_kind(path)
    if kind:
        raise DataError(f"image {path} (listed in {list_path}) is {kind}, not an image file; replace "
                        f"it or remove its line")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode at a reduced scale, far faster
            pixels = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise DataError(f"image {path} (listed in {list_path}) not found")
    except Exception as error:  # PIL raises several types for a truncated or foreign file
        raise DataError(f"cannot read image {path} (listed in {list_path}): {error}; replace the "
                        f"file or remove its line")
    return np.asarray(pixels).transpose(2, 0, 1)


def cached_images(cache: Path, key: str) -> np.ndarray | None:
    """The resized images stored in `cache` if it was made from the list with this `key` (and is a
    regular file: anything else is replaced)."""
    if irregular_kind(cache):
        return None
    try:
        with np.load(cache) as stored:
            return stored["images"] if str(stored["key"]) == key else None
    except Exception:  # a missing, outdated or damaged cache is rebuilt
        return None


def store_images(cache: Path, key: str, images: np.ndarray) -> None:
    """Keep the resized images next to the list, so the next run skips decoding; optional."""
    try:
        safe_files.atomic_write(cache, lambda f: np.savez(f, images=images, key=np.array(key)))
    except OSError as error:
        print(f"note: cannot write the image cache {cache} ({error.strerror}); the images will be "
              f"decoded again next time", file=sys.stderr)


@dataclass
class FolderSplit:
    """One split of a folder dataset, with the cache its images belong in and whether they were
    decoded now (so that the cache is to be written, once the dataset is known to be good)."""

    data: ImageSet
    cache: Path
    key: str
    decoded: bool


def read_folder_split(folder: Path, split: str) -> FolderSplit:
    """The images of `<folder>/<split>.txt` with their labels, from the cache or decoded."""
    list_path = folder / f"{split}.txt"
    names, labels = read_image_list(list_path)
    key = hashlib.sha256(list_path.read_bytes()).hexdigest()
    cache = folder / f"{split}_{IMAGE_SIZE}px.npz"
    images = cached_images(cache, key)
    if images is not None:
        return FolderSplit(ImageSet(images, labels), cache, key, decoded=False)
    listed = tqdm(names, desc=f"resizing the {split} images", unit="image", leave=False, disable=None)
    images = np.stack([read_image(folder / name, list_path) for name in listed])
    return FolderSplit(ImageSet(images, labels), cache, key, decoded=True)


def load_folder(data_dir: str | Path, num_classes: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Training images with their given (noisy) labels and the clean test images of a folder dataset.

    `data_dir` holds `train.txt` and `test.txt`, each with one `relative/path label` line per image.
    Images are converted to RGB and resized to 32x32; the result is cached as
    `<split>_32px.npz` next to the list, and rebuilt when the list changes. The caches are written
    only once both splits are read and their labels fit `num_classes` (see `class_count`), so that
    a dataset refused as bad input leaves the folder as it was.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"--data-dir {folder} is not a folder; a folder dataset needs train.txt and "
                        f"test.txt there, {LIST_FORMAT}")
    train, test = read_folder_split(folder, "train"), read_folder_split(folder, "test")
    class_count(train.data, test.data, num_classes)
    for split in (train, test):
        if split.decoded:
            store_images(split.cache, split.key, split.data.images)
    return train.data, test.data


def load_dataset(data_dir: str | Path, dataset: str,
                 num_classes: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Training and test sets of a CIFAR variant or of a folder dataset (whose labels are checked
    against `num_classes` before its caches are written)."""
    return load_folder(data_dir, num_classes) if dataset == FOLDER else load_cifar(data_dir, dataset)


def class_count(train: ImageSet, test: ImageSet, num_classes: int | None) -> int:
    """The number of classes: `num_classes` checked against the labels, or the largest label + 1."""
    largest = int(max(train.labels.max(), test.labels.max()))
    if num_classes is None:
        num_classes = largest + 1
    if largest >= num_classes:
        raise DataError(f"the labels go up to {largest}, but there are {num_classes} classes; "
                        f"set --num_classes to {largest + 1} or more")
    if num_classes < 2:
        raise DataError(f"the labels hold a single class ({largest}); a classifier needs two or more")
    return num_classes
