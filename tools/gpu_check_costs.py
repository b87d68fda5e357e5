"""What `tools.gpu_check` measures: an epoch's time against the network's own work, how much TF32
and bf16 would change r, and what --compile gives."""
from __future__ import annotations

import statistics

import torch
from torch.nn import functional as F


import experiments
from runner import batching
from runner.training import fast_network
from susceptibility import Susceptibility
from susceptibility import traceless
from tools.benchmark import Timer, network_alone_epoch, prepare_tensors
from tools.gpu_check_setup import PRECISION_TARGET, TARGET, Check, start

LAST_BATCH, OTHER_BATCH = 20, 24  # batch sizes of the compile check (16 or more: under 16, oneDNN picks other kernels)


def throughput(check: Check) -> None:
    """An epoch of experiments.py against the network's own work on tensors prepared in advance, in
    each mode of the device, after an untimed warm-up epoch of each (cuDNN's autotuning, caches,
    the allocator); the epoch's checkpoint and side files are timed apart, as disk writes."""
    modes = [(deterministic, amp, layout) for deterministic in ((True, False) if check.on_gpu else (True,))
             for amp in ((False, True) if check.amp else (False,))
             for layout in (("--channels-last", "--no-channels-last") if check.on_gpu else ("",))]
    for deterministic, amp, layout in modes:
        flags = [*(["--amp"] if amp else []), *([layout] if layout else []),
                 "--deterministic" if deterministic else "--no-deterministic"]
        alone, epoch, save = timed_epochs(check, flags)
        ratio = epoch / alone
        what = (f"{'deterministic' if deterministic else 'not deterministic'}, {'--amp' if amp else 'fp32'}"
                f"{', ' + layout.removeprefix('--') if layout else ''}")
        check.target("throughput", ratio <= TARGET,
                     f"{check.size_text()}, {what}: an epoch (probe, training with per-sample signals, test pass) "
                     f"{epoch:.2f} s, the network alone {alone:.2f} s: {ratio:.2f}x (target at most {TARGET:.2f}x); "
                     f"saving the epoch {save:.2f} s; 200 such epochs {200 * (epoch + save) / 3600:.2f} h")


def timed_epochs(check: Check, flags: list[str]) -> tuple[float, float, float]:
    """Seconds of the network alone, of an epoch of experiments.py and of saving it, each timed after
    an untimed warm-up epoch done the same way."""
    run, paths = start(check.argv("throughput", *flags, epochs=200, images=check.sizes.train))
    prepared = prepare_tensors(run.batches)
    network_alone_epoch(prepared, run.network, run.optimizer, check.device, 0)
    experiments.probe_train_and_test(run, 0)
    with Timer(check.device) as alone:
        network_alone_epoch(prepared, run.network, run.optimizer, check.device, 1)
    with Timer(check.device) as epoch:
        row = experiments.probe_train_and_test(run, 1)
    with Timer(check.device) as save:
        experiments.save_epoch(run, paths, row)
    return alone.seconds, epoch.seconds, save.seconds


def relative_changes(reference: list[float], other: list[float]) -> tuple[float, float]:
    """The median and largest |dr|/|r| of `other` against `reference`."""
    changes = [abs(b - a) / abs(a) for a, b in zip(reference, other)]
    return statistics.median(changes), max(changes)


def precision_effect(check: Check) -> None:
    """How much TF32 (on a GPU) and bf16 change r against IEEE fp32, on 8 probe batches of a network
    trained for an epoch, at a high and a low learning rate. A change above `PRECISION_TARGET` is a
    warning: the reason the probe computes in IEEE fp32, which its options could give up."""
    run, _ = start(check.argv("precision", images=min(check.sizes.train, 10_000)))
    experiments.probe_train_and_test(run, 0)  # r of a network trained for an epoch
    for lr in (0.05, 0.0005):
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        reference, others = precision_drops(check, run)
        for precision, drops in others.items():
            median, largest = relative_changes(reference, drops)
            check.target("precision", median <= PRECISION_TARGET,
                         f"{precision} against IEEE fp32, learning rate {lr:g}: r of 8 probe batches changes by a "
                         f"median {100 * median:.3f} % (target at most {100 * PRECISION_TARGET:g} %), largest "
                         f"{100 * largest:.3f} %; the probe computes in IEEE fp32 unless told ieee_fp32=False "
                         f"or full_precision=False")


