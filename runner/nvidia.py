"""What the machine says about its NVIDIA GPUs apart from torch: whether it has one, its driver, and
the MIG slice a process runs on.

torch reports a GPU it cannot use (a driver older than its wheel's CUDA needs, a CPU-only wheel) only
as `torch.cuda.is_available()` being False; these facts tell that case from a machine without a GPU.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import torch

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def gpu_signs() -> list[str]:
    """The signs that this machine has an NVIDIA GPU: its device files, `nvidia-smi`, or a
    CUDA_VISIBLE_DEVICES that names GPUs (an empty one or -1 hides them on purpose)."""
    signs = []
    if glob.glob("/dev/nvidia[0-9]*"):
        signs.append("/dev/nvidia*")
    if shutil.which("nvidia-smi"):
        signs.append("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        signs.append(f"CUDA_VISIBLE_DEVICES={visible}")
    return signs


def driver_version() -> str | None:
    """The NVIDIA driver's version, from the kernel module or `nvidia-smi`; None where neither says."""
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", DRIVER_VERSION_FILE.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            answer = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30)
            return answer.stdout.split()[0] if answer.returncode == 0 and answer.stdout.split() else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def unusable_gpu(option: str) -> str | None:
    """One line saying why torch cannot use the NVIDIA GPU this machine has, and how to fix it; None
    where torch can use it or the machine shows no GPU. `option` is the command-line choice asked."""
    signs = gpu_signs()
    if torch.cuda.is_available() or not signs:
        return None
    driver = driver_version()
    driver_text = f"driver {driver}" if driver else "its driver version unknown"
    if torch.version.cuda is None:
        wheel = f"torch {torch.__version__} is built without CUDA"
        fix = "install a torch wheel built for CUDA (https://pytorch.org/get-started/locally/)"
    else:
        wheel = f"torch {torch.__version__} is built for CUDA {torch.version.cuda}"
        fix = (f"update the driver to one that supports CUDA {torch.version.cuda}, or install a torch wheel "
               f"built for the CUDA version the driver supports (nvidia-smi shows it)")
    return (f"{option}: this machine has an NVIDIA GPU ({', '.join(signs)}; {driver_text}) but torch cannot "
            f"use it: {wheel}; {fix}, or pass --device cpu to train on the CPU on purpose")


def mig_slice(device_name: str) -> str | None:
    """The MIG slice a GPU is, where it is one: its profile as the device name gives it ("MIG 1g.10gb"),
    else the MIG device that CUDA_VISIBLE_DEVICES names ("MIG-<uuid>"); None on a whole GPU."""
    found = re.search(r"MIG \S+", device_name)
    if found:
        return found.group(0)
    visible = [name.strip() for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    return next((name for name in visible if name.startswith("MIG-")), None)
