"""Several probe batches per epoch, and extra probes recorded beside ζ: their values, their
uncertainty, and that training stays bit-identical and resumes exactly with them."""
import math

import numpy as np
import pytest
import torch

from runner import errors
from runner import checkpoints
import experiments
from runner import noisy_data
from runner import records
import susceptibility
from susceptibility import zeta
from analysis import loading
from conftest import (
    checkpoint_path,
    interrupt_at_epoch,
    make_batches,
    one_step_by_hand,
    record_path,
    run_args,
    same_record,
    small_dropout_net,
)
from susceptibility import Susceptibility
from runner.training import OPTIMIZERS


def probes(batches, batches_per_epoch: int, seed: int = 9) -> Susceptibility:
    return Susceptibility.from_probe_batches(batches, seed=seed, generator_device=batches.device,
                                             batches_per_epoch=batches_per_epoch)


def test_each_batch_is_probed_from_the_same_state_and_r_is_their_mean(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10)
    torch.manual_seed(0)
    model = small_dropout_net()
    optimizer = OPTIMIZERS["sgd"](model.parameters(), 0.05)
    zeta = probes(batches, 3)
    for epoch in range(2):
        r = zeta.measure(model, optimizer)
        by_hand = []
        for batch, key in enumerate([(epoch,), (epoch, 1), (epoch, 2)]):
            images, labels = batches.probe_batch(torch.Generator().manual_seed(
                susceptibility.derive_seed(9, "probe", *key)))
            by_hand.append(one_step_by_hand(model, optimizer, images, labels,
                                            susceptibility.derive_seed(9, "probe-dropout", *key)))
        assert zeta.batch_phi_before[epoch] == [before for before, _ in by_hand]
        assert zeta.batch_phi_after[epoch] == [after for _, after in by_hand]
        drops = [before - after for before, after in by_hand]
        assert zeta.batch_drops() == drops and len(set(drops)) == 3
        assert r == pytest.approx(np.mean(drops), rel=1e-12)
        assert zeta.standard_error == pytest.approx(np.std(drops, ddof=1) / math.sqrt(3), rel=1e-12)


def test_the_first_batch_of_each_epoch_is_the_papers_single_batch(synthetic_cifar10):
    """One batch per epoch draws exactly what the probe always drew, so k = 1 keeps every record."""
    batches = make_batches(synthetic_cifar10)
    torch.manual_seed(0)
    model = small_dropout_net()
    optimizer = OPTIMIZERS["sgd"](model.parameters(), 0.05)
    one, four = probes(batches, 1), probes(batches, 4)
    for _ in range(2):
        one.measure(model, optimizer), four.measure(model, optimizer)
    assert [values[0] for values in four.batch_phi_before] == one.phi_before
    assert [values[0] for values in four.batch_phi_after] == one.phi_after
    assert math.isnan(one.standard_error) and all(math.isnan(e) for e in one.zeta_standard_errors())


def test_standard_errors_worked_out_by_hand():
    assert zeta.drop_standard_errors([[1.0, 2.0, 3.0], [0.5, 0.5], [7.0]]).tolist()[:2] == \
        pytest.approx([1 / math.sqrt(3), 0.0])
    assert math.isnan(zeta.drop_standard_errors([[7.0]])[0])
    # SE(zeta(t)) = sqrt(sum of the squared SEs of r_1..r_t) / t; epoch 0 is left out.
    errors = zeta.zeta_standard_errors([5.0, 0.3, 0.4, 1.2])
    assert math.isnan(errors[0]) and errors[1:].tolist() == pytest.approx([0.3, 0.25, 1.3 / 3])
    reference = zeta.zeta_standard_errors([5.0, 0.3, 0.4, 1.2], "reference")
    assert reference[1:].tolist() == pytest.approx([0.0, 0.15, 0.5 / 3])


def test_a_state_keeps_every_batch_and_refuses_another_count(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10)
    model = small_dropout_net()
    optimizer = OPTIMIZERS["sgd"](model.parameters(), 0.05)
    zeta = probes(batches, 2)
    zeta.measure(model, optimizer), zeta.measure(model, optimizer)
    again = probes(batches, 2)
    again.load_state_dict(zeta.state_dict())
    assert (again.batch_phi_before, again.phi_after) == (zeta.batch_phi_before, zeta.phi_after)
    assert again.zetas()[1:] == zeta.zetas()[1:]
    with pytest.raises(ValueError, match="measured with 2 batches per epoch, not 3"):
        probes(batches, 3).load_state_dict(zeta.state_dict())
    with pytest.raises(ValueError, match="batches_per_epoch must be an integer of at least 1"):
        probes(batches, 0)


def test_a_state_of_the_format_before_batches_loads_as_one_batch_per_epoch(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10)
    state = {"format": 1, "seed": 9, "labels": batches.probe_labels, "phi_before": [3.0, 2.5],
             "phi_after": [2.0, 2.25]}
    zeta = probes(batches, 1)
    zeta.load_state_dict(state)
    assert zeta.batch_phi_before == [[3.0], [2.5]] and zeta.zetas()[1] == 0.25


