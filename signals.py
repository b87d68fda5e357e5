"""Signals of memorization that a training run gives almost for free, next to ζ.

Both come from the forward pass the training step already makes, with per-sample state kept on the
device and read once per epoch:

- prediction changes (Label Wave: Yuan, Feng & Liu, ICLR 2024): the share of training samples whose
  predicted class differs from their predicted class in the previous epoch;
- margins (AUM: Pleiss et al., NeurIPS 2020): per sample, the running mean over epochs of the logit of
  its assigned label minus the largest other logit. A negative running margin flags a label the
  network keeps disagreeing with: a likely wrong one.

The third signal, accuracy on a noisy hold-out set (Chen et al., AAAI 2021), is an evaluation pass;
see `datasets.NoisyHoldout`.
"""
from __future__ import annotations

import math

import torch

NO_PREDICTION = -1


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 sums where the device has them (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


class TrainingSignals:
    """Per-sample prediction and margin history of the training subset, updated batch by batch."""

    def __init__(self, size: int, device: torch.device, noisy: torch.Tensor | None = None):
        """`size` training samples; `noisy` marks those whose assigned label is wrong, where known."""
        self.last_prediction = torch.full((size,), NO_PREDICTION, dtype=torch.int64, device=device)
        self.margin_sum = torch.zeros(size, dtype=accumulator_dtype(device), device=device)
        self.epochs_seen = torch.zeros(size, dtype=torch.int64, device=device)
        self.noisy = noisy
        self.start_epoch()

    def start_epoch(self) -> None:
        """Reset the epoch's counts of compared and changed predictions."""
        self.changes = torch.zeros(2, dtype=torch.int64, device=self.last_prediction.device)

    @torch.no_grad()
    def observe(self, index: torch.Tensor, logits: torch.Tensor, assigned: torch.Tensor) -> None:
        """Take in one training batch: the samples' positions, their logits and assigned labels."""
        predicted = logits.argmax(1)
        previous = self.last_prediction[index]
        compared = previous != NO_PREDICTION
        self.changes += torch.stack([compared.sum(), (compared & (previous != predicted)).sum()])
        self.last_prediction[index] = predicted
        self.margin_sum.index_add_(0, index, margins(logits, assigned).to(self.margin_sum.dtype))
        self.epochs_seen.index_add_(0, index, torch.ones_like(index))

    def summary(self) -> dict[str, float]:
        """The epoch's figures, in percent: prediction changes, the share of seen samples with a
        negative running margin, and (with ground truth) how precisely and completely those
        negative margins flag the wrong labels. NaN where a figure is undefined."""
        seen = self.epochs_seen > 0
        negative = seen & (self.margin_sum < 0)
        counts = [*self.changes, seen.sum(), negative.sum()]
        if self.noisy is not None:
            counts += [(negative & self.noisy).sum(), self.noisy.sum()]
        compared, changed, seen_count, flagged, *truth = torch.stack(counts).tolist()
        row = {"pred_changes": percent(changed, compared), "neg_margin": percent(flagged, seen_count),
               "neg_margin_precision": math.nan, "neg_margin_recall": math.nan}
        if truth:
            caught, wrong = truth
            row.update(neg_margin_precision=percent(caught, flagged), neg_margin_recall=percent(caught, wrong))
        return row

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The per-sample history, for checkpoints."""
        return {"last_prediction": self.last_prediction, "margin_sum": self.margin_sum,
                "epochs_seen": self.epochs_seen}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a checkpoint's history."""
        for name, value in state.items():
            getattr(self, name).copy_(value)


def margins(logits: torch.Tensor, assigned: torch.Tensor) -> torch.Tensor:
    """Per sample: the logit of the assigned label minus the largest other logit (AUM's margin)."""
    assigned_logit = logits.gather(1, assigned[:, None]).squeeze(1)
    others = logits.scatter(1, assigned[:, None], -math.inf)
    return assigned_logit - others.max(1).values


def percent(part: float, whole: float) -> float:
    """100 · part / whole, NaN when whole is 0."""
    return 100.0 * part / whole if whole else math.nan
