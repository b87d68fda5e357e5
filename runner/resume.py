"""What `--resume` does where the run it names has no checkpoint.

Epochs and learning rate are part of a run's name, so `--resume --epochs 5` after a finished 3-epoch
run names another run, which has no checkpoint. Where checkpoints of the same --modelfilename and
model exist, `--resume` stops with one line naming them and what they differ in, since the command
most likely meant one of them, with one exception: a finished run whose learning rate is constant
(`--scheduler constant`) and that differs only in having fewer epochs is extended, since its epochs
are exactly the first epochs of the longer run (every random stream is derived from the seed and the
epoch, and nothing else depends on the epoch count). Under the other schedules the learning rate of
every epoch depends on --epochs (cosine, step and exponential span them), so a finished run is not
the beginning of a longer one and cannot be extended. Where no such checkpoint exists, `--resume`
starts the run from its first epoch, as sweeps and cluster jobs that start every run with it need.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from runner import checkpoints
from runner import config as run_config
from runner.errors import UsageError
from runner.run_files import RunFiles, checkpoint_prefix

SCHEDULE_FREE = "constant"  # the one schedule whose learning rates do not depend on --epochs


@dataclass(frozen=True)
class Sibling:
    """A checkpoint of the same --modelfilename and model under another name, and how its run differs."""

    path: Path
    differences: dict[str, tuple]  # setting -> (that run's, this command's)
    finished: bool
    state: dict

    def description(self) -> str:
        if not self.differences:
            return f"{self.path} (the same settings)"
        changed = " and ".join(f"--{name} {theirs}" for name, (theirs, _) in self.differences.items())
        only = "only " if set(self.differences) <= {"epochs", "lr"} else ""
        return f"{self.path} (differs {only}in {changed})"


def given_settings(args: argparse.Namespace) -> dict:
    """The run-defining settings a command line gives, with those it leaves to the run left out."""
    given = {**vars(args), "noise_type": run_config.noise_type(args),
             "modelfilename": checkpoint_prefix(args)}
    return {key: value for key, value in run_config.run_defining(given).items() if value is not None}


def differences(recorded: dict, args: argparse.Namespace) -> dict[str, tuple]:
    """The settings, given on the command line, in which a checkpoint's run differs from it."""
    return {key: (recorded.get(key), value) for key, value in given_settings(args).items()
            if key in recorded and recorded[key] != value}


def siblings(args: argparse.Namespace, paths: RunFiles, device: torch.device) -> list[Sibling]:
    """The checkpoints of the same --modelfilename and model beside this run's (missing) one."""
    prefix = f"{checkpoint_prefix(args)}_{args.model}_"
    found = []
    for path in sorted(paths.checkpoint.parent.glob(f"{prefix}*.pt")):
        if path == paths.checkpoint or len(path.stem[len(prefix):].split("_")) != 2:
            continue
        try:
            state = checkpoints.load_checkpoint(path, device)
        except Exception:  # not a checkpoint of this program: nothing this command can have meant
            continue
        found.append(Sibling(path, differences(state["config"], args), bool(state.get("finished")), state))
    return found


def extension(args: argparse.Namespace, found: list[Sibling]) -> Sibling | None:
    """The finished, shorter constant-rate run this command extends, if there is one."""
    extendable = [s for s in found if set(s.differences) == {"epochs"} and s.finished
                  and s.differences["epochs"][0] < args.epochs and args.scheduler == SCHEDULE_FREE]
    return max(extendable, key=lambda s: s.differences["epochs"][0], default=None)


def refusal(paths: RunFiles, found: list[Sibling], args: argparse.Namespace) -> str:
    """The one line that stops a --resume whose run has no checkpoint while others of its name do."""
    listed = "; ".join(sibling.description() for sibling in found)
    only_epochs = any(set(s.differences) == {"epochs"} for s in found)
    why = (f" A finished run is extended only under --scheduler constant: the {args.scheduler} schedule "
           f"spans --epochs, so a shorter run's epochs are not the first epochs of this one; start this "
           f"run without --resume, or give the other run's settings to continue it." if only_epochs else
           " Give that run's settings to continue it, or leave out --resume to start this one.")
    return (f"cannot resume: {paths.checkpoint} does not exist, but checkpoints of the same "
            f"--modelfilename do: {listed}.{why}")


def checkpoint_elsewhere(args: argparse.Namespace, paths: RunFiles, device: torch.device) -> dict | None:
    """For --resume where this run has no checkpoint: the state of the shorter constant-rate run it
    extends (as this run's: its epochs and command line), or None to start from the first epoch;
    UsageError where checkpoints of the same name exist that it cannot continue."""
    found = siblings(args, paths, device)
    extended = extension(args, found)
    if extended is not None:
        print(f"extending {extended.path.name} ({extended.differences['epochs'][0]} epochs, constant learning "
              f"rate) to {args.epochs} epochs as {paths.record.name}; {extended.path} is left as it is")
        return {**extended.state, "config": {**extended.state["config"], "epochs": args.epochs}, "command": None}
    if found:
        raise UsageError(refusal(paths, found, args))
    print(f"no earlier run to resume ({paths.checkpoint} does not exist); starting "
          f"{paths.record.name} from the first epoch")
    return None
