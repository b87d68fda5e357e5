"""The names of a run's random streams, each written once.

Every random draw of a run comes from a stream seeded by `susceptibility.derive_seed(seed, name, ...)`,
so that adding or skipping one stream never shifts another's numbers. A misspelt name would silently
open a new stream and change the numbers; naming each stream here, once, turns that into an
AttributeError. The probe's own streams are named in `susceptibility.ProbeStream`, since that package
is installed without the runner; `tests/test_layout.py` checks that no name is used twice across
the two.
"""
from __future__ import annotations

import enum

import numpy as np

from susceptibility import derive_seed


@enum.unique
class Stream(enum.StrEnum):
    """The random streams of a training run besides the probe's."""

    SUBSET = "subset"                      # which training images form the --numsamples subset
    NOISE = "noise"                        # symmetric label noise
    ASYMMETRIC_NOISE = "asymmetric-noise"  # asymmetric class-pair flips
    NOISY_HOLDOUT = "noisy-holdout"        # the hold-out images, and their labels' sub-stream
    INIT = "init"                          # the initial weights
    TRAIN = "train"                        # per epoch: shuffling and augmentation of training
    TRAIN_DROPOUT = "train-dropout"        # per epoch: dropout and stochastic depth in training
    EXTRA_PROBE = "extra-probe"            # the seed of each extra probe (--extra-probes), by source


def numpy_rng(seed: int, *stream: str | int) -> np.random.Generator:
    """A numpy generator for one named stream of the run."""
    return np.random.default_rng(derive_seed(seed, *stream))
