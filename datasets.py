"""The data of a run, the entry point of the data layer: datasets, the training subset with its noisy
labels, the unlabeled probe set and the noisy hold-out set, and the two data paths that batch them.

Datasets: CIFAR-10 and CIFAR-100 in their official python format, or a folder of images with label
lists (real noisy data such as Clothing1M, whose ground truth is unknown). How labels are corrupted
is in `label_noise` (symmetric, asymmetric, CIFAR-10N); batching and augmentation, on the device or
in a DataLoader, are in `batching`.

Everything random here is drawn from the run's named streams (`streams.Stream`), so the subset, the
noise and the probe labels repeat exactly for the same seed.
"""
from __future__ import annotations

import hashlib
import pickle
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import records
from label_noise import (CIFAR10N_KEYS, GIVEN, NOISE_TYPES, SYNTHETIC_NOISE, DataError, LabelNoise,
                         asymmetric_noise, class_flips, human_labels, symmetric_noise)
from streams import Stream, numpy_rng
from susceptibility import random_labels

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


class BatchUnpickler(pickle.Unpickler):
    """Unpickles the official CIFAR batches (dictionaries of strings, lists and numpy arrays) and
    refuses every other global, so that a crafted batch file cannot run code when it is read."""

    # Array reconstruction under numpy 1 and 2 names, and the bytes of protocol-2 pickles of Python 3.
    ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                     ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                     ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ARRAY_GLOBALS:
            raise ForbiddenObject(f"{module}.{name}")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def read_batch(path: Path, label_key: str) -> ImageSet:
    """Read one pickled batch of the official python format, or say which file is broken."""
    try:
        with open(path, "rb") as f:
            batch = BatchUnpickler(f, encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        images = data.reshape(len(data), 3, IMAGE_SIZE, IMAGE_SIZE)
    except ForbiddenObject as error:
        raise DataError(f"CIFAR batch {path} refers to {error}, which an official batch never holds; "
                        f"it was not loaded, since it could run code. Replace it from the official archive")
    except Exception as error:  # any unpickling or shape failure means the same thing to the user
        raise DataError(f"cannot read CIFAR batch {path} ({type(error).__name__}: {error}); "
                        f"the file is corrupt or truncated, replace it from the official archive")
    if len(images) != len(labels):
        raise DataError(f"CIFAR batch {path} has {len(images)} images but {len(labels)} labels; "
                        f"replace it from the official archive")
    return ImageSet(images, labels)


def read_batches(folder: Path, names: tuple[str, ...], label_key: str) -> ImageSet:
    """Concatenate whichever of the named batches exist in `folder` (a subset may hold fewer)."""
    present = [folder / name for name in names if (folder / name).exists()]
    if not present:
        raise DataError(f"no batch files ({', '.join(names)}) in {folder}; "
                        f"extract the official archive there")
    parts = [read_batch(path, label_key) for path in present]
    return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def download(source: CifarSource, data_dir: Path) -> None:
    """Fetch and extract the official archive, verifying its MD5 checksum."""
    from torchvision.datasets.utils import download_url

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        download_url(source.url, str(data_dir), source.archive, source.md5)
        archive = data_dir / source.archive
        if not archive.exists():
            raise OSError("checksum mismatch")
        with tarfile.open(archive) as tar:
            tar.extractall(data_dir, filter="data")
    except Exception as error:
        raise DataError(
            f"{source.folder} not found in {data_dir} and the download failed ({error}); "
            f"place {source.archive} from {source.url} in {data_dir} and extract it there")


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
    train = read_batches(folder, source.train_files, source.label_key)
    test = read_batches(folder, source.test_files, source.label_key)
    return train, test


# --------------------------------------------------------------------------------------------------
# A folder of images with label lists (real noisy data, ground truth unknown)

FOLDER = "folder"
DATASETS = (*CIFAR, FOLDER)
LIST_FORMAT = "one `relative/path/to/image.jpg <label>` per line"


def read_image_list(path: Path) -> tuple[list[str], np.ndarray]:
    """Image paths (relative to the list's folder) and integer labels of one list file."""
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
    """The resized images stored in `cache` if it was made from the list with this `key`."""
    try:
        with np.load(cache) as stored:
            return stored["images"] if str(stored["key"]) == key else None
    except Exception:  # a missing, outdated or damaged cache is rebuilt
        return None


def store_images(cache: Path, key: str, images: np.ndarray) -> None:
    """Keep the resized images next to the list, so the next run skips decoding; optional."""
    try:
        records.atomic_write(cache, lambda f: np.savez(f, images=images, key=np.array(key)))
    except OSError as error:
        print(f"note: cannot write the image cache {cache} ({error.strerror}); the images will be "
              f"decoded again next time", file=sys.stderr)


def read_folder_split(folder: Path, split: str) -> ImageSet:
    """The images of `<folder>/<split>.txt` with their labels, decoded once and then cached."""
    list_path = folder / f"{split}.txt"
    names, labels = read_image_list(list_path)
    key = hashlib.sha256(list_path.read_bytes()).hexdigest()
    cache = folder / f"{split}_{IMAGE_SIZE}px.npz"
    images = cached_images(cache, key)
    if images is None:
        listed = tqdm(names, desc=f"resizing the {split} images", unit="image", leave=False, disable=None)
        images = np.stack([read_image(folder / name, list_path) for name in listed])
        store_images(cache, key, images)
    return ImageSet(images, labels)


def load_folder(data_dir: str | Path) -> tuple[ImageSet, ImageSet]:
    """Training images with their given (noisy) labels and the clean test images of a folder dataset.

    `data_dir` holds `train.txt` and `test.txt`, each with one `relative/path label` line per image.
    Images are converted to RGB and resized to 32x32; the result is cached as
    `<split>_32px.npz` next to the list, and rebuilt when the list changes.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"--data-dir {folder} is not a folder; a folder dataset needs train.txt and "
                        f"test.txt there, {LIST_FORMAT}")
    return read_folder_split(folder, "train"), read_folder_split(folder, "test")


def load_dataset(data_dir: str | Path, dataset: str) -> tuple[ImageSet, ImageSet]:
    """Training and test sets of a CIFAR variant or of a folder dataset."""
    return load_folder(data_dir) if dataset == FOLDER else load_cifar(data_dir, dataset)


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


# --------------------------------------------------------------------------------------------------
# Subset, label noise and the probe set


def draw_rows(pool: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` rows of `pool` drawn at random without replacement, and the other rows; both in
    the pool's order."""
    if count == len(pool):
        return pool, pool[:0]
    chosen = np.zeros(len(pool), dtype=bool)
    chosen[rng.choice(len(pool), count, replace=False)] = True
    return pool[chosen], pool[~chosen]


def choose_subset(available: int | np.ndarray, numsamples: int | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a random training subset of `numsamples` images (sorted) and of the rest.

    `available` is the number of training images, or the sorted indices of those to draw from.
    """
    pool = np.arange(available) if np.isscalar(available) else np.asarray(available)
    if numsamples is None:
        numsamples = len(pool)
    if not 1 <= numsamples <= len(pool):
        raise DataError(f"--numsamples {numsamples} is out of range: the training set has "
                        f"{len(pool)} images, choose 1 to {len(pool)}")
    return draw_rows(pool, numsamples, rng)




def assign_labels(train: ImageSet, index: np.ndarray, noise: LabelNoise, num_classes: int,
                  seed: int, *stream: str) -> np.ndarray:
    """The noisy labels of the training images at `index`, as the noise process gives them.

    The training labels draw from the streams `noise` and `asymmetric-noise`; other image sets
    (the noisy hold-out set) name a `stream` of their own, so they never shift those draws.
    """
    true_labels = train.labels[index]
    if noise.type == "symmetric":
        return symmetric_noise(true_labels, noise.corrupt_prob, num_classes,
                               numpy_rng(seed, Stream.NOISE, *stream))
    if noise.type == "asymmetric":
        return asymmetric_noise(true_labels, noise.corrupt_prob, class_flips(num_classes),
                                numpy_rng(seed, Stream.ASYMMETRIC_NOISE, *stream))
    if noise.type == GIVEN:
        return true_labels.copy()
    return human_labels(noise.file, noise.type, train.labels)[index]


@dataclass
class NoisyHoldout:
    """Training images kept out of training, labelled by the training labels' noise process.

    Their accuracy is a validation signal that needs no clean label (Chen et al., AAAI 2021).
    """

    index: np.ndarray           # rows of the dataset's training images
    labels: np.ndarray          # noisy labels, drawn like the training labels
    true_labels: np.ndarray     # ground truth (the given labels where it is unknown)
    source: str                 # where the images come from, for the run record

    @classmethod
    def empty(cls) -> "NoisyHoldout":
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, none, "none")

    def summary(self, ground_truth: bool) -> dict:
        """Size, source and, where the truth is known, the fraction of wrong labels."""
        wrong = float((self.labels != self.true_labels).mean()) if ground_truth and len(self) else None
        return {"size": len(self), "source": self.source, "fraction_wrong": wrong}

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class NoisyData:
    """The run's data on the host: training images with assigned and true labels, probe, test."""

    images: np.ndarray          # all training images of the dataset, uint8 (N, 3, 32, 32)
    train_index: np.ndarray     # rows of `images` the network trains on
    assigned_labels: np.ndarray  # label trained on, per row of train_index
    true_labels: np.ndarray     # ground truth, per row of train_index (the assigned label if unknown)
    probe_index: np.ndarray     # rows of `images` that form the unlabeled probe set
    probe_labels: np.ndarray    # random labels of the probe set, fixed for the run
    test: ImageSet
    num_classes: int
    noise: LabelNoise = field(default_factory=LabelNoise)
    holdout: NoisyHoldout = field(default_factory=lambda: NoisyHoldout.empty())

    def noise_summary(self) -> dict:
        """The noise of the training labels for the run record and, where the truth is known, how
        many labels are wrong."""
        summary = {"type": self.noise.type, "corrupt_prob": self.noise.corrupt_prob,
                   "noise_file": self.noise.file, "ground_truth": self.noise.ground_truth,
                   "labels_changed": None, "fraction_wrong": None}
        if self.noise.ground_truth:
            changed = int((self.assigned_labels != self.true_labels).sum())
            summary.update(labels_changed=changed, fraction_wrong=changed / len(self.true_labels))
        return summary


def split_training_images(available: int, numsamples: int | None, holdout_size: int,
                          noise: LabelNoise, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The training subset, the noisy hold-out images and the images outside both, and where the
    hold-out images come from.

    The hold-out set comes from outside the `numsamples` subset, so the training set never shrinks
    for it (and the subset is drawn exactly as without it). A folder dataset, whose labels are all
    it has, sets the hold-out images aside first and draws the subset from the rest.
    """
    if noise.type == GIVEN and holdout_size:
        if holdout_size >= available:
            raise DataError(f"--noisy-holdout {holdout_size} leaves none of the {available} training "
                            f"images to train on; lower it")
        holdout, rest = draw_rows(np.arange(available), holdout_size, numpy_rng(seed, Stream.NOISY_HOLDOUT))
        train_index, outside = choose_subset(rest, numsamples, numpy_rng(seed, Stream.SUBSET))
        return train_index, holdout, outside, "held out of the training images"
    train_index, outside = choose_subset(available, numsamples, numpy_rng(seed, Stream.SUBSET))
    if holdout_size > len(outside):
        raise DataError(f"--noisy-holdout {holdout_size} needs that many training images outside the "
                        f"--numsamples subset, but {len(outside)} are left; lower --noisy-holdout or "
                        f"set --numsamples to at most {available - holdout_size}")
    holdout, outside = draw_rows(outside, holdout_size, numpy_rng(seed, Stream.NOISY_HOLDOUT))
    return train_index, holdout, outside, "training images outside the training subset"


def make_noisy_data(train: ImageSet, test: ImageSet, *, num_classes: int, numsamples: int | None,
                    corrupt_prob: float, probe_source: str, seed: int, noise_type: str = "symmetric",
                    noise_file: str | Path | None = None, noisy_holdout: int = 0) -> NoisyData:
    """Draw the subset, the noisy labels, the probe set and the noisy hold-out set from the seed.

    `noise_type` is one of `NOISE_TYPES` or `GIVEN`; `corrupt_prob` applies to the synthetic types,
    `noise_file` (a CIFAR-10N label file) to the cifar10n types. `noisy_holdout` images, disjoint
    from the training subset and the probe set, get labels from the same noise process.
    """
    if noise_type not in (*NOISE_TYPES, GIVEN):
        raise ValueError(f"unknown noise type {noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
    noise = LabelNoise(noise_type, corrupt_prob if noise_type in SYNTHETIC_NOISE else None,
                       str(noise_file) if noise_type in CIFAR10N_KEYS else None)
    train_index, holdout_index, outside, holdout_source = split_training_images(
        len(train), numsamples, noisy_holdout, noise, seed)
    true_labels = train.labels[train_index]
    assigned = assign_labels(train, train_index, noise, num_classes, seed)
    holdout = NoisyHoldout(holdout_index, assign_labels(train, holdout_index, noise, num_classes, seed,
                                                        Stream.NOISY_HOLDOUT),
                           train.labels[holdout_index], holdout_source if noisy_holdout else "none")
    if probe_source == "heldout":
        if len(outside) == 0:
            raise DataError("--probe-source heldout needs training images outside the subset and the "
                            f"noisy hold-out set; set --numsamples below {len(train) - noisy_holdout}")
        probe_index = outside
    else:
        probe_index = train_index
    probe_labels = random_labels(len(probe_index), num_classes, seed)
    return NoisyData(train.images, train_index, assigned, true_labels, probe_index, probe_labels,
                     test, num_classes, noise, holdout)
