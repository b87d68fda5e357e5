"""The checks of tools/gpu_check.py give a verdict that follows what they check: each passes on this CPU
and fails on a deliberately broken input, and a missed speed or precision target is a warning."""
import contextlib
import functools
import io
import types
import warnings

import pytest
import torch

from runner import batching
import susceptibility.probe
from tools import gpu_check, gpu_check_costs, gpu_check_promises
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
    assert "3 called a synchronizing CUDA operation at test_gpu_check_verdicts.py:" in check.lines[-1][2]
    assert check.lines[-1][2].endswith(f"per epoch, {waits_per_batch:g} per batch")


# --------------------------------------------------------------------------------------------------
# throughput, precision and the report's wording


class ScriptedTimer:
    """A Timer whose readings are given in advance, noting where each timed block starts and ends."""

    def __init__(self, events: list, readings: list):
        self.events, self.readings = events, readings

    def __call__(self, device):
        return ScriptedTimer(self.events, self.readings)

    def __enter__(self):
        self.events.append("timer starts")
        return self

    def __exit__(self, *exc):
        self.events.append("timer stops")
        self.seconds = self.readings.pop(0)


@pytest.fixture
def scripted_epochs(monkeypatch):
    """The throughput check's runs stood in for: what each step does is noted, and the timer reads
    1 s for the network alone, then the next two readings set (the epoch, then its saving)."""
    events, readings = [], []
    run = types.SimpleNamespace(batches=None, network=None, optimizer=None)
    monkeypatch.setattr(gpu_check_costs, "start", lambda argv: (run, None))
    monkeypatch.setattr(gpu_check_costs, "prepare_tensors", lambda batches: None)
    monkeypatch.setattr(gpu_check_costs, "network_alone_epoch", lambda *args: events.append(f"network alone {args[-1]}"))
    monkeypatch.setattr(gpu_check_costs.experiments, "probe_train_and_test",
                        lambda run, epoch: events.append(f"epoch {epoch}") or {})
    monkeypatch.setattr(gpu_check_costs.experiments, "save_epoch", lambda run, paths, row: events.append("save"))
    monkeypatch.setattr(gpu_check_costs, "Timer", ScriptedTimer(events, readings))
    return events, readings


@pytest.mark.parametrize("epoch_seconds, verdict", [(1.05, "PASS"), (1.5, "WARN")])
def test_throughput_warms_both_up_alike_times_the_save_apart_and_warns_on_a_missed_target(
        check, scripted_epochs, monkeypatch, epoch_seconds, verdict):
    events, readings = scripted_epochs
    monkeypatch.setattr(Check, "amp", property(lambda self: False))
    readings.extend([1.0, epoch_seconds, 0.25])
    gpu_check_costs.throughput(check)
    assert events == ["network alone 0", "epoch 0",
                      "timer starts", "network alone 1", "timer stops",
                      "timer starts", "epoch 1", "timer stops",
                      "timer starts", "save", "timer stops"]
    (status, name, text), = check.lines
    assert (status, name) == (verdict, "throughput")
    assert text.startswith("ResNet-18 at width 0.125, batch 32, 96 training and 64 test images, deterministic, fp32")
    assert f"{epoch_seconds:.2f} s, the network alone 1.00 s" in text and "saving the epoch 0.25 s" in text
    assert f"200 such epochs {200 * (epoch_seconds + 0.25) / 3600:.2f} h" in text


@pytest.mark.parametrize("change, verdict", [(0.001, "PASS"), (0.3, "WARN")])
def test_a_precision_that_moves_r_by_more_than_its_target_is_a_warning(check, monkeypatch, change, verdict):
    reference = [1.0, 2.0, -1.0]
    monkeypatch.setattr(gpu_check_costs, "start", lambda argv: (types.SimpleNamespace(optimizer=types.SimpleNamespace(
        param_groups=[{}])), None))
    monkeypatch.setattr(gpu_check_costs.experiments, "probe_train_and_test", lambda run, epoch: {})
    monkeypatch.setattr(gpu_check_costs, "precision_drops",
                        lambda check, run: (reference, {"bf16": [r * (1 + change) for r in reference]}))
    gpu_check_costs.precision_effect(check)
    assert verdicts(check, "precision") == [verdict, verdict]
    assert f"bf16 against IEEE fp32, learning rate 0.05: r of 8 probe batches changes by a median {100 * change:.3f} %" \
        in check.lines[0][2]


def test_the_environment_lines_name_what_they_list_and_no_gpu_setting_on_a_cpu(check):
    gpu_check_promises.environment(check)
    texts = [text for _, _, text in check.lines]
    assert [text.split(" ")[0] for text in texts] == ["software:", "device", "bf16", "fp32", "determinism"]
    assert not any("cudnn." in text or "cuda.matmul" in text for text in texts)
    assert "mkldnn.conv" in texts[3]


