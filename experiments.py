"""Train an image classifier on CIFAR with noisy labels and track its susceptibility ζ every epoch.

    python experiments.py --model resnet --filename run1 --modelfilename run1

Each epoch: the susceptibility probe (one optimizer step on random-label data, then undone), one
training epoch, and the test pass. The run record `results/<filename>_<model>_<epochs>_<lr>.csv` and
the checkpoint `checkpoint/<modelfilename>_<model>_<epochs>_<lr>.pt` are rewritten atomically after
every epoch; `--resume` continues an interrupted run exactly where it stopped.
"""
from __future__ import annotations

import argparse
import math
import platform
import shlex
import signal
import sys
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torchvision
from tqdm import tqdm

import datasets
import records
from models import MODELS, create_model
from signals import TrainingSignals
from susceptibility import STATE_FORMAT, Susceptibility
from training import NonFiniteLoss, evaluate, fast_network, train_one_epoch, without_subsets

CHECKPOINT_FORMAT = 1
DIVERGED = 3       # exit code of a run stopped by a non-finite loss
INTERRUPTED = 130  # exit code of a run stopped by Ctrl-C or SIGTERM, its finished epochs saved
# Facts of the machine that decide which kernels compute a run, and so its last digits.
KERNEL_FACTS = ("device_name", "cpu_model", "cpu_capability", "cpu_threads")
# Arguments that change where files go or how fast the run is, but not what it computes.
OPERATIONAL_ARGS = {"resume", "overwrite", "device", "workers", "eval_batchsize", "data_dir",
                    "results_dir", "checkpoint_dir", "filename", "modelfilename"}


OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
SCHEDULERS = {
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
    "step": lambda opt, epochs: torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[epochs // 2, epochs * 3 // 4], gamma=0.1),
    "exponential": lambda opt, epochs: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.01 ** (1 / epochs)),
    "constant": lambda opt, epochs: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
}


