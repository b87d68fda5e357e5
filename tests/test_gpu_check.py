"""tools/gpu_check.py, the self-check to run first on a new machine, run as it runs on a machine without
a GPU: at small sizes, every check that makes sense on a CPU passing."""
import subprocess
import sys

import pytest

from conftest import ROOT

CHECK = [sys.executable, "-m", "tools.gpu_check"]


@pytest.mark.e2e
def test_the_self_check_passes_on_this_cpu():
    result = subprocess.run([*CHECK, "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    statuses = {(line[:4], line[6:17].strip()) for line in lines[:-1]}
    assert result.returncode == 0, result.stdout + result.stderr
    assert {("PASS", name) for name in ("data", "probe", "determinism", "syncs")} <= statuses
    assert {status for status, name in statuses if name in ("throughput", "precision")} <= {"PASS", "WARN"}
    assert {status for status, name in statuses if name == "environment"} == {"INFO"}
    assert not any(line.startswith("FAIL") for line in lines) and " checks passed, 0 failed, " in lines[-1]
    assert "0 per batch" in next(line for line in lines if line.startswith("PASS  syncs"))
    assert sum(line.startswith("PASS  determinism") and "two fresh processes" in line for line in lines) >= 2


@pytest.mark.e2e
@pytest.mark.parametrize("extra, message", [(["--only", "probe,speed"], "--only probe,speed: no check speed"),
                                            (["--device", "tpu"], "--device tpu is not a device")])
def test_bad_input_is_one_line(extra, message):
    result = subprocess.run([*CHECK, *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
