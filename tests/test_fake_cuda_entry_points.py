"""The real entry points of a CUDA run, driven on fake CUDA tensors on a machine without a GPU:
`experiments.start` (device choice, data on the device, model, probe), `experiments.probe_train_and_test`
(`Susceptibility.measure`, training with the per-sample summaries, the test pass), with and without
--amp, and a checkpoint's state restored into a fresh run.

What fake tensors cannot do without a GPU, and is stood in for here (so these tests cannot cover it):
- the backward pass: autograd's engine needs a CUDA context; each parameter that a loss depends on
  gets a zero gradient instead (so the numbers are not checked, only where tensors live and what
  makes the host wait);
- CUDA's random streams and CUDA generators: CPU generators stand for them (forking, seeding and
  drawing run, on the CPU's algorithm);
- reading values on the host (`tolist`, `item`, `int`, `float`, `torch.equal`): fake tensors hold no
  values; each read gives ones (finite losses, non-empty counts) or True and is counted, so that the reads per epoch can be compared;
- writing a checkpoint file: fake tensors cannot be pickled; the state that would be written is
  restored in memory instead;
- making the model: parameters made as fake tensors cannot move to another device or memory format,
  so the model is made of real CPU tensors and moved to the fake GPU, as a run moves it, and
  --channels-last (which converts the parameters once they are on the GPU) is not covered.
Kernels, cuDNN and cuBLAS choices, TF32, timing and bit-identity need a real GPU (`tools/gpu_check.py`).
"""
import contextlib
import types
from typing import Iterator

import pytest
import torch
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from conftest import run_args
import experiments
from runner import batching
from runner.run import restore
from runner.run_files import run_files
from runner import command_line
from runner import machine
import runner.run
import susceptibility.probe
from test_gpu_path import zero_gradients

CUDA = torch.device("cuda")


def ones_like_values(shape: torch.Size):
    """What `tolist` gives for a tensor of `shape` holding ones."""
    return 1.0 if len(shape) == 0 else [ones_like_values(shape[1:]) for _ in range(shape[0])]


class FakeGpu:
    """A one-GPU machine as torch sees it, with the stand-ins of the module docstring; counts the
    values read on the host."""

    def __init__(self, monkeypatch):
        self.reads = 0
        self.stream = torch.Generator()
        properties = types.SimpleNamespace(multi_processor_count=132, major=9, minor=0)
        answers = {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
                   "get_device_name": lambda device=None: "NVIDIA H100 80GB HBM3",
                   "get_device_capability": lambda device=None: (9, 0),
                   "get_device_properties": lambda device=None: properties, "set_device": lambda device: None,
                   "init": lambda: None, "default_generators": (self.stream,),
                   "get_rng_state": lambda device=None: self.stream.get_state(),
                   "set_rng_state": lambda state, device=None: self.stream.set_state(state),
                   "synchronize": lambda device=None: None}
        for attribute, answer in answers.items():
            monkeypatch.setattr(torch.cuda, attribute, answer)
        # Fake tensors would otherwise start the CUDA they are told is there.
        monkeypatch.setattr(FakeTensorMode, "avoid_device_init", property(lambda mode: True))
        monkeypatch.setattr(fake_tensor, "init_gpu_context", lambda device: None)
        cpu_generator = lambda seed, device, *stream: torch.Generator().manual_seed(
            susceptibility.probe.derive_seed(seed, *stream))
        monkeypatch.setattr(susceptibility.probe, "torch_generator", cpu_generator)
        monkeypatch.setattr(experiments, "torch_generator", cpu_generator)
        monkeypatch.setattr(torch.Tensor, "backward", zero_gradients)
        monkeypatch.setattr(runner.run, "create_model", self.real_model(runner.run.create_model))
        for name in ("tolist", "item", "__int__", "__float__"):
            monkeypatch.setattr(torch.Tensor, name, self.reading(getattr(torch.Tensor, name), name))
        monkeypatch.setattr(torch, "equal", self.comparing(torch.equal))

    @staticmethod
    def real_model(create):
        """`create`, building the model as real CPU tensors: parameters made fake cannot then move."""
        def create_for_real(*args, **kwargs):
            with fake_tensor.unset_fake_temporarily():
                return create(*args, **kwargs)
        return create_for_real

    def reading(self, read, name: str):
        """`read` (the method `name`), giving ones for a fake tensor and counting it."""
        def read_or_ones(tensor, *args, **kwargs):
            if not isinstance(tensor, FakeTensor):
                return read(tensor, *args, **kwargs)
            self.reads += 1
            ones = ones_like_values(tensor.shape)
            return int(ones) if name == "__int__" else ones
        return read_or_ones

    def comparing(self, equal):
        """`torch.equal`, saying True for fake tensors (whose values are unknown) and counting it."""
        def equal_or_true(a, b):
            if not isinstance(a, FakeTensor) and not isinstance(b, FakeTensor):
                return equal(a, b)
            self.reads += 1
            return True
        return equal_or_true