class UsageError(Exception):
    """A problem with the command line or the files it names; reported as one line."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2, never a usage dump."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


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


REPRODUCIBILITY = (
    "The same arguments give identical run records (wall times aside) on the same CPU model and "
    "thread count (OMP_NUM_THREADS): the CPU's instruction set and the number of threads decide "
    "which kernels run and so the last digits, which training then amplifies. A run resumed on the "
    "same machine ends as an uninterrupted one. On a GPU the last digits may differ between runs.")


def build_parser() -> argparse.ArgumentParser:
    """The reference flags with their defaults, plus data, device and run-management flags."""
    p = OneLineParser(description=__doc__.split("\n\n")[0], epilog=REPRODUCIBILITY,
                      formatter_class=DefaultsHelpFormatter, allow_abbrev=False)
    ref = p.add_argument_group("experiment (the reference code's flags)")
    ref.add_argument("--model", required=True, choices=sorted(MODELS), metavar="MODEL",
                     help=f"network: {', '.join(sorted(MODELS))}")
    ref.add_argument("--scale", type=positive_float, default=1.0,
                     help="width multiplier of every layer of the reference architecture")
    ref.add_argument("--dataset", choices=datasets.DATASETS, default="cifar10",
                     help="folder: images listed in <data-dir>/train.txt and test.txt (see README)")
    ref.add_argument("--num_classes", type=int, default=None,
                     help="number of classes (default: the dataset's, must match it; for a folder "
                          "dataset the largest label + 1)")
    ref.add_argument("--numsamples", type=int, default=None,
                     help="train on a seeded random subset of this many images (default: all)")
    ref.add_argument("--batchsize", type=int, default=128, help="batch size of training and probe")
    ref.add_argument("--corruptprob", type=float, default=0.5,
                     help="probability that a training label is replaced by a uniformly random one "
                          "(symmetric) or flipped to its partner class (asymmetric)")
    ref.add_argument("--noise-type", choices=datasets.NOISE_TYPES, default=None,
                     help="label noise: symmetric (when left out), asymmetric class-pair flips, or "
                          "the human labels of CIFAR-10N from --noise-file; leave it out for "
                          "--dataset folder, which trains on its labels as given")
    ref.add_argument("--noise-file", default=None,
                     help="CIFAR-10N label file (CIFAR-10_human.pt or .npz) for a cifar10n noise type")
    ref.add_argument("--epochs", type=int, default=200,
                     help="training epochs; the cosine schedule spans them")
    ref.add_argument("--lr", type=positive_float, default=0.1, help="initial learning rate")
    ref.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd",
                     help="sgd: momentum 0.9, weight decay 5e-4 (reference); adam: torch defaults")
    ref.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="cosine",
                     help="cosine annealing over --epochs (reference); step: x0.1 at 50%% and 75%% "
                          "of the epochs; exponential: down to 1%% at the end; constant")
    ref.add_argument("--filename", default="run", help="results file prefix")
    ref.add_argument("--modelfilename", default=None, help="checkpoint prefix (default: --filename)")
    ref.add_argument("--seed", type=int, default=123,
                     help="fixes subset, noise, probe labels and batches, weights and augmentation")
    run = p.add_argument_group("data, device and run management")
    run.add_argument("--probe-source", choices=["train", "heldout"], default="train",
                     help="images of the unlabeled probe set: the training subset relabelled at "
                          "random (reference), or training images outside the subset")
    run.add_argument("--noisy-holdout", type=int, default=0, metavar="N",
                     help="also evaluate, every epoch, N training images outside the --numsamples "
                          "subset (and the probe set) with labels from the same noise process: a "
                          "validation accuracy that needs no clean label; 0 turns it off")
    run.add_argument("--data-dir", default=datasets.DEFAULT_DATA_DIR,
                     help="existing folder holding cifar-10-batches-py (or cifar-100-python; or "
                          "train.txt and test.txt for --dataset folder); CIFAR is downloaded into it "
                          "when the batch folder is missing; a folder that does not exist is an error, "
                          "except the default, which is created for the download")
    run.add_argument("--data-path", choices=["device", "loader"], default="device",
                     help="device: whole dataset on the compute device, augmented there; loader: "
                          "torch DataLoader with PIL transforms in worker processes")
    run.add_argument("--workers", type=int, default=4, help="DataLoader workers (--data-path loader)")
    run.add_argument("--eval-batchsize", type=int, default=1000, help="batch size of the test pass")
    run.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, else CPU), cpu, "
                                                      "cuda, cuda:N or mps")
    run.add_argument("--results-dir", default="results", help="folder of the run record")
    run.add_argument("--checkpoint-dir", default="checkpoint",
                     help="folder of the checkpoint (model, optimizer and labels; kept after the last epoch)")
    run.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help="discard an existing run and start over")
    speed = p.add_argument_group("speed (defaults stay fp32 and give the same numbers run after run)")
    speed.add_argument("--amp", action="store_true",
                       help="bf16 autocast of the forward passes of training and evaluation (CUDA "
                            "only); weights, optimizer and the susceptibility probe stay fp32")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels-last memory format of the convolutions (default: on for the CPU, "
                            "where it is faster, off on other devices; a resumed run keeps its choice)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the network")
    return p


def raise_first_failure(checks: list[tuple[bool, str]]) -> None:
    """Raise the message of the first check that is not ok."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def value_checks(args: argparse.Namespace) -> None:
    """Reject single values that argparse cannot check by type alone."""
    raise_first_failure([
        (0 <= args.corruptprob <= 1, f"--corruptprob must be within [0, 1], got {args.corruptprob}"),
        (args.batchsize >= 1, f"--batchsize must be at least 1, got {args.batchsize}"),
        (args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}"),
        (args.workers >= 0, f"--workers must be 0 or more, got {args.workers}"),
        (args.noisy_holdout >= 0, f"--noisy-holdout must be 0 or more, got {args.noisy_holdout}"),
        (args.eval_batchsize >= 1, f"--eval-batchsize must be at least 1, got {args.eval_batchsize}"),
    ])


