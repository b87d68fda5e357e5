"""A run's state: what its checkpoint holds and how a run continues from it, the complete rows a
checkpoint keeps, and the process-wide settings a run gives back when it ends."""
import os

import pytest
import torch

import experiments
from runner import errors
from runner import checkpoints
from runner import machine
from runner import records
from runner.run import restore
from susceptibility.traceless import IEEE_FP32, fp32_precision, set_fp32_precision
from conftest import (assert_bit_identical, built_run, checkpoint_path, interrupt_at_epoch, record_path,
                      run_args)

# What a checkpoint of format 3 holds, as checkpoints written before this layout hold it too, and
# the test predictions of its last epoch, which earlier ones of format 3 lack.
FORMAT_3_KEYS = {"format", "config", "command", "epochs_completed", "finished", "environment", "rng", "model",
                 "optimizer", "scheduler", "signals", "rows", "probe", "labels", "extra_probes", "test_predictions"}


@pytest.mark.e2e
def test_a_run_built_again_continues_from_its_state_exactly(synthetic_cifar10, tmp_path):
    argv = run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", "--extra-probes", "heldout")
    trained = built_run(argv)
    experiments.probe_train_and_test(trained, 0)
    state = trained.state_dict()
    assert state.keys() == FORMAT_3_KEYS and state["format"] == checkpoints.CHECKPOINT_FORMAT == 3
    assert state["epochs_completed"] == 0 and not state["finished"]
    fresh = built_run(argv)
    fresh.rows = [{"epoch": 0}]
    restore(fresh, state, tmp_path / "t.pt")
    again = fresh.state_dict()
    assert_bit_identical(again["model"], state["model"])
    assert again["probe"]["phi_before"] == state["probe"]["phi_before"] and len(state["probe"]["phi_before"]) == 1
    assert again["extra_probes"]["heldout"]["phi_after"] == state["extra_probes"]["heldout"]["phi_after"]
    momentum = [entry["momentum_buffer"] for entry in state["optimizer"]["state"].values()]
    assert momentum and all(torch.equal(a["momentum_buffer"], b) for a, b in
                            zip(again["optimizer"]["state"].values(), momentum, strict=True))
    assert fresh.rows == [] and again["scheduler"] == state["scheduler"]


@pytest.mark.e2e
def test_a_checkpoint_of_another_run_is_refused(synthetic_cifar10, tmp_path):
    state = built_run(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64")).state_dict()
    other = built_run(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", "--seed", "4"))
    with pytest.raises(errors.UsageError, match="made with other arguments .*seed: checkpoint 3, now 4"):
        restore(other, state, tmp_path / "t.pt")


@pytest.mark.e2e
def test_the_checkpoint_holds_the_rows_of_the_record_with_their_save_times(synthetic_cifar10, tmp_path,
                                                                             monkeypatch):
    argv = run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", epochs=3)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main(argv) == experiments.INTERRUPTED
    saved = checkpoints.load_checkpoint(checkpoint_path(tmp_path, epochs=3))["rows"]
    recorded = records.read_record(record_path(tmp_path, epochs=3)).rows
    assert [row["save_seconds"] > 0 for row in saved] == [True, True]
    assert cells(saved) == cells(recorded)
    monkeypatch.undo()
    assert experiments.main([*argv, "--resume"]) == 0
    resumed = records.read_record(record_path(tmp_path, epochs=3)).rows
    assert resumed[:2] == recorded and resumed[2]["save_seconds"] > 0


def cells(rows: list[dict]) -> list[list[str]]:
    """The record's cells of `rows`, column by column."""
    return [[records.format_value(row.get(column)) for column in records.COLUMNS] for row in rows]


@pytest.fixture
def settings_kept():
    """Put torch's precision and determinism flags, cuBLAS's variable and the CPU random stream back
    after the test, whatever it left."""
    precision, flags = fp32_precision(), machine.determinism_flags()
    workspace, random_state = os.environ.get(machine.CUBLAS_CONFIG), torch.get_rng_state()
    yield
    set_fp32_precision(precision)
    machine.set_determinism_flags(flags)
    machine.restore_variable(machine.CUBLAS_CONFIG, workspace)
    torch.set_rng_state(random_state)


@pytest.mark.e2e
def test_a_run_leaves_the_process_wide_settings_as_it_found_them(synthetic_cifar10, tmp_path, settings_kept):
    set_fp32_precision(IEEE_FP32)  # a run trains with cuDNN convolutions in TF32
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    os.environ.pop(machine.CUBLAS_CONFIG, None)  # a deterministic run sets it
    torch.manual_seed(11)
    expected_draw = torch.rand(3, generator=torch.Generator().set_state(torch.get_rng_state()))
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", epochs=1)) == 0
    assert fp32_precision() == IEEE_FP32
    assert machine.determinism_flags() == (True, True, False, True)
    assert machine.CUBLAS_CONFIG not in os.environ
    assert torch.equal(torch.rand(3), expected_draw)


def test_the_settings_a_block_changes_are_given_back(settings_kept):
    set_fp32_precision(IEEE_FP32)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    os.environ[machine.CUBLAS_CONFIG] = ":16:8"
    with machine.run_settings_restored():
        machine.prepare_determinism(True)
        machine.configure_device(torch.device("cpu"), True)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        os.environ[machine.CUBLAS_CONFIG] = ":4096:8"
        assert fp32_precision() != IEEE_FP32
    assert fp32_precision() == IEEE_FP32
    assert machine.determinism_flags() == (False, False, False, True)
    assert os.environ[machine.CUBLAS_CONFIG] == ":16:8"