@contextlib.contextmanager
def fake_gpu(monkeypatch) -> Iterator[FakeGpu]:
    """`FakeGpu` with fake tensors: tensors made inside live on the fake CUDA device."""
    gpu = FakeGpu(monkeypatch)
    saved = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        with FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv()):  # sizes known only on the device
            yield gpu
    finally:
        batching.normalization_table.cache_clear()  # it kept fake tensors
        susceptibility.probe.unit_table.cache_clear()
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def cuda_run(data, out, *extra: str, images: int = 64) -> experiments.Run:
    """A CUDA run started as experiments.py starts it."""
    argv = run_args(data, out, "--device", "cuda", "--numsamples", str(images), "--model", "resnet", *extra)
    args = command_line.parse(argv)
    return experiments.start(args, argv, run_files(args))


def cuda_tensors(run: experiments.Run) -> set[str]:
    """The device types of everything a run keeps from epoch to epoch (but Adam's step counts, which
    torch keeps on the CPU unless told otherwise)."""
    optimizer = [value for state in run.optimizer.state.values() for key, value in state.items()
                 if torch.is_tensor(value) and key != "step"]
    kept = [*run.model.state_dict().values(), *optimizer, *run.signals.state_dict().values(), run.test_predictions]
    return {tensor.device.type for tensor in kept}


@pytest.mark.e2e
@pytest.mark.parametrize("extra", [(), ("--amp",), ("--optimizer", "adam")], ids=["fp32", "amp", "adam"])
def test_an_epoch_runs_through_the_real_entry_points_on_cuda(synthetic_cifar10, tmp_path, monkeypatch, extra):
    with fake_gpu(monkeypatch):
        run = cuda_run(synthetic_cifar10, tmp_path, *extra)
        row = experiments.probe_train_and_test(run, 0)
    assert run.device == CUDA and run.environment["sm_count"] == 132
    assert cuda_tensors(run) == {"cuda"} and len(run.probe.phi_before) == 1
    assert row["epoch"] == 0 and {"phi_before", "phi_after", "train_loss", "pred_changes"} <= set(row)
    assert (run.probe_network is not run.network) == ("--amp" in extra)  # the probe stays fp32


@pytest.mark.e2e
def test_the_host_reads_of_an_epoch_on_cuda_do_not_grow_with_its_batches(synthetic_cifar10, tmp_path, monkeypatch):
    reads = []
    for images in (64, 256):
        with fake_gpu(monkeypatch) as gpu:
            run = cuda_run(synthetic_cifar10, tmp_path / str(images), "--batchsize", "16", images=images)
            experiments.probe_train_and_test(run, 0)
            before = gpu.reads
            experiments.probe_train_and_test(run, 1)
            reads.append(gpu.reads - before)
    assert reads[0] == reads[1] > 0


@pytest.mark.e2e
def test_a_cuda_checkpoints_state_restores_into_a_fresh_run(synthetic_cifar10, tmp_path, monkeypatch):
    with fake_gpu(monkeypatch):
        run = cuda_run(synthetic_cifar10, tmp_path)
        experiments.probe_train_and_test(run, 0)
        state = run.state_dict()
        fresh = cuda_run(synthetic_cifar10, tmp_path)
        restore(fresh, state, tmp_path / "in-memory.pt")
    assert len(fresh.rows) == len(run.rows) and len(fresh.probe.phi_before) == 1
    assert cuda_tensors(fresh) == {"cuda"}
    assert machine.environment_changes(state["environment"], fresh.environment) == []
