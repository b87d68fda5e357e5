"""VGG-19 of Simonyan & Zisserman, "Very Deep Convolutional Networks" (2015), in its CIFAR form:
sixteen 3x3 conv-BN-ReLU layers in five max-pooled blocks, then one linear classifier on the
512-channel 1x1 feature map."""
import torch
from torch import nn

from models.scaling import scaled

POOL = "M"
VGG19_LAYOUT = [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
                512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL]


class VGG(nn.Module):
    """A VGG network given as a list of conv widths and POOL markers."""

    def __init__(self, layout: list, scale: float = 1.0, num_classes: int = 10):
        super().__init__()
        layers, in_channels = [], 3
        for item in layout:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                continue
            width = scaled(item, scale)
            layers += [nn.Conv2d(in_channels, width, 3, padding=1),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def vgg19(scale: float = 1.0, num_classes: int = 10) -> VGG:
    """VGG-19: 16 convolutional layers and one linear layer."""
    return VGG(VGG19_LAYOUT, scale, num_classes)
