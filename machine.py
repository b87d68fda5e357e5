"""The machine a run computes on: the device it chooses, and the facts that decide its last digits.

The record's `environment` header holds these facts; a run resumed where they differ goes ahead with
a warning (see `checkpoints.restore`), since its later epochs may then differ in their last digits.
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch
import torchvision

from command_line import UsageError

# Facts of the machine that decide which kernels compute a run, and so its last digits.
KERNEL_FACTS = ("device_name", "cpu_model", "cpu_capability", "cpu_threads")


def select_device(name: str) -> torch.device:
    """The compute device: `auto` takes CUDA, then Apple MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device; use auto, cpu, cuda, cuda:N or mps")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise UsageError(f"--device {name} is not available on this machine; use --device auto")
    return device


def channels_last_default(device: torch.device) -> bool:
    """Whether convolutions run channels-last when --channels-last is left out: on the CPU, where it
    is faster with the same fp32 arithmetic; other devices keep the plain layout until it has been
    measured there."""
    return device.type == "cpu"


def cpu_model() -> str:
    """The CPU's model name: on Linux from /proc/cpuinfo, where platform.processor() is empty."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor()


def environment(device: torch.device) -> dict:
    """Library versions, the device, and the CPU facts that decide which kernels compute the run."""
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "device": str(device), "device_name": name,
            "cpu_model": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_threads": torch.get_num_threads()}


def environment_changes(saved: dict, current: dict) -> list[str]:
    """The facts of `KERNEL_FACTS` that differ between a checkpoint's machine and this one. Off
    CUDA the device name is the CPU model, named once."""
    on_cuda = torch.device(current["device"]).type == "cuda"
    return [f"{key} {saved[key]!r}, now {current[key]!r}" for key in KERNEL_FACTS
            if key in saved and saved[key] != current[key] and (on_cuda or key != "device_name")]
