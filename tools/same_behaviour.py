"""Check that a change of the code leaves what it computes unchanged, byte for byte.

    python -m tools.same_behaviour record /tmp/before      # on the old code
    python -m tools.same_behaviour record /tmp/after       # on the new code, same machine
    python -m tools.same_behaviour compare /tmp/before /tmp/after

`record` trains a set of small runs covering the paths of experiments.py (both data paths, SGD and
Adam, a run interrupted and resumed, a noisy hold-out with a held-out probe set, CIFAR-10N noise, a
folder dataset, a ResNet with a step schedule, two probe batches with extra probes) and keeps their
records, per-sample score and test prediction files and final weights; it then keeps the text
that `python -m analysis` and `tools/reproduction_tables.py` print for the committed populations
and the PNG figures `analysis` draws for them. Everything goes through the command
lines, so the same script records the old and the new code. `compare` reports every difference:
the columns both records have, apart from wall times (a column only the new recording has is an
addition, not a difference; one it lacks is), header sections (one only the new side has, of
`ADDED_SECTIONS`, is an addition), per-sample score and test prediction files (written
reproducibly: gzip without a time stamp), final weights, printed text and figure bytes. It exits 1
on any difference. Runs use one torch thread; compare only recordings made on the same machine.

It reads the real CIFAR-10 subset and its CIFAR-10N labels from ../shared/data (see --data-dir).
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from runner import records

POPULATIONS = {
    "memorization_symmetric": ["--compare", "sym_seed0_s0.25_sgd_cosine_resnet*",
                               "sym_seed0_s0.25_adam_cosine_cnn*",
                               "--curves", "sym_seed1_s0.125_sgd_cosine_cnn*"],
    "memorization_cifar10n": [],
    "pilot_n2000": [],
}
# Header sections that a recording may add without changing what a run computes.
ADDED_SECTIONS = {"command"}


def base_args(name: str, data_dir: Path, out: Path, epochs: int = 2) -> list[str]:
    """A tiny run: the 5-layer CNN at 1/8 width on 256 images, batch 64."""
    return ["--model", "cnn", "--scale", "0.125", "--numsamples", "256", "--batchsize", "64",
            "--epochs", str(epochs), "--lr", "0.05", "--seed", "5", "--data-dir", str(data_dir),
            "--device", "cpu", "--eval-batchsize", "500", "--results-dir", str(out / "records"),
            "--checkpoint-dir", str(out / "checkpoints"), "--filename", name]


def cases(data: Path, folder: Path, noise_file: Path, out: Path) -> dict[str, list[str]]:
    """The runs of a recording, by name."""
    return {
        "device_sgd": base_args("device_sgd", data, out),
        "loader_adam": base_args("loader_adam", data, out) + ["--data-path", "loader", "--workers", "0",
                                                              "--optimizer", "adam"],
        "holdout": base_args("holdout", data, out) + ["--noisy-holdout", "100", "--probe-source", "heldout"],
        "cifar10n": base_args("cifar10n", data, out) + ["--noise-type", "cifar10n-worst",
                                                        "--noise-file", str(noise_file)],
        "folder": base_args("folder", folder, out) + ["--dataset", "folder", "--numsamples", "48",
                                                      "--batchsize", "16"],
        "resnet_step": base_args("resnet_step", data, out) + ["--model", "resnet", "--scheduler", "step",
                                                              "--no-channels-last"],
        "probes": base_args("probes", data, out) + ["--noisy-holdout", "100", "--probe-batches", "2",
                                                    "--extra-probes", "train,heldout"],
    }


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """A command of the project in its root, one torch thread, output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)


def train(argv: list[str]) -> None:
    result = run([sys.executable, "experiments.py", *argv])
    if result.returncode != 0:
        raise SystemExit(f"experiments.py {' '.join(argv)} failed:\n{result.stderr}")


