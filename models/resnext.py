"""ResNeXt-29 (2x64d) of Xie et al., "Aggregated Residual Transformations for Deep Neural Networks"
(CVPR 2017), in its CIFAR form: a stem conv of 64 channels, three stages of three bottleneck blocks
(29 layers) whose 3x3 convolution is split into C = 2 groups of d = 64 channels in the first stage,
doubling d (and halving the resolution) at each later stage, global average pooling and a linear
classifier on the last stage's 1024 (= 2 * C * 4d) channels. As in the CIFAR form, the stem conv is
1x1. `scale` multiplies d and the stem; the cardinality C stays 2."""
import torch
from torch import nn
from torch.nn import functional as F

from models.layers import PooledConvNet, conv_bn
from models.scaling import scaled

STEM_WIDTH = 64
EXPANSION = 2  # a block's output width is twice its grouped width C * d


class ResNeXtBlock(nn.Module):
    """1x1 conv to C * d channels, 3x3 grouped conv with C groups of d channels (the aggregated
    transformations), 1x1 conv to 2 * C * d channels; all with BatchNorm, added to the shortcut (the
    input, or a 1x1 conv-BN projection when the shape changes) before the last ReLU."""

    def __init__(self, in_channels: int, cardinality: int, group_width: int, stride: int = 1):
        super().__init__()
        width = cardinality * group_width
        self.out_channels = EXPANSION * width
        self.residual = nn.Sequential(
            conv_bn(in_channels, width, 1, activation=nn.ReLU),
            conv_bn(width, width, 3, stride, groups=cardinality, activation=nn.ReLU),
            conv_bn(width, self.out_channels, 1),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != self.out_channels:
            self.shortcut = conv_bn(in_channels, self.out_channels, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNeXt(PooledConvNet):
    """Stages of `blocks_per_stage` ResNeXt blocks with `cardinality` groups; the group width d starts
    at `group_width * scale` and doubles at each stage, and the classifier reads the real output width
    of the last stage."""

    def __init__(self, blocks_per_stage: list[int], cardinality: int, group_width: int,
                 scale: float = 1.0, num_classes: int = 10):
        channels = scaled(STEM_WIDTH, scale)
        layers: list[nn.Module] = [conv_bn(3, channels, 1, activation=nn.ReLU)]
        for index, blocks in enumerate(blocks_per_stage):
            d = scaled(group_width * 2 ** index, scale)
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(ResNeXtBlock(channels, cardinality, d, stride))
                channels = layers[-1].out_channels
        super().__init__(layers, channels, num_classes)


def resnext29_2x64d(scale: float = 1.0, num_classes: int = 10) -> ResNeXt:
    """ResNeXt-29 (2x64d): three stages of three blocks, 2 groups of 64 channels in the first stage."""
    return ResNeXt([3, 3, 3], cardinality=2, group_width=64, scale=scale, num_classes=num_classes)
