"""A run's configuration: every setting resolved once, frozen, stored with the run and passed on.

The command line leaves some settings to the run (the class count to the data, the memory layout to
the device); `resolve` fills them in once the data and the device are known, and nothing changes
the configuration afterwards. The record's `args` header and the checkpoint hold it; the record's
`command` header keeps the command line as it was given.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from runner import command_line
import datasets
from runner import label_noise
from runner.run_files import RunFiles, checkpoint_prefix, run_files

# Settings that change where files go or how fast the run is, but not what it computes (beyond the
# last digits: `deterministic`, compared on --resume as the machine's facts are).
OPERATIONAL = {"device", "workers", "eval_batchsize", "data_dir", "results_dir", "checkpoint_dir",
               "filename", "modelfilename", "deterministic", "tensorboard"}


@dataclass(frozen=True)
class RunConfig:
    """The settings of one run, as `experiments.py` flags name them, all resolved."""

    model: str
    scale: float
    dataset: str
    num_classes: int           # the data's class count (or --num_classes for an image folder)
    numsamples: int | None     # None: every training image
    batchsize: int
    corruptprob: float
    noise_type: str            # `label_noise.GIVEN` for an image folder, symmetric when left out
    noise_file: str | None
    epochs: int
    lr: float
    optimizer: str
    scheduler: str
    filename: str
    modelfilename: str         # --filename when left out
    seed: int
    probe_source: str
    probe_batches: int         # batches of the probe that defines ζ, per epoch
    extra_probes: str | None   # sources of the probes recorded beside ζ ("train,heldout"), or None
    extra_probe_batches: int   # batches of each of them per epoch
    noisy_holdout: int
    data_dir: str
    data_path: str
    workers: int
    eval_batchsize: int
    device: str                # as given (`auto`); the device chosen is in the record's environment
    results_dir: str
    checkpoint_dir: str
    tensorboard: str | None    # folder of TensorBoard event files, or None
    amp: bool
    channels_last: bool        # the device's default, or the resumed run's own choice, when left out
    compile: bool
    deterministic: bool        # deterministic CUDA kernels (no effect on the CPU)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def extra_probe_sources(self) -> tuple[str, ...]:
        return tuple(self.extra_probes.split(",")) if self.extra_probes else ()

    def run_defining(self) -> dict:
        """The settings that determine the numbers a run produces (compared on --resume)."""
        return run_defining(self.as_dict())

    @property
    def files(self) -> RunFiles:
        """The run's name and the files it writes."""
        return run_files(self)


def run_defining(settings: dict) -> dict:
    """The settings among `settings` (a configuration's, or a command line's as given) that determine
    the numbers a run produces, sorted by name."""
    return {k: v for k, v in sorted(settings.items()) if k not in OPERATIONAL and k not in command_line.ACTIONS}


def noise_type(args: argparse.Namespace) -> str:
    """The noise of the training labels: an image folder's labels as given, else symmetric when
    --noise-type is left out."""
    return label_noise.GIVEN if args.dataset == datasets.FOLDER else args.noise_type or "symmetric"


def resolve(args: argparse.Namespace, *, num_classes: int, channels_last: bool) -> RunConfig:
    """The configuration of the run a checked command line describes, with the settings it leaves
    to the data (`num_classes`) and the device (`channels_last`)."""
    given = {k: v for k, v in vars(args).items() if k not in command_line.ACTIONS}
    return RunConfig(**{**given, "num_classes": num_classes, "channels_last": channels_last,
                        "noise_type": noise_type(args), "modelfilename": checkpoint_prefix(args)})


def differing_settings(recorded: dict, config: RunConfig) -> dict[str, tuple]:
    """The run-defining settings whose recorded value differs from `config`'s, as (recorded, now).

    A setting missing from the record was added to this program after the run started, which then
    ran with its default value.
    """
    now = config.run_defining()
    was = {k: recorded.get(k, command_line.FLAGS[k].default) for k in now}
    return {k: (was[k], now[k]) for k in now if was[k] != now[k]}
