"""A run's data, drawn from a dataset by its seed: the training subset with its noisy labels, the
unlabeled probe sets and the noisy hold-out set.

Everything random here is drawn from the run's named streams (`streams.Stream`), so the subset, the
noise and the probe labels repeat exactly for the same seed; how labels are corrupted is in
`label_noise`, how the data are batched in `batching`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets import ImageSet
from runner.label_noise import (CIFAR10N_KEYS, GIVEN, NOISE_TYPES, SYNTHETIC_NOISE, DataError, LabelNoise,
                         asymmetric_noise, class_flips, human_labels, symmetric_noise)
from runner.streams import Stream, numpy_rng
from susceptibility import derive_seed, random_labels


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
    return human_labels(noise.file, noise.type, train.labels, num_classes)[index]


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
class ProbeSet:
    """An unlabeled probe set: rows of the dataset's training images, the random labels drawn once
    for them, and the seed those labels (and the probe's batches) come from."""

    index: np.ndarray
    labels: np.ndarray
    seed: int

    @classmethod
    def drawn(cls, index: np.ndarray, num_classes: int, seed: int) -> "ProbeSet":
        return cls(index, random_labels(len(index), num_classes, seed), seed)


PROBE_SOURCES = ("train", "heldout")  # the training subset itself, or training images outside it


@dataclass
class NoisyData:
    """The run's data on the host: training images with assigned and true labels, probe, test."""

    images: np.ndarray          # all training images of the dataset, uint8 (N, 3, 32, 32)
    train_index: np.ndarray     # rows of `images` the network trains on
    assigned_labels: np.ndarray  # label trained on, per row of train_index
    true_labels: np.ndarray     # ground truth, per row of train_index (the assigned label if unknown)
    probe: ProbeSet             # the unlabeled probe set that defines ζ, with the run's seed
    test: ImageSet
    num_classes: int
    noise: LabelNoise = field(default_factory=LabelNoise)
    holdout: NoisyHoldout = field(default_factory=lambda: NoisyHoldout.empty())
    # Probes recorded beside ζ (--extra-probes), by source, each with a seed of its own.
    extra_probes: dict[str, ProbeSet] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None  # where the dataset names its classes (class folders)

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


def holdout_too_large(holdout_size: int, available: int, left: int) -> str:
    """Why a noisy hold-out set of `holdout_size` images does not fit beside the training subset,
    which leaves `left` of the `available` training images, and what would fit."""
    if holdout_size >= available:
        return (f"--noisy-holdout {holdout_size} needs that many training images outside the training "
                f"subset, but the training set has only {available}; choose --noisy-holdout below {available}")
    return (f"--noisy-holdout {holdout_size} needs that many training images outside the --numsamples "
            f"subset, but {left} are left; lower --noisy-holdout or set --numsamples to at most "
            f"{available - holdout_size}")


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
        raise DataError(holdout_too_large(holdout_size, available, len(outside)))
    holdout, outside = draw_rows(outside, holdout_size, numpy_rng(seed, Stream.NOISY_HOLDOUT))
    return train_index, holdout, outside, "training images outside the training subset"


def make_noisy_data(train: ImageSet, test: ImageSet, *, num_classes: int, numsamples: int | None,
                    corrupt_prob: float, probe_source: str, seed: int, noise_type: str = "symmetric",
                    noise_file: str | Path | None = None, noisy_holdout: int = 0,
                    extra_probes: tuple[str, ...] = ()) -> NoisyData:
    """Draw the subset, the noisy labels, the probe set and the noisy hold-out set from the seed.

    `noise_type` is one of `NOISE_TYPES` or `GIVEN`; `corrupt_prob` applies to the synthetic types,
    `noise_file` (a CIFAR-10N label file) to the cifar10n types. `noisy_holdout` images, disjoint
    from the training subset and the probe set, get labels from the same noise process. Each source
    of `extra_probes` ("train", "heldout": see `PROBE_SOURCES`) adds a probe set of its own, with
    labels from its own seed.
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
    images_of = {"train": train_index, "heldout": outside}
    for source, option in [(probe_source, "--probe-source"), *((s, "--extra-probes") for s in extra_probes)]:
        if source == "heldout" and len(outside) == 0:
            raise DataError(f"{option} heldout needs training images outside the subset and the "
                            f"noisy hold-out set; set --numsamples below {len(train) - noisy_holdout}")
    probe = ProbeSet.drawn(images_of[probe_source], num_classes, seed)
    extra = {source: ProbeSet.drawn(images_of[source], num_classes, derive_seed(seed, Stream.EXTRA_PROBE, source))
             for source in extra_probes}
    return NoisyData(train.images, train_index, assigned, true_labels, probe, test, num_classes, noise, holdout,
                     extra, train.classes)
