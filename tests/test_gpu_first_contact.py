"""What a first run on a GPU depends on, checked on any machine: pixels normalized to the same bits on
every device, no silent fall back to the CPU, the probe's random streams and precision settings on
every device it touches, and the GPU a run names made current."""
import contextlib
import functools
import operator
import subprocess
import types

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import make_batches, run_args
import experiments
from runner import errors
from runner import batching
from runner import machine
from runner import nvidia
import susceptibility.probe
from susceptibility import Susceptibility, traceless
from susceptibility.probe import ProbeStream, derive_seed

CUDA = torch.device("cuda")


# --------------------------------------------------------------------------------------------------
# uint8 to normalized float: one table, the same bits everywhere


def plain_formula(channel: int, byte: int) -> np.float32:
    """(v / 255 - mean) / std, each step rounded to float32, as the PIL path computes a pixel."""
    f32 = np.float32
    return (f32(byte) / f32(255) - f32(batching.MEAN[channel])) / f32(batching.STD[channel])


def test_the_normalization_table_holds_the_plain_formula_for_every_byte_and_channel():
    table = batching.byte_normalization_table()
    expected = np.array([[plain_formula(c, v) for v in range(256)] for c in range(3)], dtype=np.float32)
    assert table.dtype == torch.float32 and table.shape == (3, 256)
    assert np.array_equal(table.numpy().view(np.uint32), expected.view(np.uint32))


def test_the_normalization_table_gives_the_pil_transforms_pixels():
    from PIL import Image
    from torchvision.transforms import functional as TF

    every_byte = np.arange(256, dtype=np.uint8).reshape(16, 16)
    picture = Image.fromarray(np.stack([every_byte] * 3, axis=-1))
    pil = TF.normalize(TF.to_tensor(picture), batching.MEAN, batching.STD)
    ours = batching.normalize(torch.as_tensor(np.stack([every_byte] * 3))[None])[0]
    assert torch.equal(ours.view(torch.int32), pil.view(torch.int32))


def marked_table(device: torch.device) -> torch.Tensor:
    """A table whose entries say which channel and byte they stand for: 1000 c + v."""
    return (torch.arange(3)[:, None] * 1000 + torch.arange(256)).float().to(device)


def looked_up(images: torch.Tensor) -> bool:
    """Whether every pixel of a batch came out of `marked_table`, in its own channel's row."""
    channel_of = torch.arange(3).view(1, 3, 1, 1) * 1000
    values = images - channel_of
    return bool(((values >= 0) & (values <= 255) & (values == values.round())).all())


def test_training_probe_and_test_batches_are_normalized_through_the_table(synthetic_cifar10, monkeypatch):
    monkeypatch.setattr(batching, "normalization_table", marked_table)
    batches = make_batches(synthetic_cifar10, numsamples=40, batch_size=16)
    generator = torch.Generator().manual_seed(0)
    train = next(iter(batches.train_batches(generator))).images
    probe, _ = batches.probe_batch(generator)
    test, _ = next(iter(batches.test_batches()))
    assert all(looked_up(images) for images in (train, probe, test))


class DeviceArithmetic(TorchDispatchMode):
    """Notes every operation on CUDA tensors that computes values rather than moving or indexing them."""

    MOVING = {"index", "_to_copy", "arange", "view", "lift_fresh", "_unsafe_view", "copy_", "empty", "detach"}

    def __init__(self):
        super().__init__()
        self.computed = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if isinstance(result, torch.Tensor) and result.device.type == "cuda" and name not in self.MOVING:
            self.computed.append(name)
        return result


def test_normalizing_on_a_gpu_looks_values_up_and_computes_none(monkeypatch):
    """On fake CUDA tensors: the device indexes the table made on the CPU; no division runs there."""
    batching.normalization_table.cache_clear()
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8, device=CUDA)
            with DeviceArithmetic() as spy:
                normalized = batching.normalize(images)
    finally:
        batching.normalization_table.cache_clear()  # it kept a fake tensor
    assert normalized.device.type == "cuda" and normalized.dtype == torch.float32
    assert spy.computed == []


