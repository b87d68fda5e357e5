"""Label noise: how the training labels of a run are corrupted.

Symmetric noise replaces a label, with probability p, by one drawn uniformly from all classes;
asymmetric noise flips it, with probability p, to its partner class (CIFAR-10 class pairs, or the
next class of the same CIFAR-100 superclass); the CIFAR-10N types train on the labels that human
annotators gave (Wei et al., ICLR 2022), read from their label file. `noisy_data.make_noisy_data`
applies them to a run's training subset, each from its own seeded random stream.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runner.errors import DataError
from runner.file_kinds import irregular_kind


def label_problem(labels: np.ndarray, num_classes: int | None) -> str | None:
    """What makes `labels` unusable as class labels, as the words after "holds"; None if nothing.

    Labels index the network's outputs, so they must be one integer per image, from 0 to
    `num_classes` - 1 (from 0 up where the class count is not known yet)."""
    if labels.ndim != 1:
        return f"labels of shape {labels.shape}, not one label per image"
    if labels.size == 0:
        return None
    if labels.dtype.kind not in "iu":
        return f"{labels.dtype} labels, not integers"
    if labels.min() < 0:
        return f"a negative label ({labels.min()})"
    if num_classes is not None and labels.max() >= num_classes:
        return f"label {labels.max()}, outside the {num_classes} classes 0 to {num_classes - 1}"
    return None


def symmetric_noise(labels: np.ndarray, corrupt_prob: float, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Replace each label, with probability `corrupt_prob`, by one drawn uniformly from all classes.

    The draw may return the true label, so the expected wrong fraction is p * (1 - 1/c).
    """
    replace = rng.random(len(labels)) < corrupt_prob
    noisy = labels.copy()
    noisy[replace] = rng.integers(0, num_classes, int(replace.sum()))
    return noisy


# The class-pair flips of CIFAR-10: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
CIFAR10_FLIPS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# The fine labels of the 20 CIFAR-100 superclasses (the coarse labels 0-19, in their order).
CIFAR100_SUPERCLASSES = (
    (4, 30, 55, 72, 95), (1, 32, 67, 73, 91), (54, 62, 70, 82, 92), (9, 10, 16, 28, 61),
    (0, 51, 53, 57, 83), (22, 39, 40, 86, 87), (5, 20, 25, 84, 94), (6, 7, 14, 18, 24),
    (3, 42, 43, 88, 97), (12, 17, 37, 68, 76), (23, 33, 49, 60, 71), (15, 19, 21, 31, 38),
    (34, 63, 64, 66, 75), (26, 45, 77, 79, 99), (2, 11, 35, 46, 98), (27, 29, 44, 78, 93),
    (36, 50, 65, 74, 80), (47, 52, 56, 59, 96), (8, 13, 48, 58, 90), (41, 69, 81, 85, 89),
)


def class_flips(num_classes: int) -> np.ndarray:
    """The class each class is flipped to by asymmetric noise (itself where it is never flipped).

    CIFAR-10: the pairs of `CIFAR10_FLIPS`; CIFAR-100: the next fine class within its superclass,
    the last one to the first.
    """
    flips = np.arange(num_classes)
    if num_classes == 10:
        pairs = CIFAR10_FLIPS.items()
    elif num_classes == 100:
        pairs = [(a, b) for group in CIFAR100_SUPERCLASSES for a, b in zip(group, np.roll(group, -1))]
    else:
        raise DataError(f"asymmetric noise is defined for CIFAR-10 and CIFAR-100, not for "
                        f"{num_classes} classes")
    for source, target in pairs:
        flips[source] = target
    return flips


