"""A full disk, a folder made read-only mid-run, or a file where a folder should be: one line naming
the file and the cause, a non-zero exit, the locks released and the previous epoch's files intact.

The full disk and the read-only folder are a small tmpfs, which needs root to mount; elsewhere
those tests are skipped with one line."""
import os
import subprocess

import pytest
import torch

import analysis.cli
import experiments
from runner import checkpoints
from runner import safe_files
from conftest import run_args

SMALL_DISK = "4m"


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of its own, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(folder) -> None:
    """Take every free byte of the file system of `folder`."""
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(bytes(1 << 16))
        except OSError:
            pass


def make_read_only(folder) -> None:
    """Make the run's folders under `folder` read-only: a read-only view of each is mounted over it
    (a file system with files open for writing, such as the locks, cannot be remounted read-only)."""
    for name in ("results", "checkpoint"):
        subprocess.run(["mount", "--bind", str(folder / name), str(folder / name)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder / name)], check=True)


def make_writable(folder) -> None:
    for name in ("results", "checkpoint"):
        subprocess.run(["umount", str(folder / name)], check=True)


def files(folder) -> dict:
    """Every file under `folder` but the filler and the lock files, with its bytes."""
    return {path: path.read_bytes() for path in folder.rglob("*")
            if path.is_file() and path.name != "filler" and path.suffix != ".lock"}


def at_epoch(monkeypatch, epoch: int, act) -> dict:
    """Do `act` as in-process runs reach `epoch`; returns the files under the folder just before it."""
    one_epoch, before = experiments.probe_train_and_test, {}

    def acting(run, current):
        if current == epoch:
            folder = experiments.Path(run.config.results_dir).parent
            before.update(files(folder))
            act(folder)
        return one_epoch(run, current)

    monkeypatch.setattr(experiments, "probe_train_and_test", acting)
    return before


def assert_one_line(err: str, *parts: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


@pytest.mark.e2e
def test_a_full_disk_keeps_the_previous_epoch_and_says_so_in_one_line(synthetic_cifar10, small_disk,
                                                                      monkeypatch, capsys):
    before = at_epoch(monkeypatch, 1, fill)
    argv = run_args(synthetic_cifar10, small_disk, "--numsamples", "64", epochs=3)
    assert experiments.main(argv) == experiments.USAGE
    assert_one_line(capsys.readouterr().err, "No space left on device", str(small_disk),
                    "the 1 completed epochs are kept")
    assert files(small_disk) == before and len(before) == 4  # record, checkpoint and the two beside it
    assert not list(small_disk.rglob("*.lock"))


@pytest.mark.e2e
def test_a_full_disk_at_the_first_save_writes_nothing(synthetic_cifar10, small_disk, monkeypatch, capsys):
    at_epoch(monkeypatch, 0, fill)
    assert experiments.main(run_args(synthetic_cifar10, small_disk, "--numsamples", "64")) == experiments.USAGE
    assert_one_line(capsys.readouterr().err, "No space left on device", "nothing was written")
    assert files(small_disk) == {} and not list(small_disk.rglob("*.lock"))


@pytest.mark.e2e
def test_a_folder_made_read_only_mid_run_stops_in_one_line_and_releases_the_locks(
        synthetic_cifar10, small_disk, monkeypatch, capsys):
    before = at_epoch(monkeypatch, 1, make_read_only)
    argv = run_args(synthetic_cifar10, small_disk, "--numsamples", "64", epochs=3)
    assert experiments.main(argv) == experiments.USAGE
    assert_one_line(capsys.readouterr().err, "Read-only file system", "the 1 completed epochs are kept")
    assert files(small_disk) == before
    make_writable(small_disk)
    monkeypatch.undo()
    assert experiments.main([*argv, "--resume"]) == 0  # the locks left in the read-only folder were released


@pytest.mark.e2e
@pytest.mark.parametrize("flag", ["--results-dir", "--checkpoint-dir", "--tensorboard"])
def test_a_file_given_as_a_folder_is_refused_in_one_line(synthetic_cifar10, tmp_path, capsys, flag):
    pytest.importorskip("tensorboard")
    (tmp_path / "file").write_text("")
    argv = run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", flag, str(tmp_path / "file" / "runs"))
    assert experiments.main(argv) == experiments.USAGE
    assert_one_line(capsys.readouterr().err, f"{tmp_path / 'file'} is a file, not a folder")
    assert not list(tmp_path.rglob("*.lock"))


def test_a_file_given_as_the_figures_folder_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    folder = "docs/records/pilot_n2000"
    assert analysis.cli.main([folder, "--figures", str(tmp_path / "file"), "--formats", "png"]) == 2
    assert_one_line(capsys.readouterr().err, f"{tmp_path / 'file'} is a file, not a folder")


def test_an_unwritable_file_names_the_folder_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(safe_files.UnwritableFile, match=f"cannot write {tmp_path}/file/a/b: {tmp_path}/file is a file"):
        safe_files.atomic_write(tmp_path / "file" / "a" / "b", lambda f: f.write(b"x"))


def test_a_checkpoint_on_a_full_disk_is_an_unwritable_file(small_disk):
    fill(small_disk)
    path = small_disk / "c.pt"
    with pytest.raises(safe_files.UnwritableFile, match=f"cannot write {path}: No space left on device"):
        checkpoints.save_checkpoint(path, {"weights": torch.zeros(1 << 16)})
    assert [entry.name for entry in small_disk.iterdir()] == ["filler"]
