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
from tools.gpu_check_setup import TARGET, Check, start

LAST_BATCH, OTHER_BATCH = 20, 24  # batch sizes of the compile check (16 or more: under 16, oneDNN picks other kernels)


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
