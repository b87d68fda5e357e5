"""From a folder of noisily labelled images to the model to use: class folders, runs without a test
set, one recommended run (`python -m analysis --pick`), loading its model and labelling new images."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import datasets
import experiments
from analysis import cli as analysis_cli
from analysis import pick
from analysis.loading import load_runs
from analysis.regret import regret_study, seed_values
from runner import checkpoints, predict, records
from runner.errors import DataError, UsageError
from conftest import ROOT, checkpoint_path, record_path, run_args, synthetic_images

CLASSES = ("bird", "cat", "dog")


def write_class_folders(root, counts: dict[str, int], seed: int = 0, wrong: dict[str, str] | None = None):
    """PNG images of synthetic class patterns in `root/<class>/`; `wrong` moves some images (by file
    name) into another class's folder: labels made wrong."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(sorted(counts)):
        pixels = synthetic_images(np.full(counts[name], label), rng).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for i, image in enumerate(pixels):
            file = f"{name}{i}.png"
            folder = root / (wrong or {}).get(file, name)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / file)
    return root


# --------------------------------------------------------------------------------------------------
# Class folders


def test_class_folders_are_labelled_in_the_sorted_order_of_their_names(tmp_path):
    write_class_folders(tmp_path / "pets", {"dog": 3, "bird": 2, "cat": 4})
    train, test = datasets.load_folder(tmp_path / "pets")
    assert train.classes == CLASSES and list(train.labels) == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert train.images.shape == (9, 3, 32, 32) and len(test) == 0 and test.classes == CLASSES
    assert datasets.class_count(train, test, None) == 3


def test_train_and_test_class_folders_share_the_class_numbers(tmp_path):
    write_class_folders(tmp_path / "pets" / "train", {"dog": 2, "bird": 2, "cat": 2})
    write_class_folders(tmp_path / "pets" / "test", {"dog": 1, "cat": 1})
    train, test = datasets.load_folder(tmp_path / "pets")
    assert list(test.labels) == [1, 2] and test.classes == train.classes == CLASSES
    assert (tmp_path / "pets" / "train_32px.npz").is_file() and (tmp_path / "pets" / "test_32px.npz").is_file()


def test_an_image_moved_to_another_class_folder_takes_that_folders_label(tmp_path):
    write_class_folders(tmp_path / "pets", {"bird": 2, "cat": 2}, wrong={"bird0.png": "cat"})
    train, _ = datasets.load_folder(tmp_path / "pets")
    assert list(train.labels) == [0, 1, 1, 1]


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "empty").mkdir(), "holds neither train.txt nor class subfolders"),
    (lambda root: (root / "train" / "cat").mkdir(parents=True), "the class folders of {root}/train hold no images"),
    (lambda root: (write_class_folders(root / "train", {"cat": 1}), write_class_folders(root / "test", {"cow": 1})),
     "{root}/test has class folders that {root}/train lacks (cow)"),
    (lambda root: write_class_folders(root / "test", {"cat": 1}), "has a test/ folder but no train/"),
])
def test_unusable_class_folders_stop_with_one_line(tmp_path, make, message):
    root = tmp_path / "empty" if "neither" in message else tmp_path
    make(tmp_path)
    with pytest.raises(DataError, match=None) as error:
        datasets.load_folder(root)
    assert message.format(root=tmp_path) in str(error.value) and "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------------
# A run on class folders, with and without a test set


@pytest.fixture(scope="module")
def class_folder_run(tmp_path_factory):
    """A tiny finished run on train/<class>/ and test/<class>/ folders."""
    root = tmp_path_factory.mktemp("classes")
    write_class_folders(root / "pets" / "train", {"bird": 40, "cat": 40, "dog": 40})
    write_class_folders(root / "pets" / "test", {"bird": 10, "cat": 10, "dog": 10}, seed=1)
    assert experiments.main(run_args(root / "pets", root, "--dataset", "folder", batchsize=16)) == 0
    return root


