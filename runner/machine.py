"""The machine a run computes on: the device it chooses, how it computes there (fp32 precision,
deterministic kernels, bf16), and the facts that decide its last digits. What a run sets for the
whole process it gives back when it ends (`run_settings_restored`).

The record's `environment` header holds these facts; a run resumed where they differ goes ahead with
a warning (see `run.restore`), since its later epochs may then differ in their last digits.
"""
from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torchvision

from runner import nvidia
from runner.errors import UsageError
from susceptibility.traceless import IEEE_FP32, fp32_precision, set_fp32_precision

# Facts of the machine and settings that decide which kernels compute a run, and so its last digits.
KERNEL_FACTS = ("device_name", "cpu_model", "cpu_capability", "cpu_threads", "cuda", "cudnn",
                "compute_capability", "sm_count", "mig_slice", "driver", "fp32_precision", "deterministic_algorithms",
                "cudnn_deterministic", "cudnn_benchmark", "cublas_workspace_config")
# Training's own fp32 precision, set for every run: torch's defaults, under which the reference code
# ran too: cuDNN convolutions in TF32 on GPUs that have it (Ampere and later), matrix products and
# every CPU kernel in IEEE fp32. The probe computes in IEEE fp32 throughout (`Susceptibility.measure`).
TRAINING_FP32_PRECISION = {**IEEE_FP32, "cudnn.conv.fp32_precision": "tf32", "cudnn.rnn.fp32_precision": "tf32"}
# cuBLAS is deterministic with one of these workspace settings, read when CUDA first uses it.
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
CUBLAS_CONFIG = "CUBLAS_WORKSPACE_CONFIG"


def select_device(name: str) -> torch.device:
    """The compute device: `auto` takes CUDA, then Apple MPS, else the CPU, but refuses the CPU
    where the machine has an NVIDIA GPU that torch cannot use (see `nvidia.unusable_gpu`)."""
    if name == "auto" or name.startswith("cuda"):
        refusal = nvidia.unusable_gpu(f"--device {name}")
        if refusal:
            raise UsageError(refusal)
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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(f"--device {name}: this machine has {count} CUDA GPU{'s' * (count != 1)}, "
                         f"cuda:0 to cuda:{count - 1}; use one of them or --device cuda")
    make_current(device)
    return device


def make_current(device: torch.device) -> None:
    """Make a GPU named by its index the current one, so that pinned memory, the DataLoader and
    anything else that uses the current GPU work on it rather than open a second context on GPU 0."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def prepare_determinism(deterministic: bool) -> None:
    """What deterministic CUDA kernels need before CUDA starts: cuBLAS's workspace setting (a
    setting of one's own is kept, and checked in `configure_device`)."""
    if deterministic:
        os.environ.setdefault(CUBLAS_CONFIG, DETERMINISTIC_CUBLAS[0])


def configure_device(device: torch.device, deterministic: bool) -> None:
    """Set training's fp32 precision and, on a CUDA device, deterministic kernels or, with
    `deterministic` off, cuDNN's benchmark mode, which picks the fastest kernels for each shape.
    The CPU's kernels are deterministic either way (for a given CPU and thread count)."""
    set_fp32_precision(TRAINING_FP32_PRECISION)
    if device.type != "cuda":
        return
    workspace = os.environ.get(CUBLAS_CONFIG)
    if deterministic and workspace not in DETERMINISTIC_CUBLAS:
        raise UsageError(f"{CUBLAS_CONFIG}={workspace} makes cuBLAS non-deterministic; unset it or set "
                         f"{DETERMINISTIC_CUBLAS[0]}, or pass --no-deterministic")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


