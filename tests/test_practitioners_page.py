"""The whole path of docs/PRACTITIONERS.md, run as the page gives it: a folder of images in class
folders with part of its labels wrong -> a sweep -> `--pick --json` -> load the model -> label a folder
of images. On a folder built from the real CIFAR-10 subset and on synthetic images; the page's
commands, sweep file and code are these, word for word."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import datasets
from analysis import pick
from conftest import ROOT, shared_folder, synthetic_images

PAGE = ROOT / "docs" / "PRACTITIONERS.md"
SWEEP_FILE = """\
[sweep]
name = "pets"
results_dir = "results/pets"
checkpoint_dir = "checkpoint/pets"

[fixed]
dataset = "folder"
data_dir = "pets"
noisy_holdout = 60
model = "cnn"
epochs = 2
batchsize = 32

[grid]
scale = [0.125, 0.25]
lr = [0.05, 0.01]
"""
COMMANDS = [
    "python sweep.py pets.toml --jobs 2",
    "python -m analysis results/pets --pick",
    "python -m analysis results/pets --pick --json > pick.json",
    "python -m runner.predict pick.json pets/test --output predictions.csv",
]
LOAD = """\
import json
from PIL import Image
from runner.predict import load_model

loaded = load_model(json.load(open("pick.json"))["checkpoint"])
image = Image.open("pets/test/cat/cat0.png")
print(loaded.class_names[loaded.predict([image])[0]])
"""
WRONG_SHARE = 0.3  # of the training images, moved to another class's folder


def write_split(root, images: np.ndarray, labels: np.ndarray, names: list[str], rng: np.random.Generator,
                wrong_share: float = 0.0) -> np.ndarray:
    """Images (n, 3, 32, 32) as `root/<class name>/<class name><i>.png`, a `wrong_share` of them in
    another class's folder; returns the labels the folders give."""
    from PIL import Image

    given = labels.copy()
    wrong = rng.random(len(labels)) < wrong_share
    given[wrong] = (labels[wrong] + rng.integers(1, len(names), wrong.sum())) % len(names)
    counts = dict.fromkeys(range(len(names)), 0)
    for image, label, folder in zip(images, labels, given):
        (root / names[folder]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(root / names[folder] / f"{names[label]}{counts[label]}.png")
        counts[label] += 1
    return given


def real_subset(count: int, test_count: int):
    """The first images of the real CIFAR-10 subset's first batch and test batch, and the class names."""
    folder = shared_folder("cifar-10-batches-py", "the real CIFAR-10 subset")
    train = datasets.read_batch(folder / "data_batch_1", "labels")
    test = datasets.read_batch(folder / "test_batch", "labels")
    with open(folder / "batches.meta", "rb") as f:
        names = pickle.load(f, encoding="latin1")["label_names"]
    return (train.images[:count], train.labels[:count]), (test.images[:test_count], test.labels[:test_count]), names


def synthetic_subset(count: int, test_count: int):
    """Synthetic class patterns (conftest's) for three classes."""
    rng = np.random.default_rng(5)
    sets = []
    for n in (count, test_count):
        labels = rng.integers(0, 3, n)
        sets.append((synthetic_images(labels, rng).reshape(n, 3, 32, 32), labels))
    return sets[0], sets[1], ["bird", "cat", "dog"]


def shell(command: str, cwd) -> subprocess.CompletedProcess:
    """A command of the page, run by bash in `cwd` as if there were the repository root: `python`
    is this interpreter, and `sweep.py` and the modules come from the checkout."""
    env = {**os.environ, "PATH": f"{cwd / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def prepare(cwd, subset) -> list[str]:
    """The page's starting point in `cwd`: pets/train/<class>/ (noisy), pets/test/<class>/, the
    sweep file, and `python` and `sweep.py` as from the repository root."""
    (train_images, train_labels), (test_images, test_labels), names = subset
    rng = np.random.default_rng(0)
    given = write_split(cwd / "pets" / "train", train_images, train_labels, names, rng, WRONG_SHARE)
    assert 0.2 < (given != train_labels).mean() < 0.4
    write_split(cwd / "pets" / "test", test_images, test_labels, names, rng)
    (cwd / "pets.toml").write_text(SWEEP_FILE)
    (cwd / "bin").mkdir()
    (cwd / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (cwd / "bin" / "python").chmod(0o755)
    (cwd / "sweep.py").symlink_to(ROOT / "sweep.py")
    return sorted(names)


def run_the_page(cwd, subset) -> None:
    classes = prepare(cwd, subset)
    printed = {}
    for command in COMMANDS:
        done = shell(command, cwd)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        printed[command] = done.stdout.splitlines()
    trained = len(subset[0][1]) - 60  # the noisy hold-out images are set aside
    pick_lines = printed["python -m analysis results/pets --pick"]
    assert pick_lines[0].startswith("pick: pets_s0.") and pick_lines[1].startswith("checkpoint: checkpoint/pets/")
    assert pick_lines[2] == f"rule: highest noisy hold-out accuracy, among 4 runs of folder/given/n{trained}"
    assert pick_lines[3].startswith("why: every run recorded its noisy hold-out accuracy")
    chosen = json.loads((cwd / "pick.json").read_text())
    assert chosen["rule"] == pick.HOLDOUT and chosen["runs"] == 4 and chosen["warnings"] == []
    assert (cwd / chosen["checkpoint"]).is_file() and (cwd / chosen["record"]).is_file()
    loading = shell(f"python - <<'EOF'\n{LOAD}EOF", cwd)
    assert loading.returncode == 0, loading.stderr
    assert loading.stdout.strip() in classes
    predictions = pd.read_csv(cwd / "predictions.csv").set_index("path")
    saved = pd.read_csv(cwd / chosen["record"].replace(".csv", ".test.csv.gz"))
    _, test_listing, stored_classes = datasets.folder_listings(cwd / "pets")
    assert list(stored_classes) == classes
    paths = [name.removeprefix("test/") for name in test_listing.names]
    assert sorted(paths) == sorted(predictions.index)
    assert predictions.loc[paths, "predicted"].tolist() == saved["predicted"].tolist()


@pytest.mark.e2e
def test_the_page_runs_on_a_folder_built_from_the_real_cifar10_subset(tmp_path):
    run_the_page(tmp_path, real_subset(400, 100))


@pytest.mark.e2e
def test_the_page_runs_on_synthetic_images(tmp_path):
    run_the_page(tmp_path, synthetic_subset(300, 60))


def test_the_page_gives_the_tests_commands_sweep_file_and_code():
    text = PAGE.read_text()
    for block in (*COMMANDS, SWEEP_FILE, LOAD):
        assert block in text, block


def test_the_page_is_linked_from_the_first_screen_of_the_readme():
    first_screen = (ROOT / "README.md").read_text().splitlines()[:40]
    assert any("docs/PRACTITIONERS.md" in line for line in first_screen)
