"""Susceptibility to noisy labels, ζ (Forouzesh, Sedghi & Thiran, ICLR 2023), for any PyTorch loop.

At the start of every epoch the network takes one step of its own optimizer on a batch of unlabeled
images with random labels; r = Φ̃_before − Φ̃_after is how much that single step lowers the
random-label loss. Everything the step changed is then put back, so training is unaffected, and ζ is
the running mean of r over epochs.

    zeta = Susceptibility(unlabeled_images, num_classes=10, batch_size=128, seed=0)
    for epoch in range(epochs):
        r = zeta.measure(model, optimizer)   # before the epoch's training
        ...                                  # train as usual; zeta.zeta is the running ζ

This module holds the metric, its unlabeled-image handling and its state, so that they travel
together into any training loop; with `traceless` (the in-memory restore) and `zeta` (ζ's statistics)
it makes up the `susceptibility` package, which is all that `pip install .` installs.
"""
from __future__ import annotations

import enum
import functools
import math
import operator
import zlib
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from susceptibility.arguments import check_optimizer, model_placement, network_input, state_problem
from susceptibility.traceless import ieee_fp32, own_random_stream, restored_afterwards
from susceptibility.zeta import drop_standard_errors, running_zetas, zeta_standard_errors

STATE_FORMAT = 2  # 1: one loss before and after per epoch; 2: one per batch, several batches per epoch
# The keys of a state of each format.
STATE_KEYS = {1: ("seed", "labels", "phi_before", "phi_after"),
              STATE_FORMAT: ("seed", "labels", "batches_per_epoch", "phi_before", "phi_after")}
SEED_LIMIT = 2 ** 64  # torch seeds its generators with unsigned 64-bit integers


@enum.unique
class ProbeStream(enum.StrEnum):
    """The names of the probe's random streams (see `derive_seed`)."""

    LABELS = "probe-labels"    # the unlabeled set's random labels, drawn once
    BATCH = "probe"            # per epoch: which images, and their augmentation
    DROPOUT = "probe-dropout"  # per epoch: dropout and stochastic depth in the probe step
    MODEL_DEVICE = "probe-model-device"  # per epoch: the model's device's stream while the batch is made


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


def torch_generator(seed: int, device: torch.device, *stream: str | int) -> torch.Generator:
    """A torch generator on `device` for one named stream of the run."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *stream))


def random_labels(count: int, num_classes: int, seed: int) -> np.ndarray:
    """Labels drawn uniformly at random once from the seed, for the unlabeled probe set."""
    return np.random.default_rng(derive_seed(seed, ProbeStream.LABELS)).integers(0, num_classes, count)


# --------------------------------------------------------------------------------------------------
# One probe step, leaving no trace (see `traceless`)


def probe_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, seed: int, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Φ̃ before and after one step of `optimizer` on a random-label batch, leaving no trace.

    The network stays in train mode (BatchNorm uses batch statistics), the step uses the current
    learning rate, momentum and weight decay, and both losses are returned as device tensors so
    the caller decides when to synchronize. With `num_classes`, the labels' class count, a network
    with fewer outputs is refused in one line (and left as it was).
    """
    with restored_afterwards(model, optimizer), own_random_stream(seed, images.device):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        if num_classes is not None and logits.shape[-1] < num_classes:
            raise ValueError(f"the model gives {logits.shape[-1]} class scores, but the probe's random labels "
                             f"are drawn from {num_classes} classes; set num_classes to the model's number "
                             f"of outputs")
        before = F.cross_entropy(logits, labels)
        before.backward()
        optimizer.step()
        with torch.no_grad():
            after = F.cross_entropy(model(images), labels)
    return before.detach(), after


# --------------------------------------------------------------------------------------------------
# The unlabeled set and the per-epoch measurement


class ProbeBatches(Protocol):
    """Where the probe takes its batch: a fresh random batch of the unlabeled set for each epoch's
    generator, with the set's fixed random labels."""

    probe_labels: torch.Tensor

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


