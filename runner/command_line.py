"""The command line of experiments.py: its flags, their checks, and errors as one line.

The flags are a table (`FLAGS`), from which `build_parser` makes the parser and which `runner.sweeps.grid`
reads to write sweep runs' command lines. The reference code's flags keep their names and defaults
(`--num_classes`, `--numsamples`, `--batchsize`, ...); every flag is also accepted in the other
spelling (`--num-classes`, `--batch-size`, `--data_dir`), and an unknown flag is answered with the
closest known one. `parse` checks values and combinations; `config.resolve` turns the result into a
run's configuration.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
from dataclasses import dataclass, field

import datasets
from runner import label_noise
from runner import noisy_data
from models import FAMILIES
from runner.training import OPTIMIZERS, SCHEDULERS

# Exit codes of experiments.py (and of sweep.py, which reads its runs' codes).
USAGE, DIVERGED, INTERRUPTED = 2, 3, 130

REPRODUCIBILITY = (
    "The same arguments give identical run records (wall times aside) on the same CPU model and "
    "thread count (OMP_NUM_THREADS): the CPU's instruction set and the number of threads decide "
    "which kernels run and so the last digits, which training then amplifies. On a CUDA GPU they do "
    "on the same GPU model with the same CUDA and cuDNN versions, with deterministic kernels (the "
    "default; --no-deterministic gives them up for speed). A run resumed on the same machine ends as "
    "an uninterrupted one.")


class UsageError(Exception):
    """A problem with the command line or the files it names; reported as one line."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2, never a usage dump, and which
    answers an unknown flag with the closest known one."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            raise UsageError(f"{unknown_flag_message(unknown, self.documented_flags())} (see --help)")
        return parsed

    def documented_flags(self) -> list[str]:
        """Every flag as the usage line spells it."""
        return re.findall(r"--[A-Za-z0-9][\w-]*", self.format_usage())