def validate(args: argparse.Namespace) -> None:
    """Reject bad values and combinations, then fill in the defaults that depend on other arguments."""
    value_checks(args)
    checks = [(not (args.resume and args.overwrite), "--resume and --overwrite exclude each other")]
    if args.dataset in datasets.CIFAR and args.num_classes is not None:
        classes = datasets.CIFAR[args.dataset].num_classes
        checks.append((args.num_classes == classes, f"--num_classes {args.num_classes} does not match "
                       f"{args.dataset}, which has {classes} classes; leave it out"))
    raise_first_failure(checks + noise_checks(args))
    if args.dataset in datasets.CIFAR:
        args.num_classes = datasets.CIFAR[args.dataset].num_classes
    args.noise_type = datasets.GIVEN if args.dataset == datasets.FOLDER else args.noise_type or "symmetric"
    if args.modelfilename is None:
        args.modelfilename = args.filename


def noise_checks(args: argparse.Namespace) -> list[tuple[bool, str]]:
    """--noise-type and --noise-file must fit each other and the dataset."""
    human = args.noise_type in datasets.CIFAR10N_KEYS
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


def select_device(name: str) -> torch.device:
    """The compute device: `auto` takes CUDA, then Apple MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device; use auto, cpu, cuda, cuda:N or mps")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise UsageError(f"--device {name} is not available on this machine; use --device auto")
    return device


def run_name(prefix: str, args: argparse.Namespace) -> str:
    """The reference's file naming: <prefix>_<model>_<epochs>_<lr>."""
    return f"{prefix}_{args.model}_{args.epochs}_{args.lr}"


def run_defining_args(args: argparse.Namespace) -> dict:
    """The arguments that determine the numbers a run produces (compared on --resume)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in OPERATIONAL_ARGS}


def differing_args(recorded: dict, args: argparse.Namespace) -> dict[str, tuple]:
    """The run-defining arguments whose recorded value differs from `args`, as (recorded, now).

    An argument missing from the record was added to this program after the run started, which
    then ran with its default value.
    """
    defaults = build_parser()
    return {k: (recorded.get(k, defaults.get_default(k)), v) for k, v in run_defining_args(args).items()
            if recorded.get(k, defaults.get_default(k)) != v}


def cpu_model() -> str:
    """The CPU's model name: on Linux from /proc/cpuinfo, where platform.processor() is empty."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor()


def environment(device: torch.device) -> dict:
    """Library versions, the device, and the CPU facts that decide which kernels compute the run."""
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "device": str(device), "device_name": name,
            "cpu_model": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_threads": torch.get_num_threads()}


@dataclass
class Paths:
    record: Path
    checkpoint: Path

    @property
    def locks(self) -> list[Path]:
        """The lock files next to the record and the checkpoint, held while a process writes the run:
        two runs that share either file cannot run at once."""
        return [path.with_name(path.name + ".lock") for path in (self.record, self.checkpoint)]


@dataclass
class Run:
    """Everything a training run holds between epochs."""

    args: argparse.Namespace
    device: torch.device
    data: datasets.NoisyData
    batches: datasets.DeviceBatches | datasets.LoaderBatches
    model: torch.nn.Module    # the plain model, as saved in checkpoints
    network: torch.nn.Module  # what computes forward passes: the model, maybe compiled or bf16
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    signals: TrainingSignals  # per-sample prediction and margin history
    rows: list[dict]
    meta: dict
    probe: Susceptibility = field(init=False)  # ζ, measured on the probe set at the start of each epoch
    probe_network: torch.nn.Module = field(init=False)  # the network the probe runs: never bf16

    @property
    def generator_device(self) -> torch.device:
        """Where the data path draws its random numbers: the DataLoader samples on the CPU."""
        return self.device if self.args.data_path == "device" else torch.device("cpu")


