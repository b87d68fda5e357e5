"""A run's name and the paths of its files, as the reference code names them."""
from pathlib import Path

from runner import command_line
from runner import config
from runner.run_files import run_files


def test_a_command_line_names_its_run_and_every_file_it_writes():
    files = run_files(command_line.parse(["--model", "cnn", "--epochs", "3", "--lr", "0.05", "--filename", "f",
                                          "--modelfilename", "m", "--results-dir", "r", "--checkpoint-dir", "c"]))
    assert (files.name, files.checkpoint_name) == ("f_cnn_3_0.05", "m_cnn_3_0.05")
    assert files.record == Path("r/f_cnn_3_0.05.csv")
    assert files.checkpoint == Path("c/m_cnn_3_0.05.pt")
    assert files.samples == Path("r/f_cnn_3_0.05.samples.csv.gz")
    assert files.test_predictions == Path("r/f_cnn_3_0.05.test.csv.gz")
    assert files.locks == [Path("r/f_cnn_3_0.05.csv.lock"), Path("c/m_cnn_3_0.05.pt.lock")]


def test_the_checkpoint_is_named_after_the_run_when_modelfilename_is_left_out():
    files = run_files(command_line.parse(["--model", "resnet"]))
    assert files.record == Path("results/run_resnet_200_0.1.csv")
    assert files.checkpoint == Path("checkpoint/run_resnet_200_0.1.pt")


def test_the_resolved_configuration_keeps_the_checkpoint_prefix_and_names_the_same_files():
    args = command_line.parse(["--model", "cnn", "--filename", "f", "--epochs", "2"])
    resolved = config.resolve(args, num_classes=10, channels_last=False)
    assert resolved.modelfilename == "f"
    assert resolved.files.checkpoint == Path("checkpoint/f_cnn_2_0.1.pt")
    assert resolved.files == run_files(args)
