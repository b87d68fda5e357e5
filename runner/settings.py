"""How a setting of a run is defined: a field of `config.RunConfig` that carries its `Flag`.

A `Flag` holds everything about a setting that is not its resolved value: how experiments.py's
command line spells it, its group and help in `--help`, what argparse needs to read it, its default,
and the range its value must lie in. `runner.command_line` builds the parser and the value checks
from the flags, `runner.sweeps.grid` writes sweep runs' command lines from them, and
tests/test_settings.py checks docs/FLAGS.md against them.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SWITCH = "switch"  # given alone to turn it on (`--amp`); its default is False
TWO_WAY = "two-way"  # turned on or off (`--channels-last`, `--no-channels-last`)
ARGPARSE_ACTIONS = {SWITCH: "store_true", TWO_WAY: argparse.BooleanOptionalAction}
FLAG = "flag"  # the key of a field's metadata that holds its Flag


@dataclass(frozen=True)
class Flag:
    """How one setting (or action) is given on the command line, checked and documented."""

    group: str  # the group of --help that lists it
    help: str
    default: Any = None  # the value when the flag is left out
    required: bool = False
    type: Callable[[str], Any] | None = None  # reads the value from its text (argparse's `type`)
    choices: Sequence[str] | None = None
    metavar: str | None = None
    switch: str | None = None  # SWITCH or TWO_WAY for a flag given without a value
    at_least: int | None = None  # the smallest value allowed
    at_most: float | None = None  # the largest (the range is then [at_least, at_most] where both are given)
    bound: str = ""  # why the range is what it is, said with a refusal
    spelled: str | None = None  # the documented spelling, where it is not --<name with dashes>
    also: str | None = None  # the other spelling, where it is not the documented one with - and _ swapped
    name: str = ""  # the setting's name, which argparse stores the value under (`data_dir`)

    @property
    def spelling(self) -> str:
        """The flag as documented: `--data-dir`, or the reference's `--num_classes`."""
        return self.spelled or "--" + self.name.replace("_", "-")

    @property
    def spellings(self) -> list[str]:
        """The documented spelling and the other one it is also accepted in: `--num_classes` and
        `--num-classes`, `--data-dir` and `--data_dir`, `--batchsize` and `--batch-size`."""
        name = self.spelling[2:]
        other = self.also or "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))
        return [self.spelling] if other == self.spelling else [self.spelling, other]

    @property
    def is_switch(self) -> bool:
        """An on/off flag (--amp, --channels-last/--no-channels-last), given without a value."""
        return self.switch is not None

    @property
    def negative(self) -> str | None:
        """The flag that turns a two-way switch off (`--no-channels-last`), else None."""
        return "--no-" + self.spelling[2:] if self.switch == TWO_WAY else None

    def argparse_options(self) -> dict[str, Any]:
        """The keyword arguments of `add_argument` that read this flag into its setting."""
        options = dict(dest=self.name, help=self.help, default=self.default, required=self.required,
                       type=self.type, choices=self.choices, metavar=self.metavar,
                       action=ARGPARSE_ACTIONS.get(self.switch))
        return {key: value for key, value in options.items() if value is not None}

    def out_of_range(self, value: Any) -> str | None:
        """What is wrong with a value outside the flag's range (`--epochs must be at least 1, got 0`);
        None for a value within it."""
        below = self.at_least is not None and value < self.at_least
        above = self.at_most is not None and value > self.at_most
        if not (below or above):
            return None
        if self.at_least is not None and self.at_most is not None:
            allowed = f"within [{self.at_least:.4g}, {self.at_most:.4g}]"
        elif above:
            allowed = f"at most {self.at_most:.4g}"
        else:
            allowed = "0 or more" if self.at_least == 0 else f"at least {self.at_least:.4g}"
        because = f" ({self.bound})" if self.bound else ""
        return f"{self.spelling} must be {allowed}{because}, got {value}"


def setting(group: str, help: str, **how: Any) -> Any:
    """A field of a settings dataclass, carrying the `Flag` made of the arguments; the field itself
    has no default, since a resolved configuration gives every setting its value."""
    return dataclasses.field(metadata={FLAG: Flag(group, help, **how)})


def flags_of(settings_class: type) -> dict[str, Flag]:
    """The flags of a settings dataclass's fields, by setting name, in the order of the fields."""
    return {field.name: dataclasses.replace(field.metadata[FLAG], name=field.name)
            for field in dataclasses.fields(settings_class)}


def positive_float(text: str) -> float:
    """An argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
