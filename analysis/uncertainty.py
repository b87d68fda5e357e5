"""How sure a test accuracy is: the binomial (Wilson) interval of one model's accuracy on n test images,
and the paired comparison of two models on the same images (exact McNemar test), from the test
predictions a run writes beside its record."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy.stats import binomtest, norm

from runner import records

CONFIDENCE = 0.95


def accuracy_interval(accuracy: float, count: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval (percent) of an accuracy (percent) measured on `count` images; NaN
    where either is unknown."""
    if not (math.isfinite(accuracy) and count and math.isfinite(count)):
        return math.nan, math.nan
    z = norm.ppf(0.5 + confidence / 2)
    share, count = accuracy / 100, int(count)
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    return 100 * (centre - half), 100 * (centre + half)


def bounds_text(accuracy: float, count: int, digits: int = 1) -> str:
    """`[38.6, 44.7]`: the 95 % interval of an accuracy alone; a dash where it is unknown."""
    low, high = accuracy_interval(accuracy, count)
    return "–" if not math.isfinite(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def interval_text(accuracy: float, count: int, digits: int = 1) -> str:
    """`41.6 [38.6, 44.7]`: an accuracy with its 95 % interval; a dash for none."""
    if not math.isfinite(accuracy):
        return "–"
    low, high = accuracy_interval(accuracy, count)
    if not math.isfinite(low):
        return f"{accuracy:.{digits}f}"
    return f"{accuracy:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def test_predictions(folder: str | Path, run: str) -> pd.DataFrame | None:
    """The test predictions a run wrote beside its record (`<run>.test.csv.gz`), or None where it
    has none (a run recorded before they were kept)."""
    path = Path(folder) / f"{run}{records.TEST_PREDICTIONS_SUFFIX}"
    return pd.read_csv(path) if path.is_file() else None


@dataclass(frozen=True)
class PairedComparison:
    """Two models on the same test images: their accuracies (percent), how many images only one of
    them gets right, and the exact McNemar test's two-sided p-value that both are equally accurate."""

    accuracy_a: float
    accuracy_b: float
    only_a: int
    only_b: int
    pvalue: float


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame) -> PairedComparison:
    """Compare two sets of test predictions (as `test_predictions` reads them) image by image."""
    if not a["label"].equals(b["label"]):
        raise ValueError("the two runs' test predictions are not for the same test images")
    right_a, right_b = a["predicted"] == a["label"], b["predicted"] == b["label"]
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    pvalue = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return PairedComparison(100 * right_a.mean(), 100 * right_b.mean(), only_a, only_b, float(pvalue))
