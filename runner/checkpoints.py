"""How a run's checkpoint is written and read, and the rules for starting or continuing a run over its
files.

A checkpoint (`run.Run.state_dict`) is everything needed to continue a run exactly: the
configuration, model, optimizer, schedule, per-sample signals, probe measurements, labels and epoch
rows. Every random stream is
derived from the seed and the epoch number, so the seed and the epoch count are the run's whole RNG
state. Checkpoints of earlier formats are brought to the current one by `migrate`, in one place.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from runner import config as run_config
from runner import safe_files
from runner.errors import UsageError

if TYPE_CHECKING:
    from argparse import Namespace

    from runner.run_files import RunFiles

# 1: configuration under `args`; the probe's state, the signals and the hold-out labels were added
#    to it one by one, so its checkpoints may lack them.
# 2: configuration under `config`, with the command line that started the run; every part present.
# 3: the states of the extra probes (--extra-probes); the signals keep more per-sample histories,
#    which a checkpoint of format 2 lacks (they then start afresh).
CHECKPOINT_FORMAT = 3
RESTART = "use --overwrite to start over"  # what to do about a checkpoint that cannot be continued


def check_paths(args: Namespace, files: RunFiles) -> None:
    """Refuse to clobber an existing run by accident, or to resume one whose checkpoint is gone."""
    if files.record.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{files.record} already exists; add --resume to continue that run or "
                         f"--overwrite to start it over")
    if args.resume and files.record.exists() and not files.checkpoint.exists():
        raise UsageError(f"cannot resume: {files.record} exists but its checkpoint {files.checkpoint} "
                         f"is missing; use --overwrite to start over")
    check_checkpoint_kept(args, files)


def check_checkpoint_kept(args: Namespace, files: RunFiles) -> None:
    """Refuse to replace an existing checkpoint with a new run's, unless --overwrite says so: it may
    hold another run that shares the --modelfilename (`check_owner` checks the one --resume reads)."""
    if files.checkpoint.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{files.checkpoint} already exists; add --resume to continue its run, give this "
                         f"run another --modelfilename, or add --overwrite to replace it")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically save a checkpoint dictionary with torch.save. It is serialized in memory first, so
    that a full disk or a read-only folder is an `safe_files.UnwritableFile` naming the file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    safe_files.atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", advice: str = RESTART) -> dict:
    """Load a checkpoint written by `save_checkpoint`, in the current format, without executing
    pickled code; UsageError says in one line why a file is not one this program can use, ending in
    `advice`."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # torch and pickle raise many kinds for a damaged file
        raise UsageError(f"{path} cannot be read as a checkpoint ({type(error).__name__}: "
                         f"{first_line(error)}); {advice}") from None
    try:
        state = migrate(state, path, advice)
    except (KeyError, TypeError) as error:
        raise UsageError(f"{path} is damaged: it lacks {first_line(error)}; {advice}") from None
    check_contents(state, path, advice)
    return state


def first_line(error: Exception) -> str:
    """The first line of an error's message."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no message"


# The parts of a checkpoint of the current format, by the type each must have.
CHECKPOINT_PARTS = {"config": dict, "environment": dict, "rng": dict, "model": dict, "optimizer": dict,
                    "scheduler": dict, "rows": list, "probe": dict, "labels": dict, "extra_probes": dict}


def check_contents(state: dict, path: str | Path, advice: str = RESTART) -> None:
    """Refuse a checkpoint (in the current format) that lacks a part, holds a part of another kind,
    or holds rows that do not number its epochs 0, 1, ... up to at most the epochs it plans."""
    for key, kind in CHECKPOINT_PARTS.items():
        if not isinstance(state.get(key), kind):
            fault = "missing" if key not in state else f"not a {kind.__name__}"
            raise UsageError(f"{path} is damaged: its {key!r} is {fault}; {advice}")
    planned, rows = state["config"].get("epochs"), state["rows"]
    numbered = all(isinstance(row, dict) and row.get("epoch") == epoch for epoch, row in enumerate(rows))
    if not (isinstance(planned, int) and numbered and len(rows) <= planned):
        raise UsageError(f"{path} is damaged: its {len(rows)} epoch rows do not number the epochs of a run of "
                         f"{planned} epochs; {advice}")


def migrate(state: dict, path: str | Path, advice: str = RESTART) -> dict:
    """A checkpoint of any format of this program in the shape of the current one."""
    if not isinstance(state, dict):
        state = {}
    if state.get("format") == 1:
        state = from_format_1(state)
    if state.get("format") == 2:
        state = {**state, "format": CHECKPOINT_FORMAT, "extra_probes": {}}
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this program; {advice}")
    return state


def from_format_1(state: dict) -> dict:
    """Format 1 named the configuration `args`; its earliest checkpoints hold no probe state (its Φ̃
    values are in the rows), no signals (they then start afresh) and no hold-out labels (there was
    no hold-out set)."""
    labels = dict(state["labels"])
    for key in ("holdout_index", "holdout_labels"):
        labels.setdefault(key, torch.zeros(0, dtype=torch.int64))
    probe = state.get("probe") or {  # in the probe's own first format: one loss per epoch
        "format": 1, "seed": state["rng"]["seed"], "labels": labels["probe_labels"],
        "phi_before": [row["phi_before"] for row in state["rows"]],
        "phi_after": [row["phi_after"] for row in state["rows"]]}
    upgraded = {key: value for key, value in state.items() if key != "args"}
    return {**upgraded, "format": 2, "config": state["args"], "command": None,  # not kept
            "labels": labels, "probe": probe, "signals": state.get("signals")}


def check_same_run(state: dict, config: run_config.RunConfig, labels: dict[str, torch.Tensor],
                   device: torch.device, path: Path) -> None:
    """Refuse a checkpoint (in the current format) of another run: made with other arguments, on
    other data (`labels`: the subset, labels, probe and hold-out sets drawn now) or on another
    device type."""
    check_owner(state, config, path)
    differing = run_config.differing_settings(state["config"], config)
    if differing:
        described = ", ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in differing.items())
        raise UsageError(f"{path} was made with other arguments ({described}); repeat the original "
                         f"command with --resume, or start over with --overwrite")
    check_device_type(state.get("environment", {}), device, path)
    if any(not torch.equal(labels[k], state["labels"][k].cpu()) for k in labels):
        raise UsageError(f"the data in {config.data_dir} differ from those {path} was trained on; "
                         f"point --data-dir at the original data")


def check_owner(state: dict, config: run_config.RunConfig, path: Path) -> None:
    """Refuse the checkpoint of another run that shares this run's --modelfilename: continuing it
    would write that run's model under this run's record, and replace its checkpoint."""
    owner = state["config"].get("filename", config.filename)  # format 1 did not keep it
    if owner != config.filename:
        raise UsageError(f"{path} belongs to the run --filename {owner}, not to this run (--filename "
                         f"{config.filename}); give this run another --modelfilename, or add --overwrite "
                         f"to replace that run's checkpoint")


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
