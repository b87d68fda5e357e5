"""ζ from the probe's drops r_τ = Φ̃_before(τ) − Φ̃_after(τ), under the paper's and the reference
notebook's running means.

numpy only, so that reading run records needs no torch: `susceptibility` reports ζ through these
functions, and the analysis recomputes it from recorded Φ̃ values with the same ones.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CONVENTIONS = ("paper", "reference")


def check_convention(convention: str) -> str:
    """`convention` if it is one of `CONVENTIONS`; a ValueError naming them otherwise."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    return convention


def running_zetas(drops: Sequence[float], convention: str = "paper") -> np.ndarray:
    """ζ(t) for t = 0 … T−1 from the drops r_0 … r_{T−1} of consecutive epochs.

    paper: ζ(t) = (1/t) Σ_{τ=1..t} r_τ; reference notebook: (1/t) Σ_{τ=1..t−1} r_τ (it leaves out
    the latest probe and divides t − 1 terms by t). The probe at τ = 0 measures the untrained network
    and enters neither mean, so ζ(0) is NaN; so is every ζ from the first missing (NaN) or non-finite
    r_τ on, since a mean over a gap is undefined. The sums run in epoch order.
    """
    check_convention(convention)
    by_epoch = np.array(drops, dtype=float)
    if by_epoch.size == 0:
        return by_epoch
    by_epoch[0] = 0.0
    sums = np.cumsum(by_epoch)
    t = np.arange(len(by_epoch), dtype=float)
    t[0] = np.nan
    if convention == "reference":
        sums = np.concatenate([[np.nan], sums[:-1]])
    return sums / t


def drop_standard_errors(batch_drops: Sequence[Sequence[float]]) -> np.ndarray:
    """Per epoch, the standard error of r, the mean of the drops of its k probe batches: their
    sample standard deviation over √k; NaN for an epoch of one batch."""
    errors = []
    for drops in batch_drops:
        values = np.asarray(drops, dtype=float)
        errors.append(values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan)
    return np.asarray(errors, dtype=float)


def zeta_standard_errors(drop_errors: Sequence[float], convention: str = "paper") -> np.ndarray:
    """The standard error of each ζ(t) of `running_zetas`, from the standard errors of the epochs'
    r (see `drop_standard_errors`): the batches of different epochs are drawn independently, so
    the variances of the averaged terms add, SE(ζ(t)) = √(Σ SE(r_τ)²) / t."""
    variances = np.asarray(drop_errors, dtype=float) ** 2
    t = np.arange(len(variances), dtype=float)
    return np.sqrt(running_zetas(variances, convention) / np.where(t > 0, t, np.nan))