def test_extra_probe_sets_are_the_training_subset_and_the_images_outside_it(synthetic_cifar10):
    import datasets

    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=150, corrupt_prob=0.5,
                                      probe_source="train", seed=4, noisy_holdout=40,
                                      extra_probes=("train", "heldout"))
    extra = data.extra_probes
    assert np.array_equal(extra["train"].index, data.train_index)
    assert len(extra["heldout"].index) == 300 - 150 - 40
    assert not set(extra["heldout"].index) & (set(data.train_index) | set(data.holdout.index))
    assert len({extra["train"].seed, extra["heldout"].seed, data.probe.seed}) == 3  # streams of their own
    assert not np.array_equal(extra["train"].labels, data.probe.labels)
    with pytest.raises(noisy_data.DataError, match="--extra-probes heldout needs training images outside"):
        noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=None, corrupt_prob=0.5,
                                   probe_source="train", seed=4, extra_probes=("heldout",))


@pytest.mark.parametrize("extra, message", [
    (("--extra-probes", "train,train"), "--extra-probes/--extra_probes: give train or heldout, or both separated"),
    (("--extra-probes", "test"), "--extra-probes/--extra_probes: give train or heldout"),
    (("--probe-batches", "0"), "--probe-batches must be at least 1, got 0"),
    (("--extra-probe-batches", "-2"), "--extra-probe-batches must be at least 1, got -2"),
])
def test_bad_probe_settings_are_one_clear_line(synthetic_cifar10, tmp_path, capsys, extra, message):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, *extra)) == errors.USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and not tmp_path.joinpath("results").exists()


TRAINING_COLUMNS = [column for column in records.COLUMNS
                    if not column.startswith("phi_") and column != "susceptibility"
                    and column not in records.TIMING_COLUMNS]


def rows_of(path, columns: list[str]) -> list[dict]:
    return [{column: row[column] for column in columns} for row in records.read_record(path).rows]


@pytest.mark.e2e
def test_extra_probes_and_more_batches_leave_training_bit_identical(synthetic_cifar10, tmp_path):
    plain = run_args(synthetic_cifar10, tmp_path / "plain", "--numsamples", "160", "--noisy-holdout", "40",
                     epochs=3)
    probed = [*plain, "--extra-probes", "train,heldout", "--extra-probe-batches", "2"]
    averaged = [*probed, "--probe-batches", "3"]
    for argv, out in ((plain, "plain"), (probed, "probed"), (averaged, "averaged")):
        argv[argv.index("--results-dir") + 1] = str(tmp_path / out / "results")
        argv[argv.index("--checkpoint-dir") + 1] = str(tmp_path / out / "checkpoint")
        assert experiments.main(argv) == 0
    records_of = {out: record_path(tmp_path / out, epochs=3) for out in ("plain", "probed", "averaged")}
    reference = rows_of(records_of["plain"], TRAINING_COLUMNS + ["phi_before", "phi_after"])
    assert rows_of(records_of["probed"], TRAINING_COLUMNS + ["phi_before", "phi_after"]) == reference
    assert rows_of(records_of["averaged"], TRAINING_COLUMNS) == rows_of(records_of["plain"], TRAINING_COLUMNS)
    weights = {out: checkpoints.load_checkpoint(checkpoint_path(tmp_path / out, epochs=3))["model"]
               for out in records_of}
    assert all(torch.equal(weights["plain"][k], weights[out][k]) for out in weights for k in weights["plain"])

    rows = records.read_record(records_of["averaged"]).rows
    expected = [f"probe_r{j}" for j in range(3)] + [f"{s}_probe_r{j}" for s in ("train", "heldout") for j in range(2)]
    assert [c for c in rows[0] if c not in records.COLUMNS] == expected
    first = rows_of(records_of["plain"], ["phi_before", "phi_after"])
    assert [row["probe_r0"] for row in rows] == pytest.approx([r["phi_before"] - r["phi_after"] for r in first])
    for row in rows:  # the record's r is the mean of its batches
        assert row["phi_before"] - row["phi_after"] == pytest.approx(np.mean([row[f"probe_r{j}"] for j in range(3)]))
        assert row["probe_seconds"] > 0 and row["extra_probe_seconds"] > 0
    table = loading.load_runs(tmp_path / "averaged" / "results").table
    assert set(expected) <= set(table.columns)


@pytest.mark.e2e
def test_a_run_with_extra_probes_resumes_exactly(synthetic_cifar10, tmp_path, monkeypatch):
    extra = ("--numsamples", "160", "--probe-batches", "2", "--extra-probes", "heldout",
             "--extra-probe-batches", "2")
    whole = run_args(synthetic_cifar10, tmp_path / "whole", *extra, epochs=3)
    assert experiments.main(whole) == 0
    cut = run_args(synthetic_cifar10, tmp_path / "cut", *extra, epochs=3)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main(cut) == errors.INTERRUPTED
    monkeypatch.undo()
    assert experiments.main([*cut, "--resume"]) == 0
    assert same_record(record_path(tmp_path / "cut", epochs=3), record_path(tmp_path / "whole", epochs=3))
    assert "heldout_probe_r1" in records.read_record(record_path(tmp_path / "cut", epochs=3)).rows[2]
