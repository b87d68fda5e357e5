"""Signals of memorization that a training run gives almost for free, next to ζ.

All come from the forward pass the training step already makes, with per-sample state kept on the
device and read once per epoch:

- prediction changes (Label Wave: Yuan, Feng & Liu, ICLR 2024): the share of training samples whose
  predicted class differs from their predicted class in the previous epoch, and per sample how often
  that happened;
- margins (AUM: Pleiss et al., NeurIPS 2020): per sample, the running mean over epochs of the logit of
  its assigned label minus the largest other logit. A negative running margin flags a label the
  network keeps disagreeing with: a likely wrong one;
- cumulative sample loss (CSL: Ravikumar et al., ICML 2025): per sample, the sum over epochs of its
  training loss;
- forgetting events (Toneva et al., ICLR 2019): per sample, how often it was predicted as its
  assigned label in one epoch and not in the next; as a detector, a sample never predicted as its
  label counts as forgotten infinitely often (their convention), so it ranks as the most suspicious;
- learned at: per sample, the first epoch from which it has been predicted as its assigned label in
  every epoch since (not learned while it is mispredicted).

Each per-sample score is read as a detector of wrong labels (`records.SAMPLE_SCORES`), whose AUROC
and average precision are computed on the device once per epoch where the truth is known. The
accuracy on a noisy hold-out set (Chen et al., AAAI 2021) is an evaluation pass; see
`noisy_data.NoisyHoldout`.
"""
from __future__ import annotations

import math

import torch

from runner.records import DETECTOR_COLUMNS, SAMPLE_SCORES
from runner.training import accumulator_dtype

NO_PREDICTION = -1
NOT_LEARNED = -1
UNKNOWN, RIGHT = -1, 1  # a sample's last prediction: not made yet, or its assigned label (0: another)


