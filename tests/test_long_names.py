"""A run whose files cannot be written under their names (too long for the file system) is refused
in one line before it trains, whether the name is too long for the lock files or only for the
temporary files of the epoch's save."""
import pytest

import experiments
from conftest import run_args

NAME_MAX = 255  # the longest file name of the common Linux file systems


@pytest.mark.e2e
@pytest.mark.parametrize("run_name_length", [219, 246, 250])
def test_a_run_name_too_long_for_its_files_is_refused_before_the_first_epoch(synthetic_cifar10, tmp_path,
                                                                             capsys, run_name_length):
    filename = "n" * (run_name_length - len("_cnn_2_0.05"))
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", name=filename)) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "File name too long" in err and "characters)" in err
    assert out == ""  # nothing was loaded nor trained
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_the_longest_name_that_fits_trains(synthetic_cifar10, tmp_path):
    longest = NAME_MAX - len(".t.samples.csv.gz.0123456789abcdef.tmp") + 1
    filename = "n" * (longest - len("_cnn_1_0.05"))
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", name=filename, epochs=1)) == 0