def build_run(args: argparse.Namespace, device: torch.device) -> Run:
    """Data, labels, model, optimizer and schedule of a fresh run, all fixed by --seed."""
    train, test = datasets.load_dataset(args.data_dir, args.dataset)
    args.num_classes = datasets.class_count(train, test, args.num_classes)
    data = datasets.make_noisy_data(train, test, num_classes=args.num_classes,
                                    numsamples=args.numsamples, corrupt_prob=args.corruptprob,
                                    probe_source=args.probe_source, seed=args.seed,
                                    noise_type=args.noise_type, noise_file=args.noise_file,
                                    noisy_holdout=args.noisy_holdout)
    if args.data_path == "device":
        batches = datasets.DeviceBatches(data, device, args.batchsize, args.eval_batchsize)
    else:
        batches = datasets.LoaderBatches(data, device, args.batchsize, args.eval_batchsize, args.workers)
    torch.manual_seed(datasets.derive_seed(args.seed, "init"))
    model = create_model(args.model, args.scale, args.num_classes).to(device)
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), args.lr)
    scheduler = SCHEDULERS[args.scheduler](optimizer, args.epochs)
    meta = {
        "run": {"name": run_name(args.filename, args), "checkpoint": run_name(args.modelfilename, args) + ".pt"},
        "args": {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite")},
        "environment": environment(device),
        "data": {"dataset": args.dataset, "num_classes": args.num_classes,
                 "train_images_available": len(train), "train_size": len(data.train_index),
                 "test_size": len(test), "probe_source": args.probe_source,
                 "probe_size": len(data.probe_index),
                 "noisy_holdout": data.holdout.summary(data.noise.ground_truth)},
        "noise": data.noise_summary(),
    }
    network = fast_network(model, bf16=args.amp, channels_last=args.channels_last, compile=args.compile)
    noisy = batches.assigned != batches.true if data.noise.ground_truth else None
    signals = TrainingSignals(len(data.train_index), device, noisy)
    run = Run(args, device, data, batches, model, network, optimizer, scheduler, signals, [], meta)
    run.probe = Susceptibility.from_probe_batches(batches, seed=args.seed, generator_device=run.generator_device)
    run.probe_network = (fast_network(model, channels_last=args.channels_last, compile=args.compile)
                         if args.amp else network)
    return run


def checkpoint_state(run: Run, finished: bool) -> dict:
    """Everything needed to continue the run.

    Every random stream (shuffling, augmentation, probe batches, dropout) is derived from the seed
    and the epoch number, so the seed and the epoch count are the run's whole RNG state.
    """
    d = run.data
    as_tensor = torch.as_tensor
    return {
        "format": CHECKPOINT_FORMAT, "args": run_defining_args(run.args),
        "epochs_completed": len(run.rows), "finished": finished,
        "environment": run.meta["environment"],
        "rng": {"seed": run.args.seed, "next_epoch": len(run.rows)},
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "signals": run.signals.state_dict(), "rows": run.rows,
        "probe": run.probe.state_dict(),
        "labels": {"train_index": as_tensor(d.train_index), "assigned": as_tensor(d.assigned_labels),
                   "true": as_tensor(d.true_labels), "probe_index": as_tensor(d.probe_index),
                   "probe_labels": as_tensor(d.probe_labels),
                   "holdout_index": as_tensor(d.holdout.index), "holdout_labels": as_tensor(d.holdout.labels)},
    }


def restore(run: Run, state: dict, path: Path) -> None:
    """Load a checkpoint into a freshly built run after checking it belongs to the same run."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this program; use --overwrite to start over")
    differing = differing_args(state["args"], run.args)
    if differing:
        described = ", ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in differing.items())
        raise UsageError(f"{path} was made with other arguments ({described}); repeat the original "
                         f"command with --resume, or start over with --overwrite")
    saved_environment = state.get("environment", {})
    check_device_type(saved_environment, run.device, path)
    current = checkpoint_state(run, False)["labels"]
    saved = {k: state["labels"].get(k, current[k][:0]).cpu() for k in current}
    if any(not torch.equal(current[k], saved[k]) for k in current):
        raise UsageError(f"the data in {run.args.data_dir} differ from those {path} was trained on; "
                         f"point --data-dir at the original data")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "signals" in state:
        run.signals.load_state_dict(state["signals"])
    else:
        print(f"note: {path} holds no prediction or margin history; those signals start afresh",
              file=sys.stderr)
    run.rows = list(state["rows"])
    run.probe.load_state_dict(state.get("probe") or probe_state_from_rows(state))
    changes = environment_changes(saved_environment, run.meta["environment"])
    if changes:
        print(f"warning: {path} was made with {'; '.join(changes)}; the epochs from here on may differ "
              f"in their last digits from those of an uninterrupted run", file=sys.stderr)


def check_device_type(saved_environment: dict, device: torch.device, path: Path) -> None:
    """Refuse to continue on another device type: the random streams (shuffling, augmentation,
    dropout) live on the device, and a CPU and a GPU draw different numbers from the same seed."""
    if "device" not in saved_environment:
        return
    saved_type = torch.device(saved_environment["device"]).type
    if saved_type != device.type:
        raise UsageError(f"{path} was made on a {saved_type} device and cannot continue on {device}, "
                         f"whose random streams differ; resume it with --device {saved_type}, or start "
                         f"over with --overwrite")


def environment_changes(saved: dict, current: dict) -> list[str]:
    """The facts of `KERNEL_FACTS` that differ between a checkpoint's machine and this one. Off
    CUDA the device name is the CPU model, named once."""
    on_cuda = torch.device(current["device"]).type == "cuda"
    return [f"{key} {saved[key]!r}, now {current[key]!r}" for key in KERNEL_FACTS
            if key in saved and saved[key] != current[key] and (on_cuda or key != "device_name")]


def probe_state_from_rows(state: dict) -> dict:
    """The probe's state for a checkpoint written before it was stored: its Φ̃ values are in the rows."""
    return {"format": STATE_FORMAT, "seed": state["rng"]["seed"], "labels": state["labels"]["probe_labels"],
            "phi_before": [row["phi_before"] for row in state["rows"]],
            "phi_after": [row["phi_after"] for row in state["rows"]]}


def write_record(run: Run, paths: Paths, stopped_because: str | None = None) -> None:
    """Rewrite the run record with every completed epoch and the run's status."""
    status = {"epochs_completed": len(run.rows), "epochs_planned": run.args.epochs,
              "finished": len(run.rows) == run.args.epochs, "stopped_because": stopped_because}
    records.write_record(paths.record, records.RunRecord({**run.meta, "status": status}, run.rows))


def train_epoch(run: Run, epoch: int) -> dict:
    """Probe, train and test for one epoch; return its row of the run record."""
    args, started = run.args, time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    run.probe.measure(run.probe_network, run.optimizer)
    torch.manual_seed(datasets.derive_seed(args.seed, "train-dropout", epoch))
    train_generator = datasets.torch_generator(args.seed, run.generator_device, "train", epoch)
    with tqdm(total=run.batches.train_batch_count(), desc=epoch_label(epoch, args.epochs), leave=False,
              unit="batch", disable=None) as bar:
        train = train_one_epoch(run.network, run.optimizer, run.batches.train_batches(train_generator), bar,
                                run.signals)
    if not run.data.noise.ground_truth:
        train = without_subsets(train)
    test = evaluate(run.network, run.batches.test_batches())
    if len(run.data.holdout):
        test |= evaluate(run.network, run.batches.holdout_batches(), prefix="noisy_holdout")
    run.scheduler.step()
    row = {"epoch": epoch, "lr": lr, "phi_before": run.probe.phi_before[epoch],
           "phi_after": run.probe.phi_after[epoch], **train, **test, **run.signals.summary(),
           "seconds": time.perf_counter() - started, "susceptibility": run.probe.zeta}
    check_finite(row)
    return row


# Columns of an epoch's row that are finite in a run that has not diverged, with their names; the
# hold-out loss is there only with --noisy-holdout.
FINITE_COLUMNS = {"phi_before": "probe loss before the step (phi_before)",
                  "phi_after": "probe loss after the step (phi_after)", "test_loss": "test loss",
                  "noisy_holdout_loss": "noisy hold-out loss"}


def check_finite(row: dict) -> None:
    """Raise NonFiniteLoss if a loss of the row is NaN or infinite, before the row is recorded."""
    for column, quantity in FINITE_COLUMNS.items():
        if column in row and not math.isfinite(row[column]):
            raise NonFiniteLoss(quantity, row[column])


def epoch_label(epoch: int, epochs: int) -> str:
    """An epoch as the console shows it: the record's 0-based number, then how far the run is,
    padded so that every epoch of a run takes the same width: `epoch  9 (10/200)`."""
    width = len(str(epochs))
    return f"epoch {epoch:>{width}} ({epoch + 1:>{width}}/{epochs})"


def summary_line(row: dict, epochs: int) -> str:
    """One line per epoch with the key metrics in fixed-width columns; clean/noisy accuracies where
    they are known, and a dash for ζ in epoch 0, where it is not defined yet."""
    subsets = "".join(f"{name} {row[f'train_{name}_acc']:6.2f}%  " for name in ("clean", "noisy")
                      if math.isfinite(row[f"train_{name}_acc"]))
    zeta = row["susceptibility"]
    zeta_text = f"{zeta:8.4f}" if math.isfinite(zeta) else f"{'–':>8}"
    return (f"{epoch_label(row['epoch'], epochs)}  lr {row['lr']:9.4g}  "
            f"train {row['train_acc']:6.2f}%  {subsets}test {row['test_acc']:6.2f}%  "
            f"zeta {zeta_text}  ({row['seconds']:6.1f} s)")


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_paths(args: argparse.Namespace) -> Paths:
    """Where the run's record and checkpoint go."""
    return Paths(Path(args.results_dir) / (run_name(args.filename, args) + records.SUFFIX),
                 Path(args.checkpoint_dir) / (run_name(args.modelfilename, args) + ".pt"))


def check_paths(args: argparse.Namespace, paths: Paths) -> None:
    """Refuse to clobber an existing run by accident, or to resume one whose checkpoint is gone."""
    if paths.record.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{paths.record} already exists; add --resume to continue that run or "
                         f"--overwrite to start it over")
    if args.resume and paths.record.exists() and not paths.checkpoint.exists():
        raise UsageError(f"cannot resume: {paths.record} exists but its checkpoint {paths.checkpoint} "
                         f"is missing; use --overwrite to start over")


