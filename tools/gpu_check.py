"""The first command to run on a new machine: it checks that the promises of experiments.py hold on
its device and measures what they cost.

    python -m tools.gpu_check                   # on a GPU at the paper's sizes, on a CPU at small ones
    python -m tools.gpu_check --only probe,syncs

It prints one line per result: PASS or FAIL for a promise, with what was compared, INFO for a figure,
and exits 1 if anything failed. Without a GPU it runs on the CPU at small sizes (ResNet-18 at width
1/8, 1,024 training images) in under two minutes, leaving out `compile`, which takes minutes there
(`--only compile` runs it).

  environment  torch, CUDA, cuDNN, the device, bf16 support, precision and determinism settings
  data         augmentation on the device equals the DataLoader's PIL transforms for the same draws
  probe        the probe puts back weights, buffers, gradients, optimizer state and random streams
               bit for bit (SGD and Adam, BatchNorm, dropout, channels-last, the --amp probe network)
  determinism  deterministic mode raises nothing for any model; the same seed gives the same record;
               a run stopped and resumed gives the record of one that was not
  syncs        host synchronizations per training batch: none
  throughput   an epoch with probe, test, signals and checkpoint against the network alone (target:
               at most 1.10x), deterministic or not, fp32 and --amp; 200 epochs extrapolated
  precision    how much TF32 and bf16 would change r (|dr|/|r|) at a high and a low learning rate
  compile      --compile: graphs compiled, compile time, steady-state speed-up
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


from runner import batching
from runner import command_line
import experiments
from runner import machine
from runner import records
from runner import errors
from runner.run_files import RunFiles, run_files
from susceptibility import traceless
from tools.benchmark import Timer, network_alone_epoch, prepare_tensors
from tools.host_syncs import HostSynchronizations
from models import FAMILIES, create_model
from susceptibility import Susceptibility, probe_step
from runner.training import fast_network


@dataclass(frozen=True)
class Sizes:
    """The network's width and the synthetic dataset the checks train on."""

    scale: float
    train: int
    test: int
    batch: int = 128


PAPER = Sizes(1.0, 50_000, 10_000)  # ResNet-18 on all of CIFAR-10, as in the paper
SMALL = Sizes(0.125, 1024, 512)
TARGET = 1.10  # the most an epoch of experiments.py may take, in multiples of the network's own work


class Check:
    """The device and sizes of a self-check, its scratch folder, and the table it prints."""

    def __init__(self, device: torch.device, sizes: Sizes, work: Path):
        self.device, self.sizes, self.work, self.out = device, sizes, work, sys.stdout
        self.lines: list[tuple[str, str, str]] = []
        self.folders: dict[tuple[int, int], Path] = {}

    def say(self, status: str, name: str, text: str) -> None:
        self.lines.append((status, name, text))
        print(f"{status:<4}  {name:<11}  {text}", file=self.out, flush=True)

    def result(self, name: str, ok: bool, text: str) -> None:
        self.say("PASS" if ok else "FAIL", name, text)

    def info(self, name: str, text: str) -> None:
        self.say("INFO", name, text)

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def amp(self) -> bool:
        """Whether --amp runs here: where bf16 is native."""
        return machine.amp_refusal(self.device) is None

    def data(self, train: int, test: int) -> Path:
        """A folder holding a synthetic CIFAR-10 of `train` and `test` images, written once."""
        if (train, test) not in self.folders:
            self.folders[train, test] = write_cifar(self.work / f"data_{train}_{test}", train, test)
        return self.folders[train, test]

    def argv(self, name: str, *extra: str, images: int | None = None, epochs: int = 3,
             scale: float | None = None, batch: int | None = None) -> list[str]:
        """The command line of a ResNet-18 run named `name` on the synthetic data, deterministic."""
        images = images or self.sizes.train
        return ["--model", "resnet", "--scale", str(scale or self.sizes.scale), "--numsamples", str(images),
                "--batchsize", str(batch or self.sizes.batch), "--epochs", str(epochs), "--lr", "0.05",
                "--seed", "1", "--data-dir", str(self.data(max(images, self.sizes.train), self.sizes.test)),
                "--device", str(self.device), "--workers", "0", "--filename", "check",
                "--results-dir", str(self.work / name), "--checkpoint-dir", str(self.work / name), *extra]


