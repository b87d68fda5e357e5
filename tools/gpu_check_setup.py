"""What the checks of `tools.gpu_check` share: the device and sizes they run at, the synthetic
CIFAR-10 they train on, and runs of experiments.py started as the command line starts them."""
from __future__ import annotations

import contextlib
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import experiments
from runner.run_files import RunFiles, run_files
from runner import command_line
from runner import machine
from runner import records


@dataclass(frozen=True)
class Sizes:
    """The network's width and the synthetic dataset the checks train on."""

    scale: float
    train: int
    test: int
    batch: int = 128


ROOT = Path(__file__).resolve().parents[1]  # the repository, where experiments.py is
PAPER = Sizes(1.0, 50_000, 10_000)  # ResNet-18 on all of CIFAR-10, as in the paper
SMALL = Sizes(0.125, 1024, 512)
TARGET = 1.10  # the most an epoch of experiments.py may take, in multiples of the network's own work
PRECISION_TARGET = 0.01  # the median |dr|/|r| below which a precision would leave r as it is


class Check:
    """The device and sizes of a self-check, its scratch folder, and the table it prints."""

    def __init__(self, device: torch.device, sizes: Sizes, work: Path):
        self.device, self.sizes, self.work, self.out = device, sizes, work, sys.stdout
        self.lines: list[tuple[str, str, str]] = []
        self.folders: dict[tuple[int, int], Path] = {}

    def say(self, status: str, name: str, text: str) -> None:
        self.lines.append((status, name, text))
        print(f"{status:<4}  {name:<11}  {text}", file=self.out, flush=True)

    def result(self, name: str, ok: bool, text: str) -> None:
        """A promise: PASS where it holds, FAIL where it does not."""
        self.say("PASS" if ok else "FAIL", name, text)

    def target(self, name: str, met: bool, text: str) -> None:
        """A measurement against a target: PASS where it is met, WARN where it is missed."""
        self.say("PASS" if met else "WARN", name, text)

    def info(self, name: str, text: str) -> None:
        """A measurement with no target."""
        self.say("INFO", name, text)

    def size_text(self) -> str:
        """The network and data of the speed checks, in words."""
        return (f"{self.model_text()}, batch {self.sizes.batch}, {self.sizes.train:,} training and "
                f"{self.sizes.test:,} test images")

    def model_text(self) -> str:
        """The network the checks train, in words: ResNet-18 and its width."""
        return "ResNet-18" + ("" if self.sizes.scale == 1 else f" at width {self.sizes.scale:g}")

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def amp(self) -> bool:
        """Whether --amp runs here: where bf16 is native."""
        return machine.amp_refusal(self.device) is None

    def data(self, train: int, test: int) -> Path:
        """A folder holding a synthetic CIFAR-10 of `train` and `test` images, written once."""
        if (train, test) not in self.folders:
            self.folders[train, test] = write_cifar(self.work / f"data_{train}_{test}", train, test)
        return self.folders[train, test]

    def argv(self, name: str, *extra: str, images: int | None = None, epochs: int = 3,
             scale: float | None = None, batch: int | None = None) -> list[str]:
        """The command line of a ResNet-18 run named `name` on the synthetic data, deterministic."""
        images = images or self.sizes.train
        return ["--model", "resnet", "--scale", str(scale or self.sizes.scale), "--numsamples", str(images),
                "--batchsize", str(batch or self.sizes.batch), "--epochs", str(epochs), "--lr", "0.05",
                "--seed", "1", "--data-dir", str(self.data(max(images, self.sizes.train), self.sizes.test)),
                "--device", str(self.device), "--workers", "0", "--filename", "check",
                "--results-dir", str(self.work / name), "--checkpoint-dir", str(self.work / name), *extra]


def write_cifar(folder: Path, train: int, test: int) -> Path:
    """Random images and labels in the official CIFAR-10 python format, under `folder`."""
    rng = np.random.default_rng(0)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name, count in (("data_batch_1", train), ("test_batch", test)):
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, count).tolist()}
        (batches / name).write_bytes(pickle.dumps(batch))
    return folder


def start(argv: list[str]) -> tuple[experiments.Run, RunFiles]:
    """The run a command line describes, built as experiments.py builds it."""
    args = command_line.parse(argv)
    paths = run_files(args)
    return experiments.start(args, argv, paths), paths


def record_content(path: Path) -> str:
    """A run record without its timings and the folders it was written to, as text to compare."""
    record = records.read_record(path)
    rows = records.rows_without_timings(record.rows)
    meta = {k: v for k, v in record.meta.items() if k != "command"}
    meta["args"] = {k: v for k, v in meta["args"].items() if k not in ("results_dir", "checkpoint_dir")}
    return json.dumps([meta, rows], sort_keys=True)


@contextlib.contextmanager
def stopped_at(epoch: int):
    """In-process runs of experiments.py stop as on Ctrl-C when they reach `epoch`."""
    one_epoch = experiments.probe_train_and_test

    def stop(run, current: int) -> dict:
        if current == epoch:
            raise KeyboardInterrupt
        return one_epoch(run, current)

    experiments.probe_train_and_test = stop
    try:
        yield
    finally:
        experiments.probe_train_and_test = one_epoch