def test_the_apis_uint8_images_are_scaled_through_a_table_of_v_over_255(monkeypatch):
    table = susceptibility.probe.unit_table(torch.device("cpu"))
    expected = np.arange(256, dtype=np.float32) / np.float32(255)
    assert np.array_equal(table.numpy().view(np.uint32), expected.view(np.uint32))
    monkeypatch.setattr(susceptibility.probe, "unit_table", lambda device: torch.arange(256.0, device=device) + 1000)
    images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    batch, _ = Susceptibility(images, num_classes=10, batch_size=8).batches.probe_batch(torch.Generator())
    assert batch.min() >= 1000 and torch.equal(batch.sort(0).values, images.float().sort(0).values + 1000)


# --------------------------------------------------------------------------------------------------
# No silent fall back to the CPU where an NVIDIA GPU is present but torch cannot use it


@pytest.fixture
def machine_with_an_unusable_gpu(monkeypatch, tmp_path):
    """/dev/nvidia0 present, the driver's kernel module 470.57.02, and torch unable to use the GPU (as
    with a wheel built for a newer CUDA than the driver supports)."""
    version_file = tmp_path / "version"
    version_file.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 16:14:05 UTC 2021\n")
    monkeypatch.setattr(nvidia, "DRIVER_VERSION_FILE", version_file)
    monkeypatch.setattr(nvidia.glob, "glob", lambda pattern: ["/dev/nvidia0"] if "nvidia" in pattern else [])
    monkeypatch.setattr(nvidia.shutil, "which", lambda name: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    return version_file


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:1"])
def test_a_gpu_torch_cannot_use_stops_the_run_naming_driver_wheel_and_fixes(machine_with_an_unusable_gpu, device):
    with pytest.raises(errors.UsageError) as refusal:
        machine.select_device(device)
    line = str(refusal.value)
    assert "\n" not in line and line.startswith(f"--device {device}: this machine has an NVIDIA GPU (/dev/nvidia*")
    assert "driver 470.57.02" in line and "built for CUDA 12.8" in line and "update the driver" in line
    assert line.endswith("or pass --device cpu to train on the CPU on purpose")


def test_experiments_refuses_the_silent_fallback_in_one_line(machine_with_an_unusable_gpu, synthetic_cifar10,
                                                            tmp_path, capsys):
    argv = run_args(synthetic_cifar10, tmp_path, "--device", "auto")
    assert experiments.main(argv) == errors.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torch cannot use it" in err and not (tmp_path / "results").exists()


def test_a_cpu_only_wheel_is_named_as_such(machine_with_an_unusable_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "is built without CUDA; install a torch wheel built for CUDA" in nvidia.unusable_gpu("--device auto")


def test_the_driver_version_comes_from_nvidia_smi_without_the_kernel_module_file(machine_with_an_unusable_gpu,
                                                                                  monkeypatch, tmp_path):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 535.104.05\n")
    smi.chmod(0o755)
    machine_with_an_unusable_gpu.unlink()
    monkeypatch.setattr(nvidia.shutil, "which", lambda name: str(smi) if name == "nvidia-smi" else None)
    monkeypatch.setattr(nvidia.subprocess, "run", functools.partial(subprocess.run, env={"PATH": str(smi.parent)}))
    assert "nvidia-smi; driver 535.104.05)" in nvidia.unusable_gpu("--device auto")


@pytest.mark.parametrize("visible, refused", [("0,1", True), ("", False), ("-1", False)])
def test_cuda_visible_devices_naming_gpus_is_a_sign_of_one(machine_with_an_unusable_gpu, monkeypatch, visible, refused):
    monkeypatch.setattr(nvidia.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert (nvidia.unusable_gpu("--device auto") is not None) == refused
    if not refused:
        assert machine.select_device("auto") == torch.device("cpu")


def test_a_machine_without_signs_of_a_gpu_or_with_a_usable_one_goes_ahead(machine_with_an_unusable_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert nvidia.unusable_gpu("--device auto") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(nvidia.glob, "glob", lambda pattern: [])
    assert machine.select_device("auto") == torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# --device cuda:N works on GPU N alone


@pytest.mark.parametrize("name, made_current", [("cuda:1", [torch.device("cuda:1")]), ("cuda", []), ("cpu", [])])
def test_a_gpu_named_by_its_index_is_made_the_current_one(monkeypatch, name, made_current):
    current = []
    for attribute, answer in {"is_available": lambda: True, "device_count": lambda: 2,
                              "set_device": current.append}.items():
        monkeypatch.setattr(torch.cuda, attribute, answer)
    assert machine.select_device(name) == torch.device(name) and current == made_current


# --------------------------------------------------------------------------------------------------
# The API's probe draws on the probe's own seeded streams on every device it touches


def test_the_probe_batch_is_made_on_forked_seeded_streams_of_the_images_and_the_models_device(monkeypatch):
    """Images on the CPU, a model elsewhere (on the meta device, standing for a GPU): the augmentation
    may draw on either device's global stream, so both are forked and seeded while the batch is made."""
    forked, real_stream = [], traceless.own_random_stream

    @contextlib.contextmanager
    def spy(seed: int, device: torch.device):
        forked.append((torch.device(device).type, seed))
        with real_stream(seed, torch.device("cpu")):  # the meta device has no stream: the CPU's stands in
            yield

    def step(model, optimizer, images, labels, seed, num_classes):
        forked.append(("probe step on", images.device.type))
        return torch.tensor(2.0), torch.tensor(1.5)

    monkeypatch.setattr(susceptibility.probe, "own_random_stream", spy)
    monkeypatch.setattr(susceptibility.probe, "probe_step", step)
    model = torch.nn.Linear(4, 10, device="meta")
    probe = Susceptibility(torch.rand(16, 1, 2, 2), num_classes=10, batch_size=8, seed=3,
                           augment=lambda images: images.to("meta"), full_precision=False)
    forked.clear()  # reading the images forks the CPU's stream
    assert probe.measure(model, torch.optim.SGD(model.parameters(), lr=0.1)) == 0.5
    seeds = {device: seed for device, seed in forked}
    assert [device for device, _ in forked] == ["meta", "cpu", "probe step on"] and seeds["probe step on"] == "meta"
    assert seeds["meta"] == derive_seed(3, ProbeStream.MODEL_DEVICE, 0)


def test_an_augmentation_on_the_models_device_leaves_the_callers_stream_there_as_it_was():
    """On the CPU, images and model on one device: the caller's stream continues as without the probe,
    and the probe's augmentation draws the same numbers whatever state the caller left it in."""
    drawn = []
    augment = lambda images: drawn.append(torch.rand(3)) or images + torch.rand_like(images)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.rand(16, 3, 4, 4)
    for caller_seed in (5, 6):
        torch.manual_seed(caller_seed)
        Susceptibility(images, num_classes=10, batch_size=8, seed=1, augment=augment).measure(model, optimizer)
        after_probe = torch.rand(2)
        torch.manual_seed(caller_seed)
        assert torch.equal(torch.rand(2), after_probe)
    assert torch.equal(drawn[0], drawn[1])


# --------------------------------------------------------------------------------------------------
# Inside the probe both views of torch's fp32 precision settings read IEEE fp32, without an error

LEGACY_FLAGS = {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False}


def every_precision_flag() -> dict:
    """Every legacy and per-operation fp32 precision flag, read as a caller would; an error as its text."""
    def read(getter):
        try:
            return getter()
        except RuntimeError as error:
            return f"error: {error}"

    names = [*LEGACY_FLAGS, *traceless.IEEE_FP32]
    flags = {name: read(lambda: operator.attrgetter(name)(torch.backends)) for name in names}
    return flags | {"float32_matmul_precision": read(torch.get_float32_matmul_precision)}


class FlagReader(torch.nn.Module):
    """A network that reads every precision flag in its forward pass, as a hook or a library might."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 10)
        self.seen = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(every_precision_flag())
        return self.linear(images.flatten(1))


CALLERS = {
    "torch-defaults": lambda: None,
    "training": lambda: traceless.set_fp32_precision(machine.TRAINING_FP32_PRECISION),
    "matmul-precision-high": lambda: torch.set_float32_matmul_precision("high"),
    "legacy-switches": lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", True),
                                setattr(torch.backends.cudnn, "allow_tf32", False)),
    "a-mix-torch-refuses-to-read": lambda: traceless.set_fp32_precision({"cudnn.conv.fp32_precision": "ieee",
                                                                       "mkldnn.matmul.fp32_precision": "tf32"}),
}


@pytest.fixture
def restore_precision():
    saved = traceless.fp32_precision()
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    traceless.set_fp32_precision(saved)


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_every_precision_flag_reads_ieee_fp32_inside_the_probe_and_as_it_was_after(restore_precision, caller):
    caller()
    before = every_precision_flag()
    model = FlagReader()
    probe = Susceptibility(torch.rand(16, 3, 2, 2), num_classes=10, batch_size=8)
    probe.measure(model, torch.optim.SGD(model.parameters(), lr=0.1))
    inside = {**LEGACY_FLAGS, **traceless.IEEE_FP32, "float32_matmul_precision": "highest"}
    assert len(model.seen) == 2 and all(seen == inside for seen in model.seen)
    assert every_precision_flag() == before


# --------------------------------------------------------------------------------------------------
# The record keeps what GPU bit-identity depends on, and a resume says when it changed


def gpu_answers(monkeypatch, name: str, sms: int, driver: str) -> None:
    """torch.cuda and the driver as on a machine with one GPU `name` of `sms` multiprocessors."""
    answers = {"is_available": lambda: True, "device_count": lambda: 1, "get_device_name": lambda device=None: name,
               "get_device_capability": lambda device=None: (8, 0),
               "get_device_properties": lambda device=None: types.SimpleNamespace(multi_processor_count=sms)}
    for attribute, answer in answers.items():
        monkeypatch.setattr(torch.cuda, attribute, answer)
    monkeypatch.setattr(nvidia, "driver_version", lambda: driver)


def test_the_record_keeps_driver_sm_count_and_mig_slice_and_a_resume_names_their_change(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu_answers(monkeypatch, "NVIDIA A100-SXM4-80GB", 108, "535.104.05")
    whole = machine.environment(torch.device("cuda:0"))
    assert (whole["driver"], whole["sm_count"], whole["mig_slice"]) == ("535.104.05", 108, None)
    gpu_answers(monkeypatch, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", 42, "550.54.15")
    sliced = machine.environment(torch.device("cuda:0"))
    assert (sliced["driver"], sliced["sm_count"], sliced["mig_slice"]) == ("550.54.15", 42, "MIG 3g.40gb")
    assert machine.environment_changes(whole, sliced) == [
        "device_name 'NVIDIA A100-SXM4-80GB', now 'NVIDIA A100-SXM4-80GB MIG 3g.40gb'", "sm_count 108, now 42",
        "mig_slice None, now 'MIG 3g.40gb'", "driver '535.104.05', now '550.54.15'"]


def test_a_mig_slice_named_in_cuda_visible_devices_is_recorded(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5c89d3a2-2c3b-5b1e-9e4f-0a1b2c3d4e5f")
    assert nvidia.mig_slice("NVIDIA H100 80GB HBM3") == "MIG-5c89d3a2-2c3b-5b1e-9e4f-0a1b2c3d4e5f"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert nvidia.mig_slice("NVIDIA H100 80GB HBM3") is None


def test_normalizing_keeps_the_images_memory_layout():
    """Channels-last batches stay channels-last: a compiled network sees one layout, one graph."""
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    for layout in (torch.contiguous_format, torch.channels_last):
        assert batching.normalize(images.contiguous(memory_format=layout)).is_contiguous(memory_format=layout)