def write_cifar(folder: Path, train: int, test: int) -> Path:
    """Random images and labels in the official CIFAR-10 python format, under `folder`."""
    rng = np.random.default_rng(0)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name, count in (("data_batch_1", train), ("test_batch", test)):
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, count).tolist()}
        (batches / name).write_bytes(pickle.dumps(batch))
    return folder


def start(argv: list[str]) -> tuple[experiments.Run, RunFiles]:
    """The run a command line describes, built as experiments.py builds it."""
    args = command_line.parse(argv)
    paths = run_files(args)
    return experiments.start(args, argv, paths), paths


def record_content(path: Path) -> str:
    """A run record without its timings and the folders it was written to, as text to compare."""
    record = records.read_record(path)
    rows = records.rows_without_timings(record.rows)
    meta = {k: v for k, v in record.meta.items() if k != "command"}
    meta["args"] = {k: v for k, v in meta["args"].items() if k not in ("results_dir", "checkpoint_dir")}
    return json.dumps([meta, rows], sort_keys=True)


@contextlib.contextmanager
def stopped_at(epoch: int):
    """In-process runs of experiments.py stop as on Ctrl-C when they reach `epoch`."""
    one_epoch = experiments.probe_train_and_test

    def stop(run, current: int) -> dict:
        if current == epoch:
            raise KeyboardInterrupt
        return one_epoch(run, current)

    experiments.probe_train_and_test = stop
    try:
        yield
    finally:
        experiments.probe_train_and_test = one_epoch


# --------------------------------------------------------------------------------------------------
# The checks


def environment(check: Check) -> None:
    facts = machine.environment(check.device)
    check.info("environment", f"torch {facts['torch']}, CUDA {torch.version.cuda}, cuDNN "
                              f"{torch.backends.cudnn.version()}, Python {facts['python']}")
    gpu = f", compute capability {facts['compute_capability']}" if check.on_gpu else ""
    check.info("environment", f"device {facts['device']}: {facts['device_name']}{gpu}; CPU {facts['cpu_model']} "
                              f"({facts['cpu_capability']}, {facts['cpu_threads']} torch threads)")
    amp = "--amp runs here" if check.amp else machine.amp_refusal(check.device)
    check.info("environment", f"bf16 {facts['bf16']}: {amp}")
    precision = ", ".join(f"{name.removesuffix('.fp32_precision')} {value}" for name, value in facts["fp32_precision"].items())
    check.info("environment", f"training fp32 precision: {precision}; the probe: IEEE fp32 throughout")
    settings = {key: facts[key] for key in ("deterministic_algorithms", "cudnn_deterministic", "cudnn_benchmark",
                                           "cublas_workspace_config") if key in facts}
    check.info("environment", f"determinism: {settings or 'the CPU kernels are deterministic'}")


def data_path(check: Check) -> None:
    from PIL import Image
    from torchvision.transforms import functional as TF

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    offsets, flips = torch.randint(0, 9, (64, 2), generator=generator), torch.rand(64, generator=generator) < 0.5
    ours = batching.normalize(batching.crop_and_flip(*(t.to(check.device) for t in (images, offsets, flips)))).cpu()
    pil = []
    for image, (row, column), flip in zip(images.numpy(), offsets.tolist(), flips.tolist()):
        picture = TF.crop(TF.pad(Image.fromarray(image.transpose(1, 2, 0)), batching.PAD), row, column, 32, 32)
        picture = TF.hflip(picture) if flip else picture
        pil.append(TF.normalize(TF.to_tensor(picture), batching.MEAN, batching.STD))
    difference = (ours - torch.stack(pil)).abs().max().item()
    check.result("data", difference == 0, f"64 images cropped, flipped and normalized on {check.device} against the "
                                           f"PIL transforms for the same draws: largest difference {difference:g}")


def state_of(run: experiments.Run) -> list[torch.Tensor]:
    """Everything the probe must leave as it was: weights, buffers, gradients, optimizer state and
    the random streams of the CPU and the device."""
    module = torch.get_device_module(run.device.type) if run.device.type != "cpu" else None
    streams = [torch.get_rng_state(), *([module.get_rng_state()] if module else [])]
    grads = [p.grad for p in run.model.parameters() if p.grad is not None]
    optimizer = copy.deepcopy(run.optimizer.state_dict())
    tensors = [value for state in optimizer["state"].values() for value in state.values() if torch.is_tensor(value)]
    return [t.detach().clone() for t in [*run.model.state_dict().values(), *grads, *tensors, *streams]]


