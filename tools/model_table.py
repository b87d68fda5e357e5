"""Print the README's model table: parameters at several widths and measured training throughput.

For every registered model: its parameter count (10 classes) at scales 0.25, 0.5 and 1, and how many
32x32 images per second one training step processes at scale 0.25 (forward, backward and an SGD step
with momentum and weight decay on a batch of 128 random images, in train mode) on this machine's CPU.
Each model gets a few warm-up steps, then timed steps until --steps steps or --seconds seconds have
passed; the figure is the batch size over the median step time, which a brief stall of the machine
does not move. The table is markdown on stdout, preceded by a line that says what it was measured with,
including the load average before and after: other work on the machine lowers the figures (a lot when
it competes with torch's threads), so measure on an otherwise idle machine.

    python -m tools.model_table                 # all models, about 3 minutes on 2 cores
    python -m tools.model_table --models resnet vgg --threads 1
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F


from models import FAMILIES, create_model, parameter_count

PARAMETER_SCALES = (0.25, 0.5, 1.0)


def training_throughput(name: str, scale: float, batch_size: int, warmup: int, steps: int,
                        seconds: float) -> float:
    """Images per second of full training steps on random CIFAR-sized batches (median step)."""
    torch.manual_seed(0)
    model = create_model(name, scale).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < steps and (not durations or time.perf_counter() - started < seconds):
        step_started = time.perf_counter()
        step()
        durations.append(time.perf_counter() - step_started)
    return batch_size / statistics.median(durations)


def cpu_name() -> str:
    """The CPU model as the kernel reports it, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The one-minute load average, where the system reports one."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--scale", type=float, default=0.25, help="width of the throughput runs")
    parser.add_argument("--batchsize", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=20, help="at most this many timed steps")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="stop timing a model after this long (at least one step)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: torch's default here)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_before = load_average()
    rows = []
    for name in args.models:
        counts = " | ".join(f"{parameter_count(name, s):,}" for s in PARAMETER_SCALES)
        speed = training_throughput(name, args.scale, args.batchsize, args.warmup, args.steps, args.seconds)
        rows.append(f"| `{name}` | {FAMILIES[name].description} | {counts} | {speed:,.0f} |")
        print(f"{name}: {speed:,.0f} images/s", file=sys.stderr, flush=True)
    print(f"Measured with `python -m tools.model_table`: torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads on {os.cpu_count()} cores of {cpu_name()} "
          f"({platform.system()}), load average {load_before} before and {load_average()} after; "
          f"parameters for 10 classes; throughput: median training step (forward, backward, SGD) "
          f"on batches of {args.batchsize} 32x32 images at scale {args.scale:g}, after "
          f"{args.warmup} warm-up steps.")
    print()
    scales = " | ".join(f"params x{s:g}" for s in PARAMETER_SCALES)
    print(f"| `--model` | architecture | {scales} | train images/s (x{args.scale:g}, CPU) |")
    print("|" + " --- |" * 2 + " ---: |" * (len(PARAMETER_SCALES) + 1))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
