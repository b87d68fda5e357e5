"""ζ in PyTorch Lightning: a real `Trainer.fit` on the CPU logs the values the plain API gives for the
same model and optimizer states, Lightning's early stopping can watch them, and a fit resumed from a
Lightning checkpoint continues the same ζ."""
import copy

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

lightning = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install '.[lightning]')")

from conftest import small_dropout_net
from susceptibility import Susceptibility
from susceptibility.lightning import SusceptibilityCallback

pytestmark = pytest.mark.e2e
IMAGES = torch.randn(96, 3, 32, 32, generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(1))


class Classifier(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = small_dropout_net()

    def forward(self, images):
        return self.net(images)

    def training_step(self, batch, batch_index):
        images, labels = batch
        return F.cross_entropy(self(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(IMAGES, LABELS), batch_size=32)


class StatesAtEpochStart(lightning.Callback):
    """Keeps a copy of the module and its optimizer's state as each training epoch starts."""

    def __init__(self):
        self.states = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.states.append((copy.deepcopy(pl_module.state_dict()), copy.deepcopy(trainer.optimizers[0].state_dict())))


def fit(folder, epochs: int, callbacks: list, resume: str | None = None) -> lightning.Trainer:
    lightning.seed_everything(0, verbose=False)
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", logger=lightning.loggers.CSVLogger(folder),
                                callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                                default_root_dir=folder, deterministic=True)
    trainer.fit(Classifier(), ckpt_path=resume)
    return trainer


def logged(trainer: lightning.Trainer) -> pd.DataFrame:
    metrics = pd.read_csv(f"{trainer.logger.log_dir}/metrics.csv")
    return metrics.groupby("epoch")[["r", "zeta"]].first()


def probe_of(seed: int = 7) -> SusceptibilityCallback:
    return SusceptibilityCallback(IMAGES, num_classes=10, batch_size=32, seed=seed)


def test_the_logged_values_are_those_of_the_plain_api_for_the_same_states(tmp_path):
    states = StatesAtEpochStart()
    trainer = fit(tmp_path, 3, [probe_of(), states])
    values = logged(trainer)
    plain = Susceptibility(IMAGES, num_classes=10, batch_size=32, seed=7)
    for module_state, optimizer_state in states.states:
        model = Classifier()
        model.load_state_dict(module_state)
        optimizer = model.configure_optimizers()
        optimizer.load_state_dict(optimizer_state)
        plain.measure(model, optimizer)
    drops = [b - a for b, a in zip(plain.phi_before, plain.phi_after)]
    assert values["r"].tolist() == pytest.approx(drops, rel=1e-6)
    assert pd.isna(values["zeta"][0]) and values["zeta"][1:].tolist() == pytest.approx(plain.zetas()[1:], rel=1e-6)


def test_early_stopping_can_watch_zeta(tmp_path):
    stopping = lightning.callbacks.EarlyStopping(monitor="zeta", mode="min", strict=False, patience=0,
                                                 min_delta=1e9)  # no epoch can improve enough: stop at once
    trainer = fit(tmp_path, 6, [probe_of(), stopping])
    assert trainer.current_epoch < 6 and stopping.stopped_epoch >= 1


def test_a_fit_resumed_from_a_checkpoint_continues_the_same_zeta(tmp_path):
    whole = fit(tmp_path / "whole", 4, [probe_of()])
    checkpoints = lightning.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    fit(tmp_path / "cut", 2, [probe_of(), checkpoints])
    resumed_probe = probe_of()
    resumed = fit(tmp_path / "resumed", 4, [resumed_probe], resume=str(tmp_path / "checkpoints" / "last.ckpt"))
    assert resumed_probe.zeta.epoch == 4
    assert logged(resumed)["zeta"].tolist() == pytest.approx(logged(whole)["zeta"][2:].tolist(), rel=1e-6)
