"""AlexNet of Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural Networks"
(NIPS 2012), in the CIFAR form of bearpaw/pytorch-classification (`models/cifar/alexnet.py` there, 2.47M
parameters for 10 classes): the five convolutional layers of the original (64, 192, 384, 256, 256
channels; kernels 11 at stride 4, 5, then three 3x3), ReLU after each, 2x2 max-pooling after the first,
second and fifth, and a single linear classifier on the resulting 256 x 1 x 1 features. It has no
BatchNorm, no dropout and none of the original's fully connected 4096-unit layers."""
import torch
from torch import nn

from models.scaling import scaled

# (output width, kernel size, stride, max-pool after) per convolutional layer; padding is kernel // 2.
ALEXNET_LAYOUT = [(64, 11, 4, True), (192, 5, 1, True), (384, 3, 1, False), (256, 3, 1, False),
                  (256, 3, 1, True)]


class AlexNet(nn.Module):
    """Conv-ReLU layers (with bias) and 2x2 max-pools as given by `layout`, then a linear classifier;
    a 32x32 image shrinks to 8, 4, 2 and 1 pixels."""

    def __init__(self, layout: list[tuple[int, int, int, bool]] = ALEXNET_LAYOUT,
                 scale: float = 1.0, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width, kernel_size, stride, pool in layout:
            width = scaled(width, scale)
            layers += [nn.Conv2d(channels, width, kernel_size, stride=stride, padding=kernel_size // 2),
                       nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def alexnet(scale: float = 1.0, num_classes: int = 10) -> AlexNet:
    """The five-conv CIFAR AlexNet."""
    return AlexNet(ALEXNET_LAYOUT, scale, num_classes)
