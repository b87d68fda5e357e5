"""experiments.py end to end: records, checkpoints, determinism, resume, and bad input."""
import math
import os
import re
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runner import errors
from runner import checkpoints
from runner import command_line
import experiments
from runner import machine
import models
from runner import records
from runner import safe_files
import sweep
from runner import training
from conftest import (
    DEVICES,
    ROOT,
    as_format_1,
    checkpoint_path,
    digest,
    interrupt_at_epoch,
    record_path,
    run_args,
    same_record,
    start_in_background,
    start_in_foreground,
    write_cifar,
)
from susceptibility import Susceptibility


@pytest.fixture(scope="module")
def finished_run(synthetic_cifar10, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert experiments.main(run_args(synthetic_cifar10, out, epochs=3)) == 0
    return out


@pytest.mark.e2e
def test_run_writes_a_complete_self_describing_record(finished_run):
    record = records.read_record(record_path(finished_run, epochs=3))
    assert [row["epoch"] for row in record.rows] == [0, 1, 2]
    assert list(record.rows[0]) == records.COLUMNS
    assert record.meta["args"]["model"] == "cnn" and record.meta["args"]["seed"] == 3
    environment = record.meta["environment"]
    assert environment["torch"] == torch.__version__
    assert environment["cpu_model"] == machine.cpu_model() != ""
    assert environment["device_name"] == environment["cpu_model"]  # on the CPU
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["cpu_threads"] == torch.get_num_threads()
    assert record.meta["noise"]["labels_changed"] > 0 and record.meta["data"]["train_size"] == 300
    assert record.meta["status"] == {"epochs_completed": 3, "epochs_planned": 3, "finished": True,
                                     "stopped_because": None}
    lrs = [row["lr"] for row in record.rows]
    assert lrs[0] == 0.05 and lrs[0] > lrs[1] > lrs[2] > 0  # cosine over --epochs
    for row in record.rows:
        for column in ("phi_before", "phi_after", "train_acc", "train_clean_acc", "train_noisy_acc", "test_acc"):
            assert math.isfinite(row[column]), column


@pytest.mark.e2e
def test_susceptibility_is_the_running_mean_of_the_recorded_drops(finished_run):
    rows = records.read_record(record_path(finished_run, epochs=3)).rows
    drops = np.array([row["phi_before"] - row["phi_after"] for row in rows])
    assert math.isnan(rows[0]["susceptibility"])
    for t in (1, 2):
        assert rows[t]["susceptibility"] == pytest.approx(drops[1:t + 1].mean(), rel=1e-12)


@pytest.mark.e2e
def test_record_opens_in_pandas(finished_run):
    pandas = pytest.importorskip("pandas")
    table = pandas.read_csv(record_path(finished_run, epochs=3), comment="#")
    assert list(table.columns) == records.COLUMNS and len(table) == 3


@pytest.mark.e2e
def test_checkpoint_holds_the_final_model_labels_and_history(finished_run):
    state = checkpoints.load_checkpoint(finished_run / "checkpoint" / "t_cnn_3_0.05.pt")
    assert state["finished"] and state["epochs_completed"] == 3 and len(state["rows"]) == 3
    assert len(state["labels"]["assigned"]) == 300
    model = models.create_model("cnn", 0.125)
    model.load_state_dict(state["model"])
    assert {"model", "optimizer", "scheduler", "rng"} <= state.keys()


@pytest.mark.e2e
@pytest.mark.parametrize("device", DEVICES)
def test_same_arguments_give_identical_records_but_timings(synthetic_cifar10, tmp_path, device):
    for out in (tmp_path / "first", tmp_path / "second"):
        assert experiments.main(run_args(synthetic_cifar10, out, "--device", device, epochs=3)) == 0
    assert same_record(record_path(tmp_path / "first", epochs=3), record_path(tmp_path / "second", epochs=3))


@pytest.mark.e2e
def test_another_seed_gives_another_run(synthetic_cifar10, finished_run, tmp_path):
    argv = run_args(synthetic_cifar10, tmp_path, epochs=3)
    argv[argv.index("--seed") + 1] = "4"
    assert experiments.main(argv) == 0
    assert not same_record(record_path(tmp_path, epochs=3), record_path(finished_run, epochs=3))


@pytest.mark.e2e
def test_progress_line_per_epoch_numbers_epochs_as_the_record(synthetic_cifar10, tmp_path, capsys):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path)) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
    assert [l.split(")")[0] for l in lines] == ["epoch 0 (1/2", "epoch 1 (2/2"]
    assert [row["epoch"] for row in records.read_record(record_path(tmp_path)).rows] == [0, 1]
    assert "noisy" in lines[0] and "test" in lines[1]
    assert "zeta        –" in lines[0] and "nan" not in lines[0]
    assert f"zeta {records.read_record(record_path(tmp_path)).rows[1]['susceptibility']:8.4f}" in lines[1]


