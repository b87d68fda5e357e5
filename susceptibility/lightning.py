"""Susceptibility ζ in a PyTorch Lightning training run: a callback.

    from susceptibility.lightning import SusceptibilityCallback
    trainer = Trainer(callbacks=[SusceptibilityCallback(unlabeled_images, num_classes=10),
                                 EarlyStopping(monitor="zeta", mode="min", strict=False)])

At the start of every training epoch the callback probes the module with the trainer's own optimizer
(see `susceptibility.Susceptibility`, whose arguments it takes) and logs `r` and, from the second
epoch on, `zeta` through the module's logger, at the epoch's step, so that `EarlyStopping`,
`ModelCheckpoint` and the loggers see them like any metric. ζ is undefined in the first epoch (its
probe measures the untrained network), so a monitor of `zeta` needs `strict=False` there. Its state
goes into Lightning's checkpoints: a fit resumed from one continues the same ζ.

Installed with `pip install ".[lightning]"`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import lightning.pytorch as pl
import torch

from susceptibility import Susceptibility


class SusceptibilityCallback(pl.Callback):
    """Logs `r` and `zeta` of the module at the start of each training epoch."""

    def __init__(self, images, num_classes: int, *, batch_size: int = 128, seed: int = 0,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None, full_precision: bool = True,
                 batches_per_epoch: int = 1):
        super().__init__()
        self.zeta = Susceptibility(images, num_classes, batch_size=batch_size, seed=seed, augment=augment,
                                   full_precision=full_precision, batches_per_epoch=batches_per_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(f"the susceptibility probe takes one step of the run's optimizer, but the trainer "
                             f"has {len(trainer.optimizers)}; use it with a single optimizer")
        r = self.zeta.measure(pl_module, trainer.optimizers[0])
        pl_module.log("r", r, on_step=False, on_epoch=True)
        if math.isfinite(self.zeta.zeta):
            pl_module.log("zeta", self.zeta.zeta, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return self.zeta.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.zeta.load_state_dict(state_dict)