def channels_last_default(device: torch.device, checkpoint: dict | None) -> bool:
    """What --channels-last is when left out: a resumed run's own choice, else on for the CPU, where
    channels-last convolutions are faster with the same fp32 arithmetic; other devices keep the
    plain layout until it has been measured there."""
    recorded = checkpoint.get("args", {}).get("channels_last") if checkpoint else None
    return device.type == "cpu" if recorded is None else bool(recorded)


def start(args: argparse.Namespace, paths: Paths) -> Run:
    """Build the run, loading its checkpoint when resuming, or saying that there is none."""
    device = select_device(args.device)
    if args.amp and device.type != "cuda":
        raise UsageError(f"--amp (bf16 autocast) needs a CUDA device, not {device}; leave it out")
    checkpoint = None
    if args.resume and paths.checkpoint.exists():
        checkpoint = records.load_checkpoint(paths.checkpoint, device)
    elif args.resume:
        print(f"no earlier run to resume ({paths.checkpoint} does not exist); starting "
              f"{paths.record.name} from the first epoch")
    if args.channels_last is None:
        args.channels_last = channels_last_default(device, checkpoint)
    run = build_run(args, device)
    if checkpoint is not None:
        restore(run, checkpoint, paths.checkpoint)
        if len(run.rows) < args.epochs:
            print(f"resuming {paths.record.name}: {len(run.rows)} of {args.epochs} epochs done, "
                  f"continuing with epoch {len(run.rows)}")
    return run


