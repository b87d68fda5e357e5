"""The GPU path, checked on any machine: the probe's fp32 precision, the seeding of device streams,
device and --amp choices, and the per-batch work run on fake CUDA tensors, with no host
synchronization per batch."""
import operator

import pytest
import torch
from torch import nn

import batching
import datasets
import noisy_data
import traceless
from conftest import small_dropout_net
from susceptibility import Susceptibility


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
# The DataLoader path: worker processes kept from pass to pass


def loader_path(root, workers: int) -> batching.LoaderBatches:
    train, test = datasets.load_cifar(root)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=100, corrupt_prob=0.5,
                                      probe_source="train", seed=0)
    return batching.LoaderBatches(data, torch.device("cpu"), 16, 30, workers)


def fresh_loader_pass(batches: batching.LoaderBatches, generator: torch.Generator) -> list[tuple]:
    """A training pass as a DataLoader made for it alone with the epoch's generator gives it: the
    order drawn first, then worker processes started and seeded from the generator."""
    order = torch.randperm(len(batches.train_set), generator=generator)
    sampler = [b.tolist() for b in batching.batch_slices(order, batches.batch_size)]
    loader = torch.utils.data.DataLoader(batches.train_set, batch_sampler=sampler, num_workers=batches.workers,
                                         generator=generator)
    return [(images, positions) for images, positions in loader]


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [2, 3])
def test_kept_worker_processes_augment_every_pass_as_fresh_ones_would(synthetic_cifar10, workers):
    kept = loader_path(synthetic_cifar10, workers)
    for epoch in range(3):
        ours = list(kept.train_batches(torch.Generator().manual_seed(epoch)))
        theirs = fresh_loader_pass(kept, torch.Generator().manual_seed(epoch))
        assert len(ours) == len(theirs) == 7
        for batch, (images, positions) in zip(ours, theirs):
            assert torch.equal(batch.images, images) and torch.equal(batch.index, positions)
    workers_of = lambda: kept.loaders[kept.train_set]._iterator._workers
    started = list(workers_of())
    list(kept.train_batches(torch.Generator().manual_seed(9)))
    assert len(started) == workers and workers_of() == started  # the same processes, every pass