def asymmetric_noise(labels: np.ndarray, corrupt_prob: float, flips: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Flip each label, with probability `corrupt_prob`, to its partner class in `flips`.

    Classes that are their own partner never change, so the wrong fraction is p times the share of
    the flipped classes.
    """
    flip = rng.random(len(labels)) < corrupt_prob
    return np.where(flip, flips[labels], labels)


# CIFAR-10N (Wei et al., ICLR 2022): the array of its label file that each noise type trains on.
CIFAR10N_KEYS = {"cifar10n-aggre": "aggre_label", "cifar10n-worst": "worse_label",
                 "cifar10n-random1": "random_label1", "cifar10n-random2": "random_label2",
                 "cifar10n-random3": "random_label3"}


def label_file_globals() -> list:
    """The numpy names that a torch pickle of integer arrays refers to, allowed for `torch.load`.

    Only array reconstruction and integer dtypes are allowed, under numpy 1 and 2 module names, so
    loading stays `weights_only`: no other pickled code can run.
    """
    from numpy._core.multiarray import _reconstruct

    integer_dtypes = {type(np.dtype(code)) for code in np.typecodes["AllInteger"]}
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            *integer_dtypes]


def read_label_file(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a CIFAR-10N label file: the authors' `.pt` or an `.npz` with the same arrays."""
    kind = irregular_kind(path)
    if kind:
        raise DataError(f"--noise-file {path} is {kind}, not a label file; give CIFAR-10_human.pt or an "
                        f".npz with the same arrays")
    if not path.is_file():
        raise DataError(f"--noise-file {path} not found; get CIFAR-10_human.pt from the CIFAR-N "
                        f"authors (github.com/UCSC-REAL/cifar-10-100n)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        with torch.serialization.safe_globals(label_file_globals()):
            arrays = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(f"--noise-file {path} holds objects other than integer label arrays and is "
                        f"not loaded; use the file as its authors distribute it, or an .npz")
    except Exception as error:
        raise DataError(f"cannot read --noise-file {path} ({type(error).__name__}: {error}); give "
                        f"CIFAR-10_human.pt or an .npz with the same arrays")
    if not isinstance(arrays, dict):
        raise DataError(f"--noise-file {path} holds a {type(arrays).__name__}, not the dictionary of "
                        f"label arrays of CIFAR-10_human.pt")
    return {name: np.asarray(values) for name, values in arrays.items()}


def check_label_arrays(path: Path, arrays: dict[str, np.ndarray], num_classes: int) -> None:
    """Refuse a label file whose arrays are not integer labels of the run's classes."""
    for name, values in arrays.items():
        problem = label_problem(values, num_classes)
        if problem:
            raise DataError(f"--noise-file {path}: its {name} array holds {problem}; give "
                            f"CIFAR-10_human.pt of CIFAR-10N or an .npz of its integer label arrays")


def human_labels(path: str | Path, noise_type: str, train_labels: np.ndarray,
                 num_classes: int = 10) -> np.ndarray:
    """The CIFAR-10N labels of `noise_type` for every loaded training image, in the loaded order.

    The file must list exactly these images in this order: its length and its `clean_label` array
    are checked against the training set, and both arrays must hold labels of the `num_classes`
    classes (CIFAR-10's ten unless the run has another count).
    """
    path = Path(path)
    arrays = read_label_file(path)
    key = CIFAR10N_KEYS[noise_type]
    missing = [name for name in ("clean_label", key) if name not in arrays]
    if missing:
        raise DataError(f"--noise-file {path} has no {' or '.join(missing)} array (it has "
                        f"{', '.join(sorted(arrays)) or 'none'}); give CIFAR-10_human.pt of CIFAR-10N")
    clean, noisy = arrays["clean_label"], arrays[key]
    check_label_arrays(path, {"clean_label": clean, key: noisy}, num_classes)
    if not len(clean) == len(noisy) == len(train_labels):
        raise DataError(f"--noise-file {path} has {len(noisy)} labels but the training set has "
                        f"{len(train_labels)} images; give the label file of exactly these images in "
                        f"their order ({subset_hint(path)})")
    disagree = np.flatnonzero(clean != train_labels)
    if len(disagree):
        raise DataError(f"--noise-file {path} belongs to other images: its clean_label differs from "
                        f"the training labels at {len(disagree)} of {len(clean)} images (first at "
                        f"image {disagree[0]}); give the label file of these images in their order")
    return noisy.astype(np.int64)


def subset_hint(path: Path) -> str:
    """Where the label file of a subset is: `<name>_subset.npz` beside the full file where there is
    one, else how docs/DATA.md makes it."""
    subset = path.with_name(f"{path.stem}_subset.npz")
    if subset.is_file() and subset != path:
        return f"{subset} beside it may be the file of this subset: try --noise-file {subset}"
    return "for a subset of CIFAR-10, only its rows of the full file: docs/DATA.md shows how to write them"


SYNTHETIC_NOISE = ("symmetric", "asymmetric")
NOISE_TYPES = (*SYNTHETIC_NOISE, *CIFAR10N_KEYS)
GIVEN = "given"  # the labels of a folder dataset, trained on as they are; their truth is unknown


@dataclass(frozen=True)
class LabelNoise:
    """The noise of a run's training labels: its type, its rate (synthetic types), its file (CIFAR-10N)."""

    type: str = "symmetric"
    corrupt_prob: float | None = None
    file: str | None = None

    @property
    def ground_truth(self) -> bool:
        """Whether the true label of every training image is known."""
        return self.type != GIVEN
