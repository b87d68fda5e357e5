"""A training run: everything it holds between epochs, built from its configuration and its data."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runner import batching
import datasets
from runner import noisy_data
from runner.config import RunConfig
from runner.machine import environment
from models import create_model
from runner.sample_scores import TrainingSignals
from runner.streams import Stream
from susceptibility import Susceptibility, derive_seed
from susceptibility.traceless import seed_device_stream
from runner.training import OPTIMIZERS, SCHEDULERS, fast_network


@dataclass
class Run:
    """Everything a training run holds between epochs."""

    config: RunConfig
    command: list[str]  # the command line that started the run (or continued it from a format-1 checkpoint)
    device: torch.device
    data: noisy_data.NoisyData
    batches: batching.DeviceBatches | batching.LoaderBatches
    model: torch.nn.Module    # the plain model, as saved in checkpoints
    network: torch.nn.Module  # what computes forward passes: the model, maybe compiled or bf16
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    signals: TrainingSignals  # per-sample prediction and margin history
    rows: list[dict]
    meta: dict
    probe: Susceptibility = field(init=False)  # ζ, measured on the probe set at the start of each epoch
    probe_network: torch.nn.Module = field(init=False)  # the network the probe runs: never bf16 nor compiled
    extra_probes: dict[str, Susceptibility] = field(default_factory=dict)  # recorded beside ζ, by source
    test_predictions: torch.Tensor = field(init=False)  # each test image's predicted class, latest epoch

    @property
    def generator_device(self) -> torch.device:
        """Where the data path draws its random numbers: the DataLoader samples on the CPU."""
        return self.device if self.config.data_path == "device" else torch.device("cpu")


def drawn_data(config: RunConfig, train: datasets.ImageSet, test: datasets.ImageSet) -> noisy_data.NoisyData:
    """The subset, its noisy labels, the probe set and the hold-out set the configuration asks for."""
    return noisy_data.make_noisy_data(train, test, num_classes=config.num_classes, numsamples=config.numsamples,
                                    corrupt_prob=config.corruptprob, probe_source=config.probe_source,
                                    seed=config.seed, noise_type=config.noise_type,
                                    noise_file=config.noise_file, noisy_holdout=config.noisy_holdout,
                                    extra_probes=config.extra_probe_sources)


def data_batches(config: RunConfig, data: noisy_data.NoisyData,
                 device: torch.device) -> batching.DeviceBatches | batching.LoaderBatches:
    """The data path of the configuration: device-resident, or a DataLoader with PIL transforms."""
    if config.data_path == "device":
        return batching.DeviceBatches(data, device, config.batchsize, config.eval_batchsize)
    return batching.LoaderBatches(data, device, config.batchsize, config.eval_batchsize, config.workers)


def header(config: RunConfig, command: list[str], device: torch.device, train_images: int,
           data: noisy_data.NoisyData) -> dict:
    """The record's header sections that describe the run (its status is added when written)."""
    return {
        "run": {"name": config.files.name, "checkpoint": config.files.checkpoint.name},
        "args": config.as_dict(),
        "command": command,
        "environment": environment(device),
        "data": {"dataset": config.dataset, "num_classes": config.num_classes,
                 "train_images_available": train_images, "train_size": len(data.train_index),
                 "test_size": len(data.test), "probe_source": config.probe_source,
                 "probe_size": len(data.probe_index),
                 "extra_probe_sizes": {source: len(probe.index) for source, probe in data.extra_probes.items()},
                 "noisy_holdout": data.holdout.summary(data.noise.ground_truth)},
        "noise": data.noise_summary(),
    }


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
    signals = TrainingSignals(len(data.train_index), device, noisy)
    run = Run(config, command, device, data, batches, model, network, optimizer, scheduler, signals, [],
              header(config, command, device, len(train), data))
    run.probe = Susceptibility.from_probe_batches(batches.probe, seed=config.seed, generator_device=run.generator_device,
                                                  batches_per_epoch=config.probe_batches)
    run.extra_probes = {source: Susceptibility.from_probe_batches(
        batches.extra_probes[source], seed=data.extra_probes[source].seed, generator_device=run.generator_device,
        batches_per_epoch=config.extra_probe_batches) for source in config.extra_probe_sources}
    run.probe_network = (fast_network(model, channels_last=config.channels_last)
                         if config.amp or config.compile else network)
    run.test_predictions = torch.zeros(len(data.test), dtype=torch.int64, device=device)
    return run