def epoch_summary(epoch: int, lr: float, zeta: float, seconds: float, noisy_acc: float = 12.5) -> dict:
    return {"epoch": epoch, "lr": lr, "train_acc": 100.0, "train_clean_acc": 5.25,
            "train_noisy_acc": noisy_acc, "test_acc": 9.0, "susceptibility": zeta, "seconds": seconds}


def test_summary_lines_keep_their_columns_whatever_the_values():
    rows = [epoch_summary(0, 0.1, math.nan, 0.4), epoch_summary(9, 0.0975528, -0.0123, 12.3),
            epoch_summary(150, 1.2345e-05, 1.5, 1234.5), epoch_summary(199, 0.0001234, 0.25, 75.0)]
    lines = [experiments.summary_line(row, 200) for row in rows]
    assert len({len(line) for line in lines}) == 1, lines
    for word in ("lr", "train", "clean", "noisy", "test", "zeta", "s)"):
        assert len({line.index(f" {word} " if word != "s)" else word) for line in lines}) == 1, (word, lines)
    assert lines[1].startswith("epoch   9 ( 10/200)")


def shown_help(parser, action) -> str:
    """The help text of one flag as --help prints it, defaults included."""
    return parser._get_formatter()._get_help_string(action) % {"default": action.default, "prog": "p"}


@pytest.mark.parametrize("parser, flag, default", [(command_line.build_parser(), "--batchsize", 128),
                                                   (sweep.build_parser(), "--max-parallel", 16)],
                         ids=["experiments", "sweep"])
def test_help_explains_every_flag_and_shows_a_default_at_most_once(parser, flag, default):
    for action in parser._actions:
        text = shown_help(parser, action)
        assert action.help, action.dest
        assert text.count("(default") <= 1, text
        if action.required:
            assert "default" not in text, text
        elif action.default is None or action.default is False or action.default == []:
            assert f"(default: {action.default})" not in text, text
    assert shown_help(parser, parser._option_string_actions[flag]).endswith(f"(default: {default})")


@pytest.mark.e2e
def test_loader_data_path_writes_the_same_schema(synthetic_cifar10, tmp_path):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--data-path", "loader",
                                     "--workers", "0")) == 0
    record = records.read_record(record_path(tmp_path))
    assert list(record.rows[0]) == records.COLUMNS and len(record.rows) == 2


@pytest.fixture(scope="module")
def slow_epoch_data(tmp_path_factory):
    """Enough images that an epoch lasts long enough for a signal to land in the middle of a run."""
    return write_cifar(tmp_path_factory.mktemp("bigger"), train_per_batch=300, test_size=100)


INTERRUPTIONS = {
    "ctrl-c": (signal.SIGINT, start_in_foreground, []),
    "sigterm": (signal.SIGTERM, start_in_foreground, []),
    "ctrl-c-loader-path": (signal.SIGINT, start_in_foreground, ["--data-path", "loader", "--workers", "0"]),
    "sigint-to-a-background-job": (signal.SIGINT, start_in_background, []),
}


