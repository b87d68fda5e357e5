"""Run records as one table: reading a folder of records, picking runs and populations, and ζ
recomputed from the recorded probe losses under both conventions."""
from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from runner import records
from susceptibility.zeta import CONVENTIONS, running_zetas


# ζ is recomputed from the probe losses under both running-mean conventions, the paper's and the
# reference notebook's (see `susceptibility.zeta.running_zetas` and docs/ANALYSIS.md).
ZETA_COLUMNS = {convention: f"zeta_{convention}" for convention in CONVENTIONS}
# Columns copied from the record's header into every row of its run: column -> (section, key).
RUN_FIELDS = {
    "model": ("args", "model"),
    "scale": ("args", "scale"),
    "lr_initial": ("args", "lr"),
    "optimizer": ("args", "optimizer"),
    "scheduler": ("args", "scheduler"),
    "seed": ("args", "seed"),
    "corruptprob": ("args", "corruptprob"),
    "noise_type": ("noise", "type"),
    "noise_rate": ("noise", "corrupt_prob"),
    "ground_truth": ("noise", "ground_truth"),
    "dataset": ("data", "dataset"),
    "train_size": ("data", "train_size"),
    "test_size": ("data", "test_size"),
    "num_classes": ("data", "num_classes"),
    "fraction_wrong": ("noise", "fraction_wrong"),
    "finished": ("status", "finished"),
    "probe_source": ("args", "probe_source"),
}
ACCURACY_CURVES = {
    "train_acc": "training, all",
    "train_clean_acc": "training, clean subset",
    "train_noisy_acc": "training, noisy subset (memorization)",
    "test_acc": "test",
}


def zeta_column(convention: str) -> str:
    """The table column holding ζ under `convention` ("paper" or "reference")."""
    if convention not in ZETA_COLUMNS:
        raise ValueError(f"unknown zeta convention {convention!r}; use one of {sorted(ZETA_COLUMNS)}")
    return ZETA_COLUMNS[convention]


# The most epochs a record may number where its header plans none (args.epochs): ζ is computed over
# an array as long as the largest epoch number.
MAX_EPOCHS = 10 ** 6


def epochs_problem(epochs: pd.Series, meta: dict) -> str | None:
    """What makes a record's epoch numbers unusable, as a sentence; None if nothing. They must be
    distinct whole numbers from 0 to below the planned epochs: ζ is indexed by them."""
    planned = meta_value(meta, "args", "epochs")
    if isinstance(planned, int) and not isinstance(planned, bool) and planned > 0:
        limit, beyond = planned, f"is not below the {planned} epochs its header plans (args.epochs)"
    else:
        limit, beyond = MAX_EPOCHS, (f"is not below {MAX_EPOCHS:,}, the limit where the header plans no "
                                       f"number of epochs (args.epochs)")
    whole = epochs.notna() & (epochs % 1 == 0)
    for wrong, problem in ((epochs[~whole], "is not a whole number"), (epochs[epochs < 0], "is negative"),
                           (epochs[epochs >= limit], beyond),
                           (epochs[epochs.duplicated()], "appears more than once")):
        if len(wrong):
            value = wrong.iloc[0]
            shown = f"{int(value)}" if value % 1 == 0 else ("(empty)" if np.isnan(value) else f"{value:g}")
            return f"epoch {shown} {problem}; the record was edited or is damaged"
    return None


def zetas_at(epochs: np.ndarray, drops: np.ndarray, convention: str) -> np.ndarray:
    """ζ at each of `epochs` from the drops r there; an epoch missing from the record leaves a gap,
    from which on ζ is undefined (NaN)."""
    by_epoch = np.full(epochs.max() + 1, np.nan)
    by_epoch[epochs] = drops
    return running_zetas(by_epoch, convention)[epochs]


def meta_value(meta: dict, section: str, key: str) -> object:
    """`meta[section][key]`, or None where the record lacks it."""
    value = meta.get(section)
    return value.get(key) if isinstance(value, dict) else None


def run_table(name: str, record: records.RunRecord) -> pd.DataFrame:
    """The epoch rows of one run record with ζ recomputed and the run's identifying fields."""
    frame = pd.DataFrame(record.rows, columns=records.record_columns(record.rows)).astype(float)
    problem = epochs_problem(frame["epoch"], record.meta)
    if problem:
        raise ValueError(problem)
    frame = frame.sort_values("epoch", ignore_index=True)
    frame["epoch"] = frame["epoch"].astype(int)
    if not frame.empty:
        drops = (frame["phi_before"] - frame["phi_after"]).to_numpy()
        for convention, column in ZETA_COLUMNS.items():
            frame[column] = zetas_at(frame["epoch"].to_numpy(), drops, convention)
    for column, (section, key) in RUN_FIELDS.items():
        frame[column] = meta_value(record.meta, section, key)
    if frame["ground_truth"].isna().all():
        frame["ground_truth"] = frame[["train_clean_acc", "train_noisy_acc"]].notna().any().any()
    frame.insert(0, "run", name)
    return frame


@dataclass
class LoadedRuns:
    """Every readable run record of a folder as one table, one row per run per epoch."""

    table: pd.DataFrame
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> why it was skipped
    # Folders below this one that hold `.csv` files too, with how many: not read (a folder is one
    # collection of runs, such as a sweep's results_dir), but named so that nothing is missed silently.
    nested: dict[str, int] = field(default_factory=dict)

    def nested_note(self) -> str | None:
        """A line naming the folders below that hold records of their own, or None if there are none."""
        if not self.nested:
            return None
        listed = ", ".join(f"{folder} ({count})" for folder, count in self.nested.items())
        return (f"not read: the folders below hold .csv files of their own: {listed}; analyse one "
                f"folder at a time")


