"""The GPU path, checked on any machine: the probe's fp32 precision, the seeding of device streams,
device and --amp choices, and the per-batch work run on fake CUDA tensors, with no host
synchronization per batch."""
import contextlib
import operator
import os
import types
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from runner import errors
from runner import batching
import datasets
import experiments
from runner import machine
from runner import noisy_data
from runner import records
import susceptibility.probe
from susceptibility import traceless
from runner import training
from conftest import built_run, one_line_refusal, record_path, run_args, small_dropout_net
from models import create_model
from runner.sample_scores import TrainingSignals
from susceptibility import Susceptibility, probe_step
from runner.training import fast_network

from tools.host_syncs import HostSynchronizations

aten = torch.ops.aten


def reading(read) -> object:
    """What `read()` gives, or the text of the error torch raises instead (it refuses to read some
    settings after a mix of its two APIs)."""
    try:
        return read()
    except RuntimeError as error:
        return str(error)


def precision_readings() -> dict:
    """Every setting through which torch exposes fp32 precision, read as a caller would."""
    names = [*traceless.IEEE_FP32, "cuda.matmul.allow_tf32", "cudnn.allow_tf32"]
    readings = {name: reading(lambda: operator.attrgetter(name)(torch.backends)) for name in names}
    return readings | {"float32_matmul_precision": reading(torch.get_float32_matmul_precision)}


@pytest.fixture
def caller_precision():
    """Put torch's precision settings back after a test that changes them."""
    saved = traceless.fp32_precision()
    yield
    torch.set_float32_matmul_precision("highest")
    traceless.set_fp32_precision(saved)


CALLER_SETTINGS = {
    "torch-defaults": lambda: None,
    "matmul-precision-high": lambda: torch.set_float32_matmul_precision("high"),
    "legacy-tf32-switches": lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", True),
                                     setattr(torch.backends.cudnn, "allow_tf32", False)),
    "per-operation": lambda: traceless.set_fp32_precision({"cudnn.conv.fp32_precision": "ieee",
                                                           "mkldnn.conv.fp32_precision": "bf16",
                                                           "mkldnn.matmul.fp32_precision": "tf32"}),
}


class PrecisionSpy(nn.Module):
    """A network that notes the fp32 precision settings in force at every forward pass."""

    def __init__(self):
        super().__init__()
        self.network = small_dropout_net()
        self.seen = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(traceless.fp32_precision())
        return self.network(images)


@pytest.mark.parametrize("ieee_fp32", [True, False], ids=["ieee-fp32", "opted-out"])
@pytest.mark.parametrize("settings", CALLER_SETTINGS.values(), ids=CALLER_SETTINGS.keys())
def test_the_probe_computes_in_ieee_fp32_and_leaves_the_callers_precision_as_it_was(caller_precision, settings,
                                                                                   ieee_fp32):
    settings()
    before, callers = precision_readings(), traceless.fp32_precision()
    torch.manual_seed(0)
    model = PrecisionSpy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_out = {} if ieee_fp32 else {"ieee_fp32": False}
    probe = Susceptibility(torch.rand(32, 3, 32, 32), num_classes=10, batch_size=16, **opt_out)
    probe.measure(model, optimizer)
    expected = traceless.IEEE_FP32 if ieee_fp32 else callers
    assert len(model.seen) == 2 and all(seen == expected for seen in model.seen)
    assert precision_readings() == before


# --------------------------------------------------------------------------------------------------
# Random streams of the device alone


class UninitializedCuda:
    """torch.cuda before and after its initialization, on a machine without a GPU: the default
    generators exist only once `init` has run."""

    def __init__(self, monkeypatch, count: int = 2):
        self.generators = [torch.Generator() for _ in range(count)]
        monkeypatch.setattr(torch.cuda, "default_generators", ())
        monkeypatch.setattr(torch.cuda, "init", self.init)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)

    def init(self) -> None:
        torch.cuda.default_generators = tuple(self.generators)


@pytest.mark.parametrize("device, seeded", [("cuda:0", 0), ("cuda", 1)])
def test_a_cuda_stream_is_seeded_before_cuda_is_initialized(monkeypatch, device, seeded):
    cuda = UninitializedCuda(monkeypatch)
    traceless.seed_device_stream(7, torch.device(device))
    assert [generator.initial_seed() == 7 for generator in cuda.generators] == [i == seeded for i in range(2)]


# --------------------------------------------------------------------------------------------------
# Host synchronizations and order-dependent sums on the per-batch path


