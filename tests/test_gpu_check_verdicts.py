"""The checks of tools/gpu_check.py give a verdict that follows what they check: each passes on this CPU
and fails on a deliberately broken input, and a missed speed or precision target is a warning."""
import functools
import io
import warnings

import pytest
import torch

from runner import batching
from tools import gpu_check_costs, gpu_check_promises
from tools.host_syncs import HostSynchronizations
from tools.gpu_check_setup import Check, Sizes

TINY = Sizes(0.125, 96, 64, 32)


@pytest.fixture
def check(tmp_path) -> Check:
    """A self-check on this CPU at tiny sizes, its printed lines kept."""
    check = Check(torch.device("cpu"), TINY, tmp_path)
    check.out = io.StringIO()
    return check


def verdicts(check: Check, name: str) -> list[str]:
    return [status for status, line_name, _ in check.lines if line_name == name]


# --------------------------------------------------------------------------------------------------
# compile


@pytest.fixture
def compile_without_a_compiler(monkeypatch):
    """torch.compile with aot_eager: graphs are captured as with the default backend, compiled by none."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


@pytest.mark.e2e
def test_the_compile_check_passes_where_the_batch_dimension_is_dynamic(check, compile_without_a_compiler):
    gpu_check_costs.compile_graphs(check)
    assert verdicts(check, "compile") == ["PASS"], check.lines
    assert "2 graphs compiled" in check.lines[-1][2]


@pytest.mark.e2e
def test_the_compile_check_fails_where_each_batch_size_compiles_again(check, compile_without_a_compiler, monkeypatch):
    monkeypatch.setattr(torch._dynamo, "maybe_mark_dynamic", lambda tensor, dim: None)
    gpu_check_costs.compile_graphs(check)
    assert verdicts(check, "compile") == ["FAIL"], check.lines


# --------------------------------------------------------------------------------------------------
# syncs


def test_the_wait_counter_sees_every_operation_sized_by_values():
    values = torch.tensor([1, 2, 0, 3])
    with HostSynchronizations("cpu") as syncs:
        torch.repeat_interleave(values)
        torch.bincount(values)
        values.nonzero()
        values[values > 1]
        values[values > 1] = 0
    assert syncs.where == {"repeat_interleave without output_size": 1, "bincount": 1, "nonzero": 1,
                           "index with a boolean mask": 1, "index_put_ with a boolean mask": 1}


def test_the_wait_counter_leaves_out_what_needs_no_value():
    values = torch.tensor([1, 2, 0, 3])
    with HostSynchronizations("cpu") as syncs:
        torch.repeat_interleave(values, values, output_size=6)
        values.repeat_interleave(2)
        values[torch.tensor([0, 1])]
        values.sum() + 1
    assert syncs.where == {}


@pytest.mark.e2e
def test_the_syncs_check_passes_without_waits_per_batch_and_fails_with_one(check, monkeypatch):
    gpu_check_promises.host_syncs(check)
    assert verdicts(check, "syncs") == ["PASS"], check.lines
    normalize = batching.normalize
    monkeypatch.setattr(batching, "normalize", lambda images: normalize(images) + 0 * images.sum().item())
    gpu_check_promises.host_syncs(check)
    assert verdicts(check, "syncs") == ["PASS", "FAIL"]
    assert check.lines[-1][2].endswith("1 per batch")


class SyncDebugMode:
    """torch.cuda's sync debug mode on a machine without a GPU: its setting, and the warning CUDA gives
    for each wait in "warn" mode."""

    def __init__(self, monkeypatch):
        self.mode, self.modes = 0, []
        monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: self.mode)
        monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", self.set)

    def set(self, mode) -> None:
        self.mode = mode
        self.modes.append(mode)

    def wait(self) -> None:
        if self.mode == "warn":
            warnings.warn("called a synchronizing CUDA operation")


@pytest.mark.parametrize("waits_per_batch, verdict", [(0, "PASS"), (1, "FAIL")])
def test_on_a_gpu_cuda_sync_debug_mode_counts_the_waits_of_an_epoch(check, monkeypatch, waits_per_batch, verdict):
    cuda = SyncDebugMode(monkeypatch)
    epoch = lambda batches: [cuda.wait() for _ in range(3 + waits_per_batch * batches)]
    monkeypatch.setattr(gpu_check_promises, "epoch_of", lambda check, batches: lambda: epoch(batches))
    check.device = torch.device("cuda")
    gpu_check_promises.host_syncs(check)
    assert verdicts(check, "syncs") == ["PASS", verdict] and cuda.modes == ["warn", 0] * 2
    assert "CUDA's sync debug mode" in check.lines[-1][2]
    assert f"3 called a synchronizing CUDA operation per epoch, {waits_per_batch:g} per batch" in check.lines[-1][2]
