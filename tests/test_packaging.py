"""`pip install .` makes the metric importable from anywhere, and the example loop runs."""
import math
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA


def tracked_files() -> list[str]:
    """The repository's files as a clone has them: tracked or new, minus what git ignores."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_clean_install_imports_the_api_from_anywhere(tmp_path):
    """Installs a copy of the repository into a fresh virtual environment, offline: the environment
    reaches torch and the build backend through a .pth file naming this interpreter's packages."""
    source = tmp_path / "source"
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
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


@pytest.mark.e2e
def test_the_example_loop_prints_memorization_and_zeta_every_epoch(tmp_path, synthetic_cifar10):
    data_dir = SHARED_DATA if (SHARED_DATA / "cifar-10-batches-py").is_dir() else synthetic_cifar10
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "own_training_loop.py"), str(data_dir), "2"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "synthetic" not in result.stdout
    epochs = re.findall(r"^epoch (\d+) .* memorization \(wrong labels fitted\)\s+[\d.]+% .* r ([-+]\d+\.\d+)\s+zeta (\S+)$",
                        result.stdout, re.MULTILINE)
    assert [int(epoch) for epoch, _, _ in epochs] == [0, 1]
    (_, r0, zeta0), (_, r1, zeta1) = epochs
    assert math.isnan(float(zeta0)) and float(zeta1) == pytest.approx(float(r1), abs=1e-4)


def test_the_example_loop_refuses_a_folder_without_cifar_batches(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "own_training_loop.py"), str(tmp_path), "1"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"own_training_loop.py: error: {tmp_path} holds no cifar-10-batches-py folder; give "
                             f"the folder above it, or no folder for synthetic images\n")