@pytest.mark.e2e
def test_the_class_names_are_kept_in_the_record_and_the_checkpoint(class_folder_run):
    record = records.read_record(record_path(class_folder_run))
    assert record.meta["data"]["class_names"] == list(CLASSES) and record.meta["data"]["num_classes"] == 3
    assert checkpoints.load_checkpoint(checkpoint_path(class_folder_run))["class_names"] == list(CLASSES)


@pytest.mark.e2e
def test_predictions_on_the_test_images_equal_the_runs_own(class_folder_run, tmp_path):
    """`python -m runner.predict` on the test folder labels each image as the run's last test pass did."""
    output = tmp_path / "predictions.csv"
    assert predict.main([str(checkpoint_path(class_folder_run)), str(class_folder_run / "pets" / "test"),
                         "--output", str(output)]) == 0
    ours = pd.read_csv(output).set_index("path")
    saved = pd.read_csv(record_path(class_folder_run).with_name("t_cnn_2_0.05.test.csv.gz"))
    _, test_listing, _ = datasets.folder_listings(class_folder_run / "pets")
    paths = [name.removeprefix("test/") for name in test_listing.names]
    assert sorted(paths) == sorted(ours.index) and len(paths) == 30
    assert ours.loc[paths, "predicted"].tolist() == saved["predicted"].tolist()
    assert ours["class_name"].tolist() == [CLASSES[label] for label in ours["predicted"]]


@pytest.mark.e2e
def test_load_model_gives_the_model_in_eval_mode_with_its_preprocessing_and_class_names(class_folder_run):
    from PIL import Image

    loaded = predict.load_model(checkpoint_path(class_folder_run))
    assert not loaded.model.training and loaded.class_names == list(CLASSES)
    file = next((class_folder_run / "pets" / "test" / "cat").iterdir())
    as_path, as_pil = loaded.preprocess(file), loaded.preprocess(Image.open(file))
    as_tensor = loaded.preprocess(torch.from_numpy(datasets.read_image(file, file).copy()))
    assert as_path.shape == (3, 32, 32) and torch.equal(as_path, as_pil) and torch.equal(as_path, as_tensor)
    assert abs(float(as_path.mean())) < 3  # normalized, not raw pixels
    assert loaded.predict([file, file]) == [loaded.predict([file])[0]] * 2