def unknown_flag_message(unknown: list[str], known: list[str]) -> str:
    """`unrecognized arguments: ...`, naming the closest known flag of the first unknown one."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    flag = next((word.split("=")[0] for word in unknown if word.startswith("--")), None)
    if flag is not None:
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]}?"
    return message


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to a flag's help only where it says something: not for a required flag,
    an on/off switch, a default of None or an empty list (the help text explains those)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or any(action.default is value for value in (None, False, argparse.SUPPRESS)) \
                or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def probe_sources(text: str) -> str:
    """An argparse type: probe sources separated by commas (`train,heldout`), each once."""
    sources = [source.strip() for source in text.split(",") if source.strip()]
    unknown = [source for source in sources if source not in noisy_data.PROBE_SOURCES]
    if unknown or len(set(sources)) != len(sources) or not sources:
        raise argparse.ArgumentTypeError(f"give {' or '.join(noisy_data.PROBE_SOURCES)}, or both separated "
                                         f"by a comma, each once; got {text!r}")
    return ",".join(sources)


def other_spelling(flag: str) -> str:
    """`--num_classes` -> `--num-classes`, `--data-dir` -> `--data_dir`, `--batchsize` -> `--batch-size`."""
    name = flag[2:]
    joined = {"numsamples": "num-samples", "batchsize": "batch-size", "corruptprob": "corrupt-prob",
              "modelfilename": "model-filename", "eval-batchsize": "eval-batch-size"}
    if name in joined:
        return "--" + joined[name]
    return "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))


@dataclass(frozen=True)
class Flag:
    """One flag of experiments.py: its documented spelling and what argparse needs to read it."""

    spelling: str
    group: str
    options: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """The attribute name the value is stored under: `data_dir` for --data-dir."""
        return self.spelling[2:].replace("-", "_")

    @property
    def spellings(self) -> list[str]:
        other = other_spelling(self.spelling)
        return [self.spelling] if other == self.spelling else [self.spelling, other]

    @property
    def is_switch(self) -> bool:
        """An on/off flag (--amp, --channels-last/--no-channels-last), given without a value."""
        return self.options.get("action") in ("store_true", argparse.BooleanOptionalAction)

    @property
    def negative(self) -> str | None:
        """The flag that turns a two-way switch off (`--no-channels-last`), else None."""
        return ("--no-" + self.spelling[2:]) if self.options.get("action") is argparse.BooleanOptionalAction else None

    @property
    def choices(self):
        return self.options.get("choices")

    @property
    def default(self):
        return self.options.get("default", False if self.is_switch else None)


REFERENCE = "experiment (the reference code's flags)"
RUN = "data, device and run management"
SPEED = "speed (defaults stay fp32 and give the same numbers run after run)"
MODEL_NAMES = sorted(FAMILIES)

FLAGS: dict[str, Flag] = {flag.dest: flag for flag in [
    Flag("--model", REFERENCE, dict(required=True, choices=MODEL_NAMES, metavar="MODEL",
                                    help=f"network: {', '.join(MODEL_NAMES)}")),
    Flag("--scale", REFERENCE, dict(type=positive_float, default=1.0,
                                    help="width multiplier of every layer of the reference architecture")),
    Flag("--dataset", REFERENCE, dict(choices=datasets.DATASETS, default="cifar10",
                                      help="folder: images listed in <data-dir>/train.txt and test.txt (see README)")),
    Flag("--num_classes", REFERENCE, dict(type=int, default=None,
                                          help="number of classes (default: the dataset's, must match it; for a "
                                               "folder dataset the largest label + 1)")),
    Flag("--numsamples", REFERENCE, dict(type=int, default=None,
                                         help="train on a seeded random subset of this many images (default: all)")),
    Flag("--batchsize", REFERENCE, dict(type=int, default=128, help="batch size of training and probe")),
    Flag("--corruptprob", REFERENCE, dict(type=float, default=0.5,
                                          help="probability that a training label is replaced by a uniformly random "
                                               "one (symmetric) or flipped to its partner class (asymmetric)")),
    Flag("--noise-type", REFERENCE, dict(choices=label_noise.NOISE_TYPES, default=None,
                                         help="label noise: symmetric (when left out), asymmetric class-pair flips, "
                                              "or the human labels of CIFAR-10N from --noise-file; leave it out for "
                                              "--dataset folder, which trains on its labels as given")),
    Flag("--noise-file", REFERENCE, dict(default=None,
                                         help="CIFAR-10N label file (CIFAR-10_human.pt or .npz) for a cifar10n noise type")),
    Flag("--epochs", REFERENCE, dict(type=int, default=200, help="training epochs; the cosine schedule spans them")),
    Flag("--lr", REFERENCE, dict(type=positive_float, default=0.1, help="initial learning rate")),
    Flag("--optimizer", REFERENCE, dict(choices=sorted(OPTIMIZERS), default="sgd",
                                        help="sgd: momentum 0.9, weight decay 5e-4 (reference); adam: torch defaults")),
    Flag("--scheduler", REFERENCE, dict(choices=sorted(SCHEDULERS), default="cosine",
                                        help="cosine annealing over --epochs (reference); step: x0.1 at 50%% and "
                                             "75%% of the epochs; exponential: down to 1%% at the end; constant")),
    Flag("--filename", REFERENCE, dict(default="run", help="results file prefix")),
    Flag("--modelfilename", REFERENCE, dict(default=None, help="checkpoint prefix (default: --filename)")),
    Flag("--seed", REFERENCE, dict(type=int, default=123,
                                   help="fixes subset, noise, probe labels and batches, weights and augmentation")),
    Flag("--probe-source", RUN, dict(choices=["train", "heldout"], default="train",
                                     help="images of the unlabeled probe set: the training subset relabelled at "
                                          "random (reference), or training images outside the subset")),
    Flag("--probe-batches", RUN, dict(type=int, default=1, metavar="K",
                                      help="batches of the probe per epoch, each probed from the same state; r "
                                           "is their mean and the record keeps each batch's r (the paper: 1)")),
    Flag("--extra-probes", RUN, dict(type=probe_sources, default=None, metavar="SOURCES",
                                     help="also probe, each epoch, these unlabeled sets beside the one that "
                                          "defines zeta, each with random labels and streams of its own: train "
                                          "(the training subset), heldout (training images outside it), or "
                                          "train,heldout; the record keeps each batch's r")),
    Flag("--extra-probe-batches", RUN, dict(type=int, default=4, metavar="K",
                                            help="batches per epoch of each extra probe")),
    Flag("--noisy-holdout", RUN, dict(type=int, default=0, metavar="N",
                                      help="also evaluate, every epoch, N training images outside the --numsamples "
                                           "subset (and the probe set) with labels from the same noise process: a "
                                           "validation accuracy that needs no clean label; 0 turns it off")),
    Flag("--data-dir", RUN, dict(default=datasets.DEFAULT_DATA_DIR,
                                 help="existing folder holding cifar-10-batches-py (or cifar-100-python; or "
                                      "train.txt and test.txt for --dataset folder); CIFAR is downloaded into it "
                                      "when the batch folder is missing; a folder that does not exist is an error, "
                                      "except the default, which is created for the download")),
    Flag("--data-path", RUN, dict(choices=["device", "loader"], default="device",
                                  help="device: whole dataset on the compute device, augmented there; loader: "
                                       "torch DataLoader with PIL transforms in worker processes")),
    Flag("--workers", RUN, dict(type=int, default=4, help="DataLoader workers (--data-path loader)")),
    Flag("--eval-batchsize", RUN, dict(type=int, default=1000, help="batch size of the test pass")),
    Flag("--device", RUN, dict(default="auto", help="auto (CUDA, then Apple MPS, else CPU), cpu, cuda, cuda:N or mps")),
    Flag("--results-dir", RUN, dict(default="results", help="folder of the run record")),
    Flag("--checkpoint-dir", RUN, dict(default="checkpoint",
                                       help="folder of the checkpoint (model, optimizer and labels; kept after the "
                                            "last epoch)")),
    Flag("--tensorboard", RUN, dict(default=None, metavar="DIR",
                                    help="also write every record column as TensorBoard scalars into DIR/<run name>, "
                                         "one step per epoch; a resumed run continues the same curves")),
    Flag("--resume", RUN, dict(action="store_true", help="continue the run from its checkpoint")),
    Flag("--overwrite", RUN, dict(action="store_true", help="discard an existing run and start over")),
    Flag("--amp", SPEED, dict(action="store_true",
                              help="bf16 autocast of the forward passes of training and evaluation, on CUDA GPUs "
                                   "and CPUs that compute bf16 natively (refused where it would be emulated); "
                                   "weights, optimizer and the susceptibility probe stay fp32")),
    Flag("--channels-last", SPEED, dict(action=argparse.BooleanOptionalAction, default=None,
                                        help="channels-last memory format of the convolutions (default: on for the "
                                             "CPU, where it is faster, off on other devices; a resumed run keeps its "
                                             "choice)")),
    Flag("--compile", SPEED, dict(action="store_true", help="torch.compile the network")),
    Flag("--deterministic", SPEED, dict(action=argparse.BooleanOptionalAction, default=True,
                                        help="on a CUDA GPU, deterministic kernels (cuDNN, cuBLAS, index and "
                                             "scatter operations), so that the same seed gives the same record; "
                                             "--no-deterministic lets cuDNN pick the fastest kernels, which "
                                             "change the last digits from run to run. The CPU's kernels are "
                                             "deterministic either way; a resumed run may change it, with a "
                                             "warning")),
]}
# Flags that say what to do with an existing run, not what the run is: never stored with it.
ACTIONS = ("resume", "overwrite")


def build_parser(description: str = "") -> OneLineParser:
    """The parser of experiments.py, made from `FLAGS`."""
    parser = OneLineParser(description=description, epilog=REPRODUCIBILITY,
                           formatter_class=DefaultsHelpFormatter, allow_abbrev=False)
    groups = {}
    for flag in FLAGS.values():
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        groups[flag.group].add_argument(*flag.spellings, dest=flag.dest, **flag.options)
    return parser


def raise_first_failure(checks: list[tuple[bool, str]]) -> None:
    """Raise the message of the first check that is not ok."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


