"""Susceptibility to noisy labels, ζ (Forouzesh, Sedghi & Thiran, ICLR 2023).

At the start of every epoch the network takes one step of its own optimizer on a batch of unlabeled
images with random labels; r = Φ̃_before − Φ̃_after is how much that single step lowers the
random-label loss. Everything the step changed is then put back, so training is unaffected, and ζ is
the running mean of r over epochs.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def snapshot_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """A deep copy of the optimizer's per-parameter state (momentum buffers, Adam moments, steps)."""
    return {param: {key: value.clone() if torch.is_tensor(value) else value
                    for key, value in state.items()}
            for param, state in optimizer.state.items()}


@contextmanager
def restored_afterwards(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Run a block, then put back bit for bit what it changed in `model` and `optimizer`.

    Covers weights, every buffer (BatchNorm running statistics and batch counters), gradients, the
    optimizer's per-parameter state and hyper-parameters, all restored in memory.
    """
    tensors = [*model.parameters(), *model.buffers()]
    saved_tensors = [t.detach().clone() for t in tensors]
    saved_grads = [p.grad for p in model.parameters()]
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
        optimizer.state.clear()
        optimizer.state.update(saved_state)
        for group, saved in zip(optimizer.param_groups, saved_groups):
            group.update(saved)


@contextmanager
def own_random_stream(seed: int, device: torch.device) -> Iterator[None]:
    """Give a block its own seeded global RNG (dropout, stochastic depth) and restore the caller's."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


def probe_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Φ̃ before and after one step of `optimizer` on a random-label batch, leaving no trace.

    The network stays in train mode (BatchNorm uses batch statistics), the step uses the current
    learning rate, momentum and weight decay, and both losses are returned as device tensors so
    the caller decides when to synchronize.
    """
    model.train()
    with restored_afterwards(model, optimizer), own_random_stream(seed, images.device):
        optimizer.zero_grad(set_to_none=True)
        before = F.cross_entropy(model(images), labels)
        before.backward()
        optimizer.step()
        with torch.no_grad():
            after = F.cross_entropy(model(images), labels)
    return before.detach(), after


def running_susceptibility(phi_before: Sequence[float], phi_after: Sequence[float]) -> list[float]:
    """The paper's ζ(t) = (1/t) Σ_{τ=1..t} (Φ̃_before − Φ̃_after)(τ) for each epoch t; NaN at t = 0.

    The probe at τ = 0 measures the untrained network and is left out of the mean.
    """
    drops = [b - a for b, a in zip(phi_before, phi_after)]
    return [math.nan if t == 0 else sum(drops[1:t + 1]) / t for t in range(len(drops))]


def reference_susceptibility(phi_before: Sequence[float], phi_after: Sequence[float]) -> list[float]:
    """The reference notebook's average (1/t) Σ_{τ=1..t−1} r_τ: it leaves out the latest probe and
    divides t − 1 terms by t. Kept to compare with figures made by the authors' code."""
    drops = [b - a for b, a in zip(phi_before, phi_after)]
    return [math.nan if t == 0 else sum(drops[1:t]) / t for t in range(len(drops))]
