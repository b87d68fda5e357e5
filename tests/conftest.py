"""Shared fixtures and helpers: small synthetic datasets in the official CIFAR python format, the real
subset, the command line of a tiny run, and ways to build, compare and interrupt runs in-process."""
from __future__ import annotations

import copy
import hashlib
import pickle
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

from runner import batching
from runner import command_line
from runner import config
import datasets
from runner import noisy_data
import experiments
from runner import label_noise
from runner import records
from runner.run import Run, build_run

torch.set_num_threads(min(2, torch.get_num_threads()))
# The devices the bit-exactness tests run on: the CPU always, a CUDA GPU and Apple's MPS where present.
DEVICES = ["cpu", *(name for name, present in (("cuda", torch.cuda.is_available()),
                                                ("mps", torch.backends.mps.is_available())) if present)]


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
    from runner import label_noise

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


class RunsCode:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


# --------------------------------------------------------------------------------------------------
# Runs of experiments.py


def run_args(data_dir, out: Path, *extra: str, epochs: int = 2, name: str = "t",
             batchsize: int = 32) -> list[str]:
    """The command line of a tiny run: the 5-layer CNN at 1/8 width, seed 3, on the CPU, writing
    its record and checkpoint under `out`. Later flags in `extra` override these."""
    return ["--model", "cnn", "--scale", "0.125", "--epochs", str(epochs), "--batchsize", str(batchsize),
            "--lr", "0.05", "--seed", "3", "--data-dir", str(data_dir), "--device", "cpu",
            "--results-dir", str(out / "results"), "--checkpoint-dir", str(out / "checkpoint"),
            "--filename", name, *extra]


def one_line_refusal(argv: list[str], capsys) -> str:
    """The one line that experiments.py, run in-process, prints when it refuses `argv` with exit code 2."""
    assert experiments.main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error.strip()


def record_path(out: Path, epochs: int = 2, name: str = "t", model: str = "cnn", lr: str = "0.05") -> Path:
    return out / "results" / f"{name}_{model}_{epochs}_{lr}.csv"


def checkpoint_path(out: Path, epochs: int = 2, name: str = "t", model: str = "cnn", lr: str = "0.05") -> Path:
    return out / "checkpoint" / f"{name}_{model}_{epochs}_{lr}.pt"


