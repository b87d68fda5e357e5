"""Susceptibility ζ (Forouzesh, Sedghi & Thiran, ICLR 2023): track memorization of noisy labels with
unlabeled data, in any PyTorch training loop.

    from susceptibility import Susceptibility
    zeta = Susceptibility(unlabeled_images, num_classes=10, batch_size=128, seed=0)
    for epoch in range(epochs):
        r = zeta.measure(model, optimizer)   # before the epoch's training
        ...                                  # train as usual; zeta.zeta is the running ζ

The package holds the probe (`probe`), the in-memory restore that leaves training untouched
(`traceless`), the statistics of ζ (`zeta`, numpy only: `import susceptibility.zeta` loads no torch)
and a PyTorch Lightning callback (`lightning`). The probe's names are imported on first use, so that
the statistics stay importable where torch is not installed.
"""
from __future__ import annotations

import importlib

PUBLIC = ("Susceptibility", "UnlabeledImages", "ProbeStream", "STATE_FORMAT", "derive_seed",
          "torch_generator", "random_labels", "probe_step")
__all__ = list(PUBLIC)


def __getattr__(name: str):
    """The probe's public names, imported when first asked for."""
    if name in PUBLIC:
        return getattr(importlib.import_module("susceptibility.probe"), name)
    raise AttributeError(f"module 'susceptibility' has no attribute {name!r}")