def epoch_of(data_dir, tmp_path, images: int) -> experiments.Run:
    """A run of the tiny CNN with dropout-free batches of 4 images, ready for its first epoch."""
    return built_run(run_args(data_dir, tmp_path, "--numsamples", str(images), "--batchsize", "4",
                              "--noisy-holdout", "8", "--extra-probes", "heldout", "--extra-probe-batches", "2"))


@pytest.mark.e2e
def test_an_epoch_waits_for_the_device_as_often_with_40_batches_as_with_10(synthetic_cifar10, tmp_path):
    counts = []
    for images in (40, 160):
        run = epoch_of(synthetic_cifar10, tmp_path / str(images), images)
        assert run.batches.train_batch_count() == images // 4
        with HostSynchronizations(run.device) as syncs:
            experiments.probe_train_and_test(run, 0)
        counts.append(syncs.where)
    assert counts[0] == counts[1] and 0 < counts[0].total() < 40, counts  # per epoch, never per batch


class RepeatedAccumulation(TorchDispatchMode):
    """Notes the accumulations that add two values into one element: a GPU adds those in the order
    its atomic operations happen to run, so that their sums change from run to run."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in (aten.index_add, aten.index_add_):
            targets = args[2]
        elif packet in (aten.index_put, aten.index_put_, aten._index_put_impl_) and \
                (args[3] if len(args) > 3 else kwargs.get("accumulate", False)):
            targets = torch.stack(torch.broadcast_tensors(*args[1]), -1).reshape(-1, len(args[1]))
        else:
            targets = None
        if targets is not None and len(torch.unique(targets, dim=0)) < len(targets):
            self.found.append(packet.__name__)
        return func(*args, **kwargs)


@pytest.mark.e2e
def test_no_sum_of_the_per_batch_path_adds_into_one_element_twice(synthetic_cifar10, tmp_path):
    run = epoch_of(synthetic_cifar10, tmp_path, 40)
    with RepeatedAccumulation() as accumulations:
        experiments.probe_train_and_test(run, 0)
    assert accumulations.found == []


# --------------------------------------------------------------------------------------------------
# The per-batch work on fake CUDA tensors, which need no GPU: a tensor on the wrong device, a value
# read on the host or a random draw from another device's generator shows up here as it would on a GPU

CUDA = torch.device("cuda")
STAND_IN_SEED = 24_601  # the seed of the CPU generator that stands for a CUDA one


class GeneratorDevices(TorchDispatchMode):
    """Notes each random draw whose generator lives on another device than the numbers it draws (an
    error on a GPU). Fake tensors cannot have a CUDA generator without a GPU, so a CPU generator
    seeded with `STAND_IN_SEED` stands for one."""

    def __init__(self):
        super().__init__()
        self.mismatched = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        generator = kwargs.get("generator")
        if generator is not None:
            home = CUDA if generator.initial_seed() == STAND_IN_SEED else generator.device
            drawn = (result[0] if isinstance(result, tuple) else result).device
            if drawn.type != home.type:
                self.mismatched.append(f"{func} draws on {drawn} from a {home.type} generator")
        return result


def zero_gradients(loss: torch.Tensor, *args, **kwargs) -> None:
    """Stands for `loss.backward()`, which needs a GPU for fake CUDA tensors: every parameter that
    `loss` depends on gets a zero gradient on its own device."""
    nodes, seen = [loss.grad_fn], set()
    while nodes:
        node = nodes.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            node.variable.grad = torch.zeros_like(node.variable)
        nodes.extend(following for following, _ in node.next_functions)


@contextlib.contextmanager
def fake_cuda(monkeypatch) -> Iterator[GeneratorDevices]:
    """Fake CUDA tensors, with autograd's backward pass and the probe's CUDA random streams stood in
    for; yields the check of generator devices. Tensors made before stay real, and turn fake when
    they meet fake ones."""
    monkeypatch.setattr(torch.Tensor, "backward", zero_gradients)
    monkeypatch.setattr(susceptibility.probe, "own_random_stream", lambda seed, device: contextlib.nullcontext())
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), GeneratorDevices() as draws:
            yield draws
    finally:
        batching.normalization_table.cache_clear()  # it kept fake tensors


def small_data(root) -> noisy_data.NoisyData:
    train, test = datasets.load_cifar(root)
    return noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=40, corrupt_prob=0.5,
                                      probe_source="train", seed=0, noisy_holdout=12)


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_probe_and_test_run_on_cuda_without_a_wait_per_batch(synthetic_cifar10, monkeypatch, optimizer):
    data, network = small_data(synthetic_cifar10), fast_network(create_model("resnet", 0.125), channels_last=True)
    generator = torch.Generator().manual_seed(STAND_IN_SEED)
    with fake_cuda(monkeypatch) as draws:
        batches = batching.DeviceBatches(data, CUDA, 16, 24)
        optimizer = training.OPTIMIZERS[optimizer](network.to(CUDA).parameters(), 0.1)
        signals = TrainingSignals(len(data.train_index), CUDA, batches.assigned != batches.true)
        predictions = torch.zeros(len(data.test), dtype=torch.int64, device=CUDA)
        training.training_sums(network, optimizer, batches.train_batches(generator))  # makes what is made once
        with HostSynchronizations(CUDA) as syncs:
            sums = training.training_sums(network, optimizer, batches.train_batches(generator), signals=signals)
            before, after = probe_step(network, optimizer, *batches.probe_batch(generator), seed=0, num_classes=10)
            tests = [training.evaluation_sums(network, batches.test_batches(), predictions),
                     training.evaluation_sums(network, batches.holdout_batches())]
    results = [sums, before, after, *tests, *signals.state_dict().values()]
    assert {tensor.device.type for tensor in results} == {"cuda"}
    assert syncs.where == {} and draws.mismatched == []


@pytest.mark.e2e
def test_loader_batches_go_to_the_gpu_without_a_wait(synthetic_cifar10, monkeypatch):
    data = small_data(synthetic_cifar10)
    batch = next(iter(batching.LoaderBatches(data, torch.device("cpu"), 16, 24, 0).train_batches(
        torch.Generator().manual_seed(0))))
    with fake_cuda(monkeypatch):
        on_gpu = batching.LoaderBatches(data, CUDA, 16, 24, 0)
        with HostSynchronizations(CUDA) as syncs:
            images, positions = on_gpu.on_device(batch.images, batch.index)
            labels = on_gpu.assigned[positions], on_gpu.test_labels[positions]
    assert {tensor.device.type for tensor in [images, positions, *labels]} == {"cuda"} and syncs.where == {}


# --------------------------------------------------------------------------------------------------
# Devices, --amp, determinism and the facts a record keeps


class GpuStandIn:
    """torch.cuda as on a machine with `count` GPUs of one model, for the choices made before any
    kernel runs."""

    def __init__(self, monkeypatch, name: str = "NVIDIA A100-SXM4-40GB", capability: tuple = (8, 0),
                 count: int = 1):
        answers = {"is_available": lambda: True, "device_count": lambda: count,
                   "get_device_name": lambda device=None: name, "get_device_capability": lambda device=None: capability,
                   "get_device_properties": lambda device=None: types.SimpleNamespace(multi_processor_count=108)}
        for attribute, answer in answers.items():
            monkeypatch.setattr(torch.cuda, attribute, answer)


@pytest.fixture
def cuda_settings(monkeypatch):
    """Put torch's determinism and precision settings and the cuBLAS variable back after a test."""
    monkeypatch.delenv(machine.CUBLAS_CONFIG, raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, traceless.fp32_precision())
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:3]
    traceless.set_fp32_precision(saved[3])


