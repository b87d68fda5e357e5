"""The 5-layer CNN of Nakkiran et al., "Deep Double Descent" (2019): four conv-BN-ReLU layers of widths
k, 2k, 4k, 8k with max-pooling, then a linear classifier. The reference width is k = 64."""
import torch
from torch import nn

from models.scaling import scaled

BASE_WIDTH = 64


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3x3 convolution (with bias, as in the original) followed by BatchNorm and ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class FiveLayerCNN(nn.Module):
    """Widths k, 2k, 4k, 8k with k = 64 * scale; spatial size 32 -> 32 -> 16 -> 8 -> 4 -> 1."""

    def __init__(self, scale: float = 1.0, num_classes: int = 10):
        super().__init__()
        k = scaled(BASE_WIDTH, scale)
        widths = [k, 2 * k, 4 * k, 8 * k]
        self.features = nn.Sequential(
            *conv_bn_relu(3, widths[0]),
            *conv_bn_relu(widths[0], widths[1]), nn.MaxPool2d(2),
            *conv_bn_relu(widths[1], widths[2]), nn.MaxPool2d(2),
            *conv_bn_relu(widths[2], widths[3]), nn.MaxPool2d(2),
            nn.MaxPool2d(4),
        )
        self.classifier = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
