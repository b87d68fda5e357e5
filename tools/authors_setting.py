"""The comparison of our code with the authors' (mahf93/tracking-memorization): the setting both
codes run, the metrics compared, and the patches the authors' code needs to run here. Used by
`tools/authors_comparison.py` (which runs both codes) and `tools/authors_study.py` (which compares
their records).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from analysis.naming import model_name

SIDES = {"ours": "ours", "authors": "authors' code"}


@dataclass(frozen=True)
class Metric:
    """A compared quantity: its label in tables, its figure title (matplotlib mathtext) and decimals."""

    label: str
    title: str
    digits: int


METRICS = {
    "train_acc": Metric("training accuracy (%)", "training accuracy (%), noisy labels", 1),
    "train_noisy_acc": Metric("noisy-subset accuracy (%)", "noisy-subset training accuracy (%): memorization", 1),
    "test_acc": Metric("test accuracy (%)", "test accuracy (%)", 1),
    "r": Metric("r = Φ̃ before − Φ̃ after",
                r"$r = \tilde\Phi_{\mathrm{before}} - \tilde\Phi_{\mathrm{after}}$ (nats)", 4),
}
# Our settings that the authors' code has no flag for, set to what their code does.
OUR_FIXED = {"optimizer": "sgd", "scheduler": "cosine", "noise_type": "symmetric", "probe_source": "train"}
LAST_EPOCHS = 10  # the window of the per-run averages that `compare` tests (the memorization phase)


class HarnessError(Exception):
    """A problem with the input; reported as one line."""


class RunFailed(HarnessError):
    """A run of either code failed; reported as one line with the end of its error output."""


@dataclass(frozen=True)
class Setting:
    """The experiment, in the flags that both experiments.py scripts read with the same meaning."""

    model: str = "resnet"
    scale: float = 0.25
    numsamples: int = 2000
    corruptprob: float = 0.5
    epochs: int = 60
    lr: float = 0.05
    batchsize: int = 128

    def flags(self, name: str, seed: int) -> list[str]:
        """The shared command line of run `name`; the authors' code reads --seed only on CUDA."""
        values = {**dataclasses.asdict(self), "seed": seed, "filename": name, "modelfilename": name}
        return [item for key, value in values.items() for item in (f"--{key}", str(value))]

    def result_name(self, name: str) -> str:
        """Both codes name their results <filename>_<model>_<epochs>_<lr>."""
        return f"{name}_{self.model}_{self.epochs}_{self.lr}"

    def title(self) -> str:
        return (f"{model_name(self.model, self.scale)}, {self.numsamples:,} images, "
                f"{self.corruptprob:.0%} symmetric noise, SGD lr {self.lr:g}, cosine over {self.epochs} epochs")


def run_name(seed: int) -> str:
    return f"seed{seed}"


@dataclass(frozen=True)
class Patch:
    """A named text substitution in a file of the authors' code: `count` occurrences of `old`
    become `new`; any other number of occurrences stops the harness."""

    name: str
    file: str
    old: str
    new: str
    count: int
    why: str

    def line(self) -> str:
        """The patch as the harness prints it and the document lists it, line breaks shown as ↵."""
        return f"`{self.name}` ({self.file}, `{one_line(self.old)}` → `{one_line(self.new)}`): {self.why}"


def one_line(code: str) -> str:
    return " ↵ ".join(line.strip() for line in code.splitlines() if line.strip())


def patches(workers: int) -> tuple[Patch, ...]:
    """What the authors' code needs to run offline on a current torch and this machine, and to say
    how wide its network is."""
    return (
        Patch("no-download", "dataset.py", "download=True", "download=False", 2,
              "read the CIFAR-10 folder that the harness links as ./data instead of downloading it"),
        Patch("no-checksum", "dataset.py", "    def corrupt_labels(self",
              "    def _check_integrity(self):\n        return True\n\n    def corrupt_labels(self", 1,
              "skip torchvision's MD5 check against the official archive, which any other folder in the "
              "official format (such as a subset) fails"),
        Patch("schedule-spans-epochs", "experiments.py", "T_max=200", "T_max=args.epochs", 1,
              "the cosine schedule anneals over --epochs, as ours does, not over a fixed 200 epochs"),
        Patch("workers", "dataset.py", "num_workers = 11", f"num_workers = {workers}", 1,
              f"DataLoader worker processes: {workers} (the harness's --workers) instead of 11"),
        Patch("report-parameters", "experiments.py", "    net = net.to(device)\n",
              "    net = net.to(device)\n    print('parameters:', sum(p.numel() for p in net.parameters()))\n", 1,
              "print the network's parameter count, which the harness checks against ours"),
    )
