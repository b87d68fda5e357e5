"""Batches for training, the probe and the test pass, with the reference augmentation.

Two data paths: `DeviceBatches` keeps the whole uint8 dataset on the compute device and crops,
flips and normalizes there, batch-vectorized; `LoaderBatches` is the reference's torch DataLoader
with PIL transforms in worker processes, for data too large for the device. Both draw their random
numbers from the generators they are given, so a run's batches follow from its seed. What both
share (labels, probe sets, test and hold-out passes) is their base, `Batches`.
"""
from __future__ import annotations

import functools
import signal
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from datasets import IMAGE_SIZE
from runner.noisy_data import NoisyData, ProbeSet

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4  # zero padding of the random crop, in pixels


def byte_normalization_table() -> torch.Tensor:
    """The normalized float32 value of every byte in each channel, shape (3, 256), computed on the CPU
    as the PIL path computes it (`ToTensor`, then `Normalize`): v / 255 - mean, then / std, each step
    rounded to float32."""
    unit = torch.arange(256, dtype=torch.float32).div(255)
    return unit.sub(torch.tensor(MEAN).view(3, 1)).div(torch.tensor(STD).view(3, 1))


@functools.cache
def normalization_table(device: torch.device) -> torch.Tensor:
    """`byte_normalization_table` on `device`, copied there once. Looking values up in it gives the
    same bits on every device, where computing them would not: a CUDA kernel divides by a scalar by
    multiplying with its reciprocal, one bit off the CPU's quotient for about half the bytes."""
    return byte_normalization_table().to(device)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W) to float32, scaled to [0, 1] and normalized with the reference
    constants: each pixel's value looked up in its channel's row of `normalization_table`."""
    table = normalization_table(images.device)
    channels = torch.arange(table.shape[0], device=images.device).view(1, -1, 1, 1)
    return table[channels, images.long()]


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
    """Normalized augmented images with the labels trained on, the true labels, and the images'
    positions in the training subset (for per-sample bookkeeping)."""

    images: torch.Tensor
    assigned: torch.Tensor
    true: torch.Tensor
    index: torch.Tensor


class DeviceProbeSet:
    """An unlabeled probe set kept on the device: rows of a device-resident image tensor with their
    fixed random labels, augmented there batch by batch."""

    def __init__(self, images: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.rows, self.probe_labels, self.batch_size = images, rows, labels, batch_size

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented batch of the probe set with its fixed random labels, freshly shuffled."""
        pick = torch.randperm(len(self.rows), generator=generator, device=self.images.device)[:self.batch_size]
        images = random_augment(self.images[self.rows[pick]], generator)
        return normalize(images), self.probe_labels[pick]


