"""Bad input leaves the disk as it was: a folder dataset refused for its labels or a missing image
writes no image caches, and a --filename or --modelfilename holding a path separator is refused
before anything is written, so no run writes outside its folders."""
import os
from pathlib import Path

import pytest

import experiments
from conftest import run_args, write_image_folder

CACHES = ("train_32px.npz", "test_32px.npz")


def files_under(folder: Path) -> set[Path]:
    return {Path(root) / name for root, _, names in os.walk(folder) for name in names}


def refused(argv: list[str], capsys) -> str:
    assert experiments.main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message
    return message


def relabel(folder: Path, label: int) -> None:
    """Give every image of both lists the same label."""
    for split in ("train", "test"):
        lines = (folder / f"{split}.txt").read_text().splitlines()
        (folder / f"{split}.txt").write_text("".join(f"{line.rsplit(maxsplit=1)[0]} {label}\n" for line in lines))


def single_class(folder: Path) -> list[str]:
    relabel(folder, 0)
    return []


def missing_test_image(folder: Path) -> list[str]:
    (folder / "images" / "test" / "1" / "13.jpg").unlink()
    return []


def too_few_classes(folder: Path) -> list[str]:
    return ["--num_classes", "2"]


SPOILS = {"a single class": (single_class, "the labels hold a single class (0)"),
          "a missing test image": (missing_test_image, "13.jpg (listed in"),
          "--num_classes below the labels": (too_few_classes, "the labels go up to 2, but there are 2 classes")}


@pytest.mark.parametrize("case", SPOILS)
def test_a_refused_folder_dataset_leaves_no_image_caches(tmp_path, capsys, case):
    folder = write_image_folder(tmp_path / "images", train=12, test=18)
    spoil, expected = SPOILS[case]
    extra = spoil(folder)
    before = files_under(folder)
    message = refused(run_args(folder, tmp_path / "out", "--dataset", "folder", *extra), capsys)
    assert expected in message
    assert files_under(folder) == before and not any((folder / cache).exists() for cache in CACHES)
    assert not (tmp_path / "out").exists()


def test_a_good_folder_dataset_still_gets_its_caches(tmp_path):
    folder = write_image_folder(tmp_path / "images", train=12, test=6)
    assert experiments.main(run_args(folder, tmp_path / "out", "--dataset", "folder", "--epochs", "1",
                                     "--batchsize", "4")) == 0
    assert all((folder / cache).is_file() for cache in CACHES)


@pytest.mark.parametrize("flag, name, what", [
    ("--filename", "../../x", "a path separator (/)"),
    ("--filename", "/tmp/x", "a path separator (/)"),
    ("--modelfilename", "sub/x", "a path separator (/)"),
    ("--modelfilename", "..\\x", "a path separator (\\)"),
    ("--filename", "x\0y", "a NUL character"),
])
def test_a_run_name_holding_a_path_is_refused_before_anything_is_written(tmp_path, capsys, flag, name, what):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    message = refused(run_args(tmp_path / "no-data", work / "out", flag, name), capsys)
    assert message == (f"experiments.py: error: {flag} {name!r} holds {what}; give a plain name: the run's "
                       f"files go into --results-dir and --checkpoint-dir")
    assert files_under(tmp_path) == set()