def probe_restores(check: Check) -> None:
    for optimizer in ("sgd", "adam"):
        for amp in (False, True) if check.amp else (False,):
            flags = ["--model", "efficientnet", "--optimizer", optimizer, "--channels-last", *(["--amp"] * amp)]
            run, _ = start(check.argv(f"probe_{optimizer}_{amp}", *flags, images=256, scale=0.125, batch=32))
            experiments.probe_train_and_test(run, 0)
            before = state_of(run)
            run.probe.measure(run.probe_network, run.optimizer)
            after = state_of(run)
            same = len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))
            what = f"{optimizer}{' --amp' if amp else ''}, EfficientNet-B0 (BatchNorm, dropout, drop-connect), channels-last"
            check.result("probe", same, f"{what}: {len(before)} tensors (weights, buffers, gradients, optimizer "
                                        f"state, random streams) {'put back bit for bit' if same else 'CHANGED'}")


def every_model_deterministically(check: Check) -> None:
    failures, saved = [], torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for name in sorted(FAMILIES):
            try:
                network = create_model(name, 0.125).to(check.device)
                optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
                images = torch.rand(8, 3, 32, 32, device=check.device)
                labels = torch.randint(0, 10, (8,), device=check.device)
                probe_step(network, optimizer, images, labels, seed=0)
                torch.nn.functional.cross_entropy(network(images), labels).backward()
                optimizer.step()
                network.eval()(images).sum().item()
            except RuntimeError as error:
                failures.append(f"{name}: {str(error).splitlines()[0]}")
    finally:
        torch.use_deterministic_algorithms(saved)
    check.result("determinism", not failures, f"{len(FAMILIES)} models train, probe and test with deterministic "
                                              f"algorithms {'without an error' if not failures else 'except: ' + '; '.join(failures)}")


def same_records(check: Check) -> None:
    images = min(check.sizes.train, 2048)
    argv = lambda name: check.argv(name, images=images, epochs=3)
    paths = {name: run_files(command_line.parse(argv(name))).record for name in ("first", "second", "cut")}
    assert experiments.main(argv("first")) == 0 and experiments.main(argv("second")) == 0
    check.result("determinism", record_content(paths["first"]) == record_content(paths["second"]),
                 f"two runs with the same seed (3 epochs, {images} images): identical records")
    with stopped_at(2):
        assert experiments.main(argv("cut")) == errors.INTERRUPTED
    assert experiments.main([*argv("cut"), "--resume"]) == 0
    check.result("determinism", record_content(paths["cut"]) == record_content(paths["first"]),
                 "a run stopped after 2 of 3 epochs and resumed: the record of the uninterrupted run")


def host_syncs(check: Check) -> None:
    counts, batch = [], min(check.sizes.batch, 32)
    for batches in (10, 40):
        run, _ = start(check.argv(f"syncs_{batches}", images=batches * batch, batch=batch, scale=0.125))
        experiments.probe_train_and_test(run, 0)  # what is made once
        with HostSynchronizations(check.device) as syncs:
            experiments.probe_train_and_test(run, 1)
        counts.append(syncs.where)
    per_epoch = ", ".join(f"{count} {what}" for what, count in sorted(counts[0].items())) or "none"
    check.result("syncs", counts[0] == counts[1], f"an epoch of 10 and one of 40 training batches wait for the device "
                                                  f"alike ({per_epoch} per epoch): "
                                                  f"{(counts[1].total() - counts[0].total()) / 30:g} per batch")


