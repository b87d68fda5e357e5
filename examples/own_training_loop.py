"""Susceptibility ζ in a plain PyTorch training loop: a torchvision ResNet-18 on noisy CIFAR-10 labels.

Copy this file into your own project: it needs only the `susceptibility` package (`pip install .` in
a checkout of this repository), torch and torchvision.

    python own_training_loop.py --data-dir DIR [--epochs 5] [--images 1000] [--seed 0]

Trains on --images images of the CIFAR-10 python batches in DIR (the folder holding
cifar-10-batches-py; on half of those present where they are fewer than twice --images, and at
least 256 are needed) with half the labels replaced at random, probes with as many other images, and
prints every epoch the training accuracy, the accuracy on the samples whose label is wrong
(memorization) and ζ. Without --data-dir it runs on synthetic images and says so; bad input is one
line and exit code 2. The lines marked ζ are all ζ adds to a loop.
"""
import argparse
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.nn import functional as F

from susceptibility import Susceptibility

BATCH_FILES = [f"data_batch_{i}" for i in range(1, 6)]
BATCH_SIZE = 128  # of training and of the probe


class CifarBatchUnpickler(pickle.Unpickler):
    """Reads what a CIFAR batch holds (dictionaries, lists, strings, numpy arrays) and refuses any
    other object, so that a crafted batch file cannot run code."""

    NUMPY_ARRAYS = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer"),
                    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        module = module.replace("numpy.core.", "numpy._core.")  # the official batches' numpy 1 names
        if (module, name) not in self.NUMPY_ARRAYS:
            raise pickle.UnpicklingError(f"{module}.{name} has no place in a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_training_images(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 images (n, 3, 32, 32) and labels of the training batches present in `data_dir`
    (any of the official five: a subset works); ValueError says what is missing or broken."""
    folder = data_dir / "cifar-10-batches-py"
    paths = [folder / name for name in BATCH_FILES if (folder / name).is_file()]
    if not paths:
        raise ValueError(f"{data_dir} holds no CIFAR-10 training batches ({folder}/data_batch_1 to 5)")
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                batch = CifarBatchUnpickler(f, encoding="latin1").load()
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch["labels"], dtype=np.int64))
        except Exception as error:  # unreadable, refused or misshapen: the file is not a CIFAR batch
            raise ValueError(f"cannot read {path} as a CIFAR-10 batch ({error})")
    return np.concatenate(images), np.concatenate(labels)


def load_images(data_dir: Path | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` images and labels from `data_dir`, or `count` synthetic ones without it."""
    if data_dir is None:
        print("no --data-dir: running on synthetic images")
        return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (count,))
    images, labels = read_cifar_training_images(data_dir)
    return torch.as_tensor(images[:count]), torch.as_tensor(labels[:count])


def augment(images: torch.Tensor) -> torch.Tensor:
    """Random horizontal flips of a uint8 batch, then scaling to roughly zero mean and unit spread;
    the flips are drawn on the images' device."""
    flip = torch.rand(len(images), device=images.device) < 0.5
    return (torch.where(flip[:, None, None, None], images.flip(3), images).float() / 255 - 0.47) / 0.25


def whole_number(lowest: int):
    """An argparse type: a whole number from `lowest` on."""
    def convert(text: str) -> int:
        if not text.isdigit() or int(text) < lowest:
            raise argparse.ArgumentTypeError(f"must be a whole number from {lowest}, got {text}")
        return int(text)
    return convert


class OneLineParser(argparse.ArgumentParser):
    """Reports bad input in one line with exit code 2, without the usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> OneLineParser:
    """The example's command line."""
    parser = OneLineParser(description="Train a torchvision ResNet-18 on CIFAR-10 with half the labels "
                                       "replaced at random, and print its memorization and zeta every epoch.")
    parser.add_argument("--data-dir", type=Path, help="the folder holding cifar-10-batches-py (default: "
                                                      "synthetic images)")
    parser.add_argument("--epochs", type=whole_number(1), default=5, help="epochs to train (default: 5)")
    parser.add_argument("--images", type=whole_number(BATCH_SIZE), default=1000,
                        help="training images; as many others form the unlabeled set (default: 1000)")
    parser.add_argument("--seed", type=whole_number(0), default=0, help="seed of everything random (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Train on half the images with noisy labels, probe with the other half, print ζ every epoch."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    torch.manual_seed(args.seed)
    try:
        images, labels = load_images(args.data_dir, 2 * args.images)
    except ValueError as error:
        parser.error(str(error))
    if len(images) < 2 * BATCH_SIZE:
        parser.error(f"{args.data_dir} holds {len(images)} training images; the loop needs {2 * BATCH_SIZE}")
    size = len(images) // 2
    train_images, unlabeled = images[:size], images[size:]
    noisy = torch.where(torch.rand(size) < 0.5, torch.randint(0, 10, (size,)), labels[:size])
    wrong = noisy != labels[:size]
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    zeta = Susceptibility(unlabeled, num_classes=10, batch_size=BATCH_SIZE, seed=args.seed, augment=augment)  # ζ
    for epoch in range(args.epochs):
        r = zeta.measure(model, optimizer)  # ζ: one probe step, undone, before the epoch's training
        model.train()
        hits = torch.zeros(size, dtype=torch.bool)
        for batch in torch.randperm(size).split(BATCH_SIZE):
            logits = model(augment(train_images[batch]))
            loss = F.cross_entropy(logits, noisy[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            hits[batch] = logits.argmax(1) == noisy[batch]
        scheduler.step()
        print(f"epoch {epoch}  train accuracy {100 * hits.float().mean():5.1f}%  memorization (wrong labels "
              f"fitted) {100 * hits[wrong].float().mean():5.1f}%  r {r:+.4f}  zeta {zeta.zeta:.4f}")  # ζ


if __name__ == "__main__":
    main()