def digest(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under `folder`, by name: equal digests mean nothing was changed."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_folders(argv: list[str]) -> list[str]:
    """A command line without the folders it writes to and without --resume or --overwrite."""
    kept, skip = [], False
    for word in argv:
        if not skip and word not in ("--resume", "--overwrite", "--results-dir", "--checkpoint-dir"):
            kept.append(word)
        skip = word in ("--results-dir", "--checkpoint-dir")
    return kept


def without_timings(record: records.RunRecord) -> tuple:
    """A record's content minus wall times and the folders it was written to."""
    rows = records.rows_without_timings(record.rows)
    args = {k: v for k, v in record.meta["args"].items() if k not in ("results_dir", "checkpoint_dir")}
    return {**record.meta, "args": args, "command": without_folders(record.meta.get("command") or [])}, rows


def same_record(a: Path, b: Path) -> bool:
    return without_timings(records.read_record(a)) == without_timings(records.read_record(b))


def built_run(argv: list[str]) -> Run:
    """The run a command line describes, built in this process (as `experiments.start` does for a
    fresh run on the CPU)."""
    args = command_line.parse(argv)
    train, test = datasets.load_dataset(args.data_dir, args.dataset)
    resolved = config.resolve(args, num_classes=datasets.class_count(train, test, args.num_classes),
                              channels_last=args.channels_last is not False)
    return build_run(resolved, argv, torch.device("cpu"), train, test)


def interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    """Make in-process experiments.py runs stop as on Ctrl-C when they reach `epoch` (0-based),
    keeping the epochs before it."""
    one_epoch = experiments.probe_train_and_test

    def stop_at(run, current: int) -> dict:
        if current == epoch:
            raise KeyboardInterrupt
        return one_epoch(run, current)

    monkeypatch.setattr(experiments, "probe_train_and_test", stop_at)


def as_format_1(state: dict, leave_out: tuple[str, ...] = ()) -> dict:
    """A current checkpoint in the shape of format 1, as earlier versions wrote it: the run-defining
    settings under `args`, no command line, and without the parts named in `leave_out` (`probe`,
    `signals`, `holdout`: the hold-out labels and setting), which were added to format 1 one by one."""
    old = {k: v for k, v in state.items() if k not in ("config", "command", *leave_out)}
    old["format"] = 1
    old["args"] = config.run_defining(state["config"])
    if "holdout" in leave_out:
        old["labels"] = {k: v for k, v in state["labels"].items() if not k.startswith("holdout")}
        del old["args"]["noisy_holdout"]
    return old


def one_step_by_hand(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                     labels: torch.Tensor, dropout_seed: int) -> tuple[float, float]:
    """Φ̃ before and after one optimizer step, taken on copies of the model and the optimizer (so
    nothing needs restoring), with dropout seeded as the probe's stream is."""
    model, state = copy.deepcopy(model), copy.deepcopy(optimizer.state_dict())
    optimizer = type(optimizer)(model.parameters(), **optimizer.defaults)
    optimizer.load_state_dict(state)
    torch.manual_seed(dropout_seed)
    model.train()
    before = F.cross_entropy(model(images), labels)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(model(images), labels)
    return before.item(), after.item()


def assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# The fixed part of the sweep files of tests: tiny CNN runs on the CPU.
TINY = """
[fixed]
data_dir = "{data}"
epochs = {epochs}
numsamples = {numsamples}
batchsize = {batchsize}
eval_batchsize = 100
device = "cpu"
"""


def write_sweep(folder: Path, data: Path, grid: str, epochs: int = 2, name: str = "g", numsamples: int = 64,
                batchsize: int = 32) -> Path:
    """A sweep file of tiny CPU runs on `data`, writing under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    folders = f'[sweep]\nresults_dir = "{folder / "results"}"\ncheckpoint_dir = "{folder / "checkpoints"}"\n'
    path.write_text(folders + TINY.format(data=data, epochs=epochs, numsamples=numsamples, batchsize=batchsize)
                    + grid)
    return path


# --------------------------------------------------------------------------------------------------
# Small networks, batches and datasets


def small_dropout_net(num_classes: int = 10) -> nn.Module:
    """A BatchNorm + dropout network, so the probe must restore running statistics and RNG use."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(4), nn.Dropout(0.3), nn.Flatten(), nn.Linear(8 * 64, num_classes))


def make_batches(root, numsamples=96, batch_size=32, device: str = "cpu") -> batching.DeviceBatches:
    train, test = datasets.load_cifar(root)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=numsamples,
                                    corrupt_prob=0.5, probe_source="train", seed=0)
    return batching.DeviceBatches(data, torch.device(device), batch_size, 50)


CLASS_COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


def write_image_folder(root: Path, train: int = 64, test: int = 24) -> Path:
    """A Clothing1M-like folder: images of assorted sizes, formats and modes in subfolders, listed
    with their labels in train.txt and test.txt (3 classes, coloured by class)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        lines = []
        for i in range(count):
            label = i % 3
            size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
            image = Image.new("RGB", size, CLASS_COLOURS[label])
            mode, suffix = [("RGB", "jpg"), ("L", "png"), ("RGBA", "png")][i % 3 if split == "train" else 0]
            name = f"images/{split}/{i // 10}/{i}.{suffix}"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            image.convert(mode).save(root / name)
            lines.append(f"{name} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def human_label_arrays(clean: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-10N style arrays for `clean`: each noisy array differs from it at a known share."""
    rng = np.random.default_rng(seed)
    arrays = {"clean_label": clean.astype(np.int64)}
    for rate, key in zip((0.1, 0.4, 0.2, 0.2, 0.2), label_noise.CIFAR10N_KEYS.values()):
        wrong = rng.random(len(clean)) < rate
        arrays[key] = np.where(wrong, (clean + 1 + rng.integers(0, 9, len(clean))) % 10, clean)
    return arrays
