"""Building blocks shared by the convolutional families: a convolution with BatchNorm (and an optional
activation), squeeze-and-excitation (Hu et al., CVPR 2018; used by SENet and EfficientNet), and the
global-average-pooling classifier that ends every CIFAR-form network here."""
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

Activation = Callable[[], nn.Module]


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
            activation: Activation | None = None, bias: bool = False) -> nn.Sequential:
    """A same-padded convolution followed by BatchNorm and, when given, an activation.

    `groups=in_channels=out_channels` makes it depthwise; the convolution has no bias by default,
    since the BatchNorm after it has its own shift."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                  groups=groups, bias=bias),
        nn.BatchNorm2d(out_channels),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Squeeze: global average pooling to one value per channel. Excitation: a bottleneck of two 1x1
    convolutions (with bias) ending in a sigmoid, whose output rescales each channel of the input."""

    def __init__(self, channels: int, squeeze_channels: int, activation: Activation = nn.ReLU):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = activation()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.activation(self.reduce(F.adaptive_avg_pool2d(x, 1)))
        return x * torch.sigmoid(self.expand(weights))


def pooled_classifier(in_channels: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """Global average pooling, optional dropout, and a linear layer to the class scores."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_channels, num_classes))
    return nn.Sequential(*layers)


class PooledConvNet(nn.Module):
    """A network read as `features`, convolutional layers ending in a map of `channels` channels, then
    `classifier`, the pooled linear classifier. Families build their layers and hand them here."""

    def __init__(self, features: list[nn.Module], channels: int, num_classes: int,
                 dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.classifier = pooled_classifier(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
