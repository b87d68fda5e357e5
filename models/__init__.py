"""CIFAR-form image classifiers, one file per family, registered here for `--model`.

Each family has one entry in `FAMILIES`: its display name, what it is, and its builder, a function of
its file called as `builder(scale=..., num_classes=...)`; `scale` multiplies the reference widths of
every layer (see `models.scaling.scaled`). A family's file is imported only when a model of it is
built, so reading the registry (for names in tables and figures) needs no torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Family:
    """One architecture family: how papers name it, what exactly it is, and the function that builds it."""

    name: str          # as a paper names it: "ResNet-18"
    description: str   # the table entry: "ResNet-18", "5-layer CNN (Nakkiran et al.), k = 64"
    builder: str       # "<file in models/>.<function>"

    def build(self, scale: float, num_classes: int) -> nn.Module:
        module, function = self.builder.rsplit(".", 1)
        return getattr(importlib.import_module(f"models.{module}"), function)(scale=scale, num_classes=num_classes)


FAMILIES: dict[str, Family] = {
    "cnn": Family("5-layer CNN", "5-layer CNN (Nakkiran et al.), k = 64", "cnn.FiveLayerCNN"),
    "densenet": Family("DenseNet-121", "DenseNet-121, growth rate 32", "densenet.densenet121"),
    "efficientnet": Family("EfficientNet-B0", "EfficientNet-B0", "efficientnet.efficientnet_b0"),
    "googlenet": Family("GoogLeNet", "GoogLeNet (Inception v1)", "googlenet.googlenet"),
    "mobilenet": Family("MobileNet", "MobileNet (v1)", "mobilenet.mobilenet"),
    "mobilenetv2": Family("MobileNetV2", "MobileNetV2", "mobilenetv2.mobilenetv2"),
    "resnet": Family("ResNet-18", "ResNet-18", "resnet.resnet18"),
    "resnext": Family("ResNeXt-29", "ResNeXt-29, 2x64d", "resnext.resnext29_2x64d"),
    "senet": Family("SENet-18", "SENet-18 (pre-activation)", "senet.senet18"),
    "shufflenetv2": Family("ShuffleNetV2", "ShuffleNetV2 1x", "shufflenetv2.shufflenetv2"),
    "vgg": Family("VGG-19", "VGG-19 (BatchNorm)", "vgg.vgg19"),
    "alexnet": Family("AlexNet", "AlexNet, 5 conv layers", "alexnet.alexnet"),
}


def create_model(name: str, scale: float = 1.0, num_classes: int = 10) -> nn.Module:
    """Build the registered model `name` at width multiplier `scale` with `num_classes` outputs."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(FAMILIES))}")
    if not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    return FAMILIES[name].build(scale, num_classes)


def parameter_count(name: str, scale: float = 1.0, num_classes: int = 10) -> int:
    """Parameters of the registered model `name`, built on the meta device so that nothing is
    allocated or initialized (torch is imported here, as the registry itself needs none)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, scale, num_classes)
    return sum(p.numel() for p in model.parameters())
