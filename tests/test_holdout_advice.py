"""A noisy hold-out set that cannot fit is refused with advice that can be followed: never a
--numsamples of zero or below."""
import re

import pytest

import experiments
from conftest import run_args


@pytest.mark.parametrize("holdout", ["300", "100000"])
def test_a_holdout_as_large_as_the_training_set_is_refused_with_a_bound_that_works(
        synthetic_cifar10, tmp_path, capsys, holdout):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--noisy-holdout", holdout)) == 2
    message = capsys.readouterr().err.strip()
    assert message == (f"experiments.py: error: --noisy-holdout {holdout} needs that many training images "
                       f"outside the training subset, but the training set has only 300; choose "
                       f"--noisy-holdout below 300")
    assert not (tmp_path / "results").exists()


def test_a_holdout_that_fits_only_beside_a_smaller_subset_names_that_subset(synthetic_cifar10, tmp_path, capsys):
    argv = run_args(synthetic_cifar10, tmp_path, "--noisy-holdout", "250", "--numsamples", "100")
    assert experiments.main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.endswith("but 200 are left; lower --noisy-holdout or set --numsamples to at most 50")
    assert all(int(bound) > 0 for bound in re.findall(r"at most (-?\d+)", message))
