"""Adam and every learning-rate schedule: the probe still leaves training bit-identical, each schedule
gives the learning rates it promises, and an Adam run with a stepped schedule resumes exactly."""
import math
from pathlib import Path

import pytest

import experiments
from runner import records
from runner import training
from conftest import assert_bit_identical, built_run, interrupt_at_epoch, record_path, run_args, same_record
from runner.run import Run
from susceptibility import Susceptibility

LR = 0.05
EPOCHS = 4
EXPECTED_LRS = {  # the learning rate of each epoch, as the README describes the schedules
    "cosine": lambda t: LR * (1 + math.cos(math.pi * t / EPOCHS)) / 2,
    "step": lambda t: LR * 0.1 ** ((t >= EPOCHS // 2) + (t >= EPOCHS * 3 // 4)),
    "exponential": lambda t: LR * 0.01 ** (t / EPOCHS),
    "constant": lambda t: LR,
}


def expected_lrs(scheduler_name: str) -> list[float]:
    return [EXPECTED_LRS[scheduler_name](epoch) for epoch in range(EPOCHS)]


def test_every_schedule_is_covered():
    assert set(EXPECTED_LRS) == set(training.SCHEDULERS)


def trained_run(data_dir, optimizer_name: str, scheduler_name: str) -> Run:
    """A tiny run trained through experiments.py's own epoch loop: probe, training, scheduler step."""
    argv = run_args(data_dir, Path("unused"), "--optimizer", optimizer_name, "--scheduler", scheduler_name,
                    "--numsamples", "32", epochs=EPOCHS)
    run = built_run(argv)
    for epoch in range(EPOCHS):
        run.rows.append(experiments.probe_train_and_test(run, epoch))
    return run


def skip_probe(probe, model, optimizer):
    """Stands in for the probe: records zeros and changes nothing."""
    probe.phi_before.append(0.0)
    probe.phi_after.append(0.0)
    return 0.0


@pytest.mark.e2e
@pytest.mark.parametrize("scheduler_name", sorted(training.SCHEDULERS))
def test_probe_leaves_adam_training_bit_identical_under_every_schedule(synthetic_cifar10, monkeypatch,
                                                                        scheduler_name):
    probed = trained_run(synthetic_cifar10, "adam", scheduler_name)
    monkeypatch.setattr(Susceptibility, "measure", skip_probe)
    plain = trained_run(synthetic_cifar10, "adam", scheduler_name)
    assert all(row["phi_before"] != row["phi_after"] for row in probed.rows)  # the probe took real steps
    assert [row["lr"] for row in probed.rows] == pytest.approx(expected_lrs(scheduler_name))
    assert_bit_identical(probed.model.state_dict(), plain.model.state_dict())
    probed_state, plain_state = probed.optimizer.state_dict(), plain.optimizer.state_dict()
    assert probed_state["state"].keys() == plain_state["state"].keys()
    assert all(state["exp_avg_sq"].abs().sum() > 0 for state in probed_state["state"].values())
    for key in probed_state["state"]:
        assert_bit_identical(probed_state["state"][key], plain_state["state"][key])
    assert probed_state["param_groups"] == plain_state["param_groups"]
    assert probed.scheduler.state_dict() == plain.scheduler.state_dict()
    assert [row["train_loss"] for row in probed.rows] == [row["train_loss"] for row in plain.rows]


@pytest.mark.e2e
def test_adam_with_a_step_schedule_runs_and_resumes_to_the_same_record(synthetic_cifar10, tmp_path,
                                                                        monkeypatch):
    extra = ("--optimizer", "adam", "--scheduler", "step", "--numsamples", "32")
    whole = run_args(synthetic_cifar10, tmp_path / "whole", *extra, epochs=EPOCHS)
    assert experiments.main(whole) == 0
    rows = records.read_record(record_path(tmp_path / "whole", epochs=EPOCHS)).rows
    assert [row["lr"] for row in rows] == pytest.approx(expected_lrs("step"))
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["susceptibility"]) for row in rows[1:])

    cut = run_args(synthetic_cifar10, tmp_path / "cut", *extra, epochs=EPOCHS)
    interrupt_at_epoch(monkeypatch, 2)  # between the two learning-rate drops
    assert experiments.main(cut) == 130
    monkeypatch.undo()
    assert experiments.main([*cut, "--resume"]) == 0
    assert same_record(record_path(tmp_path / "cut", epochs=EPOCHS),
                       record_path(tmp_path / "whole", epochs=EPOCHS))
