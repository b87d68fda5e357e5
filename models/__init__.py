"""CIFAR-form image classifiers, one file per family, registered here for `--model`.

Every entry is called as `MODELS[name](scale=..., num_classes=...)`; `scale` multiplies the reference
widths of every layer (see `models.scaling.scaled`).
"""
from typing import Callable

from torch import nn

from models.cnn import FiveLayerCNN
from models.resnet import resnet18
from models.vgg import vgg19

MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": FiveLayerCNN,
    "resnet": resnet18,
    "vgg": vgg19,
}


def create_model(name: str, scale: float = 1.0, num_classes: int = 10) -> nn.Module:
    """Build the registered model `name` at width multiplier `scale` with `num_classes` outputs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    if not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    return MODELS[name](scale=scale, num_classes=num_classes)
