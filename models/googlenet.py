"""GoogLeNet (Inception v1) of Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015), in its
CIFAR form: a single 3x3 conv stem of 192 channels instead of the 7x7/3x3 ImageNet stem, the nine
Inception modules 3a-5b of Table 1 with max-pooling after 3b and 4e, global average pooling and a
linear classifier; no auxiliary classifiers. Every convolution is followed by BatchNorm and ReLU, and,
as in the CIFAR form, the 5x5 branch is factorized into two 3x3 convolutions."""
import torch
from torch import nn

from models.layers import PooledConvNet, conv_bn
from models.scaling import scaled

STEM_WIDTH = 192
POOL = "M"
# Per Inception module, the widths of Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_LAYOUT = [
    (64, 96, 128, 16, 32, 32),  # 3a
    (128, 128, 192, 32, 96, 64),  # 3b
    POOL,
    (192, 96, 208, 16, 48, 64),  # 4a
    (160, 112, 224, 24, 64, 64),  # 4b
    (128, 128, 256, 24, 64, 64),  # 4c
    (112, 144, 288, 32, 64, 64),  # 4d
    (256, 160, 320, 32, 128, 128),  # 4e
    POOL,
    (256, 160, 320, 32, 128, 128),  # 5a
    (384, 192, 384, 48, 128, 128),  # 5b
]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """A same-padded convolution (with bias, as in the original) followed by BatchNorm and ReLU."""
    return conv_bn(in_channels, out_channels, kernel_size, activation=nn.ReLU, bias=True)


class Inception(nn.Module):
    """Four parallel branches whose outputs are concatenated along the channels: a 1x1 conv; a 1x1
    reduction then a 3x3 conv; a 1x1 reduction then two 3x3 convs (the 5x5 receptive field); and 3x3
    max-pooling then a 1x1 projection."""

    def __init__(self, in_channels: int, n1x1: int, n3x3_reduce: int, n3x3: int,
                 n5x5_reduce: int, n5x5: int, pool_projection: int):
        super().__init__()
        self.branch1x1 = conv_bn_relu(in_channels, n1x1, 1)
        self.branch3x3 = nn.Sequential(conv_bn_relu(in_channels, n3x3_reduce, 1),
                                       conv_bn_relu(n3x3_reduce, n3x3, 3))
        self.branch5x5 = nn.Sequential(conv_bn_relu(in_channels, n5x5_reduce, 1),
                                       conv_bn_relu(n5x5_reduce, n5x5, 3),
                                       conv_bn_relu(n5x5, n5x5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         conv_bn_relu(in_channels, pool_projection, 1))
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], 1)


class GoogLeNet(PooledConvNet):
    """A conv stem and the Inception modules and POOL markers of `layout`; each module's input width
    is the sum of its predecessor's branch widths, whatever the scale."""

    def __init__(self, layout: list = GOOGLENET_LAYOUT, scale: float = 1.0, num_classes: int = 10):
        channels = scaled(STEM_WIDTH, scale)
        layers: list[nn.Module] = [conv_bn_relu(3, channels, 3)]
        for item in layout:
            if item == POOL:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
                continue
            module = Inception(channels, *(scaled(width, scale) for width in item))
            layers.append(module)
            channels = module.out_channels
        super().__init__(layers, channels, num_classes)


def googlenet(scale: float = 1.0, num_classes: int = 10) -> GoogLeNet:
    """GoogLeNet with the nine Inception modules of the paper."""
    return GoogLeNet(GOOGLENET_LAYOUT, scale, num_classes)
