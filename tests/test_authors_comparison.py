"""tools/authors_comparison.py (with authors_setting.py and authors_study.py): it runs a stand-in of the authors' code (their command line, their
results file, the lines its patches change) and ours, converts their results to our records,
compares both sides as documented, refuses what it cannot compare, and docs/REPRODUCTION.md quotes
what the committed study's records give."""
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from runner import records
from conftest import ROOT
from models import create_model


from tools import authors_comparison as harness
from tools import authors_setting as setting
from tools import authors_study as compared

DOCUMENT = ROOT / "docs" / "REPRODUCTION.md"
STUDY = ROOT / "docs" / "records" / "authors_comparison"
HEADING = "## Side by side with the authors' code"
TINY = ["--model", "resnet", "--scale", "0.125", "--numsamples", "48", "--batchsize", "16", "--epochs", "2"]

# The stand-in's experiments.py: the authors' flags and results file (one pickler dumping one list
# per epoch, the training accuracy a tensor); it stops where an unpatched line would stop it here.
STAND_IN_EXPERIMENTS = '''
import argparse
import pickle

import torch

from dataset import open_data

FLAGS = [("--model", str, None), ("--scale", float, 1.0), ("--dataset", str, "cifar10"),
         ("--num_classes", int, 10), ("--numsamples", int, 50000), ("--batchsize", int, 128),
         ("--corruptprob", float, 0.5), ("--epochs", int, 200), ("--lr", float, 0.1),
         ("--filename", str, ""), ("--modelfilename", str, ""), ("--seed", int, 123)]


def values(epoch, seed):
    """Known numbers: accuracies rise by one point an epoch and by ten per seed."""
    base = 10.0 * seed + epoch
    return [epoch, 2.5 + 0.1 * seed, 2.0 + 0.05 * epoch, 2.2, torch.tensor(20.0 + base), 2.1, 30.0 + base,
            2.4, 5.0 + base, 2.3, 40.0 + base]


def main():
    parser = argparse.ArgumentParser()
    for flag, kind, default in FLAGS:
        parser.add_argument(flag, type=kind, default=default)
    args = parser.parse_args()
    device = "cpu"
    net = torch.nn.Linear(PARAMETERS - 1, 1)
    net = net.to(device)
    open_data()
    schedule = dict(T_max=200)
    if schedule["T_max"] != args.epochs:
        raise SystemExit("stand-in: the schedule does not span --epochs")
    name = f"./results/{args.filename}_{args.model}_{args.epochs}_{args.lr}.pkl"
    with open(name, "wb") as f:
        pickler = pickle.Pickler(f)
        for epoch in range(args.epochs):
            pickler.dump(values(epoch, args.seed))
            print(f"stand-in epoch {epoch} of seed {args.seed}")


main()
'''

STAND_IN_DATASET = '''
import os


class NoisyImages:
    def __init__(self, root, download=False):
        if download:
            raise RuntimeError("stand-in: downloading needs the internet")
        if not self._check_integrity():
            raise RuntimeError("stand-in: the files are not the official archive")
        self.files = os.listdir(os.path.join(root, "cifar-10-batches-py"))

    def _check_integrity(self):
        return False

    def corrupt_labels(self, probability):
        return probability


def open_data():
    train = NoisyImages("./data", download=True)
    test = NoisyImages("./data", download=True)
    num_workers = 11
    if num_workers > 2:
        raise RuntimeError("stand-in: more DataLoader workers than the machine has")
    return train, test
'''


def our_parameters(model: str, scale: float) -> int:
    return sum(p.numel() for p in create_model(model, scale).parameters())


def write_stand_in(folder: Path, parameters: int, drop: str = "") -> Path:
    """The stand-in checkout in `folder`, whose network has `parameters` parameters; `drop` is a
    line its experiments.py leaves out."""
    folder.mkdir(parents=True)
    experiments = f"PARAMETERS = {parameters}\n" + textwrap.dedent(STAND_IN_EXPERIMENTS)
    (folder / "experiments.py").write_text(experiments.replace(drop, "") if drop else experiments)
    (folder / "dataset.py").write_text(textwrap.dedent(STAND_IN_DATASET))
    return folder


