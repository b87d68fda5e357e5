"""Shared fixtures: small synthetic datasets in the official CIFAR python format, and the real subset."""
from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

torch.set_num_threads(min(2, torch.get_num_threads()))


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of 3072 uint8 values whose colour and a bright square depend on the class, plus noise,
    so that a tiny network can learn them."""
    n = len(labels)
    images = rng.integers(0, 64, size=(n, 3, 32, 32)).astype(np.int64)
    palette = np.random.default_rng(1234).integers(0, 160, size=(100, 3))  # same in every batch
    images += palette[labels][:, :, None, None]
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 16, 4)
        images[i, :, row * 8:row * 8 + 8, col * 8:col * 8 + 8] = 255
    return images.clip(0, 255).astype(np.uint8).reshape(n, 3072)


def dump_batch(path: Path, labels: np.ndarray, rng: np.random.Generator, label_fields: dict) -> None:
    """Pickle one batch of synthetic images of `labels` in the official CIFAR python format."""
    batch = {"batch_label": path.name, **label_fields, "data": synthetic_images(labels, rng),
             "filenames": [f"{i}.png" for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def write_cifar(root: Path, train_per_batch: int, test_size: int, num_classes: int = 10,
                seed: int = 0, batches: int = 5) -> Path:
    """Write a CIFAR-10 style `cifar-10-batches-py` folder under `root` and return `root`."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, count: int) -> None:
        labels = rng.integers(0, num_classes, count)
        dump_batch(folder / name, labels, rng, {"labels": labels.tolist()})

    for i in range(1, batches + 1):
        dump(f"data_batch_{i}", train_per_batch)
    dump("test_batch", test_size)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(num_classes)]}, f)
    return root


@pytest.fixture(scope="session")
def synthetic_cifar10(tmp_path_factory) -> Path:
    """A data dir holding a 300-image training set (5 batches of 60) and a 100-image test set."""
    return write_cifar(tmp_path_factory.mktemp("data"), train_per_batch=60, test_size=100)


def shared_folder(name: str, what: str) -> Path:
    """The folder `name` of ../shared/data; the test asking for it is skipped where it is absent."""
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"{what} (../shared/data/{name}) is not present")
    return SHARED_DATA / name


@pytest.fixture(scope="session")
def real_cifar10() -> Path:
    """The data dir of the real CIFAR-10 subset in ../shared/data."""
    return shared_folder("cifar-10-batches-py", "the real CIFAR-10 subset").parent


def write_cifar100(root: Path, train_size: int, test_size: int, seed: int = 0) -> Path:
    """Write a CIFAR-100 style `cifar-100-python` folder (fine and coarse labels) under `root`."""
    import label_noise

    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    coarse_of = {fine: coarse for coarse, group in enumerate(label_noise.CIFAR100_SUPERCLASSES)
                 for fine in group}

    for name, count in (("train", train_size), ("test", test_size)):
        fine = rng.integers(0, 100, count)
        dump_batch(folder / name, fine, rng, {"fine_labels": fine.tolist(),
                                              "coarse_labels": [coarse_of[int(f)] for f in fine]})
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f)
    return root


@pytest.fixture(scope="session")
def synthetic_cifar100(tmp_path_factory) -> Path:
    """A data dir holding a 200-image CIFAR-100 training set and a 100-image test set."""
    return write_cifar100(tmp_path_factory.mktemp("data100"), train_size=200, test_size=100)


@pytest.fixture(scope="session")
def real_cifar10n() -> Path:
    """The folder of the real CIFAR-10N label files in ../shared/data."""
    return shared_folder("cifar-10n", "the CIFAR-10N label files")


def start_with_sigint(command: list[str], sigint_handler, **kwargs) -> subprocess.Popen:
    """Start a program in the repository root with SIGINT set to `sigint_handler` when it begins."""
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint_handler), **kwargs)


def start_in_foreground(command: list[str], **kwargs) -> subprocess.Popen:
    """Start a program as a terminal would start it in the foreground, so that SIGINT reaches it as
    Ctrl-C: a shell starts background jobs (a CI script, say) with SIGINT ignored, and children
    inherit that."""
    return start_with_sigint(command, signal.SIG_DFL, **kwargs)


def start_in_background(command: list[str], **kwargs) -> subprocess.Popen:
    """Start a program as a non-interactive shell starts a background job (`command &`): with SIGINT
    ignored, which the program inherits."""
    return start_with_sigint(command, signal.SIG_IGN, **kwargs)