@pytest.mark.e2e
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("signum, start, extra", INTERRUPTIONS.values(), ids=INTERRUPTIONS.keys())
def test_interrupted_run_resumes_to_the_uninterrupted_record(slow_epoch_data, tmp_path, capsys, signum,
                                                             start, extra, device):
    extra = [*extra, "--device", device]
    argv = run_args(slow_epoch_data, tmp_path / "cut", *extra, epochs=4)
    command = [sys.executable, str(ROOT / "experiments.py"), *argv]
    process = start(command)
    path = record_path(tmp_path / "cut", epochs=4)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(records.read_record(path).rows) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    cut = records.read_record(path)
    assert 2 <= len(cut.rows) < 4 and not cut.meta["status"]["finished"]
    assert f"{len(cut.rows)} of 4 epochs are saved" in stderr and stderr.strip().endswith("--resume")

    assert experiments.main([*argv, "--resume"]) == 0
    assert "warning" not in capsys.readouterr().err  # the same machine
    assert experiments.main(run_args(slow_epoch_data, tmp_path / "whole", *extra, epochs=4)) == 0
    assert same_record(path, record_path(tmp_path / "whole", epochs=4))
    resumed = checkpoints.load_checkpoint(tmp_path / "cut" / "checkpoint" / "t_cnn_4_0.05.pt")
    whole = checkpoints.load_checkpoint(tmp_path / "whole" / "checkpoint" / "t_cnn_4_0.05.pt")
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


@pytest.mark.e2e
def test_an_interrupt_while_an_epoch_is_saved_waits_for_it_and_counts_it(synthetic_cifar10, tmp_path,
                                                                        monkeypatch, capsys):
    save_checkpoint, saves = checkpoints.save_checkpoint, []

    def interrupted_save(path, state):
        saves.append(path)
        if len(saves) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C as the second epoch is being written
        save_checkpoint(path, state)

    monkeypatch.setattr(checkpoints, "save_checkpoint", interrupted_save)
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, epochs=3)) == 130
    err = capsys.readouterr().err
    assert len(records.read_record(record_path(tmp_path, epochs=3)).rows) == 2
    assert len(checkpoints.load_checkpoint(saves[0])["rows"]) == 2
    saved = r"interrupted: 2 of 3 epochs are saved in \S+t_cnn_3_0.05.csv and \S+t_cnn_3_0.05.pt;"
    assert re.search(saved, err)


@pytest.mark.e2e
def test_an_interrupt_before_the_first_epoch_is_saved_says_that_nothing_was_written(
        synthetic_cifar10, tmp_path, monkeypatch, capsys):
    def ctrl_c(run, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "probe_train_and_test", ctrl_c)
    argv = run_args(synthetic_cifar10, tmp_path)
    assert experiments.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted in epoch 0 (1/2), before it was saved; nothing was written. "
                   f"Start it again with: python experiments.py {shlex.join(argv)}")
    assert not (tmp_path / "results").exists() and not list(tmp_path.glob("checkpoint/*"))


@pytest.mark.e2e
def test_a_run_resumes_exactly_from_a_checkpoint_of_format_1(synthetic_cifar10, tmp_path, monkeypatch):
    """Format 1's last shape (every part present, the settings under `args`) continues exactly, and
    the next save writes the current format."""
    whole = run_args(synthetic_cifar10, tmp_path / "whole", epochs=3)
    assert experiments.main(whole) == 0
    cut = run_args(synthetic_cifar10, tmp_path / "cut", epochs=3)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main(cut) == errors.INTERRUPTED
    monkeypatch.undo()
    path = checkpoint_path(tmp_path / "cut", epochs=3)
    checkpoints.save_checkpoint(path, as_format_1(checkpoints.load_checkpoint(path)))
    assert torch.load(path, weights_only=True)["format"] == 1
    assert experiments.main([*cut, "--resume"]) == 0
    assert same_record(record_path(tmp_path / "cut", epochs=3), record_path(tmp_path / "whole", epochs=3))
    assert torch.load(path, weights_only=True)["format"] == checkpoints.CHECKPOINT_FORMAT


