"""Values that cannot work are refused in one line naming the bound, before anything starts: by
experiments.py, and by a sweep before any of its runs."""
import pytest

import sweep
from runner import command_line, config
from runner.errors import UsageError
from conftest import write_sweep

REFUSED = {
    "negative seed": (["--seed", "-1"], "--seed must be 0 or more, got -1"),
    "lr beyond float32": (["--lr", "1e300"], "--lr must be at most 3.403e+38"),
    "scale of a million": (["--scale", "1e6"], "--scale must be at most 16 (ResNet-18 at 16 has 2.9 billion"),
    "scale near the float limit": (["--scale", "1e308"], "--scale must be at most 16"),
}


@pytest.mark.parametrize("flags, message", REFUSED.values(), ids=REFUSED.keys())
def test_a_value_beyond_its_bound_is_refused(flags, message):
    with pytest.raises(UsageError, match=f"^{message}".replace("+", r"\+").replace("(", r"\(")):
        command_line.parse(["--model", "cnn", *flags])


def test_the_bounds_themselves_are_accepted():
    args = command_line.parse(["--model", "cnn", "--seed", str(2 ** 80), "--lr", str(config.MAX_LR),
                               "--scale", str(config.MAX_SCALE)])
    assert (args.seed, args.lr, args.scale) == (2 ** 80, config.MAX_LR, config.MAX_SCALE)


def test_a_sweep_with_a_negative_seed_is_refused_before_any_run_starts(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nseed = [0, -1]\n')
    assert sweep.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed must be 0 or more, got -1" in err
    assert not (tmp_path / "results").exists()