def determinism_settings() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark, os.environ.get(machine.CUBLAS_CONFIG))


def refused(argv: list[str], out: Path, capsys) -> str:
    """The one line of a command line refused with exit code 2, having written nothing under `out`."""
    err = one_line_refusal(argv, capsys)
    assert [path for path in out.rglob("*") if path.is_file()] == []
    return err


GPU_REFUSALS = {
    "gpu-beyond-those-present": (dict(count=2), ["--device", "cuda:2"],
                                 "--device cuda:2: this machine has 2 CUDA GPUs, cuda:0 to cuda:1; use one"),
    "amp-on-a-gpu-that-emulates-bf16": (dict(name="Tesla V100-SXM2-16GB", capability=(7, 0)), ["--device", "cuda", "--amp"],
                                        "--amp needs a GPU that computes bf16 natively (compute capability 8.0 or "
                                        "later); the Tesla V100-SXM2-16GB (7.0) emulates it"),
}


@pytest.mark.parametrize("gpus, extra, message", GPU_REFUSALS.values(), ids=GPU_REFUSALS.keys())
def test_a_gpu_choice_this_machine_cannot_serve_is_one_line(synthetic_cifar10, tmp_path, cuda_settings, monkeypatch,
                                                            capsys, gpus, extra, message):
    GpuStandIn(monkeypatch, **gpus)
    assert message in refused(run_args(synthetic_cifar10, tmp_path, *extra), tmp_path, capsys)


def test_amp_on_a_cpu_that_emulates_bf16_is_one_line(synthetic_cifar10, tmp_path, cuda_settings, monkeypatch,
                                                      capsys):
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: False)
    err = refused(run_args(synthetic_cifar10, tmp_path, "--amp"), tmp_path, capsys)
    assert "--amp needs a CPU that computes bf16 natively (AVX512-BF16 or AMX)" in err