def precision_drops(check: Check, run: experiments.Run) -> tuple[list[float], dict[str, list[float]]]:
    """r of the same 8 probe batches in IEEE fp32, and by precision in bf16 and (on a GPU) TF32."""
    drops = lambda **precision: Susceptibility.from_probe_batches(
        run.batches.probe, seed=5, generator_device=run.generator_device, batches_per_epoch=8, **precision)
    measured = {"ieee": drops(), "bf16": drops(full_precision=False)}
    measured["ieee"].measure(run.probe_network, run.optimizer)
    measured["bf16"].measure(fast_network(run.model, bf16=True, channels_last=run.config.channels_last),
                             run.optimizer)  # as --amp's training network computes
    if check.on_gpu:
        measured["tf32"] = drops(ieee_fp32=False)
        saved = traceless.fp32_precision()
        traceless.set_fp32_precision({name: "tf32" for name in ("cuda.matmul.fp32_precision",
                                                                "cudnn.conv.fp32_precision")})
        try:
            measured["tf32"].measure(run.probe_network, run.optimizer)
        finally:
            traceless.set_fp32_precision(saved)
    reference = measured.pop("ieee").batch_drops()
    return reference, {name: probe.batch_drops() for name, probe in measured.items()}


def compiled_graphs() -> int:
    """Graphs torch.compile has made in this process so far."""
    import torch._dynamo

    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def train_and_evaluate_once(run: experiments.Run, size: int) -> None:
    """One training step and one evaluation pass of the run's network on a random batch of `size`."""
    images = torch.rand(size, 3, 32, 32, device=run.device)
    labels = torch.zeros(size, dtype=torch.int64, device=run.device)
    run.model.train()
    F.cross_entropy(run.network(images), labels).backward()
    run.optimizer.step()
    run.model.eval()
    with torch.no_grad():
        run.network(images)


def compile_graphs(check: Check) -> None:
    """--compile makes one graph for training and one for evaluation, whatever the batch size: an
    epoch whose last batch is smaller, then a step on a batch of a third size, add none. A batch
    dimension that is not dynamic fails it: each new size would compile again."""
    import torch._dynamo

    torch._dynamo.reset()
    before = compiled_graphs()
    run, _ = start(check.argv("compile_graphs", "--compile", images=check.sizes.train + LAST_BATCH))
    row = experiments.probe_train_and_test(run, 0)
    train_and_evaluate_once(run, OTHER_BATCH)
    made = compiled_graphs() - before
    sizes = sorted(set(batching.batch_sizes(check.sizes.train + LAST_BATCH, check.sizes.batch)), reverse=True)
    check.result("compile", made == 2, f"training batches of {', '.join(map(str, sizes))} and {OTHER_BATCH} images "
                                       f"and evaluation passes: {made} graphs compiled (2 expected, one for training "
                                       f"and one for evaluation), in {row['compile_seconds']:.0f} s")


def compile_speed(check: Check) -> None:
    """The time of a steady-state epoch (the second) with --compile and without."""
    seconds = {}
    for compiled in (False, True):
        run, _ = start(check.argv(f"compile_{compiled}", *(["--compile"] * compiled), images=check.sizes.train))
        experiments.probe_train_and_test(run, 0)
        seconds[compiled] = experiments.probe_train_and_test(run, 1)["seconds"]
    check.info("compile", f"{check.model_text()}, second epoch of {check.sizes.train} images (compile time "
                          f"excluded): {seconds[True]:.1f} s with --compile, {seconds[False]:.1f} s without: "
                          f"{seconds[False] / seconds[True]:.2f}x faster")
