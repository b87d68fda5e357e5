"""CIFAR-form image classifiers, one file per family, registered here for `--model`.

Every entry is called as `MODELS[name](scale=..., num_classes=...)`; `scale` multiplies the reference
widths of every layer (see `models.scaling.scaled`).
"""
from typing import Callable

from torch import nn

from models.alexnet import alexnet
from models.cnn import FiveLayerCNN
from models.densenet import densenet121
from models.efficientnet import efficientnet_b0
from models.googlenet import googlenet
from models.mobilenet import mobilenet
from models.mobilenetv2 import mobilenetv2
from models.resnet import resnet18
from models.resnext import resnext29_2x64d
from models.senet import senet18
from models.shufflenetv2 import shufflenetv2
from models.vgg import vgg19

MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": FiveLayerCNN,
    "densenet": densenet121,
    "efficientnet": efficientnet_b0,
    "googlenet": googlenet,
    "mobilenet": mobilenet,
    "mobilenetv2": mobilenetv2,
    "resnet": resnet18,
    "resnext": resnext29_2x64d,
    "senet": senet18,
    "shufflenetv2": shufflenetv2,
    "vgg": vgg19,
    "alexnet": alexnet,
}

# What each model is, for tables and figure titles.
ARCHITECTURES = {
    "cnn": "5-layer CNN (Nakkiran et al.), k = 64",
    "densenet": "DenseNet-121, growth rate 32",
    "efficientnet": "EfficientNet-B0",
    "googlenet": "GoogLeNet (Inception v1)",
    "mobilenet": "MobileNet (v1)",
    "mobilenetv2": "MobileNetV2",
    "resnet": "ResNet-18",
    "resnext": "ResNeXt-29, 2x64d",
    "senet": "SENet-18 (pre-activation)",
    "shufflenetv2": "ShuffleNetV2 1x",
    "vgg": "VGG-19 (BatchNorm)",
    "alexnet": "AlexNet, 5 conv layers",
}


def create_model(name: str, scale: float = 1.0, num_classes: int = 10) -> nn.Module:
    """Build the registered model `name` at width multiplier `scale` with `num_classes` outputs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    if not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    return MODELS[name](scale=scale, num_classes=num_classes)