class Batches:
    """What both data paths share: the labels on the device, the probe sets (the one that defines ζ
    and the extra ones, by source), the test and hold-out passes and the batch count of an epoch.

    A data path says how it holds images for evaluation (`evaluation_images`) and for a probe
    (`probe_set`), and how it makes training and evaluation batches of them.
    """

    def __init__(self, data: NoisyData, device: torch.device, batch_size: int, eval_batch_size: int):
        self.device = device
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.train_size = len(data.train_index)
        self.assigned = self.device_tensor(data.assigned_labels)
        self.true = self.device_tensor(data.true_labels)
        self.probe = self.probe_set(data.probe)
        self.extra_probes = {source: self.probe_set(probe) for source, probe in data.extra_probes.items()}
        self.test_images = self.evaluation_images(data.test.images)
        self.test_labels = self.device_tensor(data.test.labels)
        self.holdout_images = self.evaluation_images(data.images[data.holdout.index])
        self.holdout_labels = self.device_tensor(data.holdout.labels)

    def device_tensor(self, array: np.ndarray) -> torch.Tensor:
        """A host array as a tensor on the compute device."""
        return torch.as_tensor(array).to(self.device)

    def probe_set(self, probe: ProbeSet) -> DeviceProbeSet | HostProbeSet:
        """The data path's batches of one probe set."""
        raise NotImplementedError

    def evaluation_images(self, images: np.ndarray) -> torch.Tensor | PilTransformSet:
        """Images as the data path's `evaluation_batches` reads them."""
        raise NotImplementedError

    def evaluation_batches(self, images: torch.Tensor | PilTransformSet,
                           labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Images in order, normalized only, with their labels, in large evaluation batches."""
        raise NotImplementedError

    def train_batches(self, generator: torch.Generator) -> Iterator[TrainBatch]:
        """One shuffled, augmented pass over the training subset, in the order `generator` draws."""
        raise NotImplementedError

    @property
    def probe_labels(self) -> torch.Tensor:
        """The fixed random labels of the probe set that defines ζ."""
        return self.probe.probe_labels

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented batch of the probe set that defines ζ, with its random labels."""
        return self.probe.probe_batch(generator)

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test set in order, normalized only, in large evaluation batches."""
        return self.evaluation_batches(self.test_images, self.test_labels)

    def holdout_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The noisy hold-out set with its noisy labels, like the test set."""
        return self.evaluation_batches(self.holdout_images, self.holdout_labels)

    def train_batch_count(self) -> int:
        """The number of training batches of one epoch."""
        return len(batch_sizes(self.train_size, self.batch_size))


class DeviceBatches(Batches):
    """Keeps the whole uint8 dataset on the compute device and augments there, batch-vectorized."""

    def __init__(self, data: NoisyData, device: torch.device, batch_size: int, eval_batch_size: int):
        self.device = device
        # The dataset's rows that are kept on the device: the training subset and every probe set.
        self.used = functools.reduce(np.union1d, [data.train_index, data.probe.index,
                                                  *(probe.index for probe in data.extra_probes.values())])
        self.images = self.device_tensor(data.images[self.used])
        self.train_rows = self.device_tensor(np.searchsorted(self.used, data.train_index))
        super().__init__(data, device, batch_size, eval_batch_size)

    def probe_set(self, probe: ProbeSet) -> DeviceProbeSet:
        """The probe set's rows of the device-resident images, with its labels."""
        rows = self.device_tensor(np.searchsorted(self.used, probe.index))
        return DeviceProbeSet(self.images, rows, self.device_tensor(probe.labels), self.batch_size)

    def evaluation_images(self, images: np.ndarray) -> torch.Tensor:
        """The uint8 images on the device."""
        return self.device_tensor(images)

    def train_batches(self, generator: torch.Generator) -> Iterator[TrainBatch]:
        """One shuffled, augmented pass over the training subset."""
        order = torch.randperm(len(self.train_rows), generator=generator, device=self.device)
        for batch in batch_slices(order, self.batch_size):
            images = random_augment(self.images[self.train_rows[batch]], generator)
            yield TrainBatch(normalize(images), self.assigned[batch], self.true[batch], batch)

    def evaluation_batches(self, images: torch.Tensor, labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Images in order, normalized only, with their labels, in large evaluation batches."""
        for start in range(0, len(labels), self.eval_batch_size):
            stop = start + self.eval_batch_size
            yield normalize(images[start:stop]), labels[start:stop]


def batch_sizes(count: int, batch_size: int) -> list[int]:
    """Sizes of the training batches of one epoch: full batches, then the remainder, as in the
    reference's DataLoader. A remainder of one image trains too: every BatchNorm layer here
    normalizes over the spatial positions as well as the batch."""
    sizes = [batch_size] * (count // batch_size)
    if count % batch_size:
        sizes.append(count % batch_size)
    return sizes


def batch_slices(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Split a permutation into consecutive training batches (see `batch_sizes`)."""
    start = 0
    for size in batch_sizes(len(order), batch_size):
        yield order[start:start + size]
        start += size


class PilTransformSet(torch.utils.data.Dataset):
    """Images of a uint8 array through torchvision PIL transforms, returned with their position.

    A position may come as (position, seed): the worker process reading it first seeds torch's
    random stream, which the transforms draw from (see `LoaderBatches.train_batches`).
    """

    def __init__(self, images: np.ndarray, transform):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        if isinstance(position, tuple):
            position, seed = position
            torch.manual_seed(seed)
        return self.transform(Image.fromarray(self.images[position].transpose(1, 2, 0))), position


class PassBatches:
    """The batch sampler of a DataLoader kept from pass to pass: each pass yields the batches set for it."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def ignore_stop_signals(worker: int) -> None:
    """Leave Ctrl-C and SIGTERM, which reach the whole process group, to the main process, which ends
    the run cleanly and then the workers; a worker killed by them would end it with an error."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


class HostProbeSet:
    """An unlabeled probe set kept in host memory, for the DataLoader path: each batch is made in this
    process with crops and flips drawn from the epoch's generator (not from the global random
    state, which a resumed run does not share), the pixels the PIL transforms give for those crops
    and flips, and then moved to the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device):
        self.images, self.probe_labels, self.batch_size, self.device = images, labels, batch_size, device

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randperm(len(self.images), generator=generator)[:self.batch_size]
        images = normalize(random_augment(self.images[pick], generator))
        return images.to(self.device), self.probe_labels[pick.to(self.device)]


class LoaderBatches(Batches):
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
        self.evaluation_transform = transforms.Compose(normalize_pil)
        self.images = data.images
        self.workers = workers
        self.loaders: dict[PilTransformSet, torch.utils.data.DataLoader] = {}
        self.train_set = PilTransformSet(data.images[data.train_index], augment)
        super().__init__(data, device, batch_size, eval_batch_size)

    def probe_set(self, probe: ProbeSet) -> HostProbeSet:
        """The probe set's images in host memory, with its labels on the device."""
        return HostProbeSet(torch.as_tensor(self.images[probe.index]), self.device_tensor(probe.labels),
                            self.batch_size, self.device)

    def evaluation_images(self, images: np.ndarray) -> PilTransformSet:
        """The images through the normalizing PIL transforms."""
        return PilTransformSet(images, self.evaluation_transform)

    def loader(self, dataset: PilTransformSet) -> torch.utils.data.DataLoader:
        """The DataLoader of `dataset`, made once: its worker processes serve every pass (pinning
        batches in memory for asynchronous copies to a GPU). Its own generator keeps the seed it
        draws for workers from the global random stream; `passes` reseeds them instead."""
        if dataset not in self.loaders:
            self.loaders[dataset] = torch.utils.data.DataLoader(
                dataset, batch_sampler=PassBatches(), num_workers=self.workers, generator=torch.Generator(),
                persistent_workers=self.workers > 0, worker_init_fn=ignore_stop_signals,
                pin_memory=self.device.type == "cuda")
        return self.loaders[dataset]

    def passes(self, dataset: PilTransformSet, batches: list[list[int]], base_seed: int | None = None):
        """One pass of the DataLoader of `dataset` over `batches`. With `base_seed`, worker k's
        random stream is seeded with base_seed + k before its first batch, as a DataLoader seeds
        the workers it starts; batches go to the workers in turn, so worker k's first batch is batch k."""
        loader = self.loader(dataset)
        if base_seed is not None:
            batches = [[(batch[0], base_seed + k), *batch[1:]] if k < self.workers else batch
                       for k, batch in enumerate(batches)]
        loader.batch_sampler.batches = batches
        return loader

    def train_batches(self, generator: torch.Generator) -> Iterator[TrainBatch]:
        """One shuffled pass; the generator fixes the order and the seeds of the workers'
        augmentation (drawn as a DataLoader given the generator would draw them)."""
        order = torch.randperm(len(self.train_set), generator=generator)
        batches = [b.tolist() for b in batch_slices(order, self.batch_size)]
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator)) if self.workers else None
        for batch in self.passes(self.train_set, batches, base_seed):
            images, positions = self.on_device(*batch)
            yield TrainBatch(images, self.assigned[positions], self.true[positions], positions)

    def on_device(self, images: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the loader on the compute device, copied without making the host wait (on a
        GPU the loader gives it in pinned memory, from which copies run asynchronously)."""
        return images.to(self.device, non_blocking=True), positions.to(self.device, non_blocking=True)

    def evaluation_batches(self, dataset: PilTransformSet, labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A dataset's images in order, normalized only, with their labels."""
        order = torch.arange(len(dataset))
        batches = [b.tolist() for b in order.split(self.eval_batch_size)]
        for batch in self.passes(dataset, batches):
            images, positions = self.on_device(*batch)
            yield images, labels[positions]