def stand_in_values(epoch: int, seed: int) -> dict:
    """What the stand-in writes, as our record's columns."""
    base = 10.0 * seed + epoch
    return {"epoch": epoch, "phi_before": 2.5 + 0.1 * seed, "phi_after": 2.0 + 0.05 * epoch, "train_loss": 2.2,
            "train_acc": 20.0 + base, "train_clean_loss": 2.1, "train_clean_acc": 30.0 + base,
            "train_noisy_loss": 2.4, "train_noisy_acc": 5.0 + base, "test_loss": 2.3, "test_acc": 40.0 + base}


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_harness(checkout: Path, out: Path, data: Path, *extra: str) -> int:
    return harness.main(["run", str(checkout), str(out), "--runs", "2", "--data-dir", str(data),
                         "--checkpoint-dir", str(out / "checkpoints"), *TINY, *extra])


@pytest.fixture(scope="module")
def study(synthetic_cifar10, tmp_path_factory) -> tuple[Path, Path]:
    """Two runs a side of a tiny setting: the stand-in and ours. Returns (checkout, records folder)."""
    folder = tmp_path_factory.mktemp("study")
    checkout = write_stand_in(folder / "checkout", our_parameters("resnet", 0.125))
    assert run_harness(checkout, folder / "records", synthetic_cifar10) == 0
    return checkout, folder / "records"


@pytest.mark.e2e
def test_the_checkout_is_left_as_it_was(study, synthetic_cifar10, tmp_path):
    checkout, _ = study
    fresh = write_stand_in(tmp_path / "fresh", our_parameters("resnet", 0.125))
    assert folder_contents(checkout) == folder_contents(fresh)


@pytest.mark.e2e
def test_the_authors_results_become_our_records_with_their_values_and_empty_cells_elsewhere(study):
    _, out = study
    for seed in (0, 1):
        path = out / "authors" / f"seed{seed}_resnet_2_0.05.csv"
        assert list(pd.read_csv(path, comment="#").columns) == records.COLUMNS
        record = records.read_record(path)
        assert record.meta["status"]["finished"]
        assert record.meta["authors_code"]["patches"] == [patch.name for patch in setting.patches(0)]
        assert record.meta["args"] == {"model": "resnet", "scale": 0.125, "numsamples": 48, "corruptprob": 0.5,
                                       "epochs": 2, "lr": 0.05, "batchsize": 16, "seed": seed}
        for epoch, row in enumerate(record.rows):
            expected = stand_in_values(epoch, seed)
            assert {column: row[column] for column in expected} == pytest.approx(expected)
            assert all(np.isnan(row[column]) for column in records.COLUMNS if column not in expected)


@pytest.mark.e2e
def test_the_authors_raw_results_and_console_output_are_kept_beside_the_records_made_from_them(study):
    _, out = study
    for seed in (0, 1):
        raw = out / "authors" / "raw"
        kept = harness.read_authors_results(raw / f"seed{seed}_resnet_2_0.05.pkl")
        assert [row["train_acc"] for row in kept] == [stand_in_values(epoch, seed)["train_acc"] for epoch in (0, 1)]
        assert (raw / f"seed{seed}_resnet_2_0.05.log").read_text().splitlines()[-2:] == [f"stand-in epoch {epoch} of seed {seed}"
                                                                    for epoch in (0, 1)]


@pytest.mark.e2e
def test_our_runs_have_the_same_setting_and_the_settings_the_authors_code_fixes(study):
    _, out = study
    for seed in (0, 1):
        args = records.read_record(out / "ours" / f"seed{seed}_resnet_2_0.05.csv").meta["args"]
        assert (args["model"], args["scale"], args["numsamples"], args["batchsize"], args["epochs"]) == \
               ("resnet", 0.125, 48, 16, 2)
        assert (args["lr"], args["corruptprob"], args["seed"]) == (0.05, 0.5, seed)
        assert (args["optimizer"], args["scheduler"], args["noise_type"], args["probe_source"]) == \
               ("sgd", "cosine", "symmetric", "train")


@pytest.mark.e2e
def test_a_finished_run_is_kept_when_the_study_runs_again(study, synthetic_cifar10, capsys):
    checkout, out = study
    before = folder_contents(out / "ours") | folder_contents(out / "authors")
    assert run_harness(checkout, out, synthetic_cifar10) == 0
    assert capsys.readouterr().out.count("is finished; kept") == 4
    assert folder_contents(out / "ours") | folder_contents(out / "authors") == before


