"""`pip install .` makes the metric importable from anywhere, and the example loop runs as a copy in a
project of its own."""
import importlib.util
import math
import os
import pickle
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import datasets
from conftest import ROOT, RunsCode


def tracked_files() -> list[str]:
    """The repository's files as a clone has them: tracked or new, minus what git ignores."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


def copy_of_the_repository(destination: Path) -> Path:
    """The repository as a clone has it, copied to `destination`, so that a build leaves the checkout
    as it was."""
    for name in tracked_files():
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination / name)
    return destination


@pytest.mark.e2e
def test_the_wheel_holds_the_susceptibility_package_alone(tmp_path):
    """The wheel that `pip install .` builds and installs, built offline with this interpreter's
    setuptools."""
    source = copy_of_the_repository(tmp_path / "source")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--wheel-dir", str(tmp_path / "wheels"), str(source)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names}
    metadata = {name for name in top_level if name.endswith(".dist-info")}
    assert len(metadata) == 1 and top_level - metadata == {"susceptibility"}
    assert {"susceptibility/__init__.py", "susceptibility/probe.py", "susceptibility/zeta.py"} <= set(names)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_clean_install_imports_the_api_from_anywhere(tmp_path):
    """Installs a copy of the repository into a fresh virtual environment, offline: the environment
    reaches torch and the build backend through a .pth file naming this interpreter's packages."""
    source = copy_of_the_repository(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    Path(venv_site, "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", str(source)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = ("import importlib.util, susceptibility, torch; "
             "z = susceptibility.Susceptibility(torch.zeros(8, 3, 4, 4), num_classes=2, batch_size=4); "
             "print(susceptibility.__file__); print(importlib.util.find_spec('datasets'))")
    result = subprocess.run([python, "-c", check], capture_output=True, text=True, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    module_file, datasets_spec = result.stdout.split()
    assert Path(module_file).parent == Path(venv_site)  # the installed copy, not the checkout
    assert datasets_spec == "None"  # only the metric is installed, no suite module


EXAMPLE = ROOT / "examples" / "own_training_loop.py"


@pytest.fixture
def copied_example(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Runs a copy of the example loop in a project of its own, where of this repository only the
    susceptibility package is importable (as after `pip install .`)."""
    project, packages = tmp_path / "project", tmp_path / "packages"
    project.mkdir(), packages.mkdir()
    shutil.copy(EXAMPLE, project)
    (packages / "susceptibility").symlink_to(ROOT / "susceptibility", target_is_directory=True)
    environment = {**os.environ, "PYTHONPATH": str(packages)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=project,
                              env=environment, timeout=300)
    return run


@pytest.mark.e2e
def test_the_copied_example_loop_prints_memorization_and_zeta_every_epoch(copied_example, synthetic_cifar10):
    present = copied_example("-c", "import importlib.util as u; "
                                   "print([u.find_spec(name) is not None for name in ('susceptibility', 'datasets', 'runner')])")
    assert present.stdout.strip() == "[True, False, False]", present.stderr
    result = copied_example("own_training_loop.py", "--data-dir", str(synthetic_cifar10), "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "synthetic" not in result.stdout
    epochs = re.findall(r"^epoch (\d+) .* memorization \(wrong labels fitted\)\s+[\d.]+% .* r ([-+]\d+\.\d+)\s+zeta (\S+)$",
                        result.stdout, re.MULTILINE)
    assert [int(epoch) for epoch, _, _ in epochs] == [0, 1]
    (_, r0, zeta0), (_, r1, zeta1) = epochs
    assert math.isnan(float(zeta0)) and float(zeta1) == pytest.approx(float(r1), abs=1e-4)


EXAMPLE_REFUSALS = {
    "missing-folder": (["--data-dir", "/nonexistent"], "--data-dir /nonexistent is not a folder"),
    "folder-without-batches": (["--data-dir", "."], "holds no CIFAR-10 training batches"),
    "zero-epochs": (["--epochs", "0"], "argument --epochs: must be a whole number from 1, got 0"),
    "fewer-images-than-a-batch": (["--images", "64"], "argument --images: must be a whole number from 128, got 64"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("argv, message", EXAMPLE_REFUSALS.values(), ids=EXAMPLE_REFUSALS.keys())
def test_the_copied_example_refuses_bad_input_in_one_line(copied_example, argv, message):
    result = copied_example("own_training_loop.py", *argv)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def example_module():
    spec = importlib.util.spec_from_file_location("own_training_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("data", ["synthetic_cifar10", "real_cifar10"])
def test_the_example_reads_the_training_batches_as_the_suite_does(data, request):
    data_dir = request.getfixturevalue(data)
    images, labels = example_module().read_cifar_training_images(data_dir)
    train, _ = datasets.load_cifar(data_dir)
    assert np.array_equal(images, train.images) and np.array_equal(labels, train.labels)


def test_the_example_refuses_a_batch_that_would_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": RunsCode(tmp_path / "ran"), "labels": [0]}))
    with pytest.raises(ValueError, match="pathlib.Path.touch has no place in a CIFAR batch"):
        example_module().read_cifar_training_images(tmp_path)
    assert not (tmp_path / "ran").exists()
