"""A sweep file and the grid of experiments.py runs it describes: reading and expanding it, without
running anything.

A sweep file (TOML) names the grid: `[sweep]` says where its files go, `[fixed]` holds the arguments
every run shares, `[grid]` the axes whose every combination is one run, and arrays of tables under
`[grid]` (`[[grid.<group>]]`) groups of cases, of which every run takes one (an optimizer with its own
learning rates, say). Every value is checked by experiments.py's own checks (`command_line`) before
anything starts; each grid point's command line is written from the settings' flags `config.FLAGS`,
and its name and files come from `run_files`.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from runner import command_line
from runner import config
from runner.errors import UsageError
from runner.run_files import NAMING_SETTINGS, run_files
from runner.settings import Flag

SWEEP_SETTINGS = {"name", "results_dir", "checkpoint_dir", "log_dir"}
# experiments.py arguments the sweep sets itself for every run.
SET_BY_SWEEP = {"filename", "modelfilename", "results_dir", "checkpoint_dir", "resume", "overwrite"}
NAME_PREFIXES = {"scale": "s", "corruptprob": "noise", "numsamples": "n", "batchsize": "bs"}
MAX_RUNS = 10_000  # runs in one sweep: each is checked and listed one by one, about a millisecond apiece


class SweepError(Exception):
    """A problem with the sweep file or the command line; reported as one line."""


# --------------------------------------------------------------------------------------------------
# The sweep file


@dataclass
class GridPoint:
    """One run of the grid: its experiments.py arguments and the files it writes."""

    name: str  # the record's name: <sweep>_<axis values>_<model>_<epochs>_<lr>
    settings: dict  # every argument the sweep file gives this run, by argument name
    argv: list[str]  # experiments.py arguments; the sweep adds --resume
    args: argparse.Namespace  # argv as experiments.py parses it
    record: Path
    checkpoint: Path
    log: Path

    def marker(self, kind: str) -> Path:
        """A small file next to the log: `failed` (the exit code) or `job` (the cluster job id)."""
        return self.log.parent / f"{self.name}.{kind}"


@dataclass
class Sweep:
    """A sweep file's runs and the folders they write to."""

    path: Path
    name: str
    results_dir: Path
    checkpoint_dir: Path
    log_dir: Path
    runs: list[GridPoint]


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; a problem with it raises SweepError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except OSError as error:
        raise SweepError(f"cannot read the sweep file {path} ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise SweepError(f"{path} is not UTF-8 text (byte {error.start} cannot be decoded); save it as "
                         f"UTF-8, as TOML requires") from None
    try:
        return build_sweep(path, spec)
    except SweepError as error:
        raise SweepError(f"{path}: {error}") from None


