"""Bad input to experiments.py: one line, exit code 2, nothing changed on disk. What the command line
alone settles is checked on `runner.command_line.parse`, in milliseconds; what needs the data, and
one command-line error as a user meets it, end to end."""
import pickle
import subprocess
import sys

import pytest

import experiments
from models import FAMILIES
from runner import errors
from runner import command_line
from conftest import ROOT, RunsCode, digest, one_line_refusal, run_args, write_cifar

# --------------------------------------------------------------------------------------------------
# Refused by the parser

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
    with pytest.raises(errors.UsageError) as error:
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


@pytest.fixture(scope="module")
def earlier_run(synthetic_cifar10, tmp_path_factory):
    """The folders of a finished one-epoch run, which refused input must leave as they are."""
    out = tmp_path_factory.mktemp("earlier")
    assert experiments.main(run_args(synthetic_cifar10, out, epochs=1)) == 0
    return out


# --------------------------------------------------------------------------------------------------
# Refused once the data is read, end to end

BAD_INPUTS = {
    "zero samples": (["--numsamples", "0"], "--numsamples 0 is out of range"),
    "too many samples": (["--numsamples", "301"], "--numsamples 301 is out of range"),
    "no heldout images": (["--probe-source", "heldout"], "heldout needs training images outside"),
    "unknown device": (["--device", "tpu9"], "--device tpu9"),
    "existing record": ([], "already exists; add --resume"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("extra, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_nonzero_exit_and_keeps_results(synthetic_cifar10, earlier_run, capsys,
                                                             extra, message):
    before = digest(earlier_run)
    fresh_name = ["--filename", "fresh"] if extra else []  # else the existing record is the error
    argv = [*run_args(synthetic_cifar10, earlier_run, epochs=1), *extra, *fresh_name]
    assert message in one_line_refusal(argv, capsys)
    assert digest(earlier_run) == before


@pytest.mark.e2e
def test_bad_data_dir_is_one_line(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert "is a file, not a folder" in one_line_refusal(run_args(not_a_folder, tmp_path), capsys)


@pytest.mark.e2e
def test_corrupt_batch_file_is_named(tmp_path, capsys):
    root = write_cifar(tmp_path / "data", train_per_batch=10, test_size=10)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    err = one_line_refusal(run_args(root, tmp_path), capsys)
    assert "test_batch" in err and "corrupt or truncated" in err


@pytest.mark.e2e
def test_a_batch_file_that_would_run_code_is_refused(tmp_path, capsys):
    root = write_cifar(tmp_path / "data", train_per_batch=10, test_size=10)
    marker = tmp_path / "code-ran"
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({"data": RunsCode(marker), "labels": [0]}))
    err = one_line_refusal(run_args(root, tmp_path), capsys)
    assert not marker.exists()
    assert f"{batch} refers to pathlib.Path.touch" in err and "not loaded" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.e2e
def test_a_missing_data_dir_is_named_and_not_created(tmp_path, capsys):
    missing = tmp_path / "dta"
    assert f"--data-dir {missing} does not exist" in one_line_refusal(run_args(missing, tmp_path), capsys)
    assert not missing.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_a_data_dir_holding_the_batches_themselves_points_to_its_parent(synthetic_cifar10, tmp_path, capsys):
    batches = synthetic_cifar10 / "cifar-10-batches-py"
    before = digest(synthetic_cifar10)
    err = one_line_refusal(run_args(batches, tmp_path), capsys)
    assert f"point --data-dir at its parent, {synthetic_cifar10}" in err
    assert digest(synthetic_cifar10) == before and list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_a_command_line_error_is_one_line_and_exit_code_2_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "experiments.py"), "--model", "cnn", "--scale", "-1"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["experiments.py: error: argument --scale: must be a "
                                                  "positive number, got -1 (see --help)"]
    assert list(tmp_path.iterdir()) == []
