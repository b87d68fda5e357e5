"""Command lines that experiments.py refuses before it reads any data: `runner.command_line.parse`
names the first problem in one line (experiments.py prints it and exits with code 2, which
tests/test_core_run.py checks end to end)."""
import pytest

from models import FAMILIES
from runner import command_line

# A command line that parses; each case below adds the flag that spoils it (the last one given counts).
VALID = ["--model", "cnn", "--epochs", "2", "--data-dir", "data"]

PARSE_ERRORS = {
    "unknown model": (["--model", "alexnet9"], "invalid choice: 'alexnet9'"),
    "zero scale": (["--scale", "0"], "--scale: must be a positive number"),
    "negative scale": (["--scale", "-2"], "--scale: must be a positive number"),
    "text scale": (["--scale", "wide"], "--scale: must be a positive number, got wide"),
    "corruptprob above 1": (["--corruptprob", "1.5"], "--corruptprob must be within [0, 1]"),
    "corruptprob below 0": (["--corruptprob", "-0.1"], "--corruptprob must be within [0, 1]"),
    "zero batch size": (["--batchsize", "0"], "--batchsize must be at least 1"),
    "zero epochs": (["--epochs", "0"], "--epochs must be at least 1"),
    "class count": (["--num_classes", "100"], "--num_classes 100 does not match cifar10"),
    "abbreviated flag": (["--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
}


def refusal(argv: list[str]) -> str:
    """The message of the UsageError with which `parse` refuses `argv`, checked to be one line."""
    with pytest.raises(command_line.UsageError) as error:
        command_line.parse(argv)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_the_valid_command_line_parses():
    args = command_line.parse(VALID)
    assert (args.model, args.epochs, args.data_dir) == ("cnn", 2, "data")


@pytest.mark.parametrize("extra, message", PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_a_bad_setting_is_one_line_naming_it(extra, message):
    assert message in refusal([*VALID, *extra])


def test_an_unknown_model_lists_the_valid_ones():
    message = refusal([*VALID, "--model", "lenet"])
    assert "lenet" in message and all(f"'{name}'" in message for name in FAMILIES)


@pytest.mark.parametrize("scale", ["0", "-1", "wide", "nan", "inf"])
def test_a_scale_that_is_not_a_positive_number_is_refused(scale):
    assert f"--scale: must be a positive number, got {scale}" in refusal([*VALID, "--scale", scale])
