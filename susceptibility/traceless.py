"""Run a block on a model and leave no trace: what it changed in the model and its optimizer is put
back bit for bit, and it runs on random streams and fp32 precision settings of its own.

Part of the installable metric (see `susceptibility`), so it needs nothing but torch.
"""
from __future__ import annotations

import operator
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# The settings that decide how fp32 convolutions, matrix products and RNNs compute, each with its
# IEEE fp32 value: TF32 on NVIDIA GPUs (cuDNN convolutions run in TF32 by default) and bf16 or TF32
# in oneDNN on CPUs are the alternatives. torch 2.9 set them per backend and operation; earlier
# versions had only the two TF32 switches.
IEEE_FP32 = ({f"{backend}.fp32_precision": "ieee" for backend in
              ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")}
             if hasattr(torch.backends.cudnn, "conv")
             else {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False})


def fp32_precision() -> dict[str, str | bool]:
    """The fp32 precision settings of `IEEE_FP32` as they stand, by their names under torch.backends."""
    return {name: operator.attrgetter(name)(torch.backends) for name in IEEE_FP32}


def set_fp32_precision(settings: dict[str, str | bool]) -> None:
    """Set fp32 precision settings named as in `IEEE_FP32`."""
    for name, value in settings.items():
        owner, _, attribute = name.rpartition(".")
        setattr(operator.attrgetter(owner)(torch.backends), attribute, value)


# torch's legacy view of the same settings, with its IEEE fp32 values. torch refuses to read a legacy
# flag that disagrees with the per-operation settings, so both views change together.
LEGACY_IEEE_FP32 = {"float32_matmul_precision": "highest", "cudnn.allow_tf32": False}


def legacy_fp32_precision() -> dict[str, str | bool]:
    """The legacy settings of `LEGACY_IEEE_FP32` that can be read now: none with torch before 2.9,
    where they are `IEEE_FP32` itself, and none that the caller has left disagreeing with the
    per-operation settings (torch raises rather than read those)."""
    if "cudnn.allow_tf32" in IEEE_FP32:
        return {}
    readers = {"float32_matmul_precision": torch.get_float32_matmul_precision,
               "cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32}
    legacy = {}
    for name, read in readers.items():
        try:
            legacy[name] = read()
        except RuntimeError:
            pass
    return legacy


def set_legacy_fp32_precision(settings: dict[str, str | bool]) -> None:
    """Set legacy settings named as in `LEGACY_IEEE_FP32`."""
    if "float32_matmul_precision" in settings:
        torch.set_float32_matmul_precision(settings["float32_matmul_precision"])
    if "cudnn.allow_tf32" in settings:
        torch.backends.cudnn.allow_tf32 = settings["cudnn.allow_tf32"]


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """Compute fp32 convolutions and matrix products in IEEE fp32 inside the block, on every backend,
    with torch's legacy and per-operation views of the settings agreeing, so that code inside that
    reads either view (a hook, a library, a compiler's autotuner) reads IEEE fp32 and no error; the
    caller's settings are restored afterwards, legacy first; a legacy flag the caller had left
    unreadable keeps its IEEE value, and reads as unreadable again once the others are restored."""
    saved_legacy, saved = legacy_fp32_precision(), fp32_precision()
    if "cudnn.allow_tf32" not in IEEE_FP32:
        set_legacy_fp32_precision(LEGACY_IEEE_FP32)
    set_fp32_precision(IEEE_FP32)
    try:
        yield
    finally:
        set_legacy_fp32_precision(saved_legacy)
        set_fp32_precision(saved)


def snapshot_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's per-parameter state (momentum buffers, Adam moments, steps): for each entry
    the object it holds and, for a tensor, a copy of its values."""
    return {param: {key: (value, value.clone() if torch.is_tensor(value) else value)
                    for key, value in state.items()}
            for param, state in optimizer.state.items()}


def restore_optimizer_state(optimizer: torch.optim.Optimizer, snapshot: dict) -> None:
    """Put the optimizer's per-parameter state back as `snapshot_optimizer_state` found it: each
    tensor gets its values back in place (so that anyone else holding it, such as the checkpoint
    dictionary an optimizer was loaded from, sees it unchanged), entries the step added go."""
    for param in [param for param in optimizer.state if param not in snapshot]:
        del optimizer.state[param]
    for param, entries in snapshot.items():
        state = optimizer.state[param]
        for key in [key for key in state if key not in entries]:
            del state[key]
        for key, (held, values) in entries.items():
            if torch.is_tensor(held):
                held.copy_(values)
            state[key] = held


@contextmanager
def restored_afterwards(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Run a block, then put back bit for bit what it changed in `model` and `optimizer`.

    Covers weights, every buffer (BatchNorm running statistics and batch counters), gradients, the
    train/eval mode of every module, the optimizer's per-parameter state and hyper-parameters, all
    restored in memory.
    """
    tensors = [*model.parameters(), *model.buffers()]
    saved_tensors = [t.detach().clone() for t in tensors]
    saved_grads = [p.grad for p in model.parameters()]
    saved_modes = [(module, module.training) for module in model.modules()]
    saved_state = snapshot_optimizer_state(optimizer)
    saved_groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, saved in zip(tensors, saved_tensors):
                tensor.copy_(saved)
        for param, grad in zip(model.parameters(), saved_grads):
            param.grad = grad
        for module, training in saved_modes:
            module.training = training
        with torch.no_grad():
            restore_optimizer_state(optimizer, saved_state)
        for group, saved in zip(optimizer.param_groups, saved_groups):
            group.update(saved)


def seed_device_stream(seed: int, device: torch.device) -> None:
    """Seed the global random stream of `device` alone (not every device, as torch.manual_seed does)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    elif device.type == "cuda":
        torch.cuda.init()  # its default generators exist once CUDA is initialized
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    else:
        torch.get_device_module(device.type).manual_seed(seed)


def seed_global_streams(seed: int, device: torch.device) -> None:
    """Seed torch's global random stream on the CPU and on `device`, and no other device's."""
    for stream_device in dict.fromkeys([torch.device("cpu"), device]):
        seed_device_stream(seed, stream_device)


@contextmanager
def own_random_stream(seed: int, device: torch.device) -> Iterator[None]:
    """Give a block its own seeded global RNG (dropout, stochastic depth) on the CPU and on `device`,
    and restore the caller's afterwards; the streams of other devices are not touched."""
    accelerators = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=accelerators, device_type=device.type if accelerators else "cuda"):
        seed_global_streams(seed, device)
        yield