def build_sweep(path: Path, spec: dict) -> Sweep:
    """The runs of a parsed sweep file, every value checked by experiments.py's own parser."""
    unknown = sorted(set(spec) - {"sweep", "fixed", "grid"})
    if unknown:
        raise SweepError(f"unknown table [{unknown[0]}]; a sweep file has [sweep], [fixed] and [grid]")
    settings = section(spec, "sweep")
    for key, value in settings.items():
        if key not in SWEEP_SETTINGS:
            raise SweepError(f"unknown setting {key!r} in [sweep]; known: "
                             f"{', '.join(sorted(SWEEP_SETTINGS))}")
        if not isinstance(value, str) or not value:
            raise SweepError(f"[sweep] {key} must be a non-empty string, got {value!r}")
    name = settings.get("name", path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise SweepError(f"[sweep] name {name!r} may hold only letters, digits and _ . + -")
    results_dir = Path(settings.get("results_dir", f"results/{name}"))
    checkpoint_dir = Path(settings.get("checkpoint_dir", f"checkpoint/{name}"))
    log_dir = Path(settings.get("log_dir", results_dir / "logs"))
    fixed = {argument(key, "[fixed]"): fixed_value(key, value)
             for key, value in section(spec, "fixed").items()}
    for key, value in fixed.items():
        check_value(key, value, "[fixed]")
    factors, name_order = grid_factors(section(spec, "grid"))
    overlap = sorted(set(fixed) & set(name_order))
    if overlap:
        raise SweepError(f"{overlap[0]} is both in [fixed] and in [grid]; keep it in one of them")
    runs = [make_point(name, {**fixed, **point}, name_order, (results_dir, checkpoint_dir, log_dir))
            for point in combinations(factors)]
    check_unique_names(runs)
    return Sweep(path, name, results_dir, checkpoint_dir, log_dir, runs)


def section(spec: dict, name: str) -> dict:
    """A table of the sweep file, empty when it is absent."""
    table = spec.get(name, {})
    if not isinstance(table, dict):
        raise SweepError(f"{name} must be a table [{name}]")
    return dict(table)


def settable_flags() -> dict[str, Flag]:
    """The experiments.py flags a sweep file may set, by argument name (`data_dir` for --data-dir)."""
    return {name: flag for name, flag in config.FLAGS.items() if name not in SET_BY_SWEEP}


@functools.cache
def key_names() -> dict[str, str]:
    """Every spelling a sweep file may use for an argument, with dashes as underscores
    (`data_dir`, `batch_size`), mapped to its argument name."""
    return {spelling[2:].replace("-", "_"): name for name, flag in {**config.FLAGS, **config.ACTIONS}.items()
            for spelling in flag.spellings}


def tokens(name: str, value) -> list[str]:
    """The command-line words that give an argument its value: a switch as its flag, or the flag
    that turns it off (`--no-channels-last`), or nothing for a switch off unless given (`--amp`)."""
    flag = settable_flags()[name]
    if flag.is_switch:
        switch = flag.spelling if value else flag.negative
        return [switch] if switch else []
    return [flag.spelling, str(value)]


def argument(key: str, where: str) -> str:
    """The experiments.py argument a sweep file key names (`data-dir` and `data_dir` alike)."""
    name = key_names().get(key.replace("-", "_"))
    if name in SET_BY_SWEEP or key in ("help", "h"):
        raise SweepError(f"{where} {key}: the sweep sets it for every run; remove it")
    if name is None:
        raise SweepError(f"unknown axis or argument {key!r} in {where}; experiments.py takes: "
                         f"{', '.join(sorted(settable_flags()))}")
    return name


def fixed_value(key: str, value):
    """A [fixed] value, which must be a single value."""
    if isinstance(value, (list, dict)):
        raise SweepError(f"[fixed] {key}: give one value; lists of values belong in [grid]")
    return value


def check_value(key: str, value, where: str) -> None:
    """Reject a value experiments.py would refuse, with its parser's own message."""
    switch = settable_flags()[key].is_switch
    if switch != isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "true or false" if switch else "a number or a string"
        raise SweepError(f"{where} {key}: bad value {json.dumps(value)}; give {kind}")
    any_model = ["--model", settable_flags()["model"].choices[0]]
    argv = tokens(key, value) if key == "model" else [*any_model, *tokens(key, value)]
    try:
        parse_experiment(argv, alone=True)
    except SweepError as error:
        raise SweepError(f"{where} {key}: {error}") from None


def parse_experiment(argv: list[str], alone: bool = False) -> argparse.Namespace:
    """experiments.py's reading of a command line; its complaints raise SweepError.

    With `alone`, the line holds one argument of a run, so only its own type and range are checked,
    not how it fits the others (--noise-type with --noise-file, say): whole runs check that.
    """
    try:
        if alone:
            args = command_line.build_parser().parse_args(argv)
            command_line.value_checks(args)
        else:
            args = command_line.parse(argv)
    except UsageError as error:
        raise SweepError(str(error).removesuffix(" (see --help)")) from None
    return args


def axis_values(key: str, raw, where: str) -> list:
    """The values of one axis: a list of distinct valid values, or one value."""
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise SweepError(f"{where} {key} has no values")
    for value in values:
        check_value(key, value, where)
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise SweepError(f"{where} {key} lists {repeated[0]!r} twice")
    return values


def axes_points(table: dict, where: str) -> list[dict]:
    """Every combination of the axes of one table."""
    factors = []
    for key, raw in table.items():
        name = argument(key, where)
        factors.append([{name: value} for value in axis_values(name, raw, where)])
    return combinations(factors)


def grid_factors(grid: dict) -> tuple[list[list[dict]], list[str]]:
    """The factors whose product is the grid: one per axis, one per group of cases; and the order
    in which the arguments they vary appear in run names."""
    factors, order, owner = [], [], {}
    for key, raw in grid.items():
        is_group = isinstance(raw, list) and bool(raw) and all(isinstance(item, dict) for item in raw)
        where = f"[[grid.{key}]]" if is_group else "[grid]"
        points = (group_points(key, raw) if is_group else axes_points({key: raw}, where))
        for name in dict.fromkeys(k for point in points for k in point):
            if name in owner:
                raise SweepError(f"{name} is set both in {owner[name]} and in {where}; keep it in one place")
            owner[name] = where
            order.append(name)
        factors.append(points)
    return factors, order


def group_points(key: str, cases: list[dict]) -> list[dict]:
    """The runs' share of a group of cases: each case's own combinations, one case after another."""
    where = f"[[grid.{key}]]"
    if any(not case for case in cases):
        raise SweepError(f"{where} has an empty case")
    return [point for case in cases for point in axes_points(case, where)]


def combinations(factors: list[list[dict]]) -> list[dict]:
    """The product of the factors, each combination merged into one dict, in file order; refused
    before it is built where it holds more than `MAX_RUNS` runs."""
    count = math.prod(len(factor) for factor in factors)
    if count > MAX_RUNS:
        raise SweepError(f"the grid has {count:,} runs, more than the {MAX_RUNS:,} a sweep may hold; "
                         f"check its axes, or split it into several sweep files")
    return [{k: v for part in parts for k, v in part.items()} for parts in itertools.product(*factors)]


def name_part(key: str, value) -> str:
    """A run-name component: a choice as itself (`adam`), a switch as its name or `no-` it, other
    values after a prefix (`s0.5`)."""
    if settable_flags()[key].is_switch:
        text = key if value else f"no-{key}"
    elif settable_flags()[key].choices is not None:
        text = str(value)
    else:
        text = f"{NAME_PREFIXES.get(key, key)}{value}"
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def make_point(sweep_name: str, settings: dict, name_order: list[str],
               folders: tuple[Path, Path, Path]) -> GridPoint:
    """The run of one grid point, named after its varying values and checked as a whole."""
    results_dir, checkpoint_dir, log_dir = folders
    parts = [name_part(key, settings[key]) for key in name_order
             if key in settings and key not in NAMING_SETTINGS]
    filename = "_".join([sweep_name, *parts])
    argv = [token for key, value in settings.items() for token in tokens(key, value)]
    argv += ["--filename", filename, "--results-dir", str(results_dir),
             "--checkpoint-dir", str(checkpoint_dir)]
    try:
        args = parse_experiment(argv)
    except SweepError as error:
        raise SweepError(f"run {filename}: {error}") from None
    files = run_files(args)
    return GridPoint(files.name, settings, argv, args, files.record, files.checkpoint, log_dir / f"{files.name}.log")


def check_unique_names(runs: list[GridPoint]) -> None:
    """Two grid points may not share a run (and so its files)."""
    seen = {}
    for run in runs:
        if run.name in seen:
            raise SweepError(f"two grid points are both run {run.name} ({seen[run.name]} and "
                             f"{run.settings}); make every combination differ")
        seen[run.name] = run.settings


