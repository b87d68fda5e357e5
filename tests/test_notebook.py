"""results.ipynb and the command line of the analysis (python -m analysis) on the records of real tiny training runs."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from scipy.stats import kendalltau

import experiments
from runner import records
from analysis import selection
from conftest import ROOT, run_args

NOTEBOOK = ROOT / "results.ipynb"
# Tiny CNN runs on the same data, spread over width, learning rate and seed: (filename, seed, scale, lr).
TINY_RUNS = [
    ("a", "1", "0.125", "0.05"),
    ("b", "2", "0.25", "0.1"),
    ("c", "3", "0.125", "0.01"),
    ("d", "4", "0.25", "0.02"),
]
UNLABELLED = "unlabelled"  # a copy of run a without ground truth, like a dataset with unknown noise


def tiny_run_arguments(filename: str, seed: str, scale: str, lr: str,
                       data: Path, results: Path, checkpoints: Path) -> list[str]:
    """The tiny run of conftest at this width, learning rate and seed, three epochs on 32 images,
    its record directly in `results`."""
    return run_args(data, Path(), "--scale", scale, "--numsamples", "32", "--lr", lr, "--seed", seed,
                    "--results-dir", str(results), "--checkpoint-dir", str(checkpoints),
                    epochs=3, batchsize=16, name=filename)


def write_without_ground_truth(source: Path, target: Path) -> None:
    """Copy a run record as if its dataset had no known clean/noisy split."""
    record = records.read_record(source)
    record.meta["noise"]["ground_truth"] = False
    subset_columns = [c for c in records.COLUMNS if c.startswith(("train_clean", "train_noisy"))]
    rows = [{**row, **dict.fromkeys(subset_columns, math.nan)} for row in record.rows]
    records.write_record(target, records.RunRecord(record.meta, rows))


@pytest.fixture(scope="session")
def results_folder(tmp_path_factory, synthetic_cifar10) -> Path:
    """Four real run records, one without ground truth, an unrelated file and a broken record."""
    folder = tmp_path_factory.mktemp("results")
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    for run in TINY_RUNS:
        assert experiments.main(tiny_run_arguments(*run, synthetic_cifar10, folder, checkpoints)) == 0
    write_without_ground_truth(next(folder.glob("a_*.csv")), folder / f"{UNLABELLED}.csv")
    (folder / "notes.txt").write_text("not a run record\n")
    (folder / "broken.csv").write_text("# format: 1\n")
    return folder


def expected_runs(folder: Path) -> pd.DataFrame:
    """Each record's last epoch, worked out from the CSV text alone: ζ as the paper defines it."""
    runs = {}
    for path in sorted(folder.glob("*.csv")):
        if path.name == "broken.csv":
            continue
        epochs = pd.read_csv(path, comment="#")
        drops = epochs["phi_before"] - epochs["phi_after"]
        last = epochs.iloc[-1]
        runs[path.stem] = {"train_acc": last["train_acc"], "zeta": drops.iloc[1:].mean(),
                           "test_acc": last["test_acc"], "noisy_acc": last["train_noisy_acc"]}
    return pd.DataFrame.from_dict(runs, orient="index")


def test_notebook_is_committed_without_outputs_and_starts_with_its_parameters():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.e2e
def test_notebook_runs_headless_and_saves_every_figure(results_folder, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(results_folder))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    names = [path.stem for path in sorted(results_folder.glob("*.csv")) if path.name != "broken.csv"]
    stems = [f"curves_{name}" for name in names] + ["zeta_vs_memorization", "regions", "signals", "detectors"]
    expected = {f"{stem}.{extension}" for stem in stems for extension in ("png", "pdf")}
    figure_dir = results_folder / "notebook_figures"  # not analysis' --figures folder: nothing overwritten
    assert {path.name for path in figure_dir.iterdir()} == expected
    assert all((figure_dir / name).stat().st_size > 0 for name in expected)
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "skipped broken.csv" in printed and "data: cifar10/symmetric-0.5/n32" in printed
    assert "warning: only 5 runs" not in printed  # five runs are enough for a region split
    assert "warning: tau along epochs rests on fewer than 5 epochs with zeta in 4 runs" in printed


@pytest.mark.e2e
def test_notebook_refuses_runs_on_different_data_naming_its_data_parameter(tmp_path, results_folder,
                                                                          monkeypatch):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in results_folder.glob("[ab]_*.csv"):
        record = records.read_record(path)
        if path.name.startswith("b"):
            record.meta["noise"]["corrupt_prob"] = 0.2
        records.write_record(mixed / path.name, record)
    monkeypatch.setenv("RESULTS_DIR", str(mixed))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    with pytest.raises(CellExecutionError, match='pick one with DATA = "cifar10/symmetric-0.2/n32"'):
        client.execute()
    assert not (mixed / "notebook_figures").exists()


@pytest.mark.e2e
def test_shell_entry_point_prints_the_expected_table(results_folder):
    result = subprocess.run([sys.executable, "-m", "analysis", str(results_folder)], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("analysis: skipped broken.csv")
    lines = [line.split() for line in result.stdout.splitlines()]

    runs = expected_runs(results_folder)
    high_accuracy = runs["train_acc"] > runs["train_acc"].mean()
    low_zeta = runs["zeta"] < runs["zeta"].mean()
    regions = 1 + 2 * (~high_accuracy).astype(int) + (~low_zeta).astype(int)
    printed_regions = {words[0]: int(words[5]) for words in lines if words and words[0] in runs.index}
    assert printed_regions == regions.to_dict()

    counts = {int(words[0]): int(words[-3]) for words in lines
              if len(words) > 2 and words[0] in "1234" and words[1] in ("high", "low")}
    assert counts == {region: int((regions == region).sum()) for region in (1, 2, 3, 4)}

    rule = selection.SELECTION_RULES["region 1"].split()
    region_1_pick = next(words[len(rule)] for words in lines if words[:len(rule)] == rule)
    assert region_1_pick == runs[regions == 1].sort_index()["train_acc"].idxmax()

    known = runs.dropna(subset=["noisy_acc"])
    tau = kendalltau(known["zeta"], known["noisy_acc"]).statistic
    assert f"across {len(TINY_RUNS)} runs: {tau:.3f}" in result.stdout