def save_epoch(run: Run, paths: Paths, row: dict) -> None:
    """Add an epoch's row and write checkpoint and record; Ctrl-C and SIGTERM wait until both are
    written, so an epoch is saved whole or not at all."""
    with interrupts_deferred():
        run.rows.append(row)
        records.save_checkpoint(paths.checkpoint, checkpoint_state(run, len(run.rows) == run.args.epochs))
        write_record(run, paths)


def nothing_saved(paths: Paths) -> str:
    """What is on disk when a run stops before its first epoch is saved."""
    return (f"{paths.record} still holds the earlier run, unchanged" if paths.record.exists()
            else "nothing was written")


def interruption_message(run: Run, paths: Paths, argv: list[str]) -> str:
    """What an interrupted run left on disk, and the command that continues or restarts it."""
    if not run.rows:
        command = shlex.join(["python", "experiments.py", *argv])
        return (f"interrupted in {epoch_label(0, run.args.epochs)}, before it was saved; "
                f"{nothing_saved(paths)}. "
                f"Start it again with: {command}")
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    command = shlex.join(["python", "experiments.py", *kept, "--resume"])
    return (f"interrupted: {len(run.rows)} of {run.args.epochs} epochs are saved in {paths.record} and "
            f"{paths.checkpoint}; continue with: {command}")