def test_predict_refuses_what_it_cannot_read_with_one_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    assert predict.main([str(tmp_path / "none.pt"), str(tmp_path / "images"), "--output", str(tmp_path / "p.csv")]) == 2
    assert predict.main([str(tmp_path / "none.pt"), str(tmp_path / "nowhere"), "--output", str(tmp_path / "p.csv")]) == 2
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert predict.main([str(tmp_path / "notes.pt"), str(tmp_path / "images"), "--output", str(tmp_path / "p.csv")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "checkpoint" in errors[0] and "not found" in errors[0] and "is not a folder" in errors[1]
    assert errors[2].startswith(f"predict: error: {tmp_path / 'notes.pt'} cannot be read as a checkpoint") and len(errors) == 3
    assert errors[2].endswith("give a run's .pt file from its --checkpoint-dir")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.e2e
def test_a_run_without_a_test_set_completes_and_is_analysed(tmp_path, capsys):
    write_class_folders(tmp_path / "pets", {"bird": 30, "cat": 30, "dog": 30})
    for name in ("a", "b"):
        argv = run_args(tmp_path / "pets", tmp_path, "--dataset", "folder", "--lr", "0.05" if name == "a" else "0.01",
                        name=name, batchsize=16)
        assert experiments.main(argv) == 0
    printed = capsys.readouterr().out
    assert "no test set (empty test columns)" in printed and "test       –" in printed
    record = records.read_record(record_path(tmp_path, name="a"))
    assert record.meta["data"]["test_size"] == 0
    assert all(math.isnan(row["test_acc"]) and math.isnan(row["test_loss"]) for row in record.rows)
    assert analysis_cli.main([str(tmp_path / "results")]) == 0
    report = capsys.readouterr().out
    assert "oracle, highest test accuracy" in report and "left out" not in report
    assert analysis_cli.main([str(tmp_path / "results"), "--pick", "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    assert chosen["run"] in ("a_cnn_2_0.05", "b_cnn_2_0.01") and chosen["values"]["test_acc"] is None
    assert analysis_cli.main([str(tmp_path / "results"), "--regret"]) == 2  # regret needs test accuracy
    assert "needs a population of at least 4 runs with training accuracy, zeta and test accuracy" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# --pick on records with known values


def write_runs(folder, runs: dict[str, tuple[float, float, float | None]], test: bool = True):
    """Two-epoch records of `runs`: name -> (training accuracy, ζ, noisy hold-out accuracy or None);
    the test accuracy is 50 + the hold-out accuracy / 10 (or empty without a test set)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (train_acc, zeta, holdout) in runs.items():
        meta = {"run": {"name": name, "checkpoint": f"{name}.pt"}, "args": {"checkpoint_dir": "ckpt", "seed": 0},
                "data": {"dataset": "folder", "train_size": 100, "test_size": 10 if test else 0},
                "noise": {"type": "given", "corrupt_prob": None, "ground_truth": False},
                "status": {"finished": True}}
        rows = [{"epoch": epoch, "phi_before": 2.0, "phi_after": 2.0 - zeta, "train_acc": train_acc,
                 "susceptibility": zeta if epoch else math.nan,
                 records.NOISY_HOLDOUT_ACC: holdout if holdout is not None else math.nan,
                 "test_acc": 50 + (holdout or 0) / 10 if test else math.nan} for epoch in (0, 1)]
        records.write_record(folder / f"{name}.csv", records.RunRecord(meta, rows))
    return folder


def test_pick_takes_the_highest_noisy_holdout_accuracy_where_every_run_has_it(tmp_path):
    folder = write_runs(tmp_path, {"r1": (90, 0.1, 40), "r2": (95, 0.3, 60), "r3": (50, 0.05, 30), "r4": (70, 0.2, 50)})
    chosen = pick.recommend(load_runs(folder).table, folder)
    assert (chosen["run"], chosen["rule"]) == ("r2", pick.HOLDOUT)
    assert chosen["checkpoint"] == "ckpt/r2.pt" and chosen["record"] == str(folder / "r2.csv")
    # Region 1 (train above 76.25, zeta below 0.1625): r1; zeta alone: r3; training accuracy alone: r2
    assert chosen["other_rules"] == {pick.PAPER: "r1", "zeta": "r3"}
    assert chosen["warnings"] == []


def test_pick_falls_back_to_the_papers_rule_and_warns_below_the_measured_size(tmp_path):
    runs = {f"r{i}": (60 + i, 0.1 + 0.01 * i * (-1) ** i, None) for i in range(6)}
    folder = write_runs(tmp_path, runs, test=False)
    chosen = pick.recommend(load_runs(folder).table, folder)
    assert chosen["rule"] == pick.PAPER and chosen["values"]["test_acc"] is None
    above = {name: value for name, value in runs.items() if value[0] > np.mean([v[0] for v in runs.values()])}
    region_1 = [name for name, value in above.items() if value[1] < np.mean([v[1] for v in runs.values()])]
    assert chosen["run"] == max(region_1, key=lambda name: runs[name][0])
    assert chosen["warnings"] == [w for w in chosen["warnings"] if "from 12 runs on" in w] and chosen["warnings"]


def test_pick_names_no_size_warning_from_the_measured_size_and_warns_below_four(tmp_path):
    many = write_runs(tmp_path / "many", {f"r{i:02}": (50 + i, 0.1 + 0.01 * (i % 3), None) for i in range(12)})
    assert not [w for w in pick.recommend(load_runs(many).table, many)["warnings"] if "only" in w]
    few = write_runs(tmp_path / "few", {"a": (50, 0.1, 30), "b": (60, 0.2, 40), "c": (55, 0.3, 20)})
    warnings = pick.recommend(load_runs(few).table, few)["warnings"]
    assert len(warnings) == 1 and "only 3 runs: no rule was measured on fewer than 4" in warnings[0]


def test_pick_prints_one_run_as_text_or_json(tmp_path, capsys):
    folder = write_runs(tmp_path, {"r1": (90, 0.1, 40), "r2": (95, 0.3, 60), "r3": (50, 0.05, 30), "r4": (70, 0.2, 50)})
    assert analysis_cli.main([str(folder), "--pick"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("pick: r2 (") and "checkpoint: ckpt/r2.pt" in text and "why: every run recorded" in text
    assert analysis_cli.main([str(folder), "--pick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == "ckpt/r2.pt"
    assert analysis_cli.main([str(folder), "--json"]) == 2
    assert capsys.readouterr().err.strip() == "analysis: error: --json goes with --pick; add --pick"


def smallest_reliable_size(shares: pd.Series) -> int:
    """The smallest m from which on every population's share of good picks is `RELIABLE_SHARE` or more."""
    sizes = sorted(shares.index)
    return next(m for m in sizes if all(shares[n] >= pick.RELIABLE_SHARE for n in sizes if n >= m))


@pytest.fixture(scope="module")
def measured_shares() -> dict[str, pd.DataFrame]:
    """Per committed population of docs/REPRODUCTION.md: the share (%) of draws within 1 point of
    the best, by size m (4 to 16, drawn within each seed's runs) and rule."""
    return {population: regret_study(seed_values(load_runs(ROOT / "docs" / "records" / population).table),
                                     sizes=list(range(4, 17)))["within"].unstack()
            for population in ("memorization_symmetric", "memorization_cifar10n", "probe_study")}


def test_the_reliable_sizes_are_those_measured_on_the_committed_populations(measured_shares):
    """`RELIABLE_FROM` recomputed from the committed records: the worst population decides."""
    frames = list(measured_shares.values())
    worst = frames[0]
    for frame in frames[1:]:
        worst = np.minimum(worst, frame)
    for rule in (pick.HOLDOUT, pick.PAPER):
        assert smallest_reliable_size(worst[rule]) == pick.RELIABLE_FROM[rule], rule


def test_the_shares_the_page_and_the_rule_cite_are_the_measured_ones(measured_shares):
    def span(frames, rule, sizes) -> str:
        shares = pd.concat([frame.loc[sizes, rule] for frame in frames]).round()
        return f"{shares.min():.0f} to {shares.max():.0f} %"

    symmetric = [measured_shares["memorization_symmetric"], measured_shares["probe_study"]]
    every = list(measured_shares.values())
    cited = [span(every, pick.HOLDOUT, list(range(4, 17))), span(symmetric, pick.PAPER, [4, 5, 6, 7, 8]),
             span([measured_shares["memorization_cifar10n"]], pick.PAPER, [4, 5, 6, 7, 8]),
             f"{pd.concat([f.loc[12:, pick.PAPER] for f in every]).round().min():.0f} % or more"]
    page = " ".join((ROOT / "docs" / "PRACTITIONERS.md").read_text().split())
    docstring = " ".join(pick.__doc__.split())
    for text in cited:
        assert text in page and text in docstring, text


# --------------------------------------------------------------------------------------------------
# The figures


def test_the_regions_figure_names_no_run_and_holds_no_table(tmp_path):
    from analysis import figures
    from analysis.selection import select_models

    runs = {"memo_seed0_s0.25_sgd_cnn_60_0.05": (90, 0.1, 40), "r2": (95, 0.3, 60), "r3": (50, 0.05, 30), "r4": (70, 0.2, 50)}
    figure = figures.plot_regions(select_models(load_runs(write_runs(tmp_path, runs)).table))
    main, colorbar = figure.axes
    labels = [text.get_text() for text in main.get_legend().get_texts()]
    assert labels[-1] == "Region 1 pick: its highest training accuracy (54.00 % test accuracy)"
    assert not any(name in label for label in labels for name in runs)
    assert not main.tables and colorbar.get_ylabel() == "test accuracy (%)"
    corners = sorted(text.get_text() for text in main.texts)
    assert corners[0] == "Region 1: 1 run\ntest 54.00 %"


def test_the_signals_figure_draws_a_panel_only_for_the_signals_recorded(tmp_path):
    from analysis import figures

    without_holdout = write_runs(tmp_path / "a", {f"r{i}": (50 + i, 0.1 * i, None) for i in range(1, 5)})
    labels = [axes.get_xlabel() for axes in figures.plot_signals(load_runs(without_holdout).table).axes]
    assert labels == ["training accuracy (↑ better)", "susceptibility ζ (↓ better)"]
    with_holdout = write_runs(tmp_path / "b", {f"r{i}": (50 + i, 0.1 * i, 10 * i) for i in range(1, 5)})
    assert len(figures.plot_signals(load_runs(with_holdout).table).axes) == 3


# --------------------------------------------------------------------------------------------------
# Smaller items: the CIFAR-10N messages, AdamW


def test_a_cifar10n_noise_type_without_its_file_points_to_the_data_page():
    from runner import command_line

    with pytest.raises(UsageError, match=r"CIFAR-10_human.pt \(see docs/DATA.md\)$"):
        command_line.parse(["--model", "cnn", "--noise-type", "cifar10n-worst"])


def test_the_full_label_file_on_a_subset_names_the_subset_file_beside_it(tmp_path):
    from conftest import human_label_arrays
    from runner import label_noise

    full = human_label_arrays(np.arange(50) % 10)
    np.savez(tmp_path / "CIFAR-10_human.npz", **full)
    with pytest.raises(DataError, match="docs/DATA.md shows how to write them"):
        label_noise.human_labels(tmp_path / "CIFAR-10_human.npz", "cifar10n-worst", np.arange(20) % 10)
    np.savez(tmp_path / "CIFAR-10_human_subset.npz", **{k: v[:20] for k, v in full.items()})
    with pytest.raises(DataError) as error:
        label_noise.human_labels(tmp_path / "CIFAR-10_human.npz", "cifar10n-worst", np.arange(20) % 10)
    assert f"try --noise-file {tmp_path / 'CIFAR-10_human_subset.npz'}" in str(error.value)


@pytest.mark.e2e
def test_adamw_trains_with_torchs_decoupled_weight_decay(synthetic_cifar10, tmp_path):
    assert experiments.main(run_args(synthetic_cifar10, tmp_path, "--optimizer", "adamw", "--lr", "0.001",
                                     "--numsamples", "64")) == 0
    state = checkpoints.load_checkpoint(checkpoint_path(tmp_path, lr="0.001"))
    assert state["config"]["optimizer"] == "adamw" and state["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    assert "exp_avg" in next(iter(state["optimizer"]["state"].values()))
    assert predict.load_model(checkpoint_path(tmp_path, lr="0.001")).class_names == [str(i) for i in range(10)]


def test_a_folder_without_images_or_lists_stops_the_run_with_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    assert experiments.main(run_args(tmp_path / "pets", tmp_path, "--dataset", "folder")) == 2
    err = capsys.readouterr().err
    assert err == f"experiments.py: error: the class folders of {tmp_path / 'pets'} hold no images " \
                  f"({', '.join(datasets.IMAGE_EXTENSIONS)})\n"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["cat", "pets"]