@contextmanager
def global_rng_continuing(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Inside the block torch's global CPU RNG continues the stream of the CPU `generator`, and the
    CUDA RNG of `device` is seeded from it: random transforms in there are fixed by the probe's
    seed. The caller's global streams are restored afterwards."""
    state = generator.get_state()
    with own_random_stream(int(torch.randint(2 ** 62, (), generator=generator)), device):
        torch.default_generator.set_state(state)
        yield


def integer(value) -> int | None:
    """`value` as an int if it is an integer of any kind (Python, numpy, torch) but a bool, else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def checked_seed(seed) -> int:
    """The seed as an int; a TypeError for anything but an integer, a ValueError for one that torch
    cannot seed a generator with."""
    value = integer(seed)
    if value is None:
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1, got {seed!r}")
    return value


def first_tensor(item) -> torch.Tensor:
    """The image of a dataset item or loader batch: the item itself, or the first of a tuple."""
    return item[0] if isinstance(item, (tuple, list)) else item


def is_map_dataset(images) -> bool:
    """A torch Dataset with random access and a length, read a batch at a time."""
    return (isinstance(images, torch.utils.data.Dataset)
            and not isinstance(images, torch.utils.data.IterableDataset) and hasattr(images, "__len__"))


def check_shape(batch, what: str, dims: int, shape: str) -> None:
    """Raise one clear line unless `batch` is a tensor with `dims` dimensions."""
    if not torch.is_tensor(batch):
        raise TypeError(f"{what} must be a tensor {shape}, got {type(batch).__name__}")
    if batch.dim() != dims:
        raise ValueError(f"{what} must have shape {shape}, got shape {tuple(batch.shape)}")


def concatenated_batches(batches: Iterable) -> torch.Tensor:
    """All images of an iterable of image batches (or of (images, ...) tuples) as one tensor."""
    parts = [first_tensor(batch) for batch in batches]
    for part in parts:
        check_shape(part, "each batch of images", 4, "(batch, channels, height, width)")
    if not parts:
        raise ValueError("no unlabeled images: the iterable of image batches is empty")
    if len({part.shape[1:] for part in parts}) > 1:
        raise ValueError(f"the image batches differ in image shape: {sorted({tuple(p.shape[1:]) for p in parts})}")
    return torch.cat(parts)


@functools.cache
def unit_table(device: torch.device) -> torch.Tensor:
    """v / 255 in float32 for every byte v, computed on the CPU and copied to `device` once: looked up,
    it gives the CPU's bits on every device (a CUDA kernel divides by a scalar by multiplying with
    its reciprocal, one bit off for about half the bytes)."""
    return torch.arange(256, dtype=torch.float32).div(255).to(device)


class UnlabeledImages:
    """Unlabeled images with labels drawn uniformly at random once from the seed and kept.

    `images` is a tensor (N, channels, height, width), a torch Dataset whose items are images or
    (image, ...) tuples (read `batch_size` items per epoch), or an iterable of image batches such as
    a DataLoader (read once and kept in memory). `augment`, if given, maps a batch as stored to the
    network's input; its random draws, and those of the Dataset's own transforms, come from the
    probe's seeded stream. A batch that is still uint8 then reaches the network scaled to floats in
    [0, 1].
    """

    def __init__(self, images, num_classes: int, batch_size: int, seed: int,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        seed = checked_seed(seed)
        with own_random_stream(seed, torch.device("cpu")):  # reading a dataset may draw random numbers
            self.images = self.readable(images)
        count = len(self.images)
        if count == 0:
            raise ValueError("no unlabeled images: the probe set is empty")
        classes, self.batch_size = integer(num_classes), integer(batch_size)
        if classes is None or classes < 2:
            raise ValueError(f"num_classes must be an integer of at least 2 (random labels need two "
                             f"classes or more), got {num_classes!r}")
        if self.batch_size is None or not 1 <= self.batch_size <= count:
            raise ValueError(f"batch_size must be an integer from 1 to the {count} unlabeled images, "
                             f"got {batch_size!r}; give more images or a smaller batch_size")
        self.augment = augment
        self.num_classes = classes
        self.probe_labels = torch.as_tensor(random_labels(count, classes, seed))

    @staticmethod
    def readable(images):
        """The images as something that can be indexed by position: a tensor or a map Dataset."""
        if torch.is_tensor(images):
            check_shape(images, "images", 4, "(N, channels, height, width)")
            return images
        if is_map_dataset(images):
            if len(images) > 0:
                check_shape(first_tensor(images[0]), "each image of the dataset", 3, "(channels, height, width)")
            return images
        if isinstance(images, Iterable):
            return concatenated_batches(images)
        raise TypeError(f"images must be a tensor, a torch Dataset or an iterable of image batches, "
                        f"got {type(images).__name__}")

    def __len__(self) -> int:
        return len(self.images)

    def probe_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of `batch_size` images without replacement, augmented, with its labels.

        `generator` is a CPU generator; it picks the batch, and the augmentation continues its stream.
        """
        pick = torch.randperm(len(self), generator=generator)[:self.batch_size]
        device = self.images.device if torch.is_tensor(self.images) else torch.device("cpu")
        with global_rng_continuing(generator, device):
            if torch.is_tensor(self.images):
                batch = self.images[pick.to(device)]
            else:
                batch = torch.stack([first_tensor(self.images[i]) for i in pick.tolist()])
            if self.augment is not None:
                batch = self.augment(batch)
        if batch.dtype == torch.uint8:  # images as stored: scaled to floats in [0, 1] for the network
            batch = unit_table(batch.device)[batch.long()]
        return batch, self.probe_labels[pick]