def train_interrupted_then_resumed(argv: list[str], record: Path) -> None:
    """Start a 3-epoch run, stop it with SIGINT once an epoch is saved, then resume it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "experiments.py", *argv], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while process.poll() is None and not saved_epochs(record):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate()
    if process.returncode not in (0, 130):
        raise SystemExit(f"the interrupted run failed:\n{errors}")
    train(argv + ["--resume"])


def saved_epochs(record: Path) -> int:
    try:
        return sum(1 for line in record.read_text().splitlines() if line[:1].isdigit())
    except OSError:
        return 0


def folder_dataset(cifar_dir: Path, target: Path) -> Path:
    """An image-folder dataset of the first CIFAR images as PNG files, listed with their labels."""
    import numpy as np
    from PIL import Image

    from datasets import load_cifar

    train, test = load_cifar(cifar_dir)
    for split, images, count in (("train", train, 64), ("test", test, 32)):
        lines = []
        for i in range(count):
            name = f"images/{split}/{i}.png"
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(images.images[i].transpose(1, 2, 0))).save(target / name)
            lines.append(f"{name} {images.labels[i] % 4}")
        (target / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return target


def record_runs(out: Path, data_dir: Path, noise_file: Path) -> None:
    folder = folder_dataset(data_dir, out / "work" / "folder_data")
    for name, argv in cases(data_dir, folder, noise_file, out).items():
        print(f"training {name}", flush=True)
        train(argv)
    print("training resumed (interrupted after its first saved epoch)", flush=True)
    argv = base_args("resumed", data_dir, out, epochs=3)
    train_interrupted_then_resumed(argv, out / "records" / "resumed_cnn_3_0.05.csv")
    train(base_args("uninterrupted", data_dir, out, epochs=3))


def record_analyses(out: Path) -> None:
    texts = out / "texts"
    texts.mkdir(parents=True, exist_ok=True)
    for population, extra in POPULATIONS.items():
        print(f"analysing {population}", flush=True)
        folder = f"docs/records/{population}"
        figures = out / "figures" / population
        analysis = run([sys.executable, "-m", "analysis", folder, "--per-seed", "--figures", str(figures),
                        "--formats", "png", *extra])
        tables = run([sys.executable, "-m", "tools.reproduction_tables", folder])
        for name, result in (("analysis", analysis), ("tables", tables)):
            text = result.stdout.replace(str(out), "<out>") + f"\n[exit {result.returncode}]\n"
            (texts / f"{population}.{name}.txt").write_text(text)


def record(out: Path, data_dir: Path, noise_file: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    record_runs(out, data_dir, noise_file)
    record_analyses(out)
    print(f"recorded into {out}")
    return 0


def record_parts(path: Path, out: Path) -> tuple[dict, list[str], list[dict]]:
    """A record's header sections (the recording's folder, in paths, as `<out>`), its columns and its
    rows without the timing columns."""
    record = records.read_record(path)
    meta = json.loads(json.dumps(record.meta).replace(str(out), "<out>"))
    columns = path.read_text().splitlines()
    header = next(line for line in columns if line and not line.startswith("#"))
    rows = records.rows_without_timings(record.rows)
    return meta, header.split(","), rows


def section_changes(old, new) -> list[str]:
    """How a header section changed: the values of the keys both have that differ, and keys that are
    gone (keys only the new section has are additions of the new code, not changes)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{old} vs {new}"]
    return [f"{key}: {old[key]!r} vs {new[key]!r}" if key in new else f"{key} is gone"
            for key in old if key not in new or old[key] != new[key]]


def compare_records(before: Path, after: Path) -> list[str]:
    differences = []
    names = sorted(p.name for p in (before / "records").glob("*.csv"))
    if names != sorted(p.name for p in (after / "records").glob("*.csv")):
        return ["the two recordings hold different records"]
    for name in names:
        meta_a, columns_a, rows_a = record_parts(before / "records" / name, before)
        meta_b, columns_b, rows_b = record_parts(after / "records" / name, after)
        common = [column for column in columns_a if column in columns_b and column not in records.TIMING_COLUMNS]
        if [c for c in columns_a if c in common] != [c for c in columns_b if c in common]:
            differences.append(f"{name}: the columns both records have are in another order")
        removed = [column for column in columns_a if column not in columns_b]
        if removed:
            differences.append(f"{name}: columns {', '.join(removed)} are gone")
        if json.dumps([{c: row[c] for c in common} for row in rows_a]) != \
                json.dumps([{c: row[c] for c in common} for row in rows_b]):
            differences.append(f"{name}: epoch rows differ")
        for section in sorted(set(meta_a) | set(meta_b)):
            if section in meta_a and section in meta_b:
                differences += [f"{name}: header section {section!r}: {change}"
                                for change in section_changes(meta_a[section], meta_b[section])]
            elif section not in ADDED_SECTIONS:
                differences.append(f"{name}: header section {section!r} only on one side")
    return differences


def compare_weights(before: Path, after: Path) -> list[str]:
    import torch

    differences = []
    for path in sorted((before / "checkpoints").glob("*.pt")):
        other = after / "checkpoints" / path.name
        a = torch.load(path, map_location="cpu", weights_only=True)["model"]
        b = torch.load(other, map_location="cpu", weights_only=True)["model"]
        if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
            differences.append(f"{path.name}: final weights differ")
    return differences


def compare_files(before: Path, after: Path, pattern: str) -> list[str]:
    differences = []
    files = sorted(p.relative_to(before) for p in before.glob(pattern))
    other = sorted(p.relative_to(after) for p in after.glob(pattern))
    for missing in sorted(set(files) ^ set(other)):
        differences.append(f"{missing}: only in one recording")
    for path in sorted(set(files) & set(other)):
        if not filecmp.cmp(before / path, after / path, shallow=False):
            differences.append(f"{path}: differs")
    return differences


def compare(before: Path, after: Path) -> int:
    differences = compare_records(before, after) + compare_weights(before, after)
    for pattern in ("records/*.csv.gz", "texts/*.txt", "figures/**/*.png"):
        differences += compare_files(before, after, pattern)
    for line in differences:
        print(line)
    checked = (len(list((before / "records").glob("*.csv"))), len(list(before.glob("texts/*.txt"))),
               len(list(before.glob("figures/**/*.png"))))
    print(f"compared {checked[0]} records with their final weights, {checked[1]} printed texts and "
          f"{checked[2]} figures: {len(differences)} difference{'s' * (len(differences) != 1)}")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recording = commands.add_parser("record", help="train the runs and keep the analyses' outputs")
    recording.add_argument("out", type=Path)
    recording.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    recording.add_argument("--noise-file", type=Path, default=None,
                           help="CIFAR-10N labels of --data-dir (default: its cifar-10n subset file)")
    comparing = commands.add_parser("compare", help="report every difference between two recordings")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "compare":
        return compare(args.before, args.after)
    noise_file = args.noise_file or args.data_dir / "cifar-10n" / "CIFAR-10_human_subset.npz"
    return record(args.out.resolve(), args.data_dir.resolve(), noise_file.resolve())


if __name__ == "__main__":
    sys.exit(main())
