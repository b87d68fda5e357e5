"""Runs as a paper names them: model and width, optimizer, learning rate, schedule, and their data."""
from __future__ import annotations

import pandas as pd

from analysis.loading import known
from models import FAMILIES


def model_name(model, scale) -> str:
    """`ResNet-18 ×0.25`: the architecture's usual name and the width multiplier."""
    if not known(model):
        return "unknown model"
    name = FAMILIES[model].name if model in FAMILIES else model
    return f"{name} ×{scale:g}" if known(scale) else name


def optimizer_name(optimizer: str) -> str:
    """`SGD`, `Adam`: an optimizer as papers write it."""
    return {"sgd": "SGD", "adam": "Adam"}.get(optimizer, optimizer)


def run_title(run: pd.Series) -> str:
    """A run as a paper names it: model and width, optimizer, learning rate and schedule; its data."""
    training = [model_name(run["model"], run["scale"])]
    optimizer = optimizer_name(run["optimizer"]) if known(run["optimizer"]) else ""
    learning_rate = f"lr {run['lr_initial']:g}" if known(run["lr_initial"]) else ""
    if optimizer or learning_rate:
        training.append(f"{optimizer} {learning_rate}".strip())
    if known(run["scheduler"]):
        training.append(f"{run['scheduler']} schedule")
    return ", ".join(training) + "\n" + describe_data(run)


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "folder": "image-folder"}


def describe_data(run: pd.Series) -> str:
    """`symmetric noise p = 0.5 (45.1 % wrong), 4000 cifar10 images`, from what the record holds."""
    if not known(run["noise_type"]):
        noise = "noise unknown"
    elif run["noise_type"] == "given":
        noise = "labels as given"
    else:
        noise = f"{run['noise_type']} noise" + (f" p = {run['noise_rate']:g}" if known(run["noise_rate"]) else "")
        if known(run["fraction_wrong"]):
            noise += f" ({100 * run['fraction_wrong']:.1f} % wrong)"
    size = f"{int(run['train_size'])} " if known(run["train_size"]) else ""
    dataset = f"{DATASET_NAMES.get(run['dataset'], run['dataset'])} " if known(run["dataset"]) else ""
    return f"{noise}, {size}{dataset}training images"
