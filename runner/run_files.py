"""A run's name and the files it writes, worked out in this one place.

The reference code names a run `<filename>_<model>_<epochs>_<lr>` and its checkpoint
`<modelfilename>_<model>_<epochs>_<lr>`, with `--modelfilename` defaulting to `--filename`. The record
goes into `--results-dir`, with the per-sample scores and the test predictions beside it, and the
checkpoint into `--checkpoint-dir`. experiments.py, the configuration, the record's header and the
sweeps all take the names from `run_files`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runner import records

CHECKPOINT_SUFFIX = ".pt"
NAMING_SETTINGS = ("model", "epochs", "lr")  # appended to --filename and --modelfilename, in this order


class NamingSettings(Protocol):
    """The settings that name a run: a parsed command line or a resolved configuration."""

    filename: str
    modelfilename: str | None
    model: str
    epochs: int
    lr: float
    results_dir: str
    checkpoint_dir: str


@dataclass(frozen=True)
class RunFiles:
    """The names of a run and of its checkpoint, and the paths of every file the run writes."""

    name: str  # <filename>_<model>_<epochs>_<lr>: the run's name, and its record's
    checkpoint_name: str  # <modelfilename>_<model>_<epochs>_<lr>
    results_dir: Path
    checkpoint_dir: Path

    @property
    def record(self) -> Path:
        """The run record: `<results-dir>/<name>.csv`."""
        return self.results_dir / (self.name + records.SUFFIX)

    @property
    def checkpoint(self) -> Path:
        """The checkpoint: `<checkpoint-dir>/<checkpoint name>.pt`."""
        return self.checkpoint_dir / (self.checkpoint_name + CHECKPOINT_SUFFIX)

    @property
    def samples(self) -> Path:
        """The per-sample scores next to the record: `<name>.samples.csv.gz`."""
        return self.results_dir / (self.name + records.SAMPLES_SUFFIX)

    @property
    def test_predictions(self) -> Path:
        """The test predictions next to the record: `<name>.test.csv.gz`."""
        return self.results_dir / (self.name + records.TEST_PREDICTIONS_SUFFIX)

    @property
    def locks(self) -> list[Path]:
        """The lock files next to the record and the checkpoint, held while a process writes the run:
        two runs that share either file cannot run at once."""
        return [path.with_name(path.name + ".lock") for path in (self.record, self.checkpoint)]


def checkpoint_prefix(settings: NamingSettings) -> str:
    """The prefix of the checkpoint's name: --modelfilename, or --filename where it is left out."""
    return settings.modelfilename or settings.filename


def run_files(settings: NamingSettings) -> RunFiles:
    """The name and files of the run that a command line (or a configuration) describes."""
    suffix = "".join(f"_{getattr(settings, name)}" for name in NAMING_SETTINGS)
    return RunFiles(settings.filename + suffix, checkpoint_prefix(settings) + suffix,
                    Path(settings.results_dir), Path(settings.checkpoint_dir))