# The largest --lr: the largest float32 number, the precision the weights are updated in.
MAX_LR = 3.4028234663852886e38
# The widest networks that can train: ResNet-18 at --scale 16 has 2.9 billion weights (11.4 GB in
# fp32, before its gradients and optimizer state).
MAX_SCALE = 16


def value_checks(args: argparse.Namespace) -> None:
    """Reject single values that argparse cannot check by type alone."""
    raise_first_failure([
        (args.seed >= 0, f"--seed must be 0 or more, got {args.seed}"),
        (args.lr <= MAX_LR, f"--lr must be at most {MAX_LR:.4g}, the largest float32 number, which the "
                            f"weights are updated in; got {args.lr}"),
        (args.scale <= MAX_SCALE, f"--scale must be at most {MAX_SCALE} (ResNet-18 at {MAX_SCALE} has 2.9 "
                                  f"billion weights, 11.4 GB in fp32 before its gradients and optimizer "
                                  f"state), got {args.scale}"),
        (0 <= args.corruptprob <= 1, f"--corruptprob must be within [0, 1], got {args.corruptprob}"),
        (args.batchsize >= 1, f"--batchsize must be at least 1, got {args.batchsize}"),
        (args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}"),
        (args.workers >= 0, f"--workers must be 0 or more, got {args.workers}"),
        (args.noisy_holdout >= 0, f"--noisy-holdout must be 0 or more, got {args.noisy_holdout}"),
        (args.eval_batchsize >= 1, f"--eval-batchsize must be at least 1, got {args.eval_batchsize}"),
        (args.probe_batches >= 1, f"--probe-batches must be at least 1, got {args.probe_batches}"),
        (args.extra_probe_batches >= 1, f"--extra-probe-batches must be at least 1, got {args.extra_probe_batches}"),
    ])