def throughput(check: Check) -> None:
    modes = [(deterministic, amp, layout) for deterministic in ((True, False) if check.on_gpu else (True,))
             for amp in ((False, True) if check.amp else (False,))
             for layout in (("--channels-last", "--no-channels-last") if check.on_gpu else ("",))]
    for deterministic, amp, layout in modes:
        flags = [*(["--amp"] if amp else []), *([layout] if layout else []),
                 "--deterministic" if deterministic else "--no-deterministic"]
        run, paths = start(check.argv("throughput", *flags, epochs=200, images=check.sizes.train))
        with Timer(check.device) as alone:
            network_alone_epoch(prepare_tensors(run.batches), run.network, run.optimizer, check.device, 0)
        with Timer(check.device) as epoch:
            experiments.save_epoch(run, paths, experiments.probe_train_and_test(run, 0))
        ratio = epoch.seconds / alone.seconds
        what = (f"{'deterministic' if deterministic else 'not deterministic'}, {'--amp' if amp else 'fp32'}"
                f"{', ' + layout.removeprefix('--') if layout else ''}")
        text = (f"{what}: an epoch of {check.sizes.train} images {epoch.seconds:.1f} s, the network alone "
                f"{alone.seconds:.1f} s: {ratio:.2f}x (target {TARGET:.2f}x); 200 epochs {200 * epoch.seconds / 3600:.2f} h")
        check.result("throughput", ratio <= TARGET, text) if check.on_gpu else check.info("throughput", text)


def relative_changes(reference: list[float], other: list[float]) -> str:
    changes = [abs(b - a) / abs(a) for a, b in zip(reference, other)]
    return f"median {100 * statistics.median(changes):.3f} %, largest {100 * max(changes):.3f} %"


def precision_effect(check: Check) -> None:
    run, _ = start(check.argv("precision", images=min(check.sizes.train, 10_000)))
    experiments.probe_train_and_test(run, 0)  # r of a network trained for an epoch
    drops = lambda **precision: Susceptibility.from_probe_batches(
        run.batches.probe, seed=5, generator_device=run.generator_device, batches_per_epoch=8, **precision)
    tf32 = {name: "tf32" for name in ("cuda.matmul.fp32_precision", "cudnn.conv.fp32_precision")}
    for lr in (0.05, 0.0005):
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        measured = {"ieee": drops(), "tf32": drops(ieee_fp32=False), "bf16": drops(full_precision=False)}
        measured["ieee"].measure(run.probe_network, run.optimizer)
        bf16 = fast_network(run.model, bf16=True, channels_last=run.config.channels_last)
        saved = traceless.fp32_precision()
        traceless.set_fp32_precision(tf32)
        try:
            measured["tf32"].measure(run.probe_network, run.optimizer)
        finally:
            traceless.set_fp32_precision(saved)
        measured["bf16"].measure(bf16, run.optimizer)  # as --amp's training network computes
        reference = measured["ieee"].batch_drops()
        parts = [f"bf16 {relative_changes(reference, measured['bf16'].batch_drops())}"]
        if check.on_gpu:
            parts.insert(0, f"TF32 {relative_changes(reference, measured['tf32'].batch_drops())}")
        check.info("precision", f"learning rate {lr:g}, |dr|/|r| over 8 probe batches: {'; '.join(parts)}"
                                f"{'' if check.on_gpu else ' (no TF32 on a CPU)'}")


def compile_check(check: Check) -> None:
    import torch._dynamo

    graphs = lambda: torch._dynamo.utils.counters["stats"]["unique_graphs"]
    seconds = {}
    for compiled in (False, True):
        run, _ = start(check.argv(f"compile_{compiled}", *(["--compile"] * compiled), images=check.sizes.train + 40))
        first = experiments.probe_train_and_test(run, 0)
        made = graphs()
        seconds[compiled] = experiments.probe_train_and_test(run, 1)["seconds"]
    check.result("compile", graphs() == made, f"{made} graphs compiled in epoch 0 ({first['compile_seconds']:.0f} s), "
                                             f"{graphs() - made} in epoch 1, whose last batch is smaller")
    check.info("compile", f"an epoch {seconds[True]:.1f} s compiled, {seconds[False]:.1f} s not: "
                          f"{seconds[False] / seconds[True]:.2f}x faster")


CHECKS = {"environment": environment, "data": data_path, "probe": probe_restores,
          "determinism": lambda check: (every_model_deterministically(check), same_records(check)),
          "syncs": host_syncs, "throughput": throughput, "precision": precision_effect, "compile": compile_check}
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
    statuses = [status for status, _, _ in check.lines]
    print(f"{statuses.count('PASS')} passed, {statuses.count('FAIL')} failed, {statuses.count('INFO')} figures, "
          f"in {time.perf_counter() - started:.0f} s")
    return 1 if "FAIL" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
