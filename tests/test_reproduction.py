"""docs/REPRODUCTION.md: its sweeps expand as documented, a tiny version of every run in them trains
and feeds the analysis, every table it quotes is what the committed records give today, and so is
every headline number of its verdicts and of the README.

Tiny runs last two epochs, not one: ζ averages the probes after training began (PAPER.md), so the
first value exists at epoch 1."""
import functools
import re
import tomllib
from pathlib import Path

import pytest

from runner import config
import experiments
from runner.sweeps import grid
from analysis import cli, detectors, probes
from conftest import ROOT, SHARED_DATA


from tools import authors_study
from tools import probe_study_tables
from tools import regret_tables
from tools import reproduction_tables

DOCUMENT = ROOT / "docs" / "REPRODUCTION.md"
README = ROOT / "README.md"
SWEEPS = {  # sweep file -> (runs, what every run shares)
    "pilot_n4000": (1, {"model": "resnet", "epochs": 40, "numsamples": 4000}),
    "pilot_n2000": (2, {"model": "resnet", "epochs": 60, "numsamples": 2000}),
    "memorization_symmetric": (48, {"noise_type": "symmetric", "corruptprob": 0.5, "epochs": 60,
                                    "numsamples": 2000, "noisy_holdout": 500}),
    "memorization_cifar10n": (48, {"noise_type": "cifar10n-worst", "epochs": 60, "numsamples": 2000,
                                   "noisy_holdout": 500}),
    "probe_study": (32, {"noise_type": "symmetric", "corruptprob": 0.5, "epochs": 60, "numsamples": 2000,
                         "noisy_holdout": 500, "extra_probes": "train,heldout", "extra_probe_batches": 4}),
}
NEEDS_REAL_DATA = {"memorization_cifar10n"}  # its CIFAR-10N label file lines up with the real subset only
# The tables the document quotes, by records folder under docs/records, and the tool that prints them.
QUOTED_TABLES = {
    "pilot_n4000": ["settings", "cost"],
    "pilot_n2000": ["settings", "regime", "cost"],
    "memorization_symmetric": list(reproduction_tables.TABLES),
    "memorization_cifar10n": list(reproduction_tables.TABLES),
    "probe_study": list(probe_study_tables.TABLES),
}
TABLE_TOOLS = {"probe_study": probe_study_tables}


