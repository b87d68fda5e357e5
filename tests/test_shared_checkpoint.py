"""A run replaces only a checkpoint of its own: another run that shares its --modelfilename is
refused in one line, unless --overwrite says to replace it."""
import pytest

import experiments
from runner import checkpoints
from conftest import checkpoint_path, run_args


def sharing(data, out, name: str, *extra: str) -> list[str]:
    return run_args(data, out, "--numsamples", "64", "--modelfilename", "shared", *extra, epochs=1, name=name)


@pytest.mark.e2e
def test_a_run_that_shares_another_runs_checkpoint_is_refused_unless_it_overwrites(synthetic_cifar10,
                                                                                  tmp_path, capsys):
    assert experiments.main(sharing(synthetic_cifar10, tmp_path, "first")) == 0
    checkpoint = checkpoint_path(tmp_path, epochs=1, name="shared")
    kept = checkpoint.read_bytes()
    capsys.readouterr()
    second = sharing(synthetic_cifar10, tmp_path, "second", "--seed", "4")
    assert experiments.main(second) == experiments.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{checkpoint} already exists" in err
    assert experiments.main([*second, "--resume"]) == experiments.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to the run --filename first, not to this run (--filename second)" in err
    assert checkpoint.read_bytes() == kept
    assert experiments.main([*second, "--overwrite"]) == 0
    assert checkpoints.load_checkpoint(checkpoint)["config"]["filename"] == "second"