def load_runs(folder: str | Path) -> LoadedRuns:
    """Read every `*.csv` run record directly in `folder`.

    Other files (figures, hidden temporary files of a record being written, the compressed per-sample
    scores and test predictions written next to a record) are ignored; a `.csv` file that is not a
    readable record is reported in `unreadable` rather than stopping the load.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    tables, unreadable = [], {}
    for path in sorted(folder.glob(f"*{records.SUFFIX}")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            tables.append(run_table(path.stem, records.read_record(path)))
        except (OSError, ValueError, csv.Error) as error:
            unreadable[path.name] = str(error)
    columns = ["run", *records.COLUMNS, *ZETA_COLUMNS.values(), *RUN_FIELDS]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    return LoadedRuns(table, unreadable, nested_record_files(folder))


def nested_record_files(folder: Path) -> dict[str, int]:
    """The folders below `folder` (not hidden) that hold `.csv` files, with how many each holds."""
    counts: dict[str, int] = {}
    for path in sorted(folder.rglob(f"*{records.SUFFIX}")):
        relative = path.relative_to(folder)
        if path.parent != folder and not any(part.startswith(".") for part in relative.parts):
            counts[str(path.parent)] = counts.get(str(path.parent), 0) + 1
    return counts


def filter_runs(table: pd.DataFrame, patterns: list[str] | None) -> pd.DataFrame:
    """The rows of the runs whose names match any of the shell-style `patterns` (None: all runs)."""
    if patterns is None:
        return table
    names = table["run"].unique()
    unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
    if unmatched:
        raise ValueError(f"no run matches {unmatched}; runs: {sorted(names)}")
    keep = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    return table[table["run"].isin(keep)]


class MixedPopulations(ValueError):
    """The runs were trained on different data, so their ζ cannot be compared."""


def population_label(run: pd.Series) -> str:
    """The data a run was trained on, as one word: dataset, noise type and rate, training-set size
    (`cifar10/symmetric-0.5/n1000`); a part the record lacks is `?`."""
    noise = str(run["noise_type"]) if known(run["noise_type"]) else "?"
    if known(run["noise_rate"]):
        noise += f"-{run['noise_rate']:g}"
    size = f"n{int(run['train_size'])}" if known(run["train_size"]) else "?"
    return "/".join([str(run["dataset"]) if known(run["dataset"]) else "?", noise, size])


def populations(table: pd.DataFrame) -> pd.Series:
    """Per run, the label of the data it was trained on (see `population_label`)."""
    first_rows = table.drop_duplicates("run").set_index("run")
    return first_rows.apply(population_label, axis=1).rename("data")


def select_population(table: pd.DataFrame, data: str | None = None, selector: str = "--data {}") -> pd.DataFrame:
    """The runs trained on the data labelled `data`; with None, all runs, provided they share their data.

    ζ, the region boundaries and τ across runs compare models trained on the same data only, so runs
    on several datasets, noise types or rates or training-set sizes raise MixedPopulations, naming the
    groups and how to pick one (`selector` with the label in place of {}).
    """
    labels = populations(table)
    counts = labels.value_counts().sort_index()
    if data is not None:
        if data not in counts.index:
            raise ValueError(f"no run was trained on {data}; the runs' data: {', '.join(counts.index)}")
        return table[table["run"].isin(labels.index[labels == data])]
    if len(counts) > 1:
        groups = ", ".join(f"{label} ({count} run{'s' * (count > 1)})" for label, count in counts.items())
        raise MixedPopulations(f"the runs were trained on {len(counts)} different data ({groups}), and zeta "
                               f"compares only models trained on the same data; pick one with "
                               f"{selector.format(counts.index[0])}")
    return table


def zeta_mismatches(table: pd.DataFrame) -> list[str]:
    """Runs whose stored `susceptibility` column disagrees with ζ recomputed by the paper's formula."""
    close = np.isclose(table["susceptibility"], table["zeta_paper"], rtol=1e-6, atol=1e-9,
                       equal_nan=True)
    return sorted(table.loc[~close, "run"].unique())


def run_curves(table: pd.DataFrame, run: str, convention: str = "paper") -> pd.DataFrame:
    """Per epoch of `run`: training accuracy (all, clean, noisy subset), test accuracy and ζ."""
    rows = table[table["run"] == run].set_index("epoch")
    curves = rows[list(ACCURACY_CURVES)].copy()
    curves["zeta"] = rows[zeta_column(convention)]
    return curves


def runs_at_epoch(table: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """One row per run, indexed by run: its last epoch (None) or `epoch`; runs short of it are left out."""
    if epoch is None:
        rows = table.loc[table.groupby("run")["epoch"].idxmax()]
    else:
        rows = table[table["epoch"] == epoch]
    return rows.set_index("run").sort_index()


def describe_epoch(epoch: int | None) -> str:
    """How reports and titles name the epoch at which runs are compared."""
    return "the last epoch of each run" if epoch is None else f"epoch {epoch}"


def known(value) -> bool:
    """Whether a record field holds a value (not None, not NaN)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value))