@pytest.mark.e2e
def test_amp_runs_on_a_cpu_with_native_bf16_and_the_record_says_so(synthetic_cifar10, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: True)
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--amp", "--numsamples", "64", epochs=1)) == 0
    record = records.read_record(record_path(tmp_path, epochs=1))
    assert record.meta["args"]["amp"] and record.meta["environment"]["bf16"] == "native"


def test_bf16_is_native_where_the_hardware_computes_it(monkeypatch):
    GpuStandIn(monkeypatch, capability=(7, 5))
    assert machine.bf16_support(torch.device("cuda")) == "emulated"
    GpuStandIn(monkeypatch, capability=(9, 0))
    assert machine.bf16_support(torch.device("cuda")) == "native"
    cpu_says = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert machine.bf16_support(torch.device("cpu")) == ("native" if cpu_says else "emulated")


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "no-deterministic"])
def test_a_cuda_run_uses_deterministic_kernels_unless_told_otherwise(cuda_settings, deterministic):
    machine.prepare_determinism(deterministic)
    machine.configure_device(torch.device("cuda"), deterministic)
    workspace = machine.DETERMINISTIC_CUBLAS[0] if deterministic else None
    assert determinism_settings() == (deterministic, deterministic, not deterministic, workspace)
    assert traceless.fp32_precision() == machine.TRAINING_FP32_PRECISION


def test_the_cpu_keeps_torchs_determinism_settings(cuda_settings):
    before = determinism_settings()
    machine.configure_device(torch.device("cpu"), True)
    assert determinism_settings() == before


def test_a_cublas_setting_that_breaks_determinism_is_refused(cuda_settings, monkeypatch):
    monkeypatch.setenv(machine.CUBLAS_CONFIG, ":0:0")
    with pytest.raises(errors.UsageError, match=r"CUBLAS_WORKSPACE_CONFIG=:0:0 makes cuBLAS non-deterministic"):
        machine.configure_device(torch.device("cuda"), True)


def test_cublas_is_set_up_before_cuda_starts(synthetic_cifar10, tmp_path, cuda_settings, monkeypatch, capsys):
    def select_device(name: str) -> torch.device:
        raise errors.UsageError(f"{machine.CUBLAS_CONFIG} was {os.environ.get(machine.CUBLAS_CONFIG)}")

    monkeypatch.setattr(experiments, "select_device", select_device)
    assert f"{machine.CUBLAS_CONFIG} was :4096:8" in refused(run_args(synthetic_cifar10, tmp_path), tmp_path, capsys)


def test_the_record_tells_two_gpu_runs_apart_and_a_resume_names_what_changed(cuda_settings, monkeypatch):
    GpuStandIn(monkeypatch, name="NVIDIA H100 80GB HBM3", capability=(9, 0))
    machine.prepare_determinism(True)
    machine.configure_device(torch.device("cuda"), True)
    facts = machine.environment(torch.device("cuda:0"))
    assert facts["device_name"] == "NVIDIA H100 80GB HBM3" and facts["compute_capability"] == "9.0"
    assert facts["cuda"] == torch.version.cuda and facts["cudnn"] == torch.backends.cudnn.version()
    assert facts["bf16"] == "native" and facts["fp32_precision"]["cudnn.conv.fp32_precision"] == "tf32"
    assert (facts["deterministic_algorithms"], facts["cudnn_benchmark"], facts["cublas_workspace_config"]) == \
        (True, False, ":4096:8")
    earlier = {**facts, "cudnn": 90100, "deterministic_algorithms": False}
    assert machine.environment_changes(earlier, facts) == [f"cudnn 90100, now {facts['cudnn']}",
                                                           "deterministic_algorithms False, now True"]


@pytest.mark.e2e
def test_an_epoch_seeds_the_random_stream_of_no_other_device(synthetic_cifar10, tmp_path, monkeypatch):
    """torch.manual_seed would reseed every GPU's stream."""
    seeded = []
    for module in (torch.cuda, torch.mps):
        for name in ("manual_seed", "manual_seed_all"):
            monkeypatch.setattr(module, name, lambda seed: seeded.append(seed), raising=False)
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", epochs=1)) == 0
    assert seeded == []


@pytest.mark.e2e
@pytest.mark.parametrize("flags, recorded", [((), True), (("--no-deterministic",), False)])
def test_the_determinism_choice_is_recorded(synthetic_cifar10, tmp_path, flags, recorded):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, *flags, "--numsamples", "64", epochs=1)) == 0
    assert records.read_record(record_path(tmp_path, epochs=1)).meta["args"]["deterministic"] is recorded