def test_the_summary_counts_checks_warnings_and_measurements_by_name():
    lines = [("PASS", "data", ""), ("FAIL", "probe", ""), ("WARN", "throughput", ""), ("INFO", "environment", "")]
    assert gpu_check.summary(lines, 12.3) == ("1 checks passed, 1 failed, 1 warnings (targets missed), 1 facts and "
                                              "measurements without a target, in 12 s")


# --------------------------------------------------------------------------------------------------
# data, probe, determinism


def test_the_data_check_passes_on_the_pil_pixels_and_fails_one_bit_off(check, monkeypatch):
    gpu_check_promises.data_path(check)
    table = batching.byte_normalization_table()
    table[1, 128] = torch.nextafter(table[1, 128], torch.tensor(10.0))
    monkeypatch.setattr(batching, "normalization_table", lambda device: table.to(device))
    gpu_check_promises.data_path(check)
    assert verdicts(check, "data") == ["PASS", "FAIL"]
    assert check.lines[0][2].endswith("largest difference 0") and not check.lines[1][2].endswith(" 0")


@pytest.mark.e2e
def test_the_probe_check_passes_and_fails_on_a_probe_that_leaves_its_step_in_place(check, monkeypatch):
    monkeypatch.setattr(Check, "amp", property(lambda self: False))
    gpu_check_promises.probe_restores(check)
    monkeypatch.setattr(susceptibility.probe, "restored_afterwards", lambda model, optimizer: contextlib.nullcontext())
    gpu_check_promises.probe_restores(check)
    assert verdicts(check, "probe") == ["PASS", "PASS", "FAIL", "FAIL"]
    assert "CHANGED" in check.lines[-1][2]


class NoDeterministicKernel(torch.nn.Module):
    """A network that runs a kernel without a deterministic implementation (`put_`)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1).clone()
        flat.put_(torch.tensor([0, 0], device=flat.device), torch.ones(2, device=flat.device))
        return self.linear(flat)


def test_every_model_check_fails_on_a_model_without_deterministic_kernels(check, monkeypatch):
    monkeypatch.setattr(gpu_check_promises, "FAMILIES", {"broken": None})
    monkeypatch.setattr(gpu_check_promises, "create_model", lambda name, scale: NoDeterministicKernel())
    gpu_check_promises.every_model_deterministically(check)
    assert verdicts(check, "determinism") == ["FAIL"] and "broken: put_ does not have a deterministic" in check.lines[0][2]


@pytest.mark.e2e
def test_every_model_check_passes_on_this_cpu(check):
    gpu_check_promises.every_model_deterministically(check)
    assert verdicts(check, "determinism") == ["PASS"], check.lines


@pytest.mark.e2e
def test_two_fresh_processes_give_the_same_record_in_every_mode_offered(check):
    for mode, flags in gpu_check_promises.fresh_process_modes(check).items():
        gpu_check_promises.same_records_from_fresh_processes(check, mode, flags)
    assert verdicts(check, "determinism") == ["PASS"] * len(gpu_check_promises.fresh_process_modes(check))
    assert check.lines[0][2].startswith("fp32, plain layout: two fresh processes with the same seed")


def test_records_of_two_processes_that_differ_fail_the_check(check, monkeypatch):
    monkeypatch.setattr(gpu_check_promises, "fresh_run", lambda argv: runs.append(argv))
    runs = []
    contents = iter(["record of seed 1", "record of seed 2"])
    monkeypatch.setattr(gpu_check_promises, "record_content", lambda path: next(contents))
    gpu_check_promises.same_records_from_fresh_processes(check, "fp32, plain layout", ["--no-channels-last"])
    assert verdicts(check, "determinism") == ["FAIL"] and "the records DIFFER" in check.lines[0][2]
    assert len(runs) == 2 and runs[0] != runs[1] and all("--no-channels-last" in argv for argv in runs)


def test_a_fresh_process_that_fails_raises_with_its_last_line(check):
    with pytest.raises(RuntimeError, match="experiments.py exited with 2: .*--model"):
        gpu_check_promises.fresh_run(["--model", "no-such-model"])


def test_the_modes_of_fresh_processes_follow_what_the_device_offers(check, monkeypatch):
    monkeypatch.setattr(Check, "amp", property(lambda self: False))
    assert list(gpu_check_promises.fresh_process_modes(check)) == ["fp32, plain layout", "fp32, channels-last"]
    monkeypatch.setattr(Check, "amp", property(lambda self: True))
    check.device = torch.device("cuda")
    assert list(gpu_check_promises.fresh_process_modes(check)) == ["fp32, plain layout", "fp32, channels-last",
                                                                   "--amp", "--compile"]


@pytest.mark.e2e
def test_the_resume_check_passes_and_fails_where_a_resume_loses_the_optimizer_state(check, monkeypatch):
    gpu_check_promises.same_record_after_a_resume(check)
    monkeypatch.setattr(torch.optim.Optimizer, "load_state_dict", lambda self, state: None)
    check.work = check.work / "again"
    gpu_check_promises.same_record_after_a_resume(check)
    assert verdicts(check, "determinism") == ["PASS", "FAIL"]