def record_values(out: Path, side: str, metric: str, epoch: int) -> np.ndarray:
    """One value per run of `side` at `epoch`, read from the records."""
    rows = [records.read_record(path).rows[epoch] for path in sorted((out / side).glob("*.csv"))]
    return np.array([row["phi_before"] - row["phi_after"] if metric == "r" else row[metric] for row in rows])


@pytest.mark.e2e
@pytest.mark.parametrize("metric", list(setting.METRICS))
def test_the_gap_is_the_difference_of_means_over_the_pooled_spread_with_its_t_test_and_interval(study, metric):
    _, out = study
    comparison = compared.per_epoch(compared.load_study(out))
    for epoch in (0, 1):
        ours, theirs = record_values(out, "ours", metric, epoch), record_values(out, "authors", metric, epoch)
        pooled = np.sqrt((ours.var(ddof=1) + theirs.var(ddof=1)) / 2)  # two runs a side
        row = comparison.loc[(metric, epoch)]
        assert (row["ours_mean"], row["authors_mean"]) == pytest.approx((ours.mean(), theirs.mean()))
        assert row["pooled_sd"] == pytest.approx(pooled)
        assert row["gap"] == pytest.approx((ours.mean() - theirs.mean()) / pooled)
        test = stats.ttest_ind(ours, theirs)
        assert row["p"] == pytest.approx(test.pvalue)
        interval = test.confidence_interval(0.95)
        assert (row["difference_low"], row["difference_high"]) == pytest.approx((interval.low, interval.high))


@pytest.mark.e2e
def test_zeta_per_run_is_the_running_mean_our_records_hold_at_their_last_epoch(study):
    _, out = study
    summary = compared.run_summaries(compared.load_study(out)).loc["zeta"]
    ours = [records.read_record(path).rows[-1]["susceptibility"] for path in (out / "ours").glob("*.csv")]
    assert summary["ours_mean"] == pytest.approx(np.mean(ours))
    assert summary["authors_mean"] == pytest.approx(np.mean([2.5 - 2.05, 2.6 - 2.05]))  # the stand-in's r at epoch 1


@pytest.mark.e2e
def test_the_signs_of_the_gaps_are_counted_over_the_epochs(study):
    _, out = study
    rows = {row[0]: row[1:] for row in compared.sign_rows(compared.per_epoch(compared.load_study(out)))}
    for metric, about in setting.METRICS.items():
        means = {side: [record_values(out, side, metric, epoch).mean() for epoch in (0, 1)] for side in setting.SIDES}
        higher = sum(ours > theirs for ours, theirs in zip(means["ours"], means["authors"]))
        assert rows[about.label][0] == f"{higher} of 2"


