"""CIFAR data with controlled label noise, the unlabeled probe set, and two ways to feed batches.

Everything random here is drawn from streams derived from one `--seed` (see `derive_seed`), so the
subset, the noise, the probe labels, shuffling and augmentation repeat exactly for the same seed.
"""
from __future__ import annotations

import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4  # zero padding of the random crop, in pixels
IMAGE_SIZE = 32


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


class DataError(Exception):
    """A data problem the user can fix; its message is one line saying what and how."""


# --------------------------------------------------------------------------------------------------
# Seeds


def derive_seed(seed: int, *stream: str | int) -> int:
    """A 63-bit seed for the named random stream of a run, independent of every other stream.

    Streams are keyed by name (and epoch), so adding or skipping one (the probe, say) never shifts
    the numbers another one draws.
    """
    key = [zlib.crc32(str(part).encode()) for part in stream]
    state = np.random.SeedSequence([seed, *key]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def numpy_rng(seed: int, *stream: str | int) -> np.random.Generator:
    """A numpy generator for one named stream of the run."""
    return np.random.default_rng(derive_seed(seed, *stream))


def torch_generator(seed: int, device: torch.device, *stream: str | int) -> torch.Generator:
    """A torch generator on `device` for one named stream of the run."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *stream))


# --------------------------------------------------------------------------------------------------
# Reading the official python batches


@dataclass
class ImageSet:
    """uint8 images of shape (n, 3, 32, 32) with their int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_batch(path: Path, label_key: str) -> ImageSet:
    """Read one pickled batch of the official python format, or say which file is broken."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        images = data.reshape(len(data), 3, IMAGE_SIZE, IMAGE_SIZE)
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


def load_cifar(data_dir: str | Path, dataset: str = "cifar10") -> tuple[ImageSet, ImageSet]:
    """Training and test sets of `dataset` from `data_dir`, downloaded only if the folder is missing."""
    source = CIFAR[dataset]
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is a file, not a folder; give the folder that holds "
                        f"{source.folder}")
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
# Subset, label noise and the probe set


def choose_subset(available: int, numsamples: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a random training subset of `numsamples` images (sorted) and of the rest."""
    if numsamples is None:
        numsamples = available
    if not 2 <= numsamples <= available:
        raise DataError(f"--numsamples {numsamples} is out of range: the training set has "
                        f"{available} images, choose 2 to {available} (BatchNorm needs two)")
    if numsamples == available:
        return np.arange(available), np.arange(0)
    chosen = np.zeros(available, dtype=bool)
    chosen[rng.choice(available, numsamples, replace=False)] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def symmetric_noise(labels: np.ndarray, corrupt_prob: float, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Replace each label, with probability `corrupt_prob`, by one drawn uniformly from all classes.

    The draw may return the true label, so the expected wrong fraction is p * (1 - 1/c).
    """
    replace = rng.random(len(labels)) < corrupt_prob
    noisy = labels.copy()
    noisy[replace] = rng.integers(0, num_classes, int(replace.sum()))
    return noisy


def random_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Labels drawn uniformly at random once, for the unlabeled probe set."""
    return rng.integers(0, num_classes, count)


@dataclass
class NoisyData:
    """The run's data on the host: training images with assigned and true labels, probe, test."""

    images: np.ndarray          # all training images of the dataset, uint8 (N, 3, 32, 32)
    train_index: np.ndarray     # rows of `images` the network trains on
    assigned_labels: np.ndarray  # label trained on, per row of train_index
    true_labels: np.ndarray     # ground truth, per row of train_index
    probe_index: np.ndarray     # rows of `images` that form the unlabeled probe set
    probe_labels: np.ndarray    # random labels of the probe set, fixed for the run
    test: ImageSet
    num_classes: int

    def noise_summary(self) -> dict:
        """How many training labels differ from the truth, for the run record."""
        changed = int((self.assigned_labels != self.true_labels).sum())
        return {"labels_changed": changed, "fraction_wrong": changed / len(self.true_labels)}


def make_noisy_data(train: ImageSet, test: ImageSet, *, num_classes: int, numsamples: int | None,
                    corrupt_prob: float, probe_source: str, seed: int) -> NoisyData:
    """Draw the subset, the noisy labels and the probe set of a run from its seed."""
    train_index, heldout = choose_subset(len(train), numsamples, numpy_rng(seed, "subset"))
    true_labels = train.labels[train_index]
    assigned = symmetric_noise(true_labels, corrupt_prob, num_classes, numpy_rng(seed, "noise"))
    if probe_source == "heldout":
        if len(heldout) == 0:
            raise DataError("--probe-source heldout needs training images outside the subset; "
                            f"set --numsamples below {len(train)}")
        probe_index = heldout
    else:
        probe_index = train_index
    probe_labels = random_labels(len(probe_index), num_classes, numpy_rng(seed, "probe-labels"))
    return NoisyData(train.images, train_index, assigned, true_labels, probe_index, probe_labels,
                     test, num_classes)


# --------------------------------------------------------------------------------------------------
# Augmentation and batches


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float, scaled to [0, 1] and normalized with the reference constants."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop each zero-padded image at its (row, column) offset in [0, 2*PAD] and mirror where flips.

    One gather over the batch does both, with no per-image Python.
    """
    n, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    pixels = torch.arange(size, device=images.device)
    rows = offsets[:, 0, None] + pixels
    cols = offsets[:, 1, None] + torch.where(flips[:, None], size - 1 - pixels, pixels)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference training augmentation on a uint8 batch: random 32x32 crop of the 4-pixel zero
    padded image (81 offsets, uniform) and a horizontal flip with probability 1/2."""
    n, device = images.shape[0], images.device
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator, device=device)
    flips = torch.rand(n, generator=generator, device=device) < 0.5
    return crop_and_flip(images, offsets, flips)


@dataclass
class TrainBatch:
    """Normalized augmented images with the labels trained on and the true labels."""

    images: torch.Tensor
    assigned: torch.Tensor
    true: torch.Tensor


class DeviceBatches:
    """Keeps the whole uint8 dataset on the compute device and augments there, batch-vectorized."""

    def __init__(self, data: NoisyData, device: torch.device, batch_size: int, eval_batch_size: int):
        as_tensor = lambda a: torch.as_tensor(a).to(device)
        self.device = device
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        used = np.union1d(data.train_index, data.probe_index)
        rows = np.searchsorted(used, data.train_index), np.searchsorted(used, data.probe_index)
        self.images = as_tensor(data.images[used])
        self.train_rows, self.probe_rows = as_tensor(rows[0]), as_tensor(rows[1])
        self.assigned = as_tensor(data.assigned_labels)
        self.true = as_tensor(data.true_labels)
        self.probe_labels = as_tensor(data.probe_labels)
        self.test_images = as_tensor(data.test.images)
        self.test_labels = as_tensor(data.test.labels)

    def train_batches(self, generator: torch.Generator) -> Iterator[TrainBatch]:
        """One shuffled, augmented pass over the training subset."""
        order = torch.randperm(len(self.train_rows), generator=generator, device=self.device)
        for batch in batch_slices(order, self.batch_size):
            images = random_augment(self.images[self.train_rows[batch]], generator)
            yield TrainBatch(normalize(images), self.assigned[batch], self.true[batch])

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented batch of the probe set with its fixed random labels, freshly shuffled."""
        pick = torch.randperm(len(self.probe_rows), generator=generator, device=self.device)[:self.batch_size]
        images = random_augment(self.images[self.probe_rows[pick]], generator)
        return normalize(images), self.probe_labels[pick]

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test set in order, normalized only, in large evaluation batches."""
        for start in range(0, len(self.test_labels), self.eval_batch_size):
            stop = start + self.eval_batch_size
            yield normalize(self.test_images[start:stop]), self.test_labels[start:stop]

    def train_batch_count(self) -> int:
        return len(batch_sizes(len(self.train_rows), self.batch_size))


def batch_sizes(count: int, batch_size: int) -> list[int]:
    """Sizes of the training batches of one epoch: full batches, then the remainder.

    A remainder of a single image is dropped, since BatchNorm cannot normalize one sample.
    """
    sizes = [batch_size] * (count // batch_size)
    if count % batch_size > 1:
        sizes.append(count % batch_size)
    return sizes


def batch_slices(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Split a permutation into consecutive training batches (see `batch_sizes`)."""
    start = 0
    for size in batch_sizes(len(order), batch_size):
        yield order[start:start + size]
        start += size


class PilTransformSet(torch.utils.data.Dataset):
    """Images of a uint8 array through torchvision PIL transforms, returned with their position."""

    def __init__(self, images: np.ndarray, transform):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[position].transpose(1, 2, 0))), position


class LoaderBatches:
    """The reference data path: a torch DataLoader with PIL transforms in worker processes.

    Slower than `DeviceBatches`, but it never holds the dataset on the device. Labels stay on the
    device and are looked up by the positions the loader returns.
    """

    def __init__(self, data: NoisyData, device: torch.device, batch_size: int, eval_batch_size: int,
                 workers: int):
        from torchvision import transforms

        normalize_pil = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
        augment = transforms.Compose([transforms.RandomCrop(IMAGE_SIZE, padding=PAD),
                                      transforms.RandomHorizontalFlip(), *normalize_pil])
        self.device = device
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.workers = workers
        self.train_set = PilTransformSet(data.images[data.train_index], augment)
        self.probe_set = PilTransformSet(data.images[data.probe_index], augment)
        self.test_set = PilTransformSet(data.test.images, transforms.Compose(normalize_pil))
        self.assigned = torch.as_tensor(data.assigned_labels).to(device)
        self.true = torch.as_tensor(data.true_labels).to(device)
        self.probe_labels = torch.as_tensor(data.probe_labels).to(device)
        self.test_labels = torch.as_tensor(data.test.labels).to(device)

    def loader(self, dataset, batches, generator: torch.Generator | None = None):
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.workers,
                                           generator=generator,
                                           pin_memory=self.device.type == "cuda")

    def train_batches(self, generator: torch.Generator) -> Iterator[TrainBatch]:
        """One shuffled pass; the generator fixes the order and the workers' augmentation seeds."""
        order = torch.randperm(len(self.train_set), generator=generator)
        batches = [b.tolist() for b in batch_slices(order, self.batch_size)]
        for images, positions in self.loader(self.train_set, batches, generator):
            positions = positions.to(self.device)
            yield TrainBatch(images.to(self.device, non_blocking=True), self.assigned[positions],
                             self.true[positions])

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented probe batch, transformed in this process."""
        pick = torch.randperm(len(self.probe_set), generator=generator)[:self.batch_size]
        images = torch.stack([self.probe_set[int(i)][0] for i in pick])
        return images.to(self.device), self.probe_labels[pick.to(self.device)]

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test set in order, normalized only."""
        order = torch.arange(len(self.test_set))
        batches = [b.tolist() for b in order.split(self.eval_batch_size)]
        for images, positions in self.loader(self.test_set, batches):
            yield images.to(self.device, non_blocking=True), self.test_labels[positions.to(self.device)]

    def train_batch_count(self) -> int:
        return len(batch_sizes(len(self.train_set), self.batch_size))