@contextmanager
def run_settings_restored() -> Iterator[None]:
    """Put back, after the block, the process-wide settings a run changes for its own computation:
    torch's fp32 precision, its deterministic-algorithm and cuDNN flags (`configure_device`), cuBLAS's
    workspace variable (`prepare_determinism`) and torch's global CPU random stream (which the run
    seeds), so that a caller running experiments in its own process (a test, a notebook) finds them
    as they were.

    Two stay as the run left them, since undoing them would be untrue: the workspace variable once
    CUDA has started, as cuBLAS has read it then and later runs of the process compute with it; and
    the global CUDA random streams, which cannot be saved before the block without starting CUDA
    ahead of that variable.
    """
    precision, flags, workspace = fp32_precision(), determinism_flags(), os.environ.get(CUBLAS_CONFIG)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        set_fp32_precision(precision)
        set_determinism_flags(flags)
        if not torch.cuda.is_initialized():
            restore_variable(CUBLAS_CONFIG, workspace)


def determinism_flags() -> tuple[bool, bool, bool, bool]:
    """torch's deterministic-algorithm mode (and whether it only warns) and cuDNN's deterministic and
    benchmark flags, as they stand."""
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def set_determinism_flags(flags: tuple[bool, bool, bool, bool]) -> None:
    """Set the flags `determinism_flags` reads."""
    deterministic, warn_only, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def restore_variable(name: str, value: str | None) -> None:
    """Set the environment variable `name` to `value`, or remove it where `value` is None."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays."""
    checks = [getattr(torch.cpu, name, lambda: False) for name in ("_is_avx512_bf16_supported",
                                                                    "_is_amx_tile_supported")]
    return any(check() for check in checks)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes bf16 in hardware: compute capability 8.0 (Ampere) or later."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def bf16_support(device: torch.device) -> str:
    """`native` where `device` computes bf16 in hardware, `emulated` where torch converts to fp32."""
    native = {"cpu": cpu_has_native_bf16, "cuda": lambda: cuda_has_native_bf16(device)}
    return "native" if native.get(device.type, lambda: False)() else "emulated"


def amp_refusal(device: torch.device) -> str | None:
    """Why --amp cannot run on `device`, or None: bf16 autocast pays only where bf16 is native."""
    if device.type not in ("cuda", "cpu"):
        return f"--amp (bf16 autocast) runs on CUDA GPUs and CPUs, not on {device}; leave it out"
    if bf16_support(device) == "native":
        return None
    if device.type == "cuda":
        name, (major, minor) = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
        return (f"--amp needs a GPU that computes bf16 natively (compute capability 8.0 or later); the "
                f"{name} ({major}.{minor}) emulates it, slower than fp32; leave --amp out")
    return (f"--amp needs a CPU that computes bf16 natively (AVX512-BF16 or AMX); the {cpu_model()} would "
            f"emulate it, slower than fp32; leave --amp out")


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
    """Library versions, the device, the CPU facts that decide which kernels compute the run, its
    fp32 precision settings and bf16 support, and on a CUDA device its CUDA facts and settings."""
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "device": str(device), "device_name": name,
            "cpu_model": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_threads": torch.get_num_threads(), "fp32_precision": fp32_precision(),
            "bf16": bf16_support(device), **(cuda_environment(device) if device.type == "cuda" else {})}


def cuda_environment(device: torch.device) -> dict:
    """The CUDA and cuDNN versions and the driver's, the GPU's compute capability, its number of
    streaming multiprocessors and MIG slice (cuBLAS promises the same bits only for the same
    architecture and SM count, and it splits work by them), and the determinism settings."""
    major, minor = torch.cuda.get_device_capability(device)
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "driver": nvidia.driver_version(),
            "compute_capability": f"{major}.{minor}",
            "sm_count": torch.cuda.get_device_properties(device).multi_processor_count,
            "mig_slice": nvidia.mig_slice(torch.cuda.get_device_name(device)),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas_workspace_config": os.environ.get(CUBLAS_CONFIG)}


def environment_changes(saved: dict, current: dict) -> list[str]:
    """The facts of `KERNEL_FACTS` that differ between a checkpoint's machine and this one. Off
    CUDA the device name is the CPU model, named once."""
    on_cuda = torch.device(current["device"]).type == "cuda"
    return [f"{key} {saved[key]!r}, now {current.get(key)!r}" for key in KERNEL_FACTS
            if key in saved and saved[key] != current.get(key) and (on_cuda or key != "device_name")]
