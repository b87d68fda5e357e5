"""Time one epoch (probe + training + test pass) on each data path, side by side.

    python -m tools.benchmark --model resnet --scale 0.25 --train-size 5000 --test-size 1000

Paths compared, on synthetic CIFAR-shaped data:
- device:    the default; uint8 dataset on the compute device, vectorized augmentation there.
- signals:   the default path with the per-sample scores (margins, losses, forgetting, prediction
             changes, ...) updated every batch, summarized and written to a gzip CSV file every
             epoch, as experiments.py does; a line below the table gives that work's own time,
             measured apart from the network on prepared logits.
- loader:    torch DataLoader with PIL transforms in worker processes (`--data-path loader`).
- reference: the reference code's epoch: the DataLoader path plus per-sample Python bookkeeping
             and a probe undone through a checkpoint file.
- network:   the network's own work alone (the same training steps, probe step and test forward
             passes on tensors prepared in advance): the floor any data path can reach.
Each path runs one untimed warm-up epoch, then the timed ones.
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.nn import functional as F


import datasets
from runner import noisy_data
from runner import records
from runner.batching import DeviceBatches, LoaderBatches
from runner.machine import channels_last_default
from models import FAMILIES, create_model
from runner.sample_scores import TrainingSignals
from susceptibility import probe_step
from runner.training import evaluate, fast_network, train_one_epoch


def synthetic_data(train_size: int, test_size: int, seed: int = 0) -> noisy_data.NoisyData:
    """Random CIFAR-shaped images with 50% symmetric label noise."""
    rng = np.random.default_rng(seed)
    image_set = lambda n: datasets.ImageSet(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                                            rng.integers(0, 10, n))
    return noisy_data.make_noisy_data(image_set(train_size), image_set(test_size), num_classes=10,
                                    numsamples=None, corrupt_prob=0.5, probe_source="train", seed=seed)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall time of a block, waiting for the device to finish."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def fresh_model(args, device):
    torch.manual_seed(0)
    model = create_model(args.model, args.scale).to(device)
    network = fast_network(model, bf16=args.amp, channels_last=args.channels_last, compile=args.compile)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return model, network, optimizer


def suite_epoch(batches, network, optimizer, device, epoch: int,
                signals: TrainingSignals | None = None) -> tuple[float, float, float]:
    """Probe, train and test seconds of one epoch as experiments.py runs it (with `signals`, the
    training time includes updating, summarizing and writing them)."""
    gen_device = device if isinstance(batches, DeviceBatches) else torch.device("cpu")
    with Timer(device) as probe:
        images, labels = batches.probe_batch(torch.Generator(gen_device).manual_seed(epoch))
        before, after = probe_step(network, optimizer, images, labels, seed=epoch)
        before.item(), after.item()
    with Timer(device) as train:
        train_one_epoch(network, optimizer, batches.train_batches(torch.Generator(gen_device).manual_seed(epoch)),
                        signals=signals)
        if signals is not None:
            signals.summary()
            write_scores(signals)
    with Timer(device) as test:
        evaluate(network, batches.test_batches())
    return probe.seconds, train.seconds, test.seconds


def write_scores(signals: TrainingSignals) -> None:
    """Write the per-sample scores to a gzip CSV file, as experiments.py does after every epoch."""
    with tempfile.TemporaryDirectory() as folder:
        records.write_table(Path(folder) / "scores.csv.gz",
                            {name: values.cpu().tolist() for name, values in signals.scores().items()})


def scores_alone_seconds(batches: DeviceBatches, device: torch.device, epochs: int) -> float:
    """Seconds per epoch of the per-sample scores' own work, timed apart from the network, whose
    epoch varies between runs by more than this work takes: every training batch's logits and losses
    observed, the epoch's summary (with each score's AUROC and AP) and the file written. Logits and
    losses are random tensors prepared in advance; the work does not depend on their values."""
    train = list(batches.train_batches(torch.Generator(batches.device).manual_seed(0)))
    generator = torch.Generator(device).manual_seed(0)
    inputs = [(torch.randn(len(b.index), 10, device=device, generator=generator),
               torch.rand(len(b.index), device=device, generator=generator)) for b in train]
    signals = TrainingSignals(len(batches.assigned), device, batches.assigned != batches.true)
    seconds = []
    for epoch in range(epochs + 1):  # the first, untimed, warms up
        with Timer(device) as timer:
            signals.start_epoch(epoch)
            for batch, (logits, losses) in zip(train, inputs):
                signals.observe(batch.index, logits, batch.assigned, losses)
            signals.summary()
            write_scores(signals)
        seconds.append(timer.seconds)
    return float(np.mean(seconds[1:]))


def reference_style_epoch(batches, network, optimizer, device, epoch: int) -> tuple[float, float, float]:
    """The reference's epoch: per-sample Python bookkeeping, probe undone through a file."""
    with Timer(device) as probe, tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.pt")
        torch.save({"net": network.state_dict(), "opt": optimizer.state_dict()}, path)
        images, labels = batches.probe_batch(torch.Generator().manual_seed(epoch))
        network.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(network(images), labels)
        loss.item()
        loss.backward()
        optimizer.step()
        F.cross_entropy(network(images), labels).item()
        saved = torch.load(path, weights_only=True)
        network.load_state_dict(saved["net"])
        optimizer.load_state_dict(saved["opt"])
    with Timer(device) as train:
        network.train()
        for batch in batches.train_batches(torch.Generator().manual_seed(epoch)):
            outputs = network(batch.images)
            loss = F.cross_entropy(outputs, batch.assigned)
            loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for output, assigned, true in zip(outputs, batch.assigned, batch.true):
                F.cross_entropy(output[None], assigned[None]).item()
                int(output.argmax() == assigned), assigned.item() == true.item()
    with Timer(device) as test:
        network.eval()
        with torch.no_grad():
            for images, labels in batches.test_batches():
                outputs = network(images)
                F.cross_entropy(outputs, labels).item()
                (outputs.argmax(1) == labels).sum().item()
    return probe.seconds, train.seconds, test.seconds


