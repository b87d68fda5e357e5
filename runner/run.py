"""A training run: everything it holds between epochs, built from its configuration and its data, and
its checkpoint: the state it saves and how it continues from it."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from runner import batching
from runner import checkpoints
import datasets
from runner import noisy_data
from runner.errors import UsageError
from runner.config import RunConfig
from runner.machine import environment, environment_changes
from models import create_model
from runner.sample_scores import TrainingSignals
from runner.streams import Stream
from susceptibility import Susceptibility, derive_seed
from susceptibility.traceless import seed_device_stream
from runner.training import OPTIMIZERS, SCHEDULERS, fast_network


@dataclass
class Run:
    """Everything a training run holds between epochs, all of it made by `build_run`.

    Like a torch module, it gives its state for a checkpoint (`state_dict`) and continues from one
    (`load_state_dict`); its record's header is derived from its configuration and data (`header`).
    """

    config: RunConfig
    command: list[str]  # the command line that started the run (or continued it from a format-1 checkpoint)
    device: torch.device
    environment: dict  # the facts of the machine that decide the run's last digits (`machine.environment`)
    data: noisy_data.NoisyData
    batches: batching.Batches
    model: torch.nn.Module    # the plain model, as saved in checkpoints
    network: torch.nn.Module  # what computes forward passes: the model, maybe compiled or bf16
    probe_network: torch.nn.Module  # the network the probe runs: never bf16 nor compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    signals: TrainingSignals  # per-sample prediction and margin history
    probe: Susceptibility  # ζ, measured on the probe set at the start of each epoch
    extra_probes: dict[str, Susceptibility]  # recorded beside ζ, by source
    test_predictions: torch.Tensor  # each test image's predicted class, latest epoch
    rows: list[dict] = field(default_factory=list)  # the record's row of each completed epoch

    @property
    def name(self) -> str:
        """The run's name, which its record and its messages carry."""
        return self.config.files.name

    @property
    def generator_device(self) -> torch.device:
        """Where the data path draws its random numbers (see `generator_device`)."""
        return generator_device(self.config, self.device)

    @property
    def finished(self) -> bool:
        """Whether every planned epoch is completed."""
        return len(self.rows) == self.config.epochs

    def header(self) -> dict:
        """The record's header sections that describe the run (its status is added when written)."""
        config, data = self.config, self.data
        header = {
            "run": {"name": self.name, "checkpoint": config.files.checkpoint.name},
            "args": config.as_dict(),
            "command": self.command,
            "environment": self.environment,
            "data": {"dataset": config.dataset, "num_classes": config.num_classes,
                     "train_images_available": len(data.images), "train_size": len(data.train_index),
                     "test_size": len(data.test), "probe_source": config.probe_source,
                     "probe_size": len(data.probe.index),
                     "extra_probe_sizes": {source: len(probe.index) for source, probe in data.extra_probes.items()},
                     "noisy_holdout": data.holdout.summary(data.noise.ground_truth)},
            "noise": data.noise_summary(),
        }
        if data.class_names is not None:  # only datasets that name their classes: other records unchanged
            header["data"]["class_names"] = list(data.class_names)
        return header

    def label_tensors(self) -> dict[str, torch.Tensor]:
        """The run's subset, labels, probe set and hold-out set, which a resumed run must share."""
        data, as_tensor = self.data, torch.as_tensor
        return {"train_index": as_tensor(data.train_index), "assigned": as_tensor(data.assigned_labels),
                "true": as_tensor(data.true_labels), "probe_index": as_tensor(data.probe.index),
                "probe_labels": as_tensor(data.probe.labels),
                "holdout_index": as_tensor(data.holdout.index), "holdout_labels": as_tensor(data.holdout.labels)}

    def state_dict(self) -> dict:
        """Everything needed to continue the run: a checkpoint of the current format
        (`checkpoints.CHECKPOINT_FORMAT`)."""
        return {
            "format": checkpoints.CHECKPOINT_FORMAT, "config": self.config.as_dict(), "command": self.command,
            "epochs_completed": len(self.rows), "finished": self.finished,
            "environment": self.environment,
            "rng": {"seed": self.config.seed, "next_epoch": len(self.rows)},
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "signals": self.signals.state_dict(), "rows": self.rows,
            "probe": self.probe.state_dict(), "labels": self.label_tensors(),
            "extra_probes": {name: probe.state_dict() for name, probe in self.extra_probes.items()},
            **({"class_names": list(self.data.class_names)} if self.data.class_names is not None else {}),
            "test_predictions": self.test_predictions,
        }

    def load_state_dict(self, state: dict) -> list[str]:
        """Continue from a checkpoint of the current format that belongs to this run (`restore`
        checks that); returns the names of the per-sample histories it
        lacks, which start afresh."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        missing = self.signals.load_state_dict(state["signals"] or {})
        self.rows = list(state["rows"])
        self.probe.load_state_dict(state["probe"])
        for name, probe in self.extra_probes.items():
            probe.load_state_dict(state["extra_probes"][name])
        if "test_predictions" in state:  # checkpoints written before they were kept lack them
            self.test_predictions.copy_(state["test_predictions"])
        return missing


def generator_device(config: RunConfig, device: torch.device) -> torch.device:
    """Where the data path of `config` draws its random numbers: the DataLoader samples on the CPU."""
    return device if config.data_path == "device" else torch.device("cpu")


def drawn_data(config: RunConfig, train: datasets.ImageSet, test: datasets.ImageSet) -> noisy_data.NoisyData:
    """The subset, its noisy labels, the probe set and the hold-out set the configuration asks for."""
    return noisy_data.make_noisy_data(train, test, num_classes=config.num_classes, numsamples=config.numsamples,
                                    corrupt_prob=config.corruptprob, probe_source=config.probe_source,
                                    seed=config.seed, noise_type=config.noise_type,
                                    noise_file=config.noise_file, noisy_holdout=config.noisy_holdout,
                                    extra_probes=config.extra_probe_sources)


def data_batches(config: RunConfig, data: noisy_data.NoisyData,
                 device: torch.device) -> batching.Batches:
    """The data path of the configuration: device-resident, or a DataLoader with PIL transforms."""
    if config.data_path == "device":
        return batching.DeviceBatches(data, device, config.batchsize, config.eval_batchsize)
    return batching.LoaderBatches(data, device, config.batchsize, config.eval_batchsize, config.workers)


def build_run(config: RunConfig, command: list[str], device: torch.device,
              train: datasets.ImageSet, test: datasets.ImageSet) -> Run:
    """Data, labels, model, optimizer and schedule of a fresh run, all fixed by the seed."""
    data = drawn_data(config, train, test)
    batches = data_batches(config, data, device)
    seed_device_stream(derive_seed(config.seed, Stream.INIT), torch.device("cpu"))  # the model is made there
    model = create_model(config.model, config.scale, config.num_classes).to(device)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config.lr)
    scheduler = SCHEDULERS[config.scheduler](optimizer, config.epochs)
    network = fast_network(model, bf16=config.amp, channels_last=config.channels_last, compile=config.compile)
    noisy = batches.assigned != batches.true if data.noise.ground_truth else None
    draws_on = generator_device(config, device)
    probe_network = fast_network(model, channels_last=config.channels_last) if config.amp or config.compile else network
    probe = Susceptibility.from_probe_batches(batches.probe, seed=config.seed, generator_device=draws_on,
                                              batches_per_epoch=config.probe_batches)
    extra_probes = {source: Susceptibility.from_probe_batches(
        batches.extra_probes[source], seed=data.extra_probes[source].seed, generator_device=draws_on,
        batches_per_epoch=config.extra_probe_batches) for source in config.extra_probe_sources}
    return Run(config, command, device, environment(device), data, batches, model, network, probe_network,
               optimizer, scheduler, TrainingSignals(len(data.train_index), device, noisy), probe, extra_probes,
               torch.zeros(len(data.test), dtype=torch.int64, device=device))


def restore(run: Run, state: dict, path: Path) -> None:
    """Continue a freshly built run from its checkpoint `state` (in the current format), read from
    `path`, after checking that it belongs to the same run; says what cannot continue exactly."""
    try:
        checkpoints.check_same_run(state, run.config, run.label_tensors(), run.device, path)
        missing = run.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise UsageError(f"{path} does not hold a state this run can continue from "
                         f"({checkpoints.first_line(error)}); use --overwrite to start over") from None
    if missing:
        print(f"note: {path} holds no {', '.join(missing)} history of the training samples (it was "
              f"written before they were kept); those signals start afresh", file=sys.stderr)
    changes = environment_changes(state.get("environment", {}), run.environment)
    if changes:
        print(f"warning: {path} was made with {'; '.join(changes)}; the epochs from here on may differ "
              f"in their last digits from those of an uninterrupted run", file=sys.stderr)
