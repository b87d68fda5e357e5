"""What a killed run leaves behind: the temporary files of its interrupted writes."""
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, interrupt_at_epoch, run_args

import experiments
import records


def test_a_resumed_run_removes_the_temporary_files_of_its_killed_writes_and_no_others(
        tmp_path, synthetic_cifar10, monkeypatch):
    argv = run_args(synthetic_cifar10, tmp_path)
    paths = experiments.checkpoints.run_paths(experiments.command_line.parse(argv))
    interrupt_at_epoch(monkeypatch, 1)
    assert experiments.main(argv) == 130
    monkeypatch.undo()
    for path in (paths.record, paths.checkpoint):
        assert killed_mid_write(path).exists()
    others = [tmp_path / "results" / f".t_cnn_2_0.5.csv.{'0' * 16}.tmp",  # another run's
              paths.checkpoint.with_name(f".{paths.checkpoint.name}.old.{'0' * 16}.tmp")]  # another file's
    for other in others:
        other.write_bytes(b"not ours")

    assert experiments.main([*argv, "--resume"]) == 0
    assert records.read_record(paths.record).meta["status"]["finished"]
    temporaries = sorted(tmp_path.rglob("*.tmp"))
    assert temporaries == sorted(others)


def killed_mid_write(path: Path) -> Path:
    """SIGKILL a process in the middle of its atomic write of `path`; returns the temporary file left."""
    before = set(path.parent.iterdir())
    writer = ("import sys, time, records\n"
              "def write(f):\n    f.write(b'partial'); f.flush(); print('writing', flush=True); time.sleep(600)\n"
              f"records.atomic_write({str(path)!r}, write)\n")
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "writing\n"
    process.kill()
    process.wait()
    left, = set(path.parent.iterdir()) - before
    return left
