"""`--resume` where the named run has no checkpoint: it stops at the checkpoints of the same
--filename that differ in epochs or learning rate, extends a finished constant-rate run exactly, and
a sweep over learning rates (whose runs share their --filename) still runs."""
from __future__ import annotations

import pytest

import experiments
import sweep
from conftest import checkpoint_path, record_path, run_args, same_record, write_sweep

CONSTANT = ("--scheduler", "constant")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_cifar10):
    """A finished 2-epoch run of the cosine schedule and one of a constant learning rate."""
    out = tmp_path_factory.mktemp("finished")
    assert experiments.main(run_args(synthetic_cifar10, out / "cosine", "--numsamples", "96")) == 0
    assert experiments.main(run_args(synthetic_cifar10, out / "constant", "--numsamples", "96", *CONSTANT)) == 0
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("change, named, reason", [
    (("--epochs", "3"), "t_cnn_2_0.05.pt (differs only in --epochs 2)", "the cosine schedule spans --epochs"),
    (("--lr", "0.1"), "t_cnn_2_0.05.pt (differs only in --lr 0.05)", "Give that run's settings to continue it"),
])
def test_resume_without_this_runs_checkpoint_names_the_runs_of_the_same_filename(
        finished, synthetic_cifar10, capsys, change, named, reason):
    argv = run_args(synthetic_cifar10, finished / "cosine", "--numsamples", "96", *change, "--resume")
    before = sorted(path.name for path in (finished / "cosine").rglob("*"))
    assert experiments.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("experiments.py: error: cannot resume: ")
    assert named in err and reason in err
    assert sorted(path.name for path in (finished / "cosine").rglob("*")) == before


@pytest.mark.e2e
def test_resume_with_more_epochs_extends_a_constant_rate_run_exactly(finished, synthetic_cifar10, tmp_path, capsys):
    shorter = record_path(finished / "constant").read_text()
    longer = run_args(synthetic_cifar10, finished / "constant", "--numsamples", "96", *CONSTANT, epochs=3)
    assert experiments.main([*longer, "--resume"]) == 0
    assert "extending t_cnn_2_0.05.pt (2 epochs, constant learning rate) to 3 epochs" in capsys.readouterr().out
    fresh = run_args(synthetic_cifar10, tmp_path, "--numsamples", "96", *CONSTANT, epochs=3)
    assert experiments.main(fresh) == 0
    assert same_record(record_path(finished / "constant", epochs=3), record_path(tmp_path, epochs=3))
    assert record_path(finished / "constant").read_text() == shorter  # the shorter run is left as it was
    assert checkpoint_path(finished / "constant").is_file()


@pytest.mark.e2e
def test_a_sweep_over_learning_rates_starts_runs_that_share_their_filename(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nscale = 0.125\nlr = [0.05, 0.01]\n',
                       epochs=1)
    assert sweep.main([str(path), "--jobs", "1"]) == 0
    assert "all 2 runs finished" in capsys.readouterr().out
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("--resume") == 2  # both have checkpoints now
