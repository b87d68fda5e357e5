"""Hand-edited records and sweep files: records whose epoch numbers cannot index ζ are skipped by the
analysis with a note, records whose headers were edited do not stop sweep.py, and a sweep file that
is not UTF-8 or whose grid is absurdly large is refused in one line before anything is built."""
import math
import time

import pytest

import sweep
from analysis import cli as analysis_cli
from analysis import loading
from conftest import write_sweep
from runner import records
from runner.sweeps import grid

ROW = {"lr": 0.1, "phi_before": 10.0, "phi_after": 9.0, "susceptibility": math.nan, "train_loss": 1.0,
       "train_acc": 50.0, "train_noisy_acc": 10.0, "train_clean_acc": 60.0, "test_loss": 1.0,
       "test_acc": 40.0, "seconds": 0.1}


def write_run(folder, name: str, epochs: list, planned: int | None = None) -> None:
    args = {"model": "cnn", "lr": 0.1, "seed": 0, **({"epochs": planned} if planned else {})}
    meta = {"args": args, "noise": {"ground_truth": True}}
    records.write_record(folder / f"{name}.csv", records.RunRecord(meta, [{"epoch": e, **ROW} for e in epochs]))


EDITED = {"negative": ([0, -7], None, "epoch -7 is negative"),
          "huge": ([0, 10 ** 12], 3, "epoch 1000000000000 is not below the 3 epochs its header plans"),
          "huge, no plan": ([0, 10 ** 12], None, "epoch 1000000000000 is not below 1,000,000"),
          "fraction": ([0, 1.5], None, "epoch 1.5 is not a whole number"),
          "twice": ([0, 1, 1], None, "epoch 1 appears more than once")}


@pytest.mark.parametrize("case", EDITED)
def test_a_record_with_unusable_epoch_numbers_is_skipped_with_a_note(tmp_path, case):
    epochs, planned, note = EDITED[case]
    write_run(tmp_path, "good", [0, 1, 3], planned=4)
    write_run(tmp_path, "edited", epochs, planned)
    loaded = loading.load_runs(tmp_path)
    assert set(loaded.table["run"]) == {"good"}
    reason = loaded.unreadable["edited.csv"]
    assert reason.startswith(note) and reason.endswith("; the record was edited or is damaged")


def test_the_analysis_command_names_the_skipped_record_and_goes_on(tmp_path, capsys):
    for seed in range(3):
        write_run(tmp_path, f"good{seed}", [0, 1, 2])
    write_run(tmp_path, "edited", [0, 10 ** 12])
    analysis_cli.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert ("analysis: skipped edited.csv: epoch 1000000000000 is not below 1,000,000, the limit where the "
            "header plans no number of epochs (args.epochs); the record was edited or is damaged") in err
    assert "Traceback" not in err


def test_a_record_with_a_gap_below_its_planned_epochs_is_still_read(tmp_path):
    write_run(tmp_path, "gap", [0, 1, 3], planned=4)
    table = loading.load_runs(tmp_path).table
    assert table["epoch"].tolist() == [0, 1, 3] and math.isnan(table["zeta_paper"].iloc[2])


GRID = '[grid]\nmodel = "cnn"\nlr = [0.05, 0.1]\n'


@pytest.mark.parametrize("edit", [{"status": [1]}, {"command": 5}, {"command": ["--epochs", 2]},
                                  {"command": None, "args": "cnn"},
                                  {"status": {"finished": True, "epochs_completed": "all"}}])
def test_an_edited_record_header_does_not_stop_a_dry_run(tmp_path, synthetic_cifar10, capsys, edit):
    path = write_sweep(tmp_path, synthetic_cifar10, GRID)
    point = grid.load_sweep(path).runs[0]
    point.record.parent.mkdir(parents=True)
    header = {"status": {"finished": True, "epochs_completed": 2}, "command": point.argv, "args": {}, **edit}
    records.write_record(point.record, records.RunRecord(header, [{"epoch": 0, **ROW}]))
    assert sweep.main([str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert f"{'resume after 0/2':<22} {point.name}" in listing


def test_an_unedited_header_of_a_finished_run_still_lists_it_as_finished(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, GRID)
    point = grid.load_sweep(path).runs[0]
    point.record.parent.mkdir(parents=True)
    header = {"status": {"finished": True, "epochs_completed": 2}, "command": point.argv, "args": {}}
    records.write_record(point.record, records.RunRecord(header, [{"epoch": 0, **ROW}]))
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert f"{'finished':<22} {point.name}" in capsys.readouterr().out


def test_a_sweep_file_that_is_not_utf8_is_refused_in_one_line(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, GRID)
    path.write_bytes(path.read_bytes().replace(b'"cnn"', b'"cn\xe9"'))
    assert sweep.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path} is not UTF-8 text (byte " in err and "save it as UTF-8" in err


@pytest.mark.parametrize("grid_text, runs", [
    ("[grid]\n" + "".join(f"{key} = {[value * step for value in range(1, 11)]}\n"
                          for key, step in (("seed", 1), ("lr", 0.01), ("scale", 0.1), ("corruptprob", 0.05),
                                            ("probe_batches", 1), ("workers", 1), ("noisy_holdout", 1),
                                            ("extra_probe_batches", 1))), "100,000,000"),
    ("[grid]\n[[grid.case]]\n" + "".join(f"{key} = {list(range(1, 23))}\n"
                                         for key in ("seed", "probe_batches", "noisy_holdout")), "10,648"),
])
def test_a_grid_beyond_the_limit_is_refused_before_it_is_built(tmp_path, synthetic_cifar10, capsys,
                                                                 grid_text, runs):
    path = write_sweep(tmp_path, synthetic_cifar10, grid_text.replace("[grid]\n", '[grid]\nmodel = "cnn"\n', 1))
    started = time.perf_counter()
    assert sweep.main([str(path), "--dry-run"]) == 2
    assert time.perf_counter() - started < 30
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"the grid has {runs} runs, more than the 10,000 a sweep may hold" in err