def load(name: str, spec: dict | None = None) -> grid.Sweep:
    path = ROOT / "sweeps" / f"{name}.toml"
    if spec is None:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    return grid.build_sweep(path, spec)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_expands_as_the_document_says(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs, shared = SWEEPS[name]
    grid = load(name)
    assert len(grid.runs) == runs
    for key, value in shared.items():
        resolved = {run.name: config.noise_type(run.args) if key == "noise_type" else getattr(run.args, key)
                    for run in grid.runs}
        assert set(resolved.values()) == {value}, key
    text = DOCUMENT.read_text()
    assert f"python sweep.py sweeps/{name}.toml" in text
    assert f"python -m analysis {grid.results_dir}" in text
    assert grid.results_dir == Path("docs/records") / name


@pytest.mark.parametrize("name", ["memorization_symmetric", "memorization_cifar10n"])
def test_each_population_varies_architecture_width_optimizer_lr_and_schedule_over_three_seeds(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = [run.args for run in load(name).runs]
    assert len({args.model for args in runs}) >= 4
    for key in ("scale", "optimizer", "lr", "scheduler"):
        assert len({getattr(args, key) for args in runs}) >= 2, key
    assert sorted({args.seed for args in runs}) == [0, 1, 2]


def tiny_spec(name: str, data_dir: Path, out: Path) -> dict:
    """The sweep file of `name` with its first seed only, two epochs on 48 images, writing under `out`."""
    with open(ROOT / "sweeps" / f"{name}.toml", "rb") as f:
        spec = tomllib.load(f)
    spec["sweep"].update(results_dir=str(out / "results"), checkpoint_dir=str(out / "checkpoints"))
    spec["fixed"].update(data_dir=str(data_dir), epochs=2, numsamples=48, batchsize=16,
                         eval_batchsize=200, device="cpu")
    if spec["fixed"].get("noisy_holdout"):
        spec["fixed"]["noisy_holdout"] = 16
    if "seed" in spec.get("grid", {}):
        spec["grid"]["seed"] = spec["grid"]["seed"][:1]
    if "noise_file" in spec["fixed"]:
        spec["fixed"]["noise_file"] = str(SHARED_DATA / "cifar-10n" / "CIFAR-10_human_subset.npz")
    return spec


@pytest.mark.e2e
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
    assert cli.main([str(grid.results_dir), "--per-seed", "--figures", str(figures)]) == 0
    assert (figures / "regions.png").stat().st_size > 0 and (figures / "regions.pdf").stat().st_size > 0
    if name in TABLE_TOOLS:
        tables = TABLE_TOOLS[name].render(grid.results_dir)
        assert all(text.strip() for text in tables.values()), tables
        assert all(len(text.splitlines()) >= 2 for text in tables.values() if text.startswith("|")), tables


def test_the_probe_study_trains_the_settings_of_the_symmetric_population(monkeypatch):
    monkeypatch.chdir(ROOT)
    setting = lambda args: (args.model, args.scale, args.optimizer, args.lr, args.scheduler, args.seed)
    study = {setting(run.args) for run in load("probe_study").runs}
    symmetric = {setting(run.args) for run in load("memorization_symmetric").runs}
    assert study == {s for s in symmetric if s[-1] in (0, 1)}


# A number with a decimal point, as the tables print them: 0.77, 41.6, 3.7e-14.
DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?:e-?\d+)?(?![\d.])")


@functools.cache
def rendered(folder: str) -> dict[str, str]:
    """The tables the document quotes from the committed records of `folder`."""
    records = ROOT / "docs" / "records" / folder
    if not any(records.glob("*.csv")):
        pytest.fail(f"no committed records in {records}")
    return TABLE_TOOLS.get(folder, reproduction_tables).render(records, QUOTED_TABLES[folder])


@functools.cache
def authors_tables() -> str:
    """The tables of the side-by-side study with the authors' code, from its committed records."""
    return authors_study.markdown_report(authors_study.load_study(ROOT / "docs" / "records" / "authors_comparison"))


def section(text: str, heading: str) -> str:
    """The lines of markdown `text` under `heading`, up to the next heading of its level or above."""
    depth = len(heading.split(" ")[0])
    lines = text.split(heading + "\n", 1)[1].splitlines()
    ends = [i for i, line in enumerate(lines) if re.match(rf"#{{1,{depth}}} ", line)]
    return "\n".join(lines[:ends[0]] if ends else lines)


@pytest.mark.e2e
@pytest.mark.parametrize("folder", QUOTED_TABLES)
def test_the_documents_tables_are_what_the_committed_records_give(folder):
    lines = set(DOCUMENT.read_text().splitlines())
    for name, text in rendered(folder).items():
        missing = [line for line in text.splitlines() if line not in lines]
        assert not missing, f"{folder}, table {name}: not in docs/REPRODUCTION.md: {missing}"


# The paper's own numbers, which the claims table quotes beside ours (the authors' README, Clothing1M).
PAPER_NUMBERS = {"61.80", "1.64", "57.89", "3.56", "51.25", "17.21", "51.42", "9.71"}


@pytest.mark.parametrize("where, heading", [(DOCUMENT, "## Verdicts"), (README, "## Reproduction at small scale"),
                                            (DOCUMENT, "## The paper's claims, and what this project finds"),
                                            (README, "### How much one probe batch tells"),
                                            (DOCUMENT, "### ζ's whole uncertainty: batches, random labels, images")])
def test_the_headline_numbers_are_in_the_tables_of_the_committed_records(where, heading):
    headlines = section(where.read_text(), heading)
    in_tables = {number for folder in QUOTED_TABLES for text in rendered(folder).values()
                 for number in DECIMAL.findall(text)} | set(DECIMAL.findall(authors_tables()))
    quoted = [number for number in DECIMAL.findall(headlines) if number not in PAPER_NUMBERS]
    assert quoted
    assert not set(quoted) - in_tables, f"{where.name}, {heading}: numbers no table gives: {set(quoted) - in_tables}"


def test_the_document_shows_the_figures_it_names():
    text = DOCUMENT.read_text()
    names = [part.split(")")[0] for part in text.split("](figures/")[1:]]
    names += [part.split('"')[0] for part in text.split('src="figures/')[1:]]
    assert names
    for name in names:
        assert (DOCUMENT.parent / "figures" / name).stat().st_size > 0, name


@pytest.mark.parametrize("tool", [reproduction_tables, probe_study_tables])
def test_a_table_tool_given_a_folder_without_records_says_so_in_one_line(tool, tmp_path, capsys):
    assert tool.main([str(tmp_path)]) == 2
    assert tool.main([str(tmp_path / "absent")]) == 2
    errors = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert errors == [f"error: no run records in {tmp_path}", f"error: no such folder: {tmp_path / 'absent'}"]


def test_the_probe_studys_per_sample_files_give_its_records_last_epoch_detectors_but_forgetting():
    folder = ROOT / "docs" / "records" / "probe_study"
    table = reproduction_tables.population(folder)
    keys = ["run", "score", "measure"]
    recorded = detectors.detector_values(table).query("moment == 'last epoch'").set_index(keys)["value"]
    recomputed = detectors.sample_file_values(folder, table).set_index(keys)["value"].reindex(recorded.index)
    same = recorded.index.get_level_values("score") != "forgetting"
    assert recomputed[same].to_numpy() == pytest.approx(recorded[same].to_numpy(), abs=1e-12)
    assert not (recomputed[~same].to_numpy() == pytest.approx(recorded[~same].to_numpy(), abs=1e-3))


def test_the_label_draw_ratio_for_runs_without_their_own_is_what_the_probe_study_gives():
    table = reproduction_tables.population(ROOT / "docs" / "records" / "probe_study")
    ratio, _ = probes.label_draw_ratio(table)
    assert probes.LABEL_DRAW_RATIO == round(ratio, 2)
    for page in ("ANALYSIS.md", "API.md", "REPRODUCTION.md"):
        assert f"{probes.LABEL_DRAW_RATIO:.2f}" in (ROOT / "docs" / page).read_text(), page


REGRET_POPULATIONS = ["memorization_symmetric", "memorization_cifar10n", "probe_study"]


@functools.cache
def regret_rendered(folder: str) -> dict[str, str]:
    """The regret study's tables of the committed records of `folder`."""
    return regret_tables.render(ROOT / "docs" / "records" / folder)


@pytest.mark.parametrize("folder", REGRET_POPULATIONS)
def test_the_regret_tables_are_what_the_committed_records_give(folder):
    lines = set(DOCUMENT.read_text().splitlines())
    for name, text in regret_rendered(folder).items():
        if name != "headline":
            missing = [line for line in text.splitlines() if line not in lines]
            assert not missing, f"{folder}, regret table {name}: not in docs/REPRODUCTION.md: {missing}"


def test_the_readme_and_the_document_quote_the_regret_headline_as_the_records_give_it():
    flat = lambda path: " ".join(path.read_text().split())
    for text in (flat(README), flat(DOCUMENT)):
        quoted = f"{regret_tables.HEADLINE} {regret_rendered('memorization_cifar10n')['headline']} and " \
                 f"{regret_rendered('memorization_symmetric')['headline']}"
        assert quoted in text


def test_the_regret_tool_given_a_folder_without_records_says_so_in_one_line(tmp_path, capsys):
    assert regret_tables.main([str(tmp_path)]) == 2
    assert regret_tables.main(["figure", str(tmp_path / "regret.png"), str(tmp_path)]) == 2
    errors = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert errors == [f"error: no run records in {tmp_path}"] * 2