def train(run: Run, paths: Paths, argv: list[str]) -> int:
    """The epoch loop; returns the process exit code."""
    args = run.args
    noise = run.meta["noise"]
    labels = (f"{noise['type']} noise, {noise['fraction_wrong']:.1%} wrong labels" if noise["ground_truth"]
              else "labels as given (ground truth unknown)")
    print(f"{run.meta['run']['name']}: {args.model} x{args.scale} on {len(run.data.train_index)} "
          f"{args.dataset} images, {labels}, device {run.device}")
    try:
        for epoch in range(len(run.rows), args.epochs):
            row = train_epoch(run, epoch)
            save_epoch(run, paths, row)
            tqdm.write(summary_line(row, args.epochs))
    except NonFiniteLoss as error:
        reason = f"non-finite {error.quantity} in epoch {len(run.rows)} ({error})"
        if run.rows:
            write_record(run, paths, stopped_because=reason)
            kept = f"the {len(run.rows)} completed epochs are kept in {paths.record} and {paths.checkpoint}"
        else:
            kept = f"no epoch was completed, so {nothing_saved(paths)}"
        print(f"stopped: {reason}; try a lower --lr; {kept}", file=sys.stderr)
        return DIVERGED
    except KeyboardInterrupt:
        print(f"\n{interruption_message(run, paths, argv)}", file=sys.stderr)
        return INTERRUPTED
    print(f"done: {paths.record} and the final model in {paths.checkpoint}")
    return 0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signal_handlers(handlers: dict) -> Iterator[None]:
    """Install `handlers` (by signal) for the block, then put back the previous ones. Only the main
    thread can handle signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupts_stop_the_run() -> AbstractContextManager[None]:
    """Let Ctrl-C and SIGTERM (a scheduler's stop) end the block with KeyboardInterrupt.

    Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python would keep
    ignoring it.
    """
    return signal_handlers({signal.SIGINT: signal.default_int_handler,
                            signal.SIGTERM: raise_keyboard_interrupt})


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block has run, then raise KeyboardInterrupt."""
    received = []
    with signal_handlers({signum: lambda number, frame: received.append(number)
                          for signum in STOP_SIGNALS}):
        yield
    if received:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the experiment the command line describes; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with interrupts_stop_the_run():
            args = build_parser().parse_args(argv)
            validate(args)
            paths = run_paths(args)
            with records.exclusive_lock(paths.locks[0]), records.exclusive_lock(paths.locks[1]):
                check_paths(args, paths)  # under the locks: two processes never write the same run
                run = start(args, paths)
                if len(run.rows) == args.epochs:
                    write_record(run, paths)
                    print(f"{paths.record} is already complete ({args.epochs} epochs)")
                    return 0
                return train(run, paths, argv)
    except (UsageError, datasets.DataError) as error:
        print(f"experiments.py: error: {error}", file=sys.stderr)
        return 2
    except records.LockHeld as error:
        print(f"experiments.py: error: another process is writing this run ({error}); wait for it to "
              f"end, or give this run another --filename and --modelfilename", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing was changed", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