@pytest.mark.e2e
def test_compare_prints_every_epoch_and_draws_the_figure(study, tmp_path, capsys):
    _, out = study
    assert harness.main(["compare", str(out), "--figure", str(tmp_path / "figures" / "curves.png")]) == 0
    printed = capsys.readouterr().out
    for metric in setting.METRICS.values():
        assert f"\n{metric.label}\nepoch" in printed
    theirs = compared.per_epoch(compared.load_study(out)).loc[("train_acc", 1)]
    assert f"{theirs['authors_mean']:.1f}" == "26.0"  # the stand-in's 21 and 31
    assert (tmp_path / "figures" / "curves.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.e2e
@pytest.mark.parametrize("left_out", [patch.name for patch in setting.patches(0)])
def test_each_patch_is_needed_by_the_stand_in(left_out, synthetic_cifar10, tmp_path, monkeypatch):
    checkout = write_stand_in(tmp_path / "checkout", our_parameters("resnet", 0.125))
    monkeypatch.setattr(harness, "patches", lambda workers, all_patches=setting.patches:
                        tuple(p for p in all_patches(workers) if p.name != left_out))
    assert run_harness(checkout, tmp_path / "records", synthetic_cifar10) != 0
    assert not (tmp_path / "records").exists()


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def test_a_patch_whose_target_is_missing_stops_the_harness_and_names_the_patch(synthetic_cifar10, tmp_path, capsys):
    checkout = write_stand_in(tmp_path / "checkout", our_parameters("resnet", 0.125), drop="schedule = dict(T_max=200)")
    assert run_harness(checkout, tmp_path / "records", synthetic_cifar10) == 2
    assert "patch schedule-spans-epochs: experiments.py holds 0 occurrence(s) of 'T_max=200'" in one_line_error(capsys)


@pytest.mark.e2e
def test_another_width_in_the_authors_code_is_refused_before_training(synthetic_cifar10, tmp_path, capsys):
    checkout = write_stand_in(tmp_path / "checkout", our_parameters("resnet", 0.125) + 1)
    assert run_harness(checkout, tmp_path / "records", synthetic_cifar10) == 2
    assert "--scale means another width there" in one_line_error(capsys)
    assert not (tmp_path / "records").exists()


def test_a_folder_that_is_not_a_checkout_is_refused(synthetic_cifar10, tmp_path, capsys):
    assert run_harness(tmp_path, tmp_path / "records", synthetic_cifar10) == 2
    assert "is not a checkout of the authors' repository" in one_line_error(capsys)


@pytest.mark.e2e
def test_compare_refuses_a_side_with_fewer_than_two_runs(study, tmp_path, capsys):
    _, out = study
    (tmp_path / "authors").mkdir()
    (tmp_path / "ours").symlink_to(out / "ours")
    (tmp_path / "authors" / "seed0.csv").write_bytes((out / "authors" / "seed0_resnet_2_0.05.csv").read_bytes())
    assert harness.main(["compare", str(tmp_path)]) == 2
    assert "holds 1 run record(s)" in one_line_error(capsys)


def copy_records(out: Path, folder: Path, edit=lambda text: text) -> None:
    """Copy both sides' records from `out` into `folder`, passing their text through `edit`."""
    for side in setting.SIDES:
        (folder / side).mkdir()
        for path in (out / side).glob("*.csv"):
            (folder / side / path.name).write_text(edit(path.read_text()))


@pytest.mark.e2e
def test_compare_refuses_records_of_different_settings(study, tmp_path, capsys):
    _, out = study
    copy_records(out, tmp_path)
    other = tmp_path / "authors" / "seed1_resnet_2_0.05.csv"
    other.write_text(other.read_text().replace('"lr": 0.05', '"lr": 0.1'))
    assert harness.main(["compare", str(tmp_path)]) == 2
    assert "do not all share one setting" in one_line_error(capsys)


@pytest.mark.e2e
def test_compare_refuses_authors_records_made_with_other_patches(study, tmp_path, capsys):
    _, out = study
    copy_records(out, tmp_path, lambda text: text.replace('"no-download", ', ""))
    assert harness.main(["compare", str(tmp_path)]) == 2
    assert "not run with this harness's patches" in one_line_error(capsys)


# --------------------------------------------------------------------------------------------------
# The committed study and its section of docs/REPRODUCTION.md


def document_section() -> str:
    text = DOCUMENT.read_text()
    assert HEADING in text, f"docs/REPRODUCTION.md has no section {HEADING!r}"
    return text.split(HEADING + "\n", 1)[1].split("\n## ", 1)[0]


def committed_study() -> compared.Study:
    return compared.load_study(STUDY)


def test_the_committed_study_has_three_or_more_runs_a_side_into_memorization():
    study = committed_study()
    assert min(compared.run_counts(study).values()) >= 3
    assert study.setting == setting.Setting()  # ResNet-18 x1/4, 2,000 images, 50 % noise, 60 epochs
    assert study.setting.epochs >= 40


def test_the_sections_tables_and_patches_are_what_the_committed_records_give():
    lines = set(document_section().splitlines())
    missing = [line for line in compared.markdown_report(committed_study()).splitlines() if line not in lines]
    assert not missing, f"not in the section {HEADING!r} of docs/REPRODUCTION.md: {missing}"


def test_the_sections_verdict_quotes_only_numbers_of_its_tables():
    verdict = document_section().split("### Verdict\n", 1)[1]
    tables = compared.markdown_report(committed_study())
    quoted = set(re.findall(r"[-+]?\d+\.\d+", verdict))
    assert quoted
    assert not {number for number in quoted if number not in tables}


def test_the_section_shows_its_figure_and_the_commands_that_make_it():
    section = document_section()
    figures = re.findall(r"\]\((figures/authors_comparison/[^)]+)\)", section)
    assert figures and all((DOCUMENT.parent / name).stat().st_size > 0 for name in figures)
    assert "python -m tools.authors_comparison run" in section
    assert "python -m tools.authors_comparison compare docs/records/authors_comparison" in section