class Susceptibility:
    """ζ for one's own training loop: call `measure(model, optimizer)` once per epoch, before training.

    Set up once from the unlabeled images (see `UnlabeledImages`) with the number of classes, the
    probe's batch size, a seed that fixes the random labels, batches, augmentation and dropout of
    every probe, and an optional augmentation function. Each `measure` costs one forward-backward-
    forward pass on each of `batches_per_epoch` batches (default 1, the paper's) and leaves model,
    buffers, gradients, train/eval modes, optimizer state and the caller's random streams exactly as
    they were. With several batches, each is probed from the same state, r is their mean and
    `standard_error` its uncertainty. r is a small difference of two nearly equal losses, which
    reduced precision changes markedly, so by default the probe computes in IEEE fp32: with
    `full_precision` it runs with autocast switched off, and with `ieee_fp32` its convolutions and
    matrix products run without TF32 (which cuDNN uses for fp32 convolutions by default on NVIDIA
    GPUs since Ampere) or implicit bf16, the caller's settings restored afterwards (see
    `traceless.ieee_fp32`). Either set to False lets the caller's choice reach the probe.
    """

    def __init__(self, images, num_classes: int, *, batch_size: int = 128, seed: int = 0,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 full_precision: bool = True, ieee_fp32: bool = True, batches_per_epoch: int = 1):
        self._setup(UnlabeledImages(images, num_classes, batch_size, seed, augment), seed, torch.device("cpu"),
                    batches_per_epoch, full_precision=full_precision, ieee_fp32=ieee_fp32)

    @classmethod
    def from_probe_batches(cls, batches: ProbeBatches, *, seed: int, generator_device: torch.device,
                           full_precision: bool = True, ieee_fp32: bool = True,
                           batches_per_epoch: int = 1) -> Susceptibility:
        """A probe drawing its batches from `batches.probe_batch(generator)`, where each epoch's
        generator lives on `generator_device`: for a data pipeline that keeps the unlabeled set itself."""
        probe = cls.__new__(cls)
        probe._setup(batches, seed, generator_device, batches_per_epoch, full_precision=full_precision,
                     ieee_fp32=ieee_fp32)
        return probe

    def _setup(self, batches: ProbeBatches, seed: int, generator_device: torch.device, batches_per_epoch: int, *,
               full_precision: bool, ieee_fp32: bool) -> None:
        count = integer(batches_per_epoch)
        if count is None or count < 1:
            raise ValueError(f"batches_per_epoch must be an integer of at least 1, got {batches_per_epoch!r}")
        self.batches = batches
        self.seed = checked_seed(seed)
        self.generator_device = torch.device(generator_device)
        self.full_precision = full_precision
        self.ieee_fp32 = ieee_fp32
        self.batches_per_epoch = count
        # The class count of the random labels, checked against the network's outputs.
        self.num_classes = getattr(batches, "num_classes", None) or int(batches.probe_labels.max()) + 1
        self.batch_phi_before: list[list[float]] = []  # per epoch, the loss before the step on each batch
        self.batch_phi_after: list[list[float]] = []   # and after it
        self.phi_before: list[float] = []  # per epoch, the mean over its batches
        self.phi_after: list[float] = []

    @property
    def epoch(self) -> int:
        """The number of probes taken so far: the epoch the next `measure` belongs to."""
        return len(self.phi_before)

    def streams(self, epoch: int, batch: int) -> tuple[int | str, ...]:
        """The stream key of one batch of an epoch's probe: the epoch alone for the first batch
        (so that one batch per epoch is the paper's probe, drawn as it always was), the epoch and
        the batch number for the others."""
        return (epoch,) if batch == 0 else (epoch, batch)

    def measure(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
        """Probe the network now and return r = Φ̃_before − Φ̃_after (the mean over the epoch's
        batches); call it at the start of each epoch.

        The step is one step of `optimizer` as it stands: its current learning rate (as a scheduler
        set it), momentum or moment estimates and weight decay. Each batch is probed from that same
        state.
        """
        epoch, losses = self.epoch, []
        device, dtype = model_placement(model)
        check_optimizer(optimizer, model)
        with (torch.autocast(device.type, enabled=False) if self.full_precision else nullcontext(),
              ieee_fp32() if self.ieee_fp32 else nullcontext()):
            for batch in range(self.batches_per_epoch):
                key = self.streams(epoch, batch)
                images, labels = self.batch_on_seeded_streams(key, device)
                losses += probe_step(model, optimizer, network_input(images, device, dtype), labels.to(device),
                                     seed=derive_seed(self.seed, ProbeStream.DROPOUT, *key),
                                     num_classes=self.num_classes)
        values = torch.stack(losses).tolist()  # one read from the device per epoch
        self.record(values[0::2], values[1::2])
        return self.phi_before[-1] - self.phi_after[-1]

    def batch_on_seeded_streams(self, key: tuple[int | str, ...], model_device: torch.device
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe batch of stream `key`. Its random draws come from the probe's seed on every device
        involved: the batch's generator, the global streams of the images' device (see
        `UnlabeledImages.probe_batch`) and those of the model's device (an augmentation that moves the
        images there, say), all forked so that the caller's streams continue as if it had not run."""
        with own_random_stream(derive_seed(self.seed, ProbeStream.MODEL_DEVICE, *key), model_device):
            return self.batches.probe_batch(torch_generator(self.seed, self.generator_device, ProbeStream.BATCH, *key))

    def record(self, before: list[float], after: list[float]) -> None:
        """Keep one epoch's losses before and after the step on each batch, and their means."""
        self.batch_phi_before.append(before)
        self.batch_phi_after.append(after)
        self.phi_before.append(sum(before) / len(before))
        self.phi_after.append(sum(after) / len(after))

    def batch_drops(self, epoch: int = -1) -> list[float]:
        """r of each batch of an epoch (default: the latest)."""
        return [b - a for b, a in zip(self.batch_phi_before[epoch], self.batch_phi_after[epoch])]

    @property
    def standard_error(self) -> float:
        """The standard error of the latest r, the mean over its batches: their sample standard
        deviation over √k; NaN with one batch per epoch or before the first probe."""
        return drop_standard_errors([self.batch_drops()])[0] if self.phi_before else math.nan

    def zetas(self, convention: str = "paper") -> list[float]:
        """ζ after each epoch so far: the paper's running mean, or the reference notebook's average."""
        drops = [before - after for before, after in zip(self.phi_before, self.phi_after)]
        return running_zetas(drops, convention).tolist()

    def zeta_standard_errors(self, convention: str = "paper") -> list[float]:
        """The standard error of each ζ of `zetas`, from the spread of r over each epoch's batches
        (NaN with one batch per epoch)."""
        per_epoch = [self.batch_drops(epoch) for epoch in range(self.epoch)]
        return zeta_standard_errors(drop_standard_errors(per_epoch), convention).tolist()

    @property
    def zeta(self) -> float:
        """The current ζ (paper's convention); NaN before the second probe, as epoch 0 is left out."""
        return self.zetas()[-1] if self.phi_before else math.nan

    def state_dict(self) -> dict:
        """The measurements so far with what identifies the probe set, for one's own checkpoint."""
        return {"format": STATE_FORMAT, "seed": self.seed, "labels": self.batches.probe_labels.cpu(),
                "batches_per_epoch": self.batches_per_epoch,
                "phi_before": [list(values) for values in self.batch_phi_before],
                "phi_after": [list(values) for values in self.batch_phi_after]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` (of this version or of the format before batches per epoch,
        which had one): the next `measure` takes the probe of the following epoch."""
        state = state_of_current_format(state)
        labels = self.batches.probe_labels.cpu()
        if state["seed"] != self.seed or not torch.equal(torch.as_tensor(state["labels"]).cpu(), labels):
            raise ValueError(f"this state belongs to another probe set (seed {state['seed']}, "
                             f"{len(state['labels'])} images), not to this one (seed {self.seed}, "
                             f"{len(labels)} images); set up the Susceptibility with the same images and seed")
        if state["batches_per_epoch"] != self.batches_per_epoch:
            raise ValueError(f"this state was measured with {state['batches_per_epoch']} batches per epoch, "
                             f"not {self.batches_per_epoch}; set up the Susceptibility with the same number")
        self.batch_phi_before, self.batch_phi_after, self.phi_before, self.phi_after = [], [], [], []
        for before, after in zip(state["phi_before"], state["phi_after"]):
            self.record([float(value) for value in before], [float(value) for value in after])


def state_of_current_format(state: dict) -> dict:
    """A `Susceptibility.state_dict` in the current format: format 1 kept one loss per epoch."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be the dict that state_dict() returned, got {type(state).__name__}")
    problem = state_problem(state, STATE_KEYS)
    if problem:
        raise ValueError(f"state {problem}, so it is not a Susceptibility state_dict; pass what "
                         f"state_dict() returned")
    if state["format"] == 1:
        return {**state, "format": STATE_FORMAT, "batches_per_epoch": 1,
                "phi_before": [[value] for value in state["phi_before"]],
                "phi_after": [[value] for value in state["phi_after"]]}
    return state