@pytest.mark.e2e
def test_resume_without_an_earlier_run_says_that_it_starts_from_the_beginning(synthetic_cifar10, tmp_path,
                                                                               capsys):
    assert experiments.main([*run_args(synthetic_cifar10, tmp_path, epochs=1), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "no earlier run to resume" in out and "starting t_cnn_1_0.05.csv from the first epoch" in out


@pytest.mark.e2e
def test_a_run_already_being_written_is_refused(synthetic_cifar10, tmp_path, capsys):
    lock = tmp_path / "checkpoint" / "t_cnn_2_0.05.pt.lock"
    with safe_files.exclusive_lock(lock):
        assert experiments.main(run_args(synthetic_cifar10, tmp_path)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"another process is writing this run (process {os.getpid()} holds" in err
        assert not (tmp_path / "results").exists() and list(tmp_path.glob("checkpoint/*")) == [lock]
    assert experiments.main(run_args(synthetic_cifar10, tmp_path)) == 0
    assert not lock.exists() and not (tmp_path / "results" / "t_cnn_2_0.05.csv.lock").exists()  # released


@pytest.mark.e2e
def test_a_second_process_is_refused_by_the_lock_even_after_the_first_saved_epochs(synthetic_cifar10,
                                                                                   tmp_path, capsys):
    """Whether the record exists yet or not, and whichever of record and checkpoint the two share."""
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, epochs=1)) == 0
    record_lock = tmp_path / "results" / "t_cnn_1_0.05.csv.lock"
    for argv in (run_args(synthetic_cifar10, tmp_path, epochs=1),
                 [*run_args(synthetic_cifar10, tmp_path, epochs=1), "--modelfilename", "other"]):
        with safe_files.exclusive_lock(record_lock):
            capsys.readouterr()
            assert experiments.main(argv) == 2
            assert "another process is writing this run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_epoch_run(synthetic_cifar10, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two")
    assert experiments.main(run_args(synthetic_cifar10, out)) == 0
    return out


def rolled_back(run: Path, copy: Path, environment: dict) -> Path:
    """A copy of a finished two-epoch run, rolled back to after its first epoch, with its checkpoint's
    environment changed."""
    shutil.copytree(run, copy)
    checkpoint = copy / "checkpoint" / "t_cnn_2_0.05.pt"
    state = checkpoints.load_checkpoint(checkpoint)
    state["rows"], state["epochs_completed"], state["finished"] = state["rows"][:1], 1, False
    state["environment"] = {**state["environment"], **environment}
    checkpoints.save_checkpoint(checkpoint, state)
    return copy


