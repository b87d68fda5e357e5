"""One training epoch and one test pass, with clean/noisy bookkeeping kept on the device, and the
optimizers and learning-rate schedules a run can use.

Metrics are accumulated as device tensors and read once per epoch, so no step waits for the host,
and summed in an order fixed on every device.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Iterable, Iterator, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from runner.batching import TrainBatch

CLEAN, NOISY = 0, 1

OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),  # torch's defaults: decoupled weight decay 0.01
}
SCHEDULERS = {
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
    "step": lambda opt, epochs: torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[epochs // 2, epochs * 3 // 4], gamma=0.1),
    "exponential": lambda opt, epochs: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.01 ** (1 / epochs)),
    "constant": lambda opt, epochs: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
}


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The type of sums over many samples (losses, counts, margins): float64 where the device has it
    (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


class BatchObserver(Protocol):
    """What sees every training batch: the per-sample signals (`sample_scores.TrainingSignals`)."""

    def observe(self, index: torch.Tensor, logits: torch.Tensor, assigned: torch.Tensor,
                losses: torch.Tensor) -> None: ...


class NonFiniteLoss(RuntimeError):
    """A loss (training, test or probe) became NaN or infinite: the run diverged."""

    def __init__(self, quantity: str, value: float):
        super().__init__(f"{quantity} is {value}")
        self.quantity = quantity


class FastForward(nn.Module):
    """Runs a model's forward pass in bf16 autocast and/or channels-last memory format.

    It holds the model's own parameters and buffers, so the optimizer, the probe's restoration and
    the checkpoint all act on the model unchanged; logits come back as float32.
    """

    def __init__(self, model: nn.Module, bf16: bool, channels_last: bool):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.bf16 = bf16
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(images).float()


def fast_network(model: nn.Module, *, bf16: bool = False, channels_last: bool = False,
                 compile: bool = False) -> nn.Module:
    """The module that computes the forward pass: `model` itself unless a speed option is on."""
    network = FastForward(model, bf16, channels_last) if bf16 or channels_last else model
    return DynamicBatch(network) if compile else network


class DynamicBatch(nn.Module):
    """`torch.compile` of a network with the batch dimension dynamic from the first call: the last,
    smaller batch of an epoch and the evaluation batches run the graphs compiled for training and
    evaluation instead of a recompilation for their size."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.compiled = torch.compile(network)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        torch._dynamo.maybe_mark_dynamic(images, 0)
        return self.compiled(images)


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far (0 where it never ran)."""
    dynamo = sys.modules.get("torch._dynamo")
    return dynamo.utils.calculate_time_spent()["total_wall_time"] if dynamo else 0.0


def clock() -> float:
    """Seconds of a clock that stands still while torch.compile compiles: differences of its
    readings are wall times without compilation."""
    return time.perf_counter() - compile_seconds()


def split_sums(sums: torch.Tensor) -> dict[str, float]:
    """Per-group [loss sum, correct, count] rows to mean losses and accuracies in percent.

    Row CLEAN holds samples whose assigned label is the true one, row NOISY the others; a group
    without samples gets NaN.
    """
    loss, correct, count = sums.sum(0).tolist()
    metrics = {"train_loss": loss / count, "train_acc": 100.0 * correct / count}
    for name, row in (("clean", CLEAN), ("noisy", NOISY)):
        loss, correct, count = sums[row].tolist()
        metrics[f"train_{name}_loss"] = loss / count if count else math.nan
        metrics[f"train_{name}_acc"] = 100.0 * correct / count if count else math.nan
    return metrics


def without_subsets(metrics: dict[str, float]) -> dict[str, float]:
    """The training metrics with the clean/noisy figures blanked (NaN): without ground truth the
    subsets are unknown, since every sample counts as clean."""
    return {**metrics, **{f"train_{name}_{kind}": math.nan
                          for name in ("clean", "noisy") for kind in ("loss", "acc")}}


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[TrainBatch],
                    progress: Iterator | None = None,
                    signals: BatchObserver | None = None) -> dict[str, float]:
    """Train on every batch once; return loss and accuracy over all, clean and noisy samples.

    Like the reference, the figures are measured on the fly on augmented batches in train mode.
    `progress`, if given, is advanced once per batch; `signals`, if given, sees every batch's logits
    and losses (the caller starts its epoch).
    """
    metrics = split_sums(training_sums(model, optimizer, batches, progress, signals))
    if not math.isfinite(metrics["train_loss"]):
        raise NonFiniteLoss("training loss", metrics["train_loss"])
    return metrics


def training_sums(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[TrainBatch],
                  progress: Iterator | None = None, signals: BatchObserver | None = None) -> torch.Tensor:
    """The training pass of `train_one_epoch`, leaving its [loss sum, correct, count] rows per group
    on the device, unread."""
    model.train()
    sums = None
    for batch in batches:
        if sums is None:
            device = batch.images.device
            sums = torch.zeros(2, 3, dtype=accumulator_dtype(device), device=device)
        train_step(model, optimizer, batch, sums, signals)
        if progress is not None:
            progress.update(1)
    return sums


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TrainBatch, sums: torch.Tensor,
               signals: BatchObserver | None = None) -> None:
    """One optimizer step on `batch`, adding its losses, hits and sample count per group to `sums`."""
    logits = model(batch.images)
    per_sample = F.cross_entropy(logits, batch.assigned, reduction="none")
    optimizer.zero_grad(set_to_none=True)
    per_sample.mean().backward()
    optimizer.step()
    hits = (logits.detach().argmax(1) == batch.assigned).to(sums.dtype)
    if signals is not None:
        signals.observe(batch.index, logits.detach(), batch.assigned, per_sample.detach())
    values = torch.stack([per_sample.detach().to(sums.dtype), hits, torch.ones_like(hits)], 1)
    sums += group_sums(values, batch.assigned != batch.true)


def group_sums(values: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """The rows of `values` (one per sample) summed over the clean samples (row CLEAN) and over the
    noisy ones (row NOISY): sums over the batch, which add in a fixed order on every device, where
    `index_add_` into two rows adds in whatever order a GPU's atomic operations happen to run."""
    zero = values.new_zeros(())
    return torch.stack([torch.where(noisy[:, None], zero, values).sum(0),
                        torch.where(noisy[:, None], values, zero).sum(0)])


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             prefix: str = "test", predictions: torch.Tensor | None = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy (percent) on labelled data, network in eval mode, as
    `<prefix>_loss` and `<prefix>_acc`. `predictions`, if given, receives every image's predicted
    class in the order of the batches."""
    loss, correct, count = evaluation_sums(model, batches, predictions).tolist()
    return {f"{prefix}_loss": loss / count, f"{prefix}_acc": 100.0 * correct / count}


@torch.no_grad()
def evaluation_sums(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    predictions: torch.Tensor | None = None) -> torch.Tensor:
    """The evaluation pass of `evaluate`, leaving its [loss sum, correct, count] on the device, unread."""
    model.eval()
    sums, seen = None, 0
    for images, labels in batches:
        logits = model(images)
        if sums is None:
            sums = torch.zeros(3, dtype=accumulator_dtype(logits.device), device=logits.device)
        predicted = logits.argmax(1)
        if predictions is not None:
            predictions[seen:seen + len(labels)] = predicted
        seen += len(labels)
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        sums[1] += (predicted == labels).sum()
        sums[2] += len(labels)
    return sums
