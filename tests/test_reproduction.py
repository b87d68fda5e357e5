"""The sweeps of docs/REPRODUCTION.md expand as documented, and a tiny version of every run in them
trains and feeds the analysis command, so the document's commands cannot silently rot.

Tiny runs last two epochs, not one: ζ averages the probes after training began (PAPER.md), so the
first value exists at epoch 1."""
import tomllib
from pathlib import Path

import pytest

import analysis
import experiments
import sweep
from conftest import ROOT, SHARED_DATA

DOCUMENT = ROOT / "docs" / "REPRODUCTION.md"
SWEEPS = {  # sweep file -> (runs, what every run shares)
    "repro_noise_levels": (4, {"model": "resnet", "epochs": 40, "numsamples": 1000}),
    "repro_models": (24, {"corruptprob": 0.5, "noise_type": "symmetric", "epochs": 20}),
    "repro_cifar10n": (12, {"noise_type": "cifar10n-worst", "epochs": 20}),
}
NEEDS_REAL_DATA = {"repro_cifar10n"}  # its CIFAR-10N label file lines up with the real subset only


def load(name: str, spec: dict | None = None) -> sweep.Sweep:
    path = ROOT / "sweeps" / f"{name}.toml"
    if spec is None:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    return sweep.build_sweep(path, spec)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_expands_as_the_document_says(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs, shared = SWEEPS[name]
    grid = load(name)
    assert len(grid.runs) == runs
    for key, value in shared.items():
        assert {getattr(run.args, key) for run in grid.runs} == {value}, key
    text = DOCUMENT.read_text()
    assert f"python sweep.py sweeps/{name}.toml" in text
    assert f"python analysis.py {grid.results_dir}" in text


def test_the_model_grid_varies_architecture_width_optimizer_lr_and_schedule(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = [run.args for run in load("repro_models").runs]
    for key in ("model", "scale", "optimizer", "lr", "scheduler"):
        assert len({getattr(args, key) for args in runs}) >= 2, key


def tiny_spec(name: str, data_dir: Path, out: Path) -> dict:
    """The sweep file of `name` with two epochs on 48 images, writing under `out`."""
    with open(ROOT / "sweeps" / f"{name}.toml", "rb") as f:
        spec = tomllib.load(f)
    spec["sweep"].update(results_dir=str(out / "results"), checkpoint_dir=str(out / "checkpoints"))
    spec["fixed"].update(data_dir=str(data_dir), epochs=2, numsamples=48, batchsize=16,
                         eval_batchsize=200, device="cpu")
    if "noise_file" in spec["fixed"]:
        spec["fixed"]["noise_file"] = str(SHARED_DATA / "cifar-10n" / "CIFAR-10_human_subset.npz")
    return spec


@pytest.mark.parametrize("name", SWEEPS)
def test_a_tiny_version_of_every_run_trains_and_feeds_the_analysis(name, synthetic_cifar10, tmp_path, monkeypatch):
    data_dir = synthetic_cifar10
    if name in NEEDS_REAL_DATA:
        if not (SHARED_DATA / "cifar-10n").is_dir():
            pytest.skip("the real CIFAR-10 subset and CIFAR-10N labels (../shared/data) are not present")
        data_dir = SHARED_DATA
    monkeypatch.chdir(ROOT)
    grid = load(name, tiny_spec(name, data_dir, tmp_path))
    for run in grid.runs:
        assert experiments.main(run.argv) == 0, run.name
    assert all(run.record.exists() for run in grid.runs)
    figures = tmp_path / "figures"
    for data in analysis.populations(analysis.load_runs(grid.results_dir).table).unique():
        assert analysis.main([str(grid.results_dir), "--data", data, "--figures", str(figures)]) == 0
        assert (figures / "regions.png").stat().st_size > 0 and (figures / "regions.pdf").stat().st_size > 0