@pytest.mark.e2e
def test_resume_on_another_device_type_is_refused(synthetic_cifar10, two_epoch_run, tmp_path, capsys):
    out = rolled_back(two_epoch_run, tmp_path / "run", {"device": "cuda:0"})
    before = digest(out)
    assert experiments.main([*run_args(synthetic_cifar10, out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was made on a cuda device and cannot continue on cpu" in err and "--device cuda" in err
    assert err.count("\n") == 1 and digest(out) == before


@pytest.mark.e2e
def test_resume_on_another_cpu_or_thread_count_warns(synthetic_cifar10, two_epoch_run, tmp_path, capsys):
    out = rolled_back(two_epoch_run, tmp_path / "run", {"cpu_model": "Other CPU", "device_name": "Other CPU",
                                                        "cpu_threads": 99})
    assert experiments.main([*run_args(synthetic_cifar10, out), "--resume"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warning) == 1 and "cpu_model 'Other CPU', now" in warning[0]
    assert f"cpu_threads 99, now {torch.get_num_threads()}" in warning[0]
    assert "cpu_capability" not in warning[0] and "device_name" not in warning[0]


def test_help_states_when_records_are_identical_naming_only_flags_that_exist(capsys):
    """The promise of docs/RUNS.md (same CPU model, same thread count, which OMP_NUM_THREADS fixes),
    printed by --help after the flags; the flags it names must be flags of the program."""
    with pytest.raises(SystemExit) as done:
        command_line.parse(["--help"])
    assert done.value.code == 0
    unwrapped = re.sub(r"-\n\s*", "-", capsys.readouterr().out)  # argparse wraps lines after a hyphen too
    text = " ".join(unwrapped.split())
    promise = text[text.index("identical run records"):]
    assert "same CPU model and thread count (OMP_NUM_THREADS)" in promise
    named = set(re.findall(r"--[a-z][\w-]*", promise))
    assert named and named <= set(command_line.build_parser()._option_string_actions)


@pytest.mark.e2e
def test_resuming_a_finished_run_changes_nothing(synthetic_cifar10, finished_run, capsys):
    path = record_path(finished_run, epochs=3)
    before = path.read_bytes()
    assert experiments.main([*run_args(synthetic_cifar10, finished_run, epochs=3), "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert path.read_bytes() == before


@pytest.mark.e2e
def test_resume_with_other_arguments_is_refused(synthetic_cifar10, finished_run, capsys):
    argv = run_args(synthetic_cifar10, finished_run, "--resume", "--corruptprob", "0.2", epochs=3)
    assert experiments.main(argv) == 2
    assert "corruptprob: checkpoint 0.5, now 0.2" in capsys.readouterr().err


@pytest.mark.e2e
def test_divergence_stops_the_run_and_keeps_completed_epochs(synthetic_cifar10, tmp_path, capsys):
    argv = run_args(synthetic_cifar10, tmp_path, epochs=4)
    assert experiments.main(argv) == 0
    checkpoint = tmp_path / "checkpoint" / "t_cnn_4_0.05.pt"
    state = checkpoints.load_checkpoint(checkpoint)
    # Roll the run back to epoch 2 with poisoned weights, as if it had diverged there.
    state["rows"], state["epochs_completed"], state["finished"] = state["rows"][:2], 2, False
    weight = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][weight] = torch.full_like(state["model"][weight], float("nan"))
    checkpoints.save_checkpoint(checkpoint, state)
    kept_checkpoint = checkpoint.read_bytes()
    capsys.readouterr()
    assert experiments.main([*argv, "--resume"]) == errors.DIVERGED
    err = capsys.readouterr().err
    assert "non-finite training loss in epoch 2" in err and "lower --lr" in err
    record = records.read_record(record_path(tmp_path, epochs=4))
    assert len(record.rows) == 2 and "non-finite" in record.meta["status"]["stopped_because"]
    assert checkpoint.read_bytes() == kept_checkpoint


@pytest.mark.e2e
def test_divergence_in_the_first_epoch_writes_nothing_and_says_so(synthetic_cifar10, tmp_path, capsys,
                                                                  monkeypatch):
    def diverge(run, epoch):
        raise training.NonFiniteLoss("training loss", "nan")

    monkeypatch.setattr(experiments, "probe_train_and_test", diverge)
    assert experiments.main(run_args(synthetic_cifar10, tmp_path)) == errors.DIVERGED
    err = capsys.readouterr().err
    assert "non-finite training loss in epoch 0" in err and "no epoch was saved, so nothing was written" in err
    assert not (tmp_path / "results").exists() and not list(tmp_path.glob("checkpoint/*"))


def poison_the_probe(monkeypatch) -> None:
    """Make the probe of epoch 1 measure a NaN loss after its step."""
    measure = Susceptibility.measure

    def poisoned(probe, model, optimizer):
        drop = measure(probe, model, optimizer)
        if len(probe.phi_after) == 2:
            probe.phi_after[-1] = math.nan
        return drop
    monkeypatch.setattr(Susceptibility, "measure", poisoned)


def poison_the_test_loss(monkeypatch) -> None:
    """Make the test pass of epoch 1 give an infinite loss."""
    evaluate, calls = experiments.evaluate, []

    def poisoned(*args, **kwargs):
        calls.append(None)
        result = evaluate(*args, **kwargs)
        return {**result, "test_loss": math.inf} if len(calls) == 2 else result
    monkeypatch.setattr(experiments, "evaluate", poisoned)


NON_FINITE = {
    "phi-after": (poison_the_probe, "non-finite probe loss after the step (phi_after) in epoch 1"),
    "test-loss": (poison_the_test_loss, "non-finite test loss in epoch 1"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("poison, message", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_a_non_finite_probe_or_test_loss_stops_the_run_like_a_training_loss(
        synthetic_cifar10, tmp_path, monkeypatch, capsys, poison, message):
    poison(monkeypatch)
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, epochs=3)) == errors.DIVERGED
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    record = records.read_record(record_path(tmp_path, epochs=3))
    assert len(record.rows) == 1 and message in record.meta["status"]["stopped_because"]
    assert len(checkpoints.load_checkpoint(tmp_path / "checkpoint" / "t_cnn_3_0.05.pt")["rows"]) == 1


@pytest.mark.e2e
def test_real_subset_end_to_end(real_cifar10, tmp_path):
    argv = run_args(real_cifar10, tmp_path, "--numsamples", "256", "--probe-source", "heldout", epochs=1)
    assert experiments.main(argv) == 0
    record = records.read_record(record_path(tmp_path, epochs=1))
    assert record.meta["data"]["train_images_available"] == 5170
    assert record.meta["data"]["test_size"] == 1017 and record.meta["data"]["probe_size"] == 5170 - 256
    assert math.isfinite(record.rows[0]["test_acc"])
