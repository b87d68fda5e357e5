"""The command line of experiments.py: its parser, its checks, and errors as one line.

The parser is made from the flags that the fields of `config.RunConfig` carry, followed in their
group by the actions `config.ACTIONS` (--resume, --overwrite). The reference code's flags keep their
names and defaults (`--num_classes`, `--numsamples`, `--batchsize`, ...); every flag is also accepted
in the other spelling (`--num-classes`, `--batch-size`, `--data_dir`), and an unknown flag is answered
with the closest known one. `parse` checks values and combinations; `config.resolve` turns the result
into a run's configuration.
"""
from __future__ import annotations

import argparse
import difflib
import re

import datasets
from runner import config
from runner import label_noise
from runner.errors import UsageError
from runner.settings import Flag

REPRODUCIBILITY = (
    "The same arguments give identical run records (wall times aside) on the same CPU model and "
    "thread count (OMP_NUM_THREADS): the CPU's instruction set and the number of threads decide "
    "which kernels run and so the last digits, which training then amplifies. On a CUDA GPU they do "
    "on the same GPU model with the same CUDA and cuDNN versions, with deterministic kernels (the "
    "default; --no-deterministic gives them up for speed). A run resumed on the same machine ends as "
    "an uninterrupted one.")


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


def flags_by_group() -> dict[str, list[Flag]]:
    """Every flag under its group of --help, the groups in the order of the settings, each group's
    settings before its actions."""
    groups: dict[str, list[Flag]] = {}
    for flag in [*config.FLAGS.values(), *config.ACTIONS.values()]:
        groups.setdefault(flag.group, []).append(flag)
    return groups


def build_parser(description: str = "") -> OneLineParser:
    """The parser of experiments.py, made from the flags of the settings and the actions."""
    parser = OneLineParser(description=description, epilog=REPRODUCIBILITY,
                           formatter_class=DefaultsHelpFormatter, allow_abbrev=False)
    for group, flags in flags_by_group().items():
        arguments = parser.add_argument_group(group)
        for flag in flags:
            arguments.add_argument(*flag.spellings, **flag.argparse_options())
    return parser


def raise_first_failure(checks: list[tuple[bool, str]]) -> None:
    """Raise the message of the first check that is not ok."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def value_checks(args: argparse.Namespace) -> None:
    """Reject a value outside its setting's range, which argparse cannot check by type alone."""
    for name, flag in config.FLAGS.items():
        message = flag.out_of_range(getattr(args, name))
        if message is not None:
            raise UsageError(message)


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
         f"CIFAR-10_human.pt (see docs/DATA.md)"),
        (human or args.noise_file is None,
         "--noise-file is read only with a cifar10n --noise-type; leave it out"),
    ]


# What a run's name may not hold: it names files inside --results-dir and --checkpoint-dir.
NOT_IN_NAMES = {"/": "a path separator (/)", "\\": "a path separator (\\)", "\0": "a NUL character"}


def name_checks(args: argparse.Namespace) -> list[tuple[bool, str]]:
    """--filename and --modelfilename must be plain names, so that no run writes outside its folders."""
    named = [("--filename", args.filename), ("--modelfilename", args.modelfilename)]
    return [(char not in name, f"{flag} {name!r} holds {what}; give a plain name: the run's files go "
                               f"into --results-dir and --checkpoint-dir")
            for flag, name in named if name is not None for char, what in NOT_IN_NAMES.items()]


def check(args: argparse.Namespace) -> None:
    """Reject bad values and combinations of a parsed command line."""
    value_checks(args)
    checks = [(not (args.resume and args.overwrite), "--resume and --overwrite exclude each other")]
    if args.dataset in datasets.CIFAR and args.num_classes is not None:
        classes = datasets.CIFAR[args.dataset].num_classes
        checks.append((args.num_classes == classes, f"--num_classes {args.num_classes} does not match "
                       f"{args.dataset}, which has {classes} classes; leave it out"))
    raise_first_failure(checks + noise_checks(args) + name_checks(args))


def parse(argv: list[str], description: str = "") -> argparse.Namespace:
    """The command line as given, checked; UsageError names the first problem."""
    args = build_parser(description).parse_args(argv)
    check(args)
    return args
