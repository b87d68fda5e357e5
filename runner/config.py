"""A run's configuration: every setting defined once, resolved once, frozen, stored with the run.

Each field of `RunConfig` is a setting and carries its `Flag` (`runner.settings`): the flag's
spellings, help, default and range. That one definition makes the command line's parser and value
checks (`runner.command_line`), the defaults of settings an older record lacks, and the sweep files'
keys (`runner.sweeps.grid`); tests/test_settings.py checks docs/FLAGS.md against it. `ACTIONS` are
the two flags that say what to do with an existing run rather than what the run is.

The command line leaves some settings to the run: the class count to the data, the memory layout to
the device (or to the checkpoint of a resumed run). experiments.py chooses them once the data and
the device are known and passes them to `resolve`, which also fills in the noise type and the
checkpoint prefix; nothing changes the configuration afterwards. The record's `args` header and the
checkpoint hold it; the record's `command` header keeps the command line as it was given.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import datasets
from models import FAMILIES
from runner import label_noise
from runner import noisy_data
from runner.run_files import RunFiles, checkpoint_prefix, run_files
from runner.settings import SWITCH, TWO_WAY, Flag, flags_of, positive_float, setting
from runner.training import OPTIMIZERS, SCHEDULERS

REFERENCE = "experiment (the reference code's flags)"
RUN = "data, device and run management"
SPEED = "speed (defaults stay fp32 and give the same numbers run after run)"
MODEL_NAMES = sorted(FAMILIES)
MAX_LR = 3.4028234663852886e38  # the largest float32 number, the precision the weights are updated in
MAX_SCALE = 16  # the widest networks that can train (see WIDEST)
WIDEST = (f"ResNet-18 at {MAX_SCALE} has 2.9 billion weights, 11.4 GB in fp32 before its gradients and "
          f"optimizer state")


def probe_sources(text: str) -> str:
    """An argparse type: probe sources separated by commas (`train,heldout`), each once."""
    sources = [source.strip() for source in text.split(",") if source.strip()]
    unknown = [source for source in sources if source not in noisy_data.PROBE_SOURCES]
    if unknown or len(set(sources)) != len(sources) or not sources:
        raise argparse.ArgumentTypeError(f"give {' or '.join(noisy_data.PROBE_SOURCES)}, or both separated "
                                         f"by a comma, each once; got {text!r}")
    return ",".join(sources)


@dataclass(frozen=True)
class RunConfig:
    """The settings of one run, as experiments.py's flags name them, all resolved; each field's
    metadata holds its flag."""

    model: str = setting(REFERENCE, f"network: {', '.join(MODEL_NAMES)}", required=True, choices=MODEL_NAMES,
                         metavar="MODEL")
    scale: float = setting(REFERENCE, "width multiplier of every layer of the reference architecture",
                           default=1.0, type=positive_float, at_most=MAX_SCALE, bound=WIDEST)
    dataset: str = setting(REFERENCE, "folder: images listed in <data-dir>/train.txt and test.txt, or in class "
                                      "folders <data-dir>/[train/]<class>/ (see docs/DATA.md)",
                           default="cifar10", choices=datasets.DATASETS)
    # the data's class count (or --num_classes for an image folder)
    num_classes: int = setting(REFERENCE, "number of classes (default: the dataset's, must match it; for a "
                                          "folder dataset the largest label + 1)", type=int, spelled="--num_classes")
    # None: every training image
    numsamples: int | None = setting(REFERENCE, "train on a seeded random subset of this many images (default: all)",
                                     type=int, also="--num-samples")
    batchsize: int = setting(REFERENCE, "batch size of training and probe", default=128, type=int, at_least=1,
                             also="--batch-size")
    corruptprob: float = setting(REFERENCE, "probability that a training label is replaced by a uniformly random "
                                            "one (symmetric) or flipped to its partner class (asymmetric)",
                                 default=0.5, type=float, at_least=0, at_most=1, also="--corrupt-prob")
    # `label_noise.GIVEN` for an image folder, symmetric when left out
    noise_type: str = setting(REFERENCE, "label noise: symmetric (when left out), asymmetric class-pair flips, or "
                                         "the human labels of CIFAR-10N from --noise-file; leave it out for "
                                         "--dataset folder, which trains on its labels as given",
                              choices=label_noise.NOISE_TYPES)
    noise_file: str | None = setting(REFERENCE, "CIFAR-10N label file (CIFAR-10_human.pt or .npz) for a cifar10n "
                                                "noise type")
    epochs: int = setting(REFERENCE, "training epochs; the cosine schedule spans them", default=200, type=int,
                          at_least=1)
    lr: float = setting(REFERENCE, "initial learning rate", default=0.1, type=positive_float, at_most=MAX_LR,
                        bound="the largest float32 number, which the weights are updated in")
    optimizer: str = setting(REFERENCE, "sgd: momentum 0.9, weight decay 5e-4 (reference); adam: torch defaults; "
                                        "adamw: torch defaults (decoupled weight decay 0.01)",
                             default="sgd", choices=sorted(OPTIMIZERS))
    scheduler: str = setting(REFERENCE, "cosine annealing over --epochs (reference); step: x0.1 at 50%% and 75%% "
                                        "of the epochs; exponential: down to 1%% at the end; constant",
                             default="cosine", choices=sorted(SCHEDULERS))
    filename: str = setting(REFERENCE, "results file prefix", default="run")
    # --filename when left out
    modelfilename: str = setting(REFERENCE, "checkpoint prefix (default: --filename)", also="--model-filename")
    seed: int = setting(REFERENCE, "fixes subset, noise, probe labels and batches, weights and augmentation",
                        default=123, type=int, at_least=0)
    probe_source: str = setting(RUN, "images of the unlabeled probe set: the training subset relabelled at random "
                                     "(reference), or training images outside the subset",
                                default="train", choices=noisy_data.PROBE_SOURCES)
    # batches of the probe that defines ζ, per epoch
    probe_batches: int = setting(RUN, "batches of the probe per epoch, each probed from the same state; r is their "
                                      "mean and the record keeps each batch's r (the paper: 1)",
                                 default=1, type=int, metavar="K", at_least=1)
    # sources of the probes recorded beside ζ ("train,heldout"), or None
    extra_probes: str | None = setting(RUN, "also probe, each epoch, these unlabeled sets beside the one that "
                                            "defines zeta, each with random labels and streams of its own: train "
                                            "(the training subset), heldout (training images outside it), or "
                                            "train,heldout; the record keeps each batch's r",
                                       type=probe_sources, metavar="SOURCES")
    # batches of each of them per epoch
    extra_probe_batches: int = setting(RUN, "batches per epoch of each extra probe", default=4, type=int, metavar="K",
                                       at_least=1)
    noisy_holdout: int = setting(RUN, "also evaluate, every epoch, N training images outside the --numsamples "
                                      "subset (and the probe set) with labels from the same noise process: a "
                                      "validation accuracy that needs no clean label; 0 turns it off",
                                 default=0, type=int, metavar="N", at_least=0)
    data_dir: str = setting(RUN, "existing folder holding cifar-10-batches-py (or cifar-100-python; or train.txt "
                                 "and test.txt for --dataset folder); CIFAR is downloaded into it when the batch "
                                 "folder is missing; a folder that does not exist is an error, except the default, "
                                 "which is created for the download", default=datasets.DEFAULT_DATA_DIR)
    data_path: str = setting(RUN, "device: whole dataset on the compute device, augmented there; loader: torch "
                                  "DataLoader with PIL transforms in worker processes",
                             default="device", choices=["device", "loader"])
    workers: int = setting(RUN, "DataLoader workers (--data-path loader)", default=4, type=int, at_least=0)
    eval_batchsize: int = setting(RUN, "batch size of the test pass", default=1000, type=int, at_least=1,
                                  also="--eval-batch-size")
    # as given (`auto`); the device chosen is in the record's environment
    device: str = setting(RUN, "auto (CUDA, then Apple MPS, else CPU), cpu, cuda, cuda:N or mps", default="auto")
    results_dir: str = setting(RUN, "folder of the run record", default="results")
    checkpoint_dir: str = setting(RUN, "folder of the checkpoint (model, optimizer and labels; kept after the last "
                                       "epoch)", default="checkpoint")
    # folder of TensorBoard event files, or None
    tensorboard: str | None = setting(RUN, "also write every record column as TensorBoard scalars into DIR/<run "
                                           "name>, one step per epoch; a resumed run continues the same curves",
                                      metavar="DIR")
    amp: bool = setting(SPEED, "bf16 autocast of the forward passes of training and evaluation, on CUDA GPUs and "
                               "CPUs that compute bf16 natively (refused where it would be emulated); weights, "
                               "optimizer and the susceptibility probe stay fp32", default=False, switch=SWITCH)
    # the device's default, or the resumed run's own choice, when left out
    channels_last: bool = setting(SPEED, "channels-last memory format of the convolutions (default: on for the CPU, "
                                         "where it is faster, off on other devices; a resumed run keeps its choice)",
                                  switch=TWO_WAY)
    compile: bool = setting(SPEED, "torch.compile the network", default=False, switch=SWITCH)
    # deterministic CUDA kernels (no effect on the CPU)
    deterministic: bool = setting(SPEED, "on a CUDA GPU, deterministic kernels (cuDNN, cuBLAS, index and scatter "
                                         "operations), so that the same seed gives the same record; "
                                         "--no-deterministic lets cuDNN pick the fastest kernels, which change the "
                                         "last digits from run to run. The CPU's kernels are deterministic either "
                                         "way; a resumed run may change it, with a warning",
                                  default=True, switch=TWO_WAY)

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


FLAGS: dict[str, Flag] = flags_of(RunConfig)
# Flags that say what to do with an existing run, not what the run is: never stored with it. --help
# lists them at the end of their group.
ACTIONS: dict[str, Flag] = {flag.name: flag for flag in [
    Flag(RUN, "continue the run from its checkpoint", default=False, switch=SWITCH, name="resume"),
    Flag(RUN, "discard an existing run and start over", default=False, switch=SWITCH, name="overwrite"),
]}
# Settings that change where files go or how fast the run is, but not what it computes (beyond the
# last digits: `deterministic`, compared on --resume as the machine's facts are).
OPERATIONAL = {"device", "workers", "eval_batchsize", "data_dir", "results_dir", "checkpoint_dir",
               "filename", "modelfilename", "deterministic", "tensorboard"}


def run_defining(settings: dict) -> dict:
    """The settings among `settings` (a configuration's, or a command line's as given) that determine
    the numbers a run produces, sorted by name."""
    return {k: v for k, v in sorted(settings.items()) if k not in OPERATIONAL and k not in ACTIONS}


def noise_type(args: argparse.Namespace) -> str:
    """The noise of the training labels: an image folder's labels as given, else symmetric when
    --noise-type is left out."""
    return label_noise.GIVEN if args.dataset == datasets.FOLDER else args.noise_type or "symmetric"


def resolve(args: argparse.Namespace, *, num_classes: int, channels_last: bool) -> RunConfig:
    """The configuration of the run a checked command line describes, given the class count and the
    memory layout that experiments.py chose for it; the noise type and the checkpoint prefix left out
    are filled in here."""
    given = {k: v for k, v in vars(args).items() if k not in ACTIONS}
    return RunConfig(**{**given, "num_classes": num_classes, "channels_last": channels_last,
                        "noise_type": noise_type(args), "modelfilename": checkpoint_prefix(args)})


def differing_settings(recorded: dict, config: RunConfig) -> dict[str, tuple]:
    """The run-defining settings whose recorded value differs from `config`'s, as (recorded, now).

    A setting missing from the record was added to this program after the run started, which then
    ran with its default value.
    """
    now = config.run_defining()
    was = {k: recorded.get(k, FLAGS[k].default) for k in now}
    return {k: (was[k], now[k]) for k in now if was[k] != now[k]}