def noise_checks(args: argparse.Namespace) -> list[tuple[bool, str]]:
    """--noise-type and --noise-file must fit each other and the dataset."""
    human = args.noise_type in label_noise.CIFAR10N_KEYS
    return [
        (args.dataset != datasets.FOLDER or args.noise_type is None,
         f"--noise-type {args.noise_type} does not apply to --dataset folder, which trains on its "
         f"labels as given; leave it out"),
        (not human or args.dataset == "cifar10",
         f"--noise-type {args.noise_type} holds human labels of CIFAR-10, not of {args.dataset}"),
        (not human or args.noise_file is not None,
         f"--noise-type {args.noise_type} needs --noise-file, the CIFAR-10N label file "
         f"CIFAR-10_human.pt (see README)"),
        (human or args.noise_file is None,
         "--noise-file is read only with a cifar10n --noise-type; leave it out"),
    ]


def check(args: argparse.Namespace) -> None:
    """Reject bad values and combinations of a parsed command line."""
    value_checks(args)
    checks = [(not (args.resume and args.overwrite), "--resume and --overwrite exclude each other")]
    if args.dataset in datasets.CIFAR and args.num_classes is not None:
        classes = datasets.CIFAR[args.dataset].num_classes
        checks.append((args.num_classes == classes, f"--num_classes {args.num_classes} does not match "
                       f"{args.dataset}, which has {classes} classes; leave it out"))
    raise_first_failure(checks + noise_checks(args))


def parse(argv: list[str], description: str = "") -> argparse.Namespace:
    """The command line as given, checked; UsageError names the first problem."""
    args = build_parser(description).parse_args(argv)
    check(args)
    return args
