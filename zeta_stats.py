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
