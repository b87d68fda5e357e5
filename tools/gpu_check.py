"""The first command to run on a new machine: it checks that the promises of experiments.py hold on
its device and measures what they cost.

    python -m tools.gpu_check                   # on a GPU at the paper's sizes, on a CPU at small ones
    python -m tools.gpu_check --only probe,syncs

It prints one line per result: PASS or FAIL for a promise, with what was compared; PASS or WARN for
a measurement against its target (a missed target is a warning, not a failure); INFO for a
measurement without one. It exits 1 if a promise failed. Without a GPU it runs on the CPU at small
sizes (ResNet-18 at width 1/8, 1,024 training images) in a few minutes, leaving out `compile`, which
takes minutes there (`--only compile` runs it).

  environment  torch, CUDA, cuDNN, the device, bf16 support, precision and determinism settings
  data         augmentation on the device equals the DataLoader's PIL transforms for the same draws
  probe        the probe puts back weights, buffers, gradients, optimizer state and random streams
               bit for bit (SGD and Adam, BatchNorm, dropout, channels-last, the --amp probe network)
  determinism  deterministic mode raises nothing for any model; the same seed gives the same record
               in two fresh processes (fp32, channels-last, --amp and --compile where offered); a
               run stopped and resumed gives the record of one that was not
  syncs        host synchronizations per training batch: none (on a GPU also under CUDA's sync
               debug mode)
  throughput   an epoch with probe, test and signals against the network alone (target: at most
               1.10x), both after a warm-up epoch, deterministic or not, fp32 and --amp; saving the
               epoch timed apart; 200 epochs extrapolated for the model and sizes named
  precision    how much TF32 and bf16 would change r (|dr|/|r|) at a high and a low learning rate
               (target: a median under 1 %, which the probe's IEEE fp32 makes moot)
  compile      --compile: graphs compiled for batches of three sizes (2 expected), compile time,
               steady-state speed-up

The checks live in `tools.gpu_check_promises` (what must hold) and `tools.gpu_check_costs` (what
it costs), on the set-up of `tools.gpu_check_setup`.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

from runner import errors
from runner import machine
from tools.gpu_check_costs import compile_graphs, compile_speed, precision_effect, throughput
from tools.gpu_check_promises import (data_path, environment, every_model_deterministically, host_syncs,
                                      probe_restores, same_records)
from tools.gpu_check_setup import PAPER, SMALL, Check, Sizes


CHECKS = {"environment": environment, "data": data_path, "probe": probe_restores,
          "determinism": lambda check: (every_model_deterministically(check), same_records(check)),
          "syncs": host_syncs, "throughput": throughput, "precision": precision_effect, "compile": lambda check: (compile_graphs(check), compile_speed(check))}
LEFT_OUT_ON_A_CPU = ("compile",)


def run_check(check: Check, name: str) -> None:
    """One check, its own output and that of the runs it starts held back; an error is a FAIL line."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            CHECKS[name](check)
    except Exception as error:
        check.result(name, False, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}")
    finally:
        machine.configure_device(check.device, True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--only", default=None, help=f"checks separated by commas, from: {', '.join(CHECKS)}")
    parser.add_argument("--train-size", type=int, default=None, help="training images of the throughput check "
                                                                      "(default: 50,000 on a GPU, 1,024 on a CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = args.only.split(",") if args.only else None
    unknown = [name for name in chosen or () if name not in CHECKS]
    try:
        machine.prepare_determinism(True)  # before CUDA starts
        device = machine.select_device(args.device)
        if unknown:
            raise errors.UsageError(f"--only {args.only}: no check {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    except errors.UsageError as error:
        print(f"gpu_check.py: error: {error}", file=sys.stderr)
        return errors.USAGE
    sizes = PAPER if device.type == "cuda" else SMALL
    if args.train_size:
        sizes = Sizes(sizes.scale, args.train_size, sizes.test, sizes.batch)
    chosen = chosen or [name for name in CHECKS if device.type == "cuda" or name not in LEFT_OUT_ON_A_CPU]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        check = Check(device, sizes, Path(work))
        machine.configure_device(device, True)
        for name in chosen:
            run_check(check, name)
    print(summary(check.lines, time.perf_counter() - started))
    return 1 if any(status == "FAIL" for status, _, _ in check.lines) else 0


def summary(lines: list[tuple[str, str, str]], seconds: float) -> str:
    """The last line: how many promises and targets passed and failed, targets missed, and
    measurements given without a target."""
    count = collections.Counter(status for status, _, _ in lines)
    return (f"{count['PASS']} checks passed, {count['FAIL']} failed, {count['WARN']} warnings (targets missed), "
            f"{count['INFO']} facts and measurements without a target, in {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
