"""The promises `tools.gpu_check` checks: the environment, the data path, the probe's restoring,
determinism and host synchronizations."""
from __future__ import annotations

import collections
import copy
import subprocess
import sys
import warnings
from pathlib import Path

import torch

import experiments
from models import FAMILIES, create_model
from runner import batching
from runner import errors
from runner.run_files import run_files
from runner import command_line
from runner import machine
from susceptibility import probe_step
from tools.gpu_check_setup import ROOT, Check, record_content, start, stopped_at
from tools.host_syncs import HostSynchronizations


# The fp32 precision settings that apply on each device type, by the prefix of their names.
PRECISION_SETTINGS_OF = {"cuda": ("cuda.", "cudnn."), "cpu": ("mkldnn.",)}


def environment(check: Check) -> None:
    """The software, the device and how it computes, each line saying what it lists."""
    facts = machine.environment(check.device)
    check.info("environment", f"software: torch {facts['torch']} (built for CUDA {torch.version.cuda}, cuDNN "
                              f"{torch.backends.cudnn.version()}), Python {facts['python']}")
    gpu = (f", compute capability {facts['compute_capability']}, {facts['sm_count']} SMs, MIG slice "
           f"{facts['mig_slice'] or 'none'}, driver {facts['driver']}" if check.on_gpu else "")
    check.info("environment", f"device {facts['device']}: {facts['device_name']}{gpu}; CPU {facts['cpu_model']} "
                              f"({facts['cpu_capability']}, {facts['cpu_threads']} torch threads)")
    amp = "--amp runs here" if check.amp else machine.amp_refusal(check.device)
    check.info("environment", f"bf16 on {facts['device']}: {facts['bf16']}; {amp}")
    prefixes = PRECISION_SETTINGS_OF.get(check.device.type, ())
    precision = ", ".join(f"{name.removesuffix('.fp32_precision')} {value}"
                          for name, value in facts["fp32_precision"].items() if name.startswith(prefixes))
    check.info("environment", f"fp32 precision settings of training on {facts['device']}: {precision or 'none apply'}; "
                              f"the probe computes in IEEE fp32 throughout")
    settings = {key: facts[key] for key in ("deterministic_algorithms", "cudnn_deterministic", "cudnn_benchmark",
                                           "cublas_workspace_config") if key in facts}
    check.info("environment", f"determinism settings: {settings or 'none needed, the CPU kernels are deterministic'}")


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
    """The same seed gives the same record in two fresh processes, in each mode offered here, and a
    run stopped and resumed gives the record of one that was not."""
    for mode, flags in fresh_process_modes(check).items():
        same_records_from_fresh_processes(check, mode, flags)
    same_record_after_a_resume(check)


def fresh_process_modes(check: Check) -> dict[str, list[str]]:
    """The modes whose records two fresh processes must agree on: fp32 in both memory layouts,
    --amp where bf16 is native, and --compile on a GPU (on a CPU it takes minutes)."""
    modes = {"fp32, plain layout": ["--no-channels-last"], "fp32, channels-last": ["--channels-last"]}
    if check.amp:
        modes["--amp"] = ["--amp"]
    if check.on_gpu:
        modes["--compile"] = ["--compile"]
    return modes


def fresh_run(argv: list[str]) -> None:
    """experiments.py with `argv` in a process of its own; a failed run raises with its last line."""
    done = subprocess.run([sys.executable, "experiments.py", *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise RuntimeError(f"experiments.py exited with {done.returncode}: {said[-1] if said else 'no message'}")


def same_records_from_fresh_processes(check: Check, mode: str, flags: list[str]) -> None:
    """Two fresh processes of the same run in `mode` (its `flags`) write the same record."""
    images, epochs = min(check.sizes.train, 2048 if check.on_gpu else 512), 2
    contents = []
    for process in ("a", "b"):
        argv = check.argv(f"fresh_{process}_{'_'.join(flags).strip('-')}", *flags, images=images, epochs=epochs)
        fresh_run(argv)
        contents.append(record_content(run_files(command_line.parse(argv)).record))
    same = contents[0] == contents[1]
    check.result("determinism", same, f"{mode}: two fresh processes with the same seed ({epochs} epochs, {images} "
                                      f"images): {'identical records' if same else 'the records DIFFER'}")


def same_record_after_a_resume(check: Check) -> None:
    """A run stopped after 2 of 3 epochs and resumed writes the record of one that was not."""
    images = min(check.sizes.train, 2048)
    argv = lambda name: check.argv(name, images=images, epochs=3)
    paths = {name: run_files(command_line.parse(argv(name))).record for name in ("whole", "cut")}
    assert experiments.main(argv("whole")) == 0
    with stopped_at(2):
        assert experiments.main(argv("cut")) == errors.INTERRUPTED
    assert experiments.main([*argv("cut"), "--resume"]) == 0
    same = record_content(paths["cut"]) == record_content(paths["whole"])
    check.result("determinism", same, f"a run stopped after 2 of 3 epochs ({images} images) and resumed: "
                                      f"{'the record of the uninterrupted run' if same else 'a record that DIFFERS'}")


def host_syncs(check: Check) -> None:
    """Epochs of 10 and of 40 training batches make the host wait for the device as often: none of
    the waits is per batch. Counted by `HostSynchronizations` everywhere and, on a GPU, by CUDA's own
    sync debug mode too, which also sees waits inside kernels and copies from unpinned memory."""
    counters = {"operations that wait (counted by tools/host_syncs.py)": counted_waits}
    if check.on_gpu:
        counters["waits CUDA's sync debug mode reports"] = sync_debug_waits
    for what, count in counters.items():
        counts = [count(check.device, epoch_of(check, batches)) for batches in (10, 40)]
        per_epoch = ", ".join(f"{number} {where}" for where, number in sorted(counts[0].items())) or "none"
        per_batch = (counts[1].total() - counts[0].total()) / 30
        check.result("syncs", counts[0] == counts[1], f"{what}, in a steady-state epoch of 10 training batches and "
                                                      f"one of 40: {per_epoch} per epoch, {per_batch:g} per batch")


def epoch_of(check: Check, batches: int):
    """A function running a steady-state epoch of a run of `batches` training batches."""
    batch = min(check.sizes.batch, 32)
    run, _ = start(check.argv(f"syncs_{batches}", images=batches * batch, batch=batch, scale=0.125))
    experiments.probe_train_and_test(run, 0)  # what is made once
    return lambda: experiments.probe_train_and_test(run, 1)


def counted_waits(device: torch.device, epoch) -> collections.Counter:
    """The operations of `epoch()` that make the host wait for `device`, by `HostSynchronizations`."""
    with HostSynchronizations(device) as syncs:
        epoch()
    return syncs.where


def sync_debug_waits(device: torch.device, epoch) -> collections.Counter:
    """The waits CUDA's sync debug mode warns of while `epoch()` runs, by their first line and the
    line of Python that waited (the mode covers every GPU, `device` among them)."""
    saved = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            epoch()
    finally:
        torch.cuda.set_sync_debug_mode(saved)
    return collections.Counter(f"{str(warning.message).strip().splitlines()[0]} at {Path(warning.filename).name}:"
                               f"{warning.lineno}" for warning in caught if "synchroniz" in str(warning.message))