class TrainingSignals:
    """Per-sample prediction, margin, loss and learning history of the training subset, updated batch
    by batch."""

    def __init__(self, size: int, device: torch.device, noisy: torch.Tensor | None = None):
        """`size` training samples; `noisy` marks those whose assigned label is wrong, where known."""
        whole = lambda value, dtype: torch.full((size,), value, dtype=dtype, device=device)
        self.last_prediction = whole(NO_PREDICTION, torch.int64)
        self.margin_sum = whole(0, accumulator_dtype(device))
        self.epochs_seen = whole(0, torch.int64)
        self.loss_sum = whole(0, accumulator_dtype(device))
        self.last_correct = whole(UNKNOWN, torch.int8)
        self.forgetting = whole(0, torch.int64)
        self.learned_at = whole(NOT_LEARNED, torch.int64)
        self.prediction_changes = whole(0, torch.int64)
        self.noisy = noisy
        self.start_epoch(0)

    PER_SAMPLE = ("last_prediction", "margin_sum", "epochs_seen", "loss_sum", "last_correct", "forgetting",
                  "learned_at", "prediction_changes")

    def start_epoch(self, epoch: int) -> None:
        """Begin epoch `epoch` (0-based): reset its counts of compared and changed predictions."""
        self.epoch = epoch
        self.changes = torch.zeros(2, dtype=torch.int64, device=self.last_prediction.device)

    @torch.no_grad()
    def observe(self, index: torch.Tensor, logits: torch.Tensor, assigned: torch.Tensor,
                losses: torch.Tensor) -> None:
        """Take in one training batch: the samples' positions (each at most once per batch), their
        logits, assigned labels and training losses."""
        predicted = logits.argmax(1)
        correct = predicted == assigned
        previous = self.last_prediction[index]
        compared = previous != NO_PREDICTION
        changed = compared & (previous != predicted)
        self.changes += torch.stack([compared.sum(), changed.sum()])
        self.prediction_changes[index] += changed
        self.last_prediction[index] = predicted
        self.margin_sum.index_add_(0, index, margins(logits, assigned).to(self.margin_sum.dtype))
        self.epochs_seen.index_add_(0, index, torch.ones_like(index))
        self.loss_sum[index] += losses.to(self.loss_sum.dtype)
        self.forgetting[index] += (self.last_correct[index] == RIGHT) & ~correct
        self.last_correct[index] = correct.to(torch.int8)
        learned = self.learned_at[index]
        self.learned_at[index] = torch.where(correct, torch.where(learned == NOT_LEARNED, self.epoch, learned),
                                             NOT_LEARNED)

    def scores(self) -> dict[str, torch.Tensor]:
        """Each per-sample score of `records.SAMPLE_SCORES` in its natural units (NaN where a sample
        has no value: not yet seen, or not learned)."""
        seen = self.epochs_seen.clamp(min=1).to(self.margin_sum.dtype)
        unseen = self.epochs_seen == 0
        nan = torch.tensor(math.nan, dtype=self.margin_sum.dtype, device=seen.device)
        return {"aum": torch.where(unseen, nan, self.margin_sum / seen),
                "csl": torch.where(unseen, nan, self.loss_sum),
                "forgetting": self.forgetting.to(seen.dtype),
                "learned_at": torch.where(self.learned_at == NOT_LEARNED, nan, self.learned_at.to(seen.dtype)),
                "changes": self.prediction_changes.to(seen.dtype)}

    def never_learned(self) -> torch.Tensor:
        """Which seen samples were never predicted as their assigned label: wrong now (no learned-at)
        and never forgotten, which a sample right in any earlier epoch would have been since."""
        return (self.epochs_seen > 0) & (self.learned_at == NOT_LEARNED) & (self.forgetting == 0)

    def suspicion(self) -> dict[str, torch.Tensor]:
        """Each score turned so that a higher value flags a likely wrong label: low margins, high
        losses, many forgetting events (infinitely many for a sample never learned, as Toneva et
        al. count them) or changes, learned late or never."""
        scores = self.scores()
        never = torch.tensor(math.inf, dtype=scores["learned_at"].dtype, device=self.epochs_seen.device)
        return {"aum": -scores["aum"], "csl": scores["csl"],
                "forgetting": torch.where(self.never_learned(), never, scores["forgetting"]),
                "learned_at": torch.where(torch.isnan(scores["learned_at"]), never, scores["learned_at"]),
                "changes": scores["changes"]}

    def summary(self) -> dict[str, float]:
        """The epoch's figures, in percent: prediction changes, the share of seen samples with a
        negative running margin, and (with ground truth) how precisely and completely those
        negative margins flag the wrong labels, and each score's AUROC and average precision as a
        detector of the wrong labels. NaN where a figure is undefined."""
        seen = self.epochs_seen > 0
        negative = seen & (self.margin_sum < 0)
        counts = [*self.changes, seen.sum(), negative.sum()]
        truth = []
        if self.noisy is not None:
            truth = [(negative & self.noisy).sum(), self.noisy.sum()]
            suspicion = self.suspicion()
            detection = [value for name in SAMPLE_SCORES for value in
                         (auroc(suspicion[name], self.noisy), average_precision(suspicion[name], self.noisy))]
        counts = torch.stack([*counts, *truth]).tolist()
        compared, changed, seen_count, flagged, *wrong = counts
        row = {"pred_changes": percent(changed, compared), "neg_margin": percent(flagged, seen_count),
               "neg_margin_precision": math.nan, "neg_margin_recall": math.nan,
               **{column: math.nan for column in DETECTOR_COLUMNS}}
        if wrong:
            caught, wrong_count = wrong
            row.update(neg_margin_precision=percent(caught, flagged),
                       neg_margin_recall=percent(caught, wrong_count))
            row.update(zip(DETECTOR_COLUMNS, torch.stack(detection).tolist()))
        return row

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The per-sample history, for checkpoints."""
        return {name: getattr(self, name) for name in self.PER_SAMPLE}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Continue from a checkpoint's history; returns the names of the histories it lacks (a
        checkpoint written before they were kept), which start afresh."""
        for name in self.PER_SAMPLE:
            if name in state:
                getattr(self, name).copy_(state[name])
        return [name for name in self.PER_SAMPLE if name not in state]


def margins(logits: torch.Tensor, assigned: torch.Tensor) -> torch.Tensor:
    """Per sample: the logit of the assigned label minus the largest other logit (AUM's margin)."""
    assigned_logit = logits.gather(1, assigned[:, None]).squeeze(1)
    others = logits.scatter(1, assigned[:, None], -math.inf)
    return assigned_logit - others.max(1).values


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """The area under the ROC curve of `scores` for finding the `positive` samples (higher scores
    flag them): the Mann-Whitney statistic with tied scores given their mean rank. NaN without
    positives or negatives. Stays on the device."""
    ordered, order = scores.sort()
    _, group, sizes = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    last_rank = sizes.cumsum(0).to(torch.float64)
    mean_rank = (last_rank - (sizes - 1) / 2)[group]
    hits = positive[order].to(torch.float64)
    positives = hits.sum()
    negatives = len(hits) - positives
    return (mean_rank @ hits - positives * (positives + 1) / 2) / (positives * negatives)


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Average precision of `scores` for finding the `positive` samples: the precision at each
    distinct score threshold, from the highest down, weighted by the recall it adds (tied scores
    enter together). NaN without positives. Stays on the device."""
    ordered, order = scores.sort(descending=True)
    _, sizes = torch.unique_consecutive(ordered, return_counts=True)
    ends = sizes.cumsum(0) - 1
    found = positive[order].to(torch.float64).cumsum(0)[ends]
    precision = found / (ends + 1)
    recall_added = torch.diff(found, prepend=found.new_zeros(1)) / found[-1]
    return recall_added @ precision


def percent(part: float, whole: float) -> float:
    """100 · part / whole, NaN when whole is 0."""
    return 100.0 * part / whole if whole else math.nan
