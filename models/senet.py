"""SENet-18 of Hu et al., "Squeeze-and-Excitation Networks" (CVPR 2018), in its CIFAR form: a
ResNet-18 layout (3x3 stem, four stages of two blocks with 64, 128, 256, 512 channels) built from
pre-activation residual blocks (He et al., "Identity Mappings in Deep Residual Networks", 2016) whose
residual branch is recalibrated by a squeeze-and-excitation unit of reduction ratio 16."""
import torch
from torch import nn
from torch.nn import functional as F

from models.layers import PooledConvNet, SqueezeExcitation, conv_bn
from models.scaling import scaled

STAGE_WIDTHS = [64, 128, 256, 512]
SENET18_BLOCKS = [2, 2, 2, 2]
REDUCTION = 16  # the squeeze width is 1/16 of the block width


class PreActSEBlock(nn.Module):
    """BN-ReLU-3x3 conv twice, the result rescaled by squeeze-and-excitation and added to the shortcut:
    the input itself, or a 1x1 projection of the pre-activated input when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.se = SqueezeExcitation(channels, scaled(channels, 1 / REDUCTION))
        self.projection = None
        if stride != 1 or in_channels != channels:
            self.projection = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return self.se(out) + shortcut


class SENet(PooledConvNet):
    """A 3x3 conv stem, stages of pre-activation SE blocks (`blocks_per_stage` of them, the first of
    each stage after the first at stride 2), global average pooling and a linear classifier."""

    def __init__(self, blocks_per_stage: list[int], scale: float = 1.0, num_classes: int = 10):
        channels = scaled(STAGE_WIDTHS[0], scale)
        layers: list[nn.Module] = [conv_bn(3, channels, 3, activation=nn.ReLU)]
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
            strides = [1 if index == 0 else 2] + [1] * (blocks - 1)
            for stride in strides:
                layers.append(PreActSEBlock(channels, scaled(width, scale), stride))
                channels = scaled(width, scale)
        super().__init__(layers, channels, num_classes)


def senet18(scale: float = 1.0, num_classes: int = 10) -> SENet:
    """SENet-18: four stages of two pre-activation SE blocks."""
    return SENet(SENET18_BLOCKS, scale, num_classes)