def network_alone_epoch(prepared, network, optimizer, device, epoch: int) -> tuple[float, float, float]:
    """The same forward/backward work on tensors prepared in advance, with no bookkeeping."""
    train_batches, test_batches, (probe_images, probe_labels) = prepared
    with Timer(device) as probe:
        network.train()
        optimizer.zero_grad()
        F.cross_entropy(network(probe_images), probe_labels).backward()
        optimizer.step()
        with torch.no_grad():
            network(probe_images)
    with Timer(device) as train:
        for images, labels in train_batches:
            optimizer.zero_grad()
            F.cross_entropy(network(images), labels).backward()
            optimizer.step()
    with Timer(device) as test:
        network.eval()
        with torch.no_grad():
            for images, _ in test_batches:
                network(images)
    return probe.seconds, train.seconds, test.seconds


def prepare_tensors(batches: DeviceBatches):
    """Materialize one epoch of batches so the network-alone timing excludes the data path."""
    train = [(b.images, b.assigned) for b in batches.train_batches(torch.Generator(batches.device).manual_seed(0))]
    test = list(batches.test_batches())
    probe = batches.probe_batch(torch.Generator(batches.device).manual_seed(0))
    return train, test, probe


def measure(name, epoch_fn, source, args, device) -> dict:
    """Warm up one epoch, then average the timed epochs of one path."""
    _, network, optimizer = fresh_model(args, device)
    epoch_fn(source, network, optimizer, device, 0)
    times = np.mean([epoch_fn(source, network, optimizer, device, e + 1) for e in range(args.epochs)], 0)
    return {"path": name, "probe": times[0], "train": times[1], "test": times[2]}


def print_table(rows: list[dict], train_size: int, test_size: int) -> None:
    floor = next(r for r in rows if r["path"] == "network")
    floor_total = floor["probe"] + floor["train"] + floor["test"]
    print(f"{'path':<10} {'probe s':>8} {'train s':>8} {'test s':>8} {'epoch s':>8} "
          f"{'train img/s':>11} {'test img/s':>10} {'x network':>9}")
    for r in rows:
        total = r["probe"] + r["train"] + r["test"]
        print(f"{r['path']:<10} {r['probe']:8.3f} {r['train']:8.2f} {r['test']:8.2f} {total:8.2f} "
              f"{train_size / r['train']:11.0f} {test_size / r['test']:10.0f} {total / floor_total:9.2f}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(FAMILIES), default="resnet")
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--batchsize", type=int, default=128)
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--eval-batchsize", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per path (after a warm-up)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--paths", default="device,signals,loader,reference,network")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: as experiments.py, on for the CPU)")
    p.add_argument("--compile", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.channels_last is None:
        args.channels_last = channels_last_default(device)
    data = synthetic_data(args.train_size, args.test_size)
    device_batches = DeviceBatches(data, device, args.batchsize, args.eval_batchsize)
    loader_batches = LoaderBatches(data, device, args.batchsize, args.eval_batchsize, args.workers)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} x{args.scale}, batch {args.batchsize}, {args.train_size} training and "
          f"{args.test_size} test images; device {device} ({name}); torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, Python {platform.python_version()}; "
          f"amp={args.amp} channels_last={args.channels_last} compile={args.compile}; "
          f"loader workers {args.workers}")
    signals = TrainingSignals(args.train_size, device, device_batches.assigned != device_batches.true)
    paths = {"device": (suite_epoch, device_batches),
             "signals": (functools.partial(suite_epoch, signals=signals), device_batches),
             "loader": (suite_epoch, loader_batches),
             "reference": (reference_style_epoch, loader_batches),
             "network": (network_alone_epoch, prepare_tensors(device_batches))}
    chosen = args.paths.split(",")
    if "network" not in chosen:
        chosen.append("network")
    rows = [measure(p, *paths[p], args, device) for p in chosen]
    print_table(rows, args.train_size, args.test_size)
    if "signals" in chosen:
        alone = scores_alone_seconds(device_batches, device, args.epochs)
        epoch = next(sum(r[k] for k in ("probe", "train", "test")) for r in rows if r["path"] == "signals")
        print(f"the per-sample scores' own work, timed alone: {alone:.3f} s per epoch, "
              f"{100 * alone / epoch:.1f} % of the signals path's epoch")


if __name__ == "__main__":
    main()
